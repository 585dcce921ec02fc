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

from spendwarden.rules.compiler import RuleSet
from spendwarden.rules.loader import load_ruleset, rule_files

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
    """Call ``on_record`` with each pushed set, forever (every worker reads every push)."""
    from spendwarden.streams.follow import follow_topic

    async def on_message(key: Optional[bytes], value: Optional[bytes]) -> None:
        if key == RULESET_KEY and value:
            await on_record(value)

    await follow_topic(bootstrap, topic, on_message, stop=stop, fetch_wait_ms=fetch_wait_ms,
                       client_options=client_options)


def pushed_rules_folder(data_dir: Path) -> Path:
    return Path(data_dir) / "pushed-rules"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"

