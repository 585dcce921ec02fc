"""Event file readers for replay: JSONL (plain or gzip), CSV, Parquet and stdin.

Readers only split a file into records; they never decode or validate, so a bad record
reaches the validation step with its position and is rejected there with a reason instead
of stopping the replay. JSONL lines are yielded as raw bytes because replay's throughput is
measured against a bare ``for line in f: orjson.loads(line)`` loop.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import os
import sys
import zlib
from collections.abc import Iterator
from typing import IO, Any

from spendwarden.exceptions import ConfigError

Record = bytes | dict[str, Any]

FORMATS = ".jsonl, .ndjson, .json (one JSON value per line), .jsonl.gz, .csv, .parquet, or - for stdin"
_JSONL = (".jsonl", ".ndjson", ".json")
_GZIP = (".jsonl.gz", ".ndjson.gz", ".json.gz")
_INT_FIELDS = frozenset({"input_tokens", "output_tokens", "cached_tokens", "api_calls", "schema_version"})
_FLOAT_FIELDS = frozenset({"gpu_seconds"})
_BUFFER = 1 << 20


class EventSource:
    """Records of one input as ``(position, record)``, with byte counts for a progress bar.

    ``position`` is the 1-based line (JSONL) or data row (CSV, Parquet) so a rejected record
    can be found in the file. ``total_bytes`` is None for stdin. Iterate once.
    """

    def __init__(self, path: str, kind: str, total_bytes: int | None) -> None:
        self.path = path
        self.kind = kind
        self.total_bytes = total_bytes
        self._raw: IO[bytes] | None = None
        self._counted = 0  # bytes seen where the stream cannot tell() (stdin, Parquet)

    @property
    def bytes_read(self) -> int:
        """Bytes consumed so far (compressed bytes for gzip); asked per refresh, not per line."""
        raw = self._raw
        if raw is not None and not raw.closed:
            try:
                return raw.tell()
            except (OSError, ValueError):
                pass
        return self._counted

    def __iter__(self) -> Iterator[tuple[int, Record]]:
        if self.kind == "jsonl":
            return self._lines(self._open_file())
        if self.kind == "gzip":
            raw = self._open_file()
            return self._lines(io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _BUFFER))
        if self.kind == "stdin":
            return self._stdin_lines()
        if self.kind == "csv":
            return self._csv_rows(self._open_file())
        return self._parquet_rows()

    def _open_file(self) -> IO[bytes]:
        try:
            self._raw = open(self.path, "rb", buffering=_BUFFER)  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
        return self._raw

    def _lines(self, fh: IO[bytes]) -> Iterator[tuple[int, Record]]:
        try:
            for number, line in enumerate(fh, 1):
                line = line.rstrip(b"\r\n")
                if line and not line.isspace():
                    yield number, line
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ConfigError(f"cannot read {self.path}: not a readable gzip file ({exc})") from None
        finally:
            if self._raw is not None:
                self._counted = self.bytes_read
            fh.close()
            if self._raw is not None:
                self._raw.close()  # GzipFile leaves the file it was handed open

    def _stdin_lines(self) -> Iterator[tuple[int, Record]]:
        # A pipe cannot tell(), so stdin counts bytes itself; the extra add is per line.
        counted = 0
        number = 0
        try:
            for number, line in enumerate(sys.stdin.buffer, 1):
                counted += len(line)
                line = line.rstrip(b"\r\n")
                if line and not line.isspace():
                    if number & 1023 == 0:
                        self._counted = counted
                    yield number, line
        finally:
            self._counted = counted

    def _csv_rows(self, fh: IO[bytes]) -> Iterator[tuple[int, Record]]:
        try:
            # csv.reader takes any line iterable, so binary lines keep fh.tell() usable.
            rows = csv.reader(line.decode("utf-8") for line in fh)
            header = next(rows, None)
            if header is None:
                return
            header = [name.strip().lstrip("\ufeff") for name in header]
            for number, row in enumerate(rows, 1):
                if any(cell.strip() for cell in row):
                    yield number, _csv_record(header, row)
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read {self.path}: not UTF-8 text ({exc.reason})") from None
        finally:
            self._counted = self.bytes_read
            fh.close()

    def _parquet_rows(self) -> Iterator[tuple[int, Record]]:
        parquet = _pyarrow_parquet()
        pfile = parquet.ParquetFile(self.path)
        rows_total = max(pfile.metadata.num_rows, 1)
        number = 0
        for batch in pfile.iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                number += 1
                yield number, {key: value for key, value in row.items() if value is not None}
            self._counted = (self.total_bytes or 0) * number // rows_total


def _csv_record(header: list[str], row: list[str]) -> dict[str, Any]:
    """One CSV row as a dict: empty cells absent, counts as numbers, money left as exact text."""
    record: dict[str, Any] = {}
    for name, cell in zip(header, row):
        if cell == "":
            continue
        value: Any = cell
        try:
            if name in _INT_FIELDS:
                value = int(cell)
            elif name in _FLOAT_FIELDS:
                value = float(cell)
        except ValueError:
            pass  # kept as text: validation rejects it with the field and value
        record[name] = value
    return record


def _pyarrow_parquet() -> Any:
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ConfigError("reading Parquet needs pyarrow: pip install 'spendwarden[parquet]'") from None
    return parquet


def _kind(path: str) -> str | None:
    name = path.lower()
    if name.endswith(_GZIP):
        return "gzip"
    if name.endswith(_JSONL):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet"):
        return "parquet"
    return None


def open_events(path: str) -> EventSource:
    """Open an event file by its extension; ``-`` reads JSONL from stdin.

    Errors are found here, before a replay starts: unknown format, missing file, or Parquet
    without pyarrow each raise ConfigError with one line naming the path.
    """
    if path == "-":
        return EventSource(path, "stdin", None)
    kind = _kind(path)
    if kind is None:
        raise ConfigError(f"cannot read {path}: unknown format; use {FORMATS}")
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or 'not found'} (formats: {FORMATS})") from None
    if not os.path.isfile(path):
        raise ConfigError(f"cannot read {path}: not a file (formats: {FORMATS})")
    if kind == "parquet":
        _pyarrow_parquet()
    return EventSource(path, kind, stat.st_size)
