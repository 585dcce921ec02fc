"""``spendwarden alerts route|routes|check`` and the silence commands' checks that need no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from spendwarden.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "routing.example.yaml"


@pytest.fixture(autouse=True)
def _no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPENDWARDEN_CONFIG", "SPENDWARDEN_ROUTING_FILE", "SPENDWARDEN_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def test_route_with_continue() -> None:
    result = run("alerts", "route", "--config", str(EXAMPLE), "--labels", "tenant=acme,severity=critical,rule=burn")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "pager,acme-webhook"
    assert lines[1].startswith("  root/1 (line 24): receiver=pager group=root/1:{rule=\"burn\",tenant=\"acme\"}")
    assert "group_wait=10s" in lines[1]
    assert lines[2].startswith("  root/2 (line 30): receiver=acme-webhook")


def test_route_to_the_root_and_repeated_labels_option() -> None:
    result = run("alerts", "route", "--config", str(EXAMPLE), "--labels", "tenant=beta", "--labels", "severity=low")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "finops-slack"
    assert "root (line 12)" in result.stdout


def test_route_uses_the_routing_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("route: {receiver: only}\nreceivers: [{name: only}]\n")
    result = run("alerts", "route", "--labels", "tenant=acme", env={"SPENDWARDEN_ROUTING_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "only"


def test_route_without_file_is_the_default_routing() -> None:
    result = run("alerts", "route", "--labels", "tenant=acme,rule=r")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "log"
    assert 'group=root:{rule="r",tenant="acme"}' in result.stdout


@pytest.mark.parametrize("labels", ["tenant", "1x=y", "a=b,=c"])
def test_route_rejects_bad_labels(labels: str) -> None:
    result = run("alerts", "route", "--labels", labels)
    assert result.exit_code == 2
    assert "--labels" in result.stderr and "Traceback" not in result.output


def test_routes_shows_the_tree() -> None:
    result = run("alerts", "routes", "--config", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith("root {}  (every alert)  receiver=finops-slack group_by=[tenant,rule]")
    assert lines[2].startswith("├── root/0 {shadow=\"true\"}")
    assert "receiver=pager" in lines[3] and lines[3].endswith("continue")
    assert "group_by=[...]" in lines[4]
    assert lines[5].startswith("└── root/3 {decision=\"block\"}")


def test_check_ok() -> None:
    result = run("alerts", "check", str(EXAMPLE))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"OK: {EXAMPLE} (5 routes, 5 receivers, 1 inhibit rules)")


def test_check_error_exits_1_with_file_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("route:\n  receiver: a\n  group_wait: soon\nreceivers: [{name: a}]\n")
    result = run("alerts", "check", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{path}:3:15: route.group_wait: duration 'soon'")
    assert run("alerts", "check", str(tmp_path / "absent.yaml")).exit_code == 1


def test_route_with_a_bad_config_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("route: {receiver: ghost}\nreceivers: [{name: a}]\n")
    result = run("alerts", "routes", "--config", str(path))
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"spendwarden: error: {path}:1:19: route root: receiver 'ghost' is not defined "
                                     "in receivers (defined: a)")


@pytest.mark.parametrize(("args", "words"), [
    (["tenant=acme", "--for", "soon", "--comment", "x"], "--for: duration 'soon'"),
    (["tenant!=acme", "--for", "2h", "--comment", "x"], "also match alerts without"),
    (["tenant=~(x", "--for", "2h", "--comment", "x"], "bad regex"),
])
def test_silence_add_checks_before_connecting(args: list[str], words: str) -> None:
    result = run("silence", "add", *args, "--author", "ana")
    assert result.exit_code == 2
    assert words in result.stderr


def test_silence_needs_a_redis() -> None:
    result = run("silence", "list")
    assert result.exit_code == 2
    assert "SPENDWARDEN_REDIS_URL" in result.stderr


def test_silence_add_needs_matchers_and_for() -> None:
    assert run("silence", "add", "--for", "2h", "--comment", "x").exit_code == 2
    assert "--for" in run("silence", "add", "tenant=acme", "--comment", "x").stderr
