"""`spendwarden up`: the whole system on one machine in one command, with a live demo feed.

Someone trying spendwarden should see it work without installing Kafka or Redis: `up` starts an
embedded broker and Redis (unless SPENDWARDEN_KAFKA_BOOTSTRAP / SPENDWARDEN_REDIS_URL name real
ones), creates the topics, runs `spendwarden worker` as a child process, feeds it the bundled
demo day sped up and prints what the worker decides. Whatever it started it stops again on every
way out (Ctrl-C, SIGTERM, --duration, an error): a demo must not leave servers behind.

The feed stamps each event with the wall clock when it is sent, because the worker counts into
*today's* periods and refuses events from the future. The simulated day up to 10:38 New York
goes first, squeezed into the two minutes before now, so today's budgets already hold the
morning and the first minutes of acme's agent loop (from 10:30); then the day runs live at
--speed simulated seconds per wall second. At 60x the loop alerts ~20 s after the feed starts
and is degraded, then blocked, within its first minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any, Optional
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from spendwarden import logs
from spendwarden.embedded import EmbeddedBroker, EmbeddedRedis, TopicSpec, create_topics, free_port
from spendwarden.exceptions import SpendwardenError
from spendwarden.redis_client import RedisTarget, redis_target, sync_client
from spendwarden.rules.loader import load_ruleset
from spendwarden.settings import Settings, load_settings

LIVE_FROM = timedelta(hours=10, minutes=38)  # simulated New York time where the live feed starts
PRELOAD_SPAN_S = 120.0  # the simulated day before LIVE_FROM is stamped into this many seconds before now
STATUS_EVERY_S = 2.0
READY_TIMEOUT_S = 120.0
WORKER_STOP_S = 10.0
NEW_YORK = ZoneInfo("America/New_York")


class UpError(SpendwardenError):
    """Something `up` runs failed (port taken, worker died): the CLI prints one line, exit 2."""


class _Stopped(Exception):
    """A signal arrived during startup: skip the remaining steps and go straight to cleanup."""


def _out(line: str) -> None:
    print(line, flush=True)  # flushed per line: `up` is often piped (CI, tee) and must show live


def _now() -> str:
    return time.strftime("%H:%M:%S")


def bundled_rules() -> Path:
    return Path(str(files("spendwarden.replay") / "data" / "demo-rules"))


class Stack:
    """What this run started, so every way out stops exactly that and nothing else."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="spendwarden-up-"))
        self.worker_log = self.workdir / "worker.log"
        self.broker: Optional[EmbeddedBroker] = None
        self.redis: Optional[EmbeddedRedis] = None
        self.worker: Optional[subprocess.Popen[bytes]] = None
        self.base_url = ""
        self.stop_requested = False

    def on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        """Only sets a flag that startup steps and the live loop check: an exception raised in the
        middle of Popen could lose the pid of a child it had just started."""
        if not self.stop_requested:
            _out(f"\n{signal.Signals(signum).name}: stopping")
        self.stop_requested = True

    def checkpoint(self) -> None:
        if self.stop_requested:
            raise _Stopped

    def check_worker(self) -> None:
        code = self.worker.poll() if self.worker is not None else None
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise UpError(f"the worker {how}; its log: {self.worker_log}")

    def stop(self) -> None:
        """Worker first (it still writes to the broker and Redis), then the broker, then Redis."""
        proc, self.worker = self.worker, None
        if proc is not None:
            _killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                pass
            _killpg(proc.pid, signal.SIGKILL)  # a worker stuck in shutdown, and anything it left
            proc.wait(5)
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop(remove_log=False)  # keep tansu.log for whoever reads the logs afterwards
        redis, self.redis = self.redis, None
        if redis is not None:
            redis.stop()
        shutil.rmtree(self.workdir / "worker-data", ignore_errors=True)


