"""Event file readers: every format yields (position, record) and fails early with one line."""

from __future__ import annotations

import gzip
import io
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from spendwarden.exceptions import ConfigError
from spendwarden.replay.readers import open_events
from spendwarden.streams.events import CostEvent

EVENTS = [
    {"cost_event_id": f"e{i}", "ts": "2026-11-24T10:00:00.000Z", "tenant_id": "acme", "input_tokens": i}
    for i in range(1, 4)
]
JSONL = b"\n".join(orjson.dumps(e) for e in EVENTS) + b"\n"


def test_jsonl_yields_raw_lines_with_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    """JSONL lines come back as bytes without the newline; blank lines are skipped but counted."""
    lines = JSONL.split(b"\n")
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines[0] + b"\n\n   \n" + lines[1] + b"\r\n" + lines[2] + b"\n\n")
    source = open_events(str(path))
    assert source.total_bytes == path.stat().st_size
    assert list(source) == [(1, lines[0]), (4, lines[1]), (5, lines[2])]
    assert source.bytes_read == source.total_bytes


@pytest.mark.parametrize("suffix", [".ndjson", ".json", ".JSONL"])
def test_other_jsonl_extensions_read_the_same(tmp_path: Path, suffix: str) -> None:
    """.ndjson and .json (one value per line) read like .jsonl, case-insensitively."""
    path = tmp_path / f"events{suffix}"
    path.write_bytes(JSONL)
    assert [orjson.loads(rec) for _, rec in open_events(str(path))] == EVENTS


def test_gzip_round_trips(tmp_path: Path) -> None:
    """.jsonl.gz is decompressed on the fly; bytes_read counts compressed bytes."""
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(JSONL))
    source = open_events(str(path))
    assert [(n, orjson.loads(rec)) for n, rec in source] == list(enumerate(EVENTS, 1))
    assert source.bytes_read == source.total_bytes == path.stat().st_size


def test_corrupt_gzip_is_a_config_error(tmp_path: Path) -> None:
    """A .gz file that is not gzip fails with a one-line ConfigError naming the path."""
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(JSONL)
    with pytest.raises(ConfigError, match="events.jsonl.gz"):
        list(open_events(str(path)))


def test_csv_converts_counts_keeps_money_exact_and_drops_empty_cells(tmp_path: Path) -> None:
    """CSV cells: empty = absent, token counts int, gpu_seconds float, money an exact string."""
    path = tmp_path / "events.csv"
    path.write_text(
        "\ufeffcost_event_id,ts,tenant_id,input_tokens,cached_tokens,gpu_seconds,allocated_cost_usd,unit_price\n"
        "e1,2026-11-24T10:00:00Z,acme,1200,,0.5,0.000000123,\n"
        "\n"
        'e2,2026-11-24T10:00:01Z,"acme",12x,3,,0.1,0.30\n',
        encoding="utf-8",
    )
    source = open_events(str(path))
    rows = list(source)
    assert rows == [
        (1, {"cost_event_id": "e1", "ts": "2026-11-24T10:00:00Z", "tenant_id": "acme",
             "input_tokens": 1200, "gpu_seconds": 0.5, "allocated_cost_usd": "0.000000123"}),
        (3, {"cost_event_id": "e2", "ts": "2026-11-24T10:00:01Z", "tenant_id": "acme",
             "input_tokens": "12x", "cached_tokens": 3, "allocated_cost_usd": "0.1", "unit_price": "0.30"}),
    ]
    assert CostEvent.model_validate(rows[0][1]).allocated_cost_usd == Decimal("0.000000123")
    with pytest.raises(ValueError, match="input_tokens"):
        CostEvent.model_validate(rows[1][1])
    assert source.bytes_read == source.total_bytes


def test_stdin_reads_jsonl_without_a_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads JSONL from stdin's binary buffer; total_bytes is None, bytes_read counts."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n" + JSONL)))
    source = open_events("-")
    assert source.total_bytes is None
    assert [n for n, _ in source] == [2, 3, 4]
    assert source.bytes_read == len(JSONL) + 1


def test_parquet_round_trips(tmp_path: Path) -> None:
    """Parquet rows come back as dicts with 1-based row numbers, nulls dropped."""
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (spendwarden[parquet])")
    import pyarrow.parquet as pq

    rows = [dict(e, cache_status=None if i else "hit") for i, e in enumerate(EVENTS)]
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    got = list(open_events(str(path)))
    assert got == [(1, dict(EVENTS[0], cache_status="hit")), (2, EVENTS[1]), (3, EVENTS[2])]


def test_parquet_without_pyarrow_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pyarrow a .parquet path fails at open with the pip command."""
    path = tmp_path / "events.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r"pip install 'spendwarden\[parquet\]'"):
        open_events(str(path))


def test_unknown_extension_is_a_config_error(tmp_path: Path) -> None:
    """An unknown extension names the path and the accepted formats on one line."""
    path = tmp_path / "events.txt"
    path.write_bytes(JSONL)
    with pytest.raises(ConfigError) as info:
        open_events(str(path))
    message = str(info.value)
    assert str(path) in message and ".jsonl" in message and ".parquet" in message and "\n" not in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file fails at open, naming the path and the accepted formats."""
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match="nope.jsonl.*No such file.*csv"):
        open_events(str(path))
