"""The ``spendwarden`` command: replay, demo, worker, up, rules lint/test/push, schema, pricebook import,
override (in cli_overrides.py), status (cli_status.py), scenario (cli_scenario.py); replay's
--labels/--report/--sweep/--compare live in cli_report.py.

User mistakes (a bad file, a bad flag) end with one line on stderr and exit code 2, never a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path
from typing import Any

import click

from spendwarden import __version__
from spendwarden.exceptions import ConfigError, SpendwardenError


def _fail(message: str) -> None:
    click.echo(f"spendwarden: error: {message}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns SpendwardenError into a one-line message."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpendwardenError as exc:
            _fail(str(exc))
        except BrokenPipeError:  # `spendwarden replay ... | head`
            sys.exit(0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spendwarden")
def main() -> None:
    """Watch AI spend as it happens and stop it from running away."""
    from spendwarden import logs

    # Library and progress lines go to stderr, masked, warnings and up: stdout is the command's
    # output (JSON lines for scripts). `worker` and `up` set their own level.
    logs.configure("warning")


def _parse_time(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{flag} {value!r} is not an ISO 8601 time such as 2026-11-25T00:00:00Z")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _level(verdict: dict[str, Any]) -> str:
    level, action = verdict["level"], verdict["action"]
    return level if level == action else f"{level} {action}"


def describe(effect: Any) -> str:
    """One human line per effect, for terminals."""
    kind = effect.kind
    if kind == "alert_firing":
        decision = ""
        if effect.decision:
            verdict = effect.decision
            decision = f" -> {_level(verdict)}"
            if verdict.get("model_alias"):
                decision += f" (model {verdict['model_alias']})"
        scope = "/".join(f"{v}" for v in effect.scope.values()) or "(all tenants)"
        shadow = " [shadow]" if effect.shadow else ""
        return (f"{effect.at}  ALERT    {effect.severity:<8} {effect.rule}{shadow}  {scope}  "
                f"${float(effect.spend_usd):,.2f} of ${float(effect.limit_usd):,.2f} ({effect.used_ratio:.0%})"
                f"{decision}")
    if kind == "alert_resolved":
        scope = "/".join(effect.scope.values()) or "(all tenants)"
        return f"{effect.at}  RESOLVED {'':<8} {effect.rule}  {scope}  ({effect.reason})"
    if kind == "decision":
        if effect.verdict is None:
            return f"{effect.at}  DECISION {effect.tenant_id} {effect.field} -> L0 allow"
        verdict = effect.verdict
        extra = f" model={verdict['model_alias']}" if verdict.get("model_alias") else ""
        if verdict.get("rate_per_minute"):
            extra += f" rate={verdict['rate_per_minute']}/min"
        return (f"{effect.at}  DECISION {effect.tenant_id} {effect.field} -> {_level(verdict)}{extra} (rule {verdict['rule']}, until {verdict['expires_at']})")
    if kind == "late_spend":
        return f"{effect.ts}  LATE     {effect.tenant_id} {effect.cost_event_id} ${effect.cost_usd} into {effect.period_ids}"
    return f"{getattr(effect, 'ts', '')}  TOO LATE {effect.tenant_id} {effect.cost_event_id} (before {effect.horizon_start})"


class _PrintingSink:
    """Prints effects as they happen and forwards them to another sink."""

    def __init__(self, inner: Any, show: bool) -> None:
        self.inner = inner
        self.show = show

    def effect(self, effect: Any) -> None:
        if self.show and effect.kind != "late_spend":
            click.echo(describe(effect))
        self.inner.effect(effect)

    def rejected(self, where: int, rejection: Any, raw: bytes) -> None:
        self.inner.rejected(where, rejection, raw)

    def close(self) -> None:
        self.inner.close()


def _progress_printer(total: int | None, source: Any) -> Any:
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(result: Any) -> None:
        now = time.monotonic()
        if now - last[0] < (0.5 if tty else 10.0):
            return
        last[0] = now
        done = source.bytes_read
        share = f"{done / total:6.1%}" if total else f"{done / 1e6:,.0f} MB"
        line = f"replay {share}  {result.events:,} events  {result.events_per_s:,.0f}/s"
        click.echo(f"\r{line}" if tty else line, err=True, nl=not tty)

    return show


def make_ingest(pricebook: str | None, reprice: str | None) -> Any:
    """Ingest with the given (or bundled) pricebook, pinned to ``reprice`` when given."""
    from spendwarden.streams.ingest import Ingest
    from spendwarden.streams.pricebook import Pricebook

    book = Pricebook.load(pricebook) if pricebook else Pricebook.default()
    if reprice:
        book = book.pinned(reprice)
    return Ingest(book, reprice=bool(reprice))


def open_source(events: str, start: str | None, end: str | None, partitions: str | None) -> tuple[Any, Any]:
    """The records of EVENTS (a file, - or kafka://TOPIC) and, for Kafka, how to locate one."""
    from spendwarden.replay.readers import open_events

    if events.startswith("kafka://"):
        source = _kafka_source(events, start, end, partitions)
        return source, source.locate
    if start or end or partitions:
        raise ConfigError("--from, --to and --partitions apply to kafka://TOPIC inputs only")
    return open_events(events), None


def run_replay(events: str, rules: str, pricebook: str | None, out: str | None, tick: float,
               advance_to: str | None, show: bool, as_json: bool, progress: bool,
               start: str | None = None, end: str | None = None, partitions: str | None = None,
               reprice: str | None = None) -> None:
    from spendwarden.replay.run import JsonlSink, ListSink, replay, summary_table
    from spendwarden.rules.loader import load_ruleset

    ruleset = load_ruleset(rules)
    ingest = make_ingest(pricebook, reprice)
    advance = _parse_time(advance_to, "--advance-to")
    source, locate = open_source(events, start, end, partitions)
    try:
        inner: Any = JsonlSink(out, locate) if out else ListSink()
        sink = _PrintingSink(inner, show)
        result = replay(
            source, ruleset, ingest, sink, tick_s=tick, advance_to=advance,
            progress=_progress_printer(source.total_bytes, source) if progress else None,
        )
    finally:
        if hasattr(source, "close"):  # a Kafka reader holds a connection until closed
            source.close()
    if progress and sys.stderr.isatty():
        click.echo("", err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo("")
    click.echo(f"rules {ruleset.version} from {rules}")
    click.echo(summary_table(result))
    if out:
        click.echo(f"\neffects written to {out}/ (decisions.jsonl, alerts.jsonl, late.jsonl, dead-letter.jsonl)")


def _kafka_source(url: str, start: str | None, end: str | None, partitions: str | None) -> Any:
    """A group-less reader of a topic range; the broker comes from settings."""
    from spendwarden.replay.kafka_source import KafkaRangeSource, RangeBound, topic_of
    from spendwarden.settings import load_settings

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError(f"{url}: set SPENDWARDEN_KAFKA_BOOTSTRAP (host:port) to say which Kafka to read")
    try:
        wanted = [int(p) for p in partitions.split(",")] if partitions else None
    except ValueError:
        raise ConfigError(f"--partitions: {partitions!r} is not a comma-separated list of numbers") from None
    from spendwarden.kafka_security import aiokafka_options

    return KafkaRangeSource(settings.kafka_bootstrap, topic_of(url), RangeBound.parse(start, "--from"),
                            RangeBound.parse(end, "--to"), wanted, client_options=aiokafka_options(settings)).open()


@main.command("replay")
@click.argument("events")
@click.option("--rules", "rules", default=None, help="Rules directory (or one YAML file). Required unless --compare.")
@click.option("--pricebook", default=None, help="Pricebook YAML (default: the bundled illustrative one).")
@click.option("--out", default=None, help="Folder for decisions.jsonl, alerts.jsonl, late.jsonl, dead-letter.jsonl.")
@click.option("--tick", default=60.0, show_default=True, help="Simulated clock step in seconds.")
@click.option("--advance-to", default=None, help="Advance the clock to this time at the end (ISO 8601).")
@click.option("--show/--no-show", default=False, help="Print alerts and decisions as they happen.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line.")
@click.option("--progress/--no-progress", default=True, help="Progress on stderr.")
@click.option("--from", "start", default=None,
              help="kafka:// only: first offset, or ISO 8601 time (first record at or after it).")
@click.option("--to", "end", default=None,
              help="kafka:// only: end offset (exclusive), or ISO 8601 time; default the log end at start.")
@click.option("--partitions", default=None, help="kafka:// only: comma-separated partitions (default all).")
@click.option("--reprice", default=None, metavar="VERSION",
              help="Price every event with this pricebook version, ignoring allocated_cost_usd.")
@click.option("--labels", "labels", default=None, type=click.Path(dir_okay=False),
              help="Labelled windows (from `spendwarden scenario`): score the anomaly alerts against them.")
@click.option("--report", default=None, type=click.Path(file_okay=False),
              help="With --labels: write report.md and evaluation.json (sweep.md, compare.md) to this folder.")
@click.option("--sweep", "sweep", multiple=True, metavar="SETTING=a,b,c",
              help="With --labels: replay once per value of detectors.KIND.PARAM or rule.NAME:VAR "
                   "(e.g. rule.spend-spike:anomaly.spend.score=4,6,8) and mark the Pareto frontier.")
@click.option("--compare", nargs=2, default=None, metavar="OLD_RULES NEW_RULES",
              help="Replay two rule sets (instead of --rules) and list the alerts that appear or vanish.")
def replay_command(events: str, rules: str | None, pricebook: str | None, out: str | None, tick: float,
                   advance_to: str | None, show: bool, as_json: bool, progress: bool, start: str | None,
                   end: str | None, partitions: str | None, reprice: str | None, labels: str | None,
                   report: str | None, sweep: tuple[str, ...], compare: tuple[str, str] | None) -> None:
    """Run EVENTS (JSONL, JSONL.gz, CSV, Parquet, - for stdin, or kafka://TOPIC) through the engine
    with a simulated clock. kafka://TOPIC reads the range given by --from/--to from the broker in
    SPENDWARDEN_KAFKA_BOOTSTRAP without joining any consumer group.

    With --labels, the anomaly alerts are scored against labelled windows (docs/detectors.md,
    "Evaluation"): precision, recall, detection delay and false alerts per detector and kind."""
    from spendwarden import cli_report

    opts = cli_report.ReplayOptions(events, pricebook, reprice, tick, advance_to, progress, start, end, partitions)
    if compare:
        if rules:
            raise ConfigError("give either --rules or --compare OLD_RULES NEW_RULES, not both")
        cli_report.run_compare(opts, compare[0], compare[1], labels, report)
        return
    if not rules:
        raise ConfigError("--rules is required (or --compare OLD_RULES NEW_RULES)")
    if (report or sweep) and not labels:
        raise ConfigError("--report and --sweep score alerts against labelled windows: add --labels labels.json")
    if sweep:
        cli_report.run_sweep(opts, rules, labels, sweep, report)  # type: ignore[arg-type]
    elif labels:
        cli_report.run_evaluation(opts, rules, labels, report, out, show)
    else:
        run_replay(events, rules, pricebook, out, tick, advance_to, show, as_json, progress,
                   start, end, partitions, reprice)


@main.command("demo")
@click.option("--out", default=None, help="Also write effects as JSONL to this folder.")
def demo_command(out: str | None) -> None:
    """Replay the bundled demo day (4 tenants, one runaway agent loop) and print what happens."""
    data = files("spendwarden.replay") / "data"
    click.echo("spendwarden demo: a day of traffic for 4 tenants; acme's drafting agent loops at 10:30 New York time\n")
    # Run the clock on past New York midnight so the day's block visibly lifts.
    run_replay(str(data / "demo.jsonl"), str(data / "demo-rules"), None, out, 60.0, "2026-11-25T06:00:00Z",
               True, False, False)


@main.command("worker")
@click.option("--rules", "rules_dir", default=None, help="Rules directory (env SPENDWARDEN_RULES_DIR).")
@click.option("--kafka", "kafka_bootstrap", default=None, help="Kafka bootstrap host:port (env SPENDWARDEN_KAFKA_BOOTSTRAP).")
@click.option("--http-port", default=None, type=int, help="Port of /metrics, /healthz, /readyz, /-/reload.")
def worker_command(rules_dir: str | None, kafka_bootstrap: str | None, http_port: int | None) -> None:
    """Run the live worker on Kafka and Redis given by settings (SPENDWARDEN_* env or SPENDWARDEN_CONFIG)."""
    from spendwarden import logs
    from spendwarden.settings import load_settings
    from spendwarden.streams.service import run_worker

    overrides = {k: v for k, v in {"rules_dir": rules_dir, "kafka_bootstrap": kafka_bootstrap,
                                    "http_port": http_port}.items() if v is not None}
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_json)
    run_worker(settings)


@main.command("up")
@click.option("--rules", "rules", default=None, type=click.Path(exists=True, path_type=Path),
              help="Rules directory (default: the bundled demo rules).")
@click.option("--speed", default=60.0, show_default=True, type=float,
              help="Demo feed pace: simulated seconds per wall-clock second.")
@click.option("--duration", default=None, type=float, help="Stop by itself after this many seconds.")
@click.option("--no-demo", is_flag=True, help="Start the broker, Redis and worker only; send no demo traffic.")
def up_command(rules: Path | None, speed: float, duration: float | None, no_demo: bool) -> None:
    """Run everything here: embedded Kafka and Redis (unless SPENDWARDEN_KAFKA_BOOTSTRAP /
    SPENDWARDEN_REDIS_URL are set), the worker, and the demo day sped up, printed live."""
    from spendwarden.up import run_up

    run_up(rules, speed, duration, not no_demo)


@main.group("rules")
def rules_group() -> None:
    """Check and test rule files."""


@rules_group.command("lint")
@click.argument("path")
def rules_lint(path: str) -> None:
    """Validate rule files in PATH: errors with file:line:column, warnings for slow or unused rules."""
    from spendwarden.rules.loader import lint

    messages = lint(path)
    for message in messages:
        click.echo(str(message))
    errors = sum(1 for m in messages if m.severity == "error")
    if errors:
        sys.exit(1)
    click.echo(f"ok: {path} ({len(messages)} notes)", err=True)


@rules_group.command("test")
@click.argument("path")
def rules_test(path: str) -> None:
    """Run rule tests (tests/*.test.yaml beside the rules) like `promtool test rules`."""
    from spendwarden.rules.testing import run_rule_tests

    results = run_rule_tests(path)
    failed = [r for r in results if not r.passed]
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        click.echo(f"{mark}  {result.file}: {result.name}")
        for problem in result.problems:
            click.echo(f"      {problem}")
    click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        sys.exit(1)


@rules_group.command("push")
@click.argument("path")
@click.option("--kafka", "kafka_bootstrap", envvar="SPENDWARDEN_KAFKA_BOOTSTRAP", required=True,
              help="Kafka bootstrap host:port (env SPENDWARDEN_KAFKA_BOOTSTRAP).")
@click.option("--topic", default="spendwarden.rules", show_default=True, envvar="SPENDWARDEN_RULES_TOPIC",
              help="Compacted topic the workers follow.")
def rules_push(path: str, kafka_bootstrap: str, topic: str) -> None:
    """Lint PATH and publish it as the rule set every worker runs (workers follow --topic)."""
    import asyncio

    from spendwarden.embedded import TopicSpec, create_topics
    from spendwarden.kafka_security import aiokafka_options
    from spendwarden.settings import load_settings
    from spendwarden.streams.rules_topic import pack_ruleset, push

    ruleset, record = pack_ruleset(path)
    options = aiokafka_options(load_settings())  # TLS/SASL settings apply here too
    asyncio.run(create_topics(kafka_bootstrap, [TopicSpec(topic, partitions=1, compacted=True)], options))
    asyncio.run(push(kafka_bootstrap, topic, record, options))
    click.echo(f"pushed rules {ruleset.version} ({len(ruleset.rules)} rules, {len(ruleset.budgets)} budgets) to {topic}")


@main.command("schema")
@click.argument("name", type=click.Choice(["cost-event", "outcome"]))
def schema_command(name: str) -> None:
    """Print the JSON Schema of a record kind."""
    from spendwarden.streams.events import json_schema

    click.echo(json.dumps(json_schema(name), indent=2))


@main.group("pricebook")
def pricebook_group() -> None:
    """Work with pricebooks."""


@pricebook_group.command("import-litellm")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--version", "version", required=True, help="Version name for the new price table.")
@click.option("--effective-from", required=True, help="When the prices apply (ISO 8601).")
def pricebook_import(path: str, version: str, effective_from: str) -> None:
    """Convert LiteLLM's model price map JSON into pricebook YAML (printed)."""
    from spendwarden.streams.pricebook import dump_yaml, import_litellm

    try:
        data = json.loads(Path(path).read_text())
    except ValueError as exc:
        _fail(f"{path}: not JSON ({exc})")
    start = _parse_time(effective_from, "--effective-from")
    assert start is not None
    click.echo(dump_yaml(import_litellm(data, version, datetime.fromtimestamp(start, timezone.utc))))


from spendwarden.cli_alerts import alerts_group, silence_group  # noqa: E402 - registered after main exists
from spendwarden.cli_overrides import override_group  # noqa: E402
from spendwarden.cli_router import router_command  # noqa: E402
from spendwarden.cli_scenario import scenario_command  # noqa: E402
from spendwarden.cli_showback import report_group  # noqa: E402
from spendwarden.cli_status import status_command  # noqa: E402

main.add_command(override_group)
main.add_command(status_command)
main.add_command(scenario_command)
main.add_command(alerts_group)
main.add_command(silence_group)
main.add_command(router_command)
main.add_command(report_group)

if __name__ == "__main__":  # pragma: no cover
    main()