def _killpg(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True made the pid the group id
    except (ProcessLookupError, PermissionError):
        pass


def _http_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _redis_pid(target: RedisTarget) -> Optional[int]:
    """None when nothing answers PING (an error before the worker starts, not retries in its log);
    else the server's pid from INFO (0 if refused), printed so one can check it is gone later."""
    import redis

    # The named node itself, even of a cluster: its pid is what `up` prints.
    client = sync_client(replace(target, cluster=False), timeout_s=2, connect_timeout_s=2)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        return None
    try:
        return int(client.info("server").get("process_id", 0))
    except (redis.RedisError, OSError, ValueError):
        return 0
    finally:
        client.close()


def _start(stack: Stack, settings: Settings, rules_dir: Path) -> str:
    """Broker, Redis, topics and worker, in that order; returns the bootstrap address when ready."""
    port = settings.http_port if "http_port" in settings.model_fields_set else free_port()
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise UpError(f"port {port} (SPENDWARDEN_HTTP_PORT) is taken: free it or choose another")
    if settings.kafka_bootstrap:
        bootstrap = settings.kafka_bootstrap
        _out(f"kafka   {bootstrap} (SPENDWARDEN_KAFKA_BOOTSTRAP)")
    else:
        stack.broker = EmbeddedBroker(log_dir=stack.workdir)
        bootstrap = stack.broker.start()
        pid = stack.broker.process.pid if stack.broker.process else "?"
        _out(f"kafka   embedded Tansu broker at {bootstrap}  pid {pid}  log {stack.broker.log_path}")
    stack.checkpoint()
    if settings.redis_url is not None:
        target = redis_target(settings)
        where = urlsplit(target.url).netloc.rsplit("@", 1)[-1]  # never print a password
        if _redis_pid(target) is None:
            raise UpError(f"no Redis answers PING at {where} (SPENDWARDEN_REDIS_URL)")
        _out(f"redis   {where} (SPENDWARDEN_REDIS_URL)")
    else:
        stack.redis = EmbeddedRedis()
        _out(f"redis   embedded Valkey at {stack.redis.start()}  pid {_redis_pid(RedisTarget(stack.redis.url))}")
    stack.checkpoint()
    specs = [TopicSpec(settings.cost_topic, settings.partitions), TopicSpec(settings.dead_letter_topic),
             TopicSpec(settings.alerts_topic), TopicSpec(settings.decisions_topic, compacted=True),
             TopicSpec(settings.late_topic)]
    if settings.traces_topic:
        specs.append(TopicSpec(settings.traces_topic, settings.partitions))
    if settings.outcomes_topic:
        specs.append(TopicSpec(settings.outcomes_topic, settings.partitions))
    try:
        asyncio.run(asyncio.wait_for(create_topics(bootstrap, specs), 30))
    except SpendwardenError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable broker, timeout: say where, not how
        detail = str(exc) or type(exc).__name__
        raise UpError(f"could not create topics on Kafka at {bootstrap}: {detail}") from None
    stack.checkpoint()
    env = dict(os.environ, SPENDWARDEN_KAFKA_BOOTSTRAP=bootstrap, SPENDWARDEN_RULES_DIR=str(rules_dir),
               SPENDWARDEN_DATA_DIR=str(stack.workdir / "worker-data"), SPENDWARDEN_HTTP_PORT=str(port))
    if stack.redis is not None:
        env["SPENDWARDEN_REDIS_URL"] = stack.redis.url
    with open(stack.worker_log, "ab") as log:
        # Its own session: a terminal's Ctrl-C reaches only `up`, which then stops the worker in order.
        stack.worker = subprocess.Popen([sys.executable, "-m", "spendwarden.cli", "worker"], env=env,
                                        cwd=stack.workdir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    stack.base_url = f"http://{host}:{port}"
    _out(f"worker  pid {stack.worker.pid}  rules {rules_dir}  {stack.base_url}/metrics  "
         f"log {stack.worker_log}")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        stack.checkpoint()
        stack.check_worker()
        try:
            status, body = _http_json(stack.base_url + "/readyz")
            if status == 200 and body and body.get("ready"):
                return bootstrap
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise UpError(f"the worker was not ready after {READY_TIMEOUT_S:g} s; "
                          f"its log: {stack.worker_log}")
        time.sleep(0.25)


class DemoFeed:
    """The bundled demo day as live traffic: the morning preloaded, then paced at ``speed``, looping."""

    def __init__(self, producer: Any, topic: str, speed: float) -> None:
        self.producer, self.topic, self.speed = producer, topic, speed
        self.sent = 0
        self.nonce = os.urandom(3).hex()  # fresh event ids per run: a rerun on a real Kafka is new traffic
        self._sim0: Optional[float] = None
        self._clock0 = 0.0

    def sim_now(self) -> Optional[datetime]:
        if self._sim0 is None:
            return None
        return datetime.fromtimestamp(self._sim0 + (time.monotonic() - self._clock0) * self.speed, NEW_YORK)

    async def _send(self, event: dict[str, Any], lap: int, ts: float) -> None:
        stamp = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
        stamp = stamp.replace("+00:00", "Z")
        event = dict(event, ts=stamp, cost_event_id=f"{event['cost_event_id']}-{self.nonce}-{lap}",
                     trace_id=f"{event['trace_id']}-{self.nonce}-{lap}")
        await self.producer.send(self.topic, orjson.dumps(event), key=event["tenant_id"].encode())
        self.sent += 1

    async def run(self) -> None:
        from spendwarden.replay.scenario import DEMO_START, demo_incident, demo_tenants, generate

        def day() -> list[tuple[float, dict[str, Any]]]:
            events = generate(start=DEMO_START, hours=24, tenants=demo_tenants(), seed=7,
                              incidents=[demo_incident()])
            return [(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp(), e) for e in events]

        events = await asyncio.to_thread(day)
        start = DEMO_START.timestamp()
        live_from = start + LIVE_FROM.total_seconds()
        now = time.time()
        # Never stamp the morning into yesterday of any tenant's zone: its spend would miss today.
        since_midnight = min(now - datetime.now(ZoneInfo(t.timezone)).replace(
            hour=0, minute=0, second=0, microsecond=0).timestamp() for t in demo_tenants())
        span = max(0.5, min(PRELOAD_SPAN_S, since_midnight - 1))
        morning = [e for ts, e in events if ts < live_from]
        for i, event in enumerate(morning):
            await self._send(event, 0, now - span + span * i / len(morning))
        await self.producer.flush()
        _out(f"{_now()}  demo: sent the simulated day up to {str(LIVE_FROM)[:-3]} New York at once "
             f"({len(morning):,} events; acme's drafting agent has been looping since 10:30); "
             f"now live at {self.speed:g}x")
        lap, sim0 = 0, live_from
        while True:
            self._sim0, self._clock0 = sim0, time.monotonic()
            for ts, event in events:
                if ts >= sim0:
                    delay = self._clock0 + (ts - sim0) / self.speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._send(event, lap, time.time())
            lap, sim0 = lap + 1, start
            _out(f"{_now()}  demo: the simulated day is over; starting it again (lap {lap})")


class Watcher:
    """Prints each decision change and alert the worker publishes, when it publishes it."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.topics = topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         fetch_max_wait_ms=100)
        self.decisions = self.alerts = 0

    async def start(self) -> None:
        """Partitions assigned by hand, at their end: no group-join wait, only what happens from now."""
        await self.consumer.start()
        await self.consumer.topics()  # loads the metadata partitions_for_topic reads
        tps = [TopicPartition(topic, partition) for topic in self.topics
               for partition in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)

    async def run(self) -> None:
        from spendwarden.cli import describe

        while True:
            for records in (await self.consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    effect: Any = None
                    try:
                        effect = SimpleNamespace(**orjson.loads(record.value))
                        line = describe(effect)
                    except Exception:  # noqa: BLE001 - a foreign record must not stop the display
                        line = f"(unreadable record on {record.topic} at offset {record.offset})"
                    self.decisions += getattr(effect, "kind", "") == "decision"
                    self.alerts += getattr(effect, "kind", "") == "alert_firing"
                    _out(line)


def _tenant_spend(budgets: list[dict[str, Any]], ruleset: Any) -> tuple[str, dict[str, Decimal]]:
    """Spend today per tenant from a tenant-wide daily budget when the rules have one, else the
    tenant's largest daily budget; the label says which, so the figure is never mistaken."""
    day = {b.name for b in ruleset.budgets if b.spec.period == "day"}
    whole = {b.name for b in ruleset.budgets
             if b.name in day and b.spec.for_each == ["tenant_id"] and not b.spec.scope}
    newest: dict[tuple[str, str, tuple[str, ...]], tuple[str, Decimal]] = {}
    for row in budgets:
        key = (row["tenant"], row["budget"], tuple(row["instance"]))
        wanted = row["tenant"] != "*" and row["budget"] in (whole or day)
        if wanted and row["period"] >= newest.get(key, ("",))[0]:
            newest[key] = (row["period"], Decimal(row["spend_usd"]))  # the latest period is today
    spend: dict[str, Decimal] = {}
    for (tenant, _, _), (_, usd) in newest.items():
        spend[tenant] = max(spend.get(tenant, Decimal(0)), usd)
    return ("spend today" if whole else "largest daily budget"), spend


def _worker_numbers(base_url: str) -> tuple[int, list[dict[str, Any]]]:
    with urllib.request.urlopen(base_url + "/metrics", timeout=3) as response:
        text = response.read().decode()
    counted = next((int(float(line.split()[1])) for line in text.splitlines()
                    if line.startswith("spendwarden_events_total ")), 0)
    return counted, _http_json(base_url + "/budgets")[1]["budgets"]


async def _status(stack: Stack, feed: Optional[DemoFeed], ruleset: Any) -> None:
    """One line every few seconds: what the feed sends, what the worker counted, spend per tenant."""
    last_sent, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(STATUS_EVERY_S)
        line = f"{_now()} STATUS  "
        if feed is not None:
            now, sent, sim = time.monotonic(), feed.sent, feed.sim_now()
            line += f"demo {sim:%H:%M} NY  " if sim else "demo preloading  "
            line += f"sent {(sent - last_sent) / (now - last_t):,.0f}/s ({sent:,})  "
            last_sent, last_t = sent, now
        try:
            counted, budgets = await asyncio.to_thread(_worker_numbers, stack.base_url)
            label, spend = _tenant_spend(budgets, ruleset)
            ranked = sorted(spend.items(), key=lambda item: -item[1])
            tenants = "  ".join(f"{tenant} ${usd:,.2f}" for tenant, usd in ranked) or "-"
            line += f"worker counted {counted:,}  {label}: {tenants}"
        except (OSError, ValueError, TypeError, KeyError):
            line += "worker not answering"
        _out(line)


async def _live(stack: Stack, settings: Settings, bootstrap: str, ruleset: Any, speed: float,
                duration: Optional[float], demo: bool, started: float) -> None:
    """Feed, watch and report until a signal, --duration, or a failure (the worker dying)."""
    watcher = Watcher(bootstrap, [settings.decisions_topic, settings.alerts_topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    feed = DemoFeed(producer, settings.cost_topic, speed) if demo else None
    tasks: list[asyncio.Task[None]] = []
    try:
        await watcher.start()
        await producer.start()
        _out(f"{_now()}  ready in {time.monotonic() - started:.1f} s; Ctrl-C stops everything")
        tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(_status(stack, feed, ruleset))]
        tasks += [asyncio.create_task(feed.run())] if feed else []
        while not stack.stop_requested:
            if duration is not None and time.monotonic() - started >= duration:
                _out(f"{_now()}  --duration {duration:g} s reached: stopping")
                break
            stack.check_worker()
            for task in tasks:
                if task.done():
                    task.result()  # re-raises what broke the feed, the watcher or the status line
            await asyncio.sleep(0.2)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(producer.stop(), watcher.consumer.stop(), return_exceptions=True)
        _out(f"during this run: {watcher.decisions} decision changes, {watcher.alerts} alerts fired"
             + (f", {feed.sent:,} events sent" if feed else ""))


def run_up(rules: Optional[Path], speed: float, duration: Optional[float], demo: bool) -> None:
    """The `up` command; --duration counts from the start of the command, startup included."""
    started = time.monotonic()
    logs.configure("warning", json=False)  # our lines on stdout; library chatter only when it matters
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connect errors become our one line
    if speed <= 0:
        raise UpError("--speed must be above 0")
    settings = load_settings()
    rules_dir = (rules or bundled_rules()).resolve()
    ruleset = load_ruleset(rules_dir)  # a broken rules dir fails here, before anything starts
    stack = Stack()
    previous = {sig: signal.signal(sig, stack.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bootstrap = _start(stack, settings, rules_dir)
        asyncio.run(_live(stack, settings, bootstrap, ruleset, speed, duration, demo, started))
    except _Stopped:
        pass
    except KafkaError as exc:
        raise UpError(f"Kafka failed: {exc}") from None
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the cleanup short and leave servers running
            signal.signal(sig, signal.SIG_IGN)
        _out("stopping what this command started")
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _out(f"stopped; logs are in {stack.workdir}")
