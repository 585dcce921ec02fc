"""Rule sets travel on a compacted Kafka topic so every worker runs the same version.

``spendwarden rules push DIR`` lints the directory and writes one record (key ``ruleset``)
holding every YAML file's text; each worker reads the topic from the start outside its
consumer group (every worker must see every push), and swaps rules only when the pushed set
loads cleanly. Compaction keeps the newest set, so a new worker starts with it.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

import orjson

from spendwarden.logs import get_logger
from spendwarden.rules.compiler import RuleSet
from spendwarden.rules.loader import load_ruleset, rule_files

log = get_logger("spendwarden.rules_topic")
RULESET_KEY = b"ruleset"


def pack_ruleset(path: str | Path) -> tuple[RuleSet, bytes]:
    """Load (and so lint) a rules directory, and the record that carries it."""
    ruleset = load_ruleset(path)
    files = {p.name: p.read_text() for p in rule_files(path)}
    record = orjson.dumps({"version": ruleset.version, "files": files, "pushed_at": time.time(),
                           "pushed_by": _user()})
    return ruleset, record


def unpack_ruleset(record: bytes, folder: Path) -> RuleSet:
    """Write a pushed set's files into ``folder`` (emptied first) and load them."""
    payload = orjson.loads(record)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.y*ml"):
        old.unlink()
    for name, text in payload["files"].items():
        safe = Path(name).name  # never write outside the folder
        (folder / safe).write_text(text)
    return load_ruleset(folder)


async def push(bootstrap: str, topic: str, record: bytes, client_options: dict[str, Any] | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(client_options or {}))
    await producer.start()
    try:
        await producer.send_and_wait(topic, record, key=RULESET_KEY)
    finally:
        await producer.stop()


async def follow(bootstrap: str, topic: str, on_record: Callable[[bytes], Awaitable[None]],
                 stop: Optional[asyncio.Event] = None, fetch_wait_ms: int = 100,
                 client_options: dict[str, Any] | None = None) -> None:
    """Read ``topic`` from the beginning, forever, calling ``on_record`` with each pushed set.

    No consumer group: every worker must see every push. Errors are logged and retried; a
    rules feed must never take the worker down.
    """
    from aiokafka import AIOKafkaConsumer

    stop = stop or asyncio.Event()
    while not stop.is_set():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms,
                                    metadata_max_age_ms=2000, **(client_options or {}))
        try:
            await consumer.start()
            log.info("following rules topic", topic=topic)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=1000)
                for messages in batches.values():
                    for message in messages:
                        if message.key == RULESET_KEY and message.value:
                            await on_record(message.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - log and retry, never crash the worker
            log.warning("rules topic unavailable, retrying", error=type(exc).__name__)
            await asyncio.sleep(2)
        finally:
            await consumer.stop()


def pushed_rules_folder(data_dir: Path) -> Path:
    return Path(data_dir) / "pushed-rules"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"

