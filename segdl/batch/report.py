"""The report of a batch: one row per input item, streamed as JSON Lines, CSV or TSV, and read back.

The format follows the file's extension. Rows are buffered in memory and written whole, so the
file on disk always ends at a row boundary: a run that is killed leaves a readable prefix, at most
`flush_every` rows or `flush_interval` seconds behind. `read_report` ignores a last row cut short,
which is what a crash in the middle of a write leaves behind.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..errors import DestinationError, DiskFullError, UsageError

__all__ = ["COLUMNS", "EXTENSIONS", "STATUSES", "ReportRow", "ReportWriter", "read_report"]

COLUMNS = (
    "index",
    "url",
    "path",
    "status",
    "http_status",
    "bytes",
    "seconds",
    "attempts",
    "error",
    "protocol",
)
# A report from before "protocol" was added is still read (the column is None there).
_REQUIRED = COLUMNS[:-1]
STATUSES = ("ok", "skipped", "failed")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# A file name that is not valid UTF-8 reaches us as lone surrogates (PEP 383), which UTF-8 cannot
# encode. Backslash escapes keep the file valid UTF-8, and inside a JSON string they are exactly
# the JSON escape of that surrogate, so JSON Lines even read back the same name.
_ENCODING_ERRORS = "backslashreplace"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ReportRow:
    """The outcome of one input item."""

    index: int  # position in the input, from 0
    url: str  # the URL (mirror) used, or the first URL when none was tried
    path: str | None  # destination relative to DIR
    status: str  # "ok", "skipped" or "failed"
    http_status: int | None
    bytes: int  # bytes of the file (ok, skipped) or fetched before failing
    seconds: float
    attempts: int
    error: str | None
    protocol: str | None = None  # the HTTP version its answer came over ("HTTP/2", "HTTP/1.1")


def _format_of(path: Path) -> str:
    try:
        return EXTENSIONS[path.suffix.lower()]
    except KeyError:
        supported = ", ".join(EXTENSIONS)
        raise UsageError(
            f"cannot tell the report format of {path}: its name must end with {supported}"
        ) from None


def _one_line(text: str | None) -> str | None:
    return None if text is None else " ".join(text.splitlines())


def _values(row: ReportRow) -> list[Any]:
    if row.status not in STATUSES:
        raise ValueError(f"unknown report status {row.status!r}")
    if not math.isfinite(row.seconds):
        raise ValueError(f"seconds must be finite, not {row.seconds!r}")
    return [
        row.index,
        row.url,
        row.path,
        row.status,
        row.http_status,
        row.bytes,
        round(row.seconds, 3),
        row.attempts,
        _one_line(row.error),
        row.protocol,
    ]


def _write_error(exc: OSError, path: Path) -> DestinationError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    message = f"cannot write the report {path}: {reason}"
    return DiskFullError(message) if exc.errno in _DISK_FULL else DestinationError(message)


class ReportWriter:
    """Writes report rows to `path` as they come; thread-safe; a context manager.

    Rows reach the file after `flush_every` rows, on the first row written `flush_interval`
    seconds (of `clock`) after the last flush, on `flush()` and on `close()`.
    """

    def __init__(
        self,
        path: Path,
        *,
        flush_every: int = 100,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be at least 1")
        self.path = path
        self.format = _format_of(path)
        self._flush_every = flush_every
        self._flush_interval = flush_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._buffer = io.StringIO()
        self._pending = 0
        self._closed = False
        self._csv: Any = None
        if self.format in _DELIMITERS:
            # The default "\r\n" (RFC 4180) also makes the writer quote a lone "\r" in a file
            # name; with "\n" alone it would not, and the row could not be read back.
            self._csv = csv.writer(self._buffer, delimiter=_DELIMITERS[self.format])
            self._csv.writerow(COLUMNS)
        try:
            self._file = open(  # noqa: SIM115 - it lives as long as the writer
                path, "w", encoding="utf-8", errors=_ENCODING_ERRORS, newline=""
            )
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise DestinationError(f"cannot create the report {path}: {reason}") from exc
        self._last_flush = clock()
        with self._lock:
            self._flush()  # the CSV header, so that even an empty report says what it is

    def write(self, row: ReportRow) -> None:
        """Add one row."""
        values = _values(row)
        with self._lock:
            if self._closed:
                raise ValueError(f"the report {self.path} is closed")
            if self._csv is not None:
                self._csv.writerow(values)
            else:
                obj = dict(zip(COLUMNS, values, strict=True))
                self._buffer.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
                self._buffer.write("\n")
            self._pending += 1
            if (
                self._pending >= self._flush_every
                or self._clock() - self._last_flush >= self._flush_interval
            ):
                self._flush()

    def _flush(self) -> None:
        data = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending = 0
        self._last_flush = self._clock()
        if data:
            try:
                self._file.write(data)
                self._file.flush()
            except OSError as exc:
                raise _write_error(exc, self.path) from exc

    def flush(self) -> None:
        """Hand the buffered rows to the operating system."""
        with self._lock:
            if self._closed:
                raise ValueError(f"the report {self.path} is closed")
            self._flush()

    def close(self) -> None:
        """Write the buffered rows and close the file; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._flush()
            finally:
                try:
                    self._file.close()
                except OSError as exc:
                    raise _write_error(exc, self.path) from exc

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _complete(items: Iterable[_T], torn: bool) -> Iterator[_T]:
    """`items` without the last one when the file was cut in the middle of it."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous
        previous = item
    if not torn:
        yield previous


def _int(value: object, column: str) -> int:
    if isinstance(value, str) and value:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{column} is not an integer")


def _optional_int(value: object, column: str) -> int | None:
    return None if value is None or value == "" else _int(value, column)


def _text(value: object, column: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{column} is not a string")


def _optional_text(value: object, column: str) -> str | None:
    # CSV cannot tell None from "", and an empty path or error means nothing: both are None.
    return None if value is None or value == "" else _text(value, column)


def _row(fields: Mapping[str, object]) -> ReportRow:
    missing = [column for column in _REQUIRED if column not in fields]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    seconds = fields["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, str)):
        raise ValueError("seconds is not a number")
    status = _text(fields["status"], "status")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return ReportRow(
        index=_int(fields["index"], "index"),
        url=_text(fields["url"], "url"),
        path=_optional_text(fields["path"], "path"),
        status=status,
        http_status=_optional_int(fields["http_status"], "http_status"),
        bytes=_int(fields["bytes"], "bytes"),
        seconds=float(seconds),
        attempts=_int(fields["attempts"], "attempts"),
        error=_optional_text(fields["error"], "error"),
        protocol=_optional_text(fields.get("protocol"), "protocol"),
    )


def _json_lines(text: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text, 1):
        if line.strip():
            yield number, line


def _csv_records(text: Iterable[str], delimiter: str) -> Iterator[tuple[int, list[str]]]:
    # strict: the end of the file inside a quoted field is an error rather than a short row.
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # A crash cut the last record right after a line break inside a quoted field.
            if str(exc).startswith("unexpected end of data"):
                return
            raise ValueError(f"line {reader.line_num}: {exc}") from None
        yield reader.line_num, fields


def _json_row(line: str) -> ReportRow:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return _row(obj)


def read_report(path: Path) -> Iterator[ReportRow]:
    """The rows of a report written by `ReportWriter`, in file order.

    A last row without its line break (a write cut short by a crash) is ignored. A file that is
    not a report raises `UsageError` naming the line.
    """
    fmt = _format_of(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - handed over to the TextIOWrapper below
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageError(f"cannot read the report {path}: {reason}") from exc
    with raw:
        size = raw.seek(0, os.SEEK_END)
        torn = False
        if size:
            raw.seek(size - 1)
            torn = raw.read(1) != b"\n"
            raw.seek(0)
        # surrogateescape: a torn last row may end inside a UTF-8 sequence, and must not fail
        # the rows before it.
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        delimiter = _DELIMITERS.get(fmt)
        if delimiter is None:
            for number, line in _complete(_json_lines(text), torn):
                try:
                    row = _json_row(line)
                except ValueError as exc:
                    raise _not_a_report(path, number, exc) from None
                yield row
            return
        # Whole records, not lines, are dropped: a quoted field may span several lines.
        header: list[str] | None = None
        records = _complete(_csv_records(text, delimiter), torn)
        try:
            for number, fields in records:
                try:
                    if header is None:
                        header = _header(fields)
                        continue
                    if len(fields) != len(header):
                        raise ValueError(f"{len(fields)} fields, not {len(header)}")
                    row = _row(dict(zip(header, fields, strict=True)))
                except ValueError as exc:
                    raise _not_a_report(path, number, exc) from None
                yield row
        except ValueError as exc:  # the CSV itself is malformed
            raise _not_a_report(path, None, exc) from None


def _header(fields: list[str]) -> list[str]:
    if missing := [column for column in _REQUIRED if column not in fields]:
        raise ValueError(f"no column {', '.join(missing)} in the header")
    return fields


def _not_a_report(path: Path, number: int | None, exc: Exception) -> UsageError:
    where = str(path) if number is None else f"{path}:{number}"
    return UsageError(f"{where} is not a segdl report: {exc}")
