"""Records the stream never delivers are read directly, so a checkpoint and commit that
disagree cannot lose money (docs/service.md, "Records Faust skips")."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from decimal import Decimal

from harness import WorkerRun, encode, event, produce
from spendwarden.embedded import TopicSpec, create_topics
from spendwarden.streams.checkpoint import encode_key, encode_value
from spendwarden.streams.refetch import Refetcher
from test_worker import run  # noqa: F401 - the worker fixture


def test_refetcher_reads_exactly_the_range_asked(run: WorkerRun) -> None:  # noqa: F811
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, "1") for i in range(12)))
    (partition, end), = ends.items()

    async def read() -> list[int]:
        refetcher = Refetcher(run.bootstrap, run.topics["events"])
        try:
            return [r.offset for r in await refetcher.read(partition, 3, 7)]
        finally:
            await refetcher.close()

    assert end == 12
    assert asyncio.run(read()) == [3, 4, 5, 6]


def test_a_commit_ahead_of_the_checkpoint_marker_is_filled_in_before_counting(run: WorkerRun) -> None:  # noqa: F811
    """The state says "next is offset 5", the group says "resume at 10": offsets 5..9 were
    acknowledged without being counted, which is what Faust's skip produces. The worker must
    count them anyway."""
    costs = [f"0.{i + 1:02d}0000001" for i in range(20)]
    ends = produce(run.bootstrap, run.topics["events"], encode(event(i, costs[i]) for i in range(20)))
    (partition, end), = ends.items()
    assert end == 20
    changelog = f"{run.app_id}-engine-state-changelog"

    async def prepare() -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.structs import OffsetAndMetadata

        await create_topics(run.bootstrap, [TopicSpec(changelog, 4, compacted=True)])
        producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap)
        await producer.start()
        marker = {"next_offset": 5, "deltas_next": 0, "written_at": time.time()}
        await producer.send_and_wait(changelog, encode_value(marker), key=encode_key(partition, ("checkpoint",)),
                                     partition=partition)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, group_id=run.app_id, enable_auto_commit=False)
        await consumer.start()
        tp = TopicPartition(run.topics["events"], partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(10, "")})
        await consumer.stop()

    asyncio.run(prepare())
    run.start()
    run.wait_ready()
    run.wait_offsets({partition: 20})
    totals = run.totals()
    # Offsets 0..4 are "in the checkpoint" (which is empty here), 5..19 must all be counted.
    assert sum(totals.values()) == sum(Decimal(c) for c in costs[5:])
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    refetched = re.search(r"^spendwarden_refetched_records_total ([0-9.e+]+)$", metrics, re.M)
    # 5..9 at least; Faust often skips the first record it fetches after recovery too (10).
    assert refetched is not None and float(refetched.group(1)) >= 5
