"""`spendwarden up` end to end, as a person runs it: embedded broker, Redis, worker and demo feed.

Each test runs the real command (no TTY, as in CI) and then checks the processes it printed
(broker, Redis, worker) are gone: a quick start that leaves servers behind is a bug.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SPENDWARDEN = str(Path(sys.executable).with_name("spendwarden"))


def _env() -> dict[str, str]:
    """No SPENDWARDEN_* from the caller's shell: `up` must start its own broker and Redis."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SPENDWARDEN_")}


def _pids(output: str) -> dict[str, int]:
    pattern = r"^(kafka|redis|worker)\b.*?\bpid (\d+)"
    found = {name: int(pid) for name, pid in re.findall(pattern, output, re.M)}
    assert set(found) == {"kafka", "redis", "worker"}, output
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _assert_all_gone(output: str) -> None:
    pids = _pids(output)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, pid in pids.items() if _alive(pid)], f"left running: {pids}\n{output}"
    workdir = re.search(r"logs are in (\S+)", output)
    assert workdir, output
    assert Path(workdir.group(1), "worker.log").stat().st_size > 0
    assert Path(workdir.group(1), "tansu.log").exists()
    shutil.rmtree(workdir.group(1), ignore_errors=True)  # kept for people; a test run needs no logs


def test_up_shows_decision_and_alert_then_stops_everything(tmp_path: Path) -> None:
    """Within a 75 s run the demo's runaway loop yields an alert and a decision for acme drafting."""
    result = subprocess.run([SPENDWARDEN, "up", "--duration", "75"], env=_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=150)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    decision = r"^\S+Z  DECISION acme drafting:(low|medium) -> (L1 degrade|block)"
    assert re.search(decision, output, re.M), output
    assert re.search(r"^\S+Z  ALERT ", output, re.M), output
    assert re.search(r"STATUS .*worker counted [1-9][\d,]* .*spend today: acme \$", output), output
    assert "Traceback" not in result.stderr, result.stderr
    _assert_all_gone(output)
    assert not list(tmp_path.iterdir()), "up wrote into its working directory"


def test_sigint_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C while the demo runs stops the feed, the worker, the broker and Redis, and exits cleanly."""
    proc = subprocess.Popen([SPENDWARDEN, "up", "--duration", "120"], env=_env(), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "STATUS" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(90), "".join(lines)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    output = "".join(lines)
    assert code in (0, 130), output
    assert "SIGINT: stopping" in output and "stopped; logs are in" in output, output
    assert "--duration" not in output.split("SIGINT")[1], output
    _assert_all_gone(output)
