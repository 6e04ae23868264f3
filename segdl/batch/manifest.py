"""Reading batch manifests: a URL list (aria2c input-file conventions), CSV, TSV, a JSON array
or JSON Lines, plain or gzipped, from a file, standard input or a binary file object, as a
stream of `Record` (one file to fetch, with its mirrors and its fields for templates) and
`BadRecord` (one unusable item, with the reason).

Everything but JSON is read a line at a time, so a manifest of millions of lines costs the
same memory as a short one. Problems with the input as a whole (missing file, unknown
format, a CSV without the URL column, JSON that does not parse, and what its first records
show: none of them usable, the first without the URL field or a field the caller needs, a
CSV or JSON read as a URL list) raise `UsageError` when `read_manifest` is called; a problem
with one item only makes that item a `BadRecord`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
import threading
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any, TypeAlias, cast

from ..core.urls import check_url
from ..core.verify import Checksum, parse_digest
from ..errors import InvalidURLError, UsageError
from .template import TemplateError, safe_relative

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "FORMATS",
    "BadRecord",
    "Item",
    "Record",
    "count_records",
    "detect_format",
    "read_manifest",
    "records_from",
]

FORMATS = ("txt", "csv", "tsv", "json", "jsonl")

_EXTENSIONS = {
    ".txt": "txt",
    ".list": "txt",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

# One line may not grow without bound: a file with no newline at all would otherwise be read
# into memory whole. Far above any real record, JSON Lines with long captions included.
MAX_LINE_BYTES = 8 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"

# surrogateescape turns each undecodable byte into one of these and valid UTF-8 never yields
# them, so one search per line tells whether the line was valid.
_UNDECODABLE = re.compile("[\udc80-\udcff]")
# http.client refuses URLs with control characters only when the request is sent; refusing
# them here makes them a bad item instead of a failed transfer.
_URL_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# A reason quoted in a BadRecord is cut so that a megabyte-long URL cannot flood a report.
_MAX_REASON_CHARS = 300

# Records read before the first one is handed out, at most, to judge the input as a whole: a
# binary file or the wrong format fails them all. Reading stops at the first usable one, so
# a good input starts at once, however slowly its producer writes.
_HEAD = 10

_EXPECTED = {
    "txt": "one URL per line",
    "csv": "a header row, then one record per line",
    "tsv": "a header row, then one record per line",
    "json": "an array of objects",
    "jsonl": "one JSON object per line",
}

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class Record:
    """One file to fetch.

    ``out`` and ``dir`` (aria2 ``out=``/``dir=`` options of txt inputs) have already passed
    through `template.safe_relative`: relative, without ``..``, sanitized.
    """

    index: int  # position in the input from 0, counting every item, bad ones included
    line: int  # 1-based line in the input (json: 1-based position in the array)
    urls: tuple[str, ...]  # the URL, or mirrors of the same file in order of preference
    fields: Mapping[str, str]  # scalar fields as strings, for templates; the URL field too
    out: str | None = None
    dir: str | None = None
    unit: str = "line"  # what `line` counts: "line", or "record" in a json array
    # The digest its bytes must have: a `checksum_field`'s, or an aria2 `checksum=` line's.
    checksum: Checksum | None = None

    @property
    def where(self) -> str:
        """Where it is, as its BadRecord would say it: "line 3", "record 2"."""
        return f"{self.unit} {self.line}"


@dataclass(frozen=True)
class BadRecord:
    """One item that cannot be fetched; `error` is one line starting with where it is."""

    index: int
    line: int
    error: str


def detect_format(name: str) -> str:
    """The format a file name suggests by its extension (a trailing ``.gz`` ignored); txt when
    the extension says nothing."""
    return _format_of(name) or "txt"


def _format_of(name: str) -> str | None:
    base = os.path.basename(name).lower()
    if base.endswith(".gz"):
        base = base[:-3]
    return _EXTENSIONS.get(os.path.splitext(base)[1])


def read_manifest(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    format: str | None = None,
    url_field: str | None = None,
    records: str | None = None,
    fields: Iterable[str] = (),
    checksum_field: str | None = None,
) -> Generator[Record | BadRecord, None, None]:
    """Read the manifest `source` (a path, ``"-"`` for standard input, or a binary file
    object) as a stream of `Record` and `BadRecord`, in input order.

    `format` is one of `FORMATS`, by default guessed from the name. `url_field` names the
    column or key holding the URL (or a list of mirror URLs) in csv, tsv, json and jsonl
    (default ``url``). `records` is the dotted path of the array inside a json object
    (``data.items``). txt records always carry their first URL as the field ``url``, and
    refuse a `url_field`. Gzip is recognised by a ``.gz`` name or by its magic bytes.
    `fields` are fields the caller will need (a template's): the first usable record must
    have them, unless aria2 ``out=``/``dir=`` options name its file. `checksum_field` names
    the field holding each record's digest (csv, tsv, json, jsonl: ``sha256:HEX``,
    ``ALGO=HEX`` or bare hex; see `verify.parse_digest`), which its bytes must match; a
    record without a valid one is a `BadRecord` (the first one: a `UsageError`). txt records
    take theirs from an aria2 ``checksum=sha-256=HEX`` option line.

    Raises `UsageError` now, before anything is iterated, when the input as a whole is
    unusable, which includes what its first records show (see the module docstring); only
    those are read ahead, and only up to the first usable one. Closing the generator closes
    a file it opened; standard input and file objects passed in are left open.
    """
    reader = _read(source, format, url_field, records, frozenset(fields), checksum_field)
    # Running up to the first yield opens and checks the input now, so usage errors surface
    # here rather than at the first next(); and a started generator closes its file when it
    # is dropped unread, which one never started would not.
    next(reader)
    # The only None is the one consumed above.
    return cast("Generator[Record | BadRecord, None, None]", reader)


class _Invalid(Exception):
    """One item is unusable; the message is the reason, without the location."""


class _ReadError(Exception):
    """The input cannot be read any further (a corrupt gzip stream, an I/O error)."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line  # where the unread rest begins


class _LineTooLong(Exception):
    """A line exceeded MAX_LINE_BYTES; it has been skipped up to its end."""

    def __init__(self, head: bytes) -> None:
        super().__init__(f"longer than {MAX_LINE_BYTES} bytes")
        # What a txt reader needs to know of a line it never saw whole.
        self.indented = head[:1] in (b" ", b"\t")
        self.comment = head.lstrip(b" \t").startswith(b"#")


class _Rewound(io.RawIOBase):
    """A stream that gives back `prefix` before the rest of `stream`.

    Peeking at the first bytes for the gzip magic must work on pipes, which cannot seek.
    """

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        super().__init__()
        self._prefix = prefix
        self._stream = stream
        # read1 returns what a pipe already has instead of waiting for a full buffer.
        self._read = getattr(stream, "read1", stream.read)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            data, self._prefix = self._prefix[: len(view)], self._prefix[len(view) :]
        else:
            data = self._read(len(view)) or b""
        view[: len(data)] = data
        return len(data)


# GzipFile and BufferedReader: both have readline(limit) and peek().
_Stream = gzip.GzipFile | io.BufferedReader


class _Lines:
    """The decoded lines of a binary stream, one at a time, with their numbers.

    Undecodable bytes are kept as surrogate escapes (see `_UNDECODABLE`) so that the caller
    decides what a bad line means. An iterator class rather than a generator: csv.reader
    pulls from it and must be able to go on after a line it raised for.
    """

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self.lineno = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.lineno += 1
        if self.lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            too_long = _LineTooLong(raw[:64])
            while raw and not raw.endswith(b"\n"):
                raw = self._readline(MAX_LINE_BYTES)
            raise too_long
        return raw.decode("utf-8", "surrogateescape")

    def check(self) -> None:
        """Read ahead a little, so that an input broken from its start is found now."""
        try:
            self._stream.peek(1)
        except (OSError, EOFError, zlib.error) as exc:
            raise _ReadError(_describe(exc), 1) from None

    def _readline(self, limit: int) -> bytes:
        try:
            return self._stream.readline(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise _ReadError(_describe(exc), self.lineno + 1) from None


def _read(
    source: str | os.PathLike[str] | IO[bytes],
    fmt: str | None,
    url_field: str | None,
    records: str | None,
    fields: frozenset[str],
    checksum_field: str | None = None,
) -> Generator[Record | BadRecord | None, None, None]:
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown manifest format {fmt!r} (expected {', '.join(FORMATS)})")
    if url_field == "":
        raise UsageError("--url-field must not be empty")
    with ExitStack() as stack:
        stream, name = _open(source, stack)
        # Named by nothing (standard input, a file without a known extension): the format is
        # only a guess, which the first line may contradict.
        guessed = fmt is None and _format_of(name) is None
        fmt = fmt or detect_format(name)
        if records is not None and fmt != "json":
            raise UsageError(f"--records applies to json input only, and {name} is read as {fmt}")
        if url_field is not None and fmt == "txt":
            raise UsageError(
                f"--url-field applies to csv, tsv, json and jsonl input, and {name} is read as "
                "txt (one URL per line; --input-format names another format)"
            )
        if checksum_field is not None and fmt == "txt":
            raise UsageError(
                f"--checksum-field applies to csv, tsv, json and jsonl input, and {name} is "
                "read as txt (there, an indented 'checksum=sha-256=HEX' line under a URL gives "
                "its digest)"
            )
        if checksum_field == "":
            raise UsageError("--checksum-field must not be empty")
        field = url_field or "url"
        body: Iterator[Record | BadRecord]
        if fmt == "json":
            body = _json_records(_load_json_array(stream, name, records), field, name)
        else:
            lines = _Lines(stream)
            if fmt in ("csv", "tsv"):
                reader = csv.reader(lines, delimiter="," if fmt == "csv" else "\t")
                header = _read_header(reader, lines, name, field)
                body = _table_records(reader, lines, header, field)
            else:
                try:
                    lines.check()
                except _ReadError as exc:
                    raise UsageError(f"cannot read {name}: {exc}") from None
                if fmt == "txt":
                    body = _txt_records(lines, name if guessed else None, name)
                else:
                    body = _jsonl_records(lines, field, name)
        if checksum_field is not None:
            body = _with_digests(body, checksum_field, name)
        head: list[Record | BadRecord] = []
        try:
            for item in body:
                head.append(item)
                if isinstance(item, Record) or len(head) == _HEAD:
                    break
        except _ReadError as exc:
            if not head:
                raise UsageError(f"cannot read {name}: {exc}") from None
            head.append(_unreadable(len(head), exc))
            body = iter(())
        _check_head(head, name, fmt, guessed, fields)
        yield None
        yield from head
        yielded = len(head)
        try:
            for item in body:
                yield item
                yielded += 1
        except _ReadError as exc:
            # Items are yielded in index order, so the count is the next index.
            yield _unreadable(yielded, exc)


def _with_digests(
    body: Iterator[Record | BadRecord], field: str, name: str
) -> Iterator[Record | BadRecord]:
    """The records of `body` with their digest from `field`. Until one record has a valid
    one, a missing or invalid digest is the wrong field or format for the whole input: a
    UsageError (raised while the first records are read ahead)."""
    seen = False
    for item in body:
        if isinstance(item, Record):
            try:
                item = replace(item, checksum=_digest(item, field, name))
            except _Invalid as exc:
                if not seen:
                    have = ", ".join(repr(k) for k in item.fields) or "none"
                    raise UsageError(
                        f"{name}: {item.where}: {exc} (--checksum-field {field}; its fields "
                        f"are: {have})"
                    ) from None
                item = _bad(item.index, item.line, item.unit, str(exc))
            else:
                seen = True
        yield item


def _digest(record: Record, field: str, name: str) -> Checksum:
    value = record.fields.get(field, "").strip()
    if not value:
        raise _Invalid(f"no checksum in field {field!r}")
    try:
        return parse_digest(value, f"field {field!r} of {record.where} of {name}")
    except UsageError as exc:
        raise _Invalid(f"field {field!r}: {exc}") from None


def _unreadable(index: int, exc: _ReadError) -> BadRecord:
    return BadRecord(index, exc.line, f"line {exc.line}: cannot read further: {exc}")


def _check_head(
    head: list[Record | BadRecord], name: str, fmt: str, guessed: bool, fields: frozenset[str]
) -> None:
    """Usage errors from the first records (`head`: up to the first usable one)."""
    first = head[-1] if head else None
    if isinstance(first, Record):
        missing = sorted(fields - first.fields.keys())
        if missing and first.out is None and first.dir is None:
            have = ", ".join(repr(k) for k in first.fields) or "none"
            raise UsageError(
                f"{name}: {first.where} has no field {missing[0]!r} for the template; "
                f"its fields are: {have}"
            )
        return
    bad = [item for item in head if isinstance(item, BadRecord)]  # all of them, here
    if not bad:
        return  # empty: nothing to do is no mistake
    count = "its only record is" if len(bad) == 1 else f"its first {len(bad)} records are"
    hint = "; if it is in another format, give --input-format" if guessed else ""
    raise UsageError(
        f"{name}, read as {fmt} ({_EXPECTED[fmt]}): {count} unusable: {bad[0].error}{hint}"
    )


def _open(source: str | os.PathLike[str] | IO[bytes], stack: ExitStack) -> tuple[_Stream, str]:
    """The source as a buffered binary stream, gunzipped if need be, and a name for messages."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path == "-":
            name = "standard input"
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:
                raise UsageError("standard input cannot be read as bytes")
            raw = stdin
        else:
            name = path
            try:
                raw = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - the stack closes it
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        raw = source
        label = getattr(source, "name", None)
        name = label if isinstance(label, str) else "the input"
    try:
        prefix = _read_prefix(raw, len(_GZIP_MAGIC))
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    rewound = _Rewound(prefix, raw)
    stream: _Stream
    if prefix == _GZIP_MAGIC or name.lower().endswith(".gz"):
        stream = gzip.GzipFile(fileobj=rewound, mode="rb")
    else:
        stream = io.BufferedReader(rewound)
    stack.callback(stream.close)
    return stream, name


def _read_prefix(raw: IO[bytes], size: int) -> bytes:
    prefix = b""
    while len(prefix) < size:
        chunk = raw.read(size - len(prefix))
        if not isinstance(chunk, bytes):
            raise UsageError("the manifest must be read from a binary file object")
        if not chunk:
            break
        prefix += chunk
    return prefix


# --- txt: the aria2c input-file format ---------------------------------------------------


def _txt_records(
    lines: _Lines, guessed: str | None = None, name: str = "the input"
) -> Iterator[Record | BadRecord]:
    """URL lines (TAB between mirrors), each followed by indented ``key=value`` option lines.

    A record is complete only when the next URL line or the end shows its options are over.
    Blank and comment lines between them do not end the options. `guessed` is the input's
    name when nothing named its format: a first line of JSON or a CSV header is then a
    UsageError rather than a list of odd URLs. An invalid ``checksum=`` of the first usable
    record is a UsageError too (the rest become bad records).
    """
    index = 0
    pending: _PendingTxt | None = None
    seen = False  # a usable record was yielded

    while True:
        try:
            text = next(lines)
        except StopIteration:
            break
        except _LineTooLong as exc:
            if exc.comment:
                continue
            if exc.indented:
                # It may have been its out=; a file saved under another name would be worse.
                if pending is not None:
                    pending.broken = f"option line {lines.lineno} is too long"
                continue
            if pending is not None:
                item = pending.finish(name, strict=not seen)
                seen = seen or isinstance(item, Record)
                yield item
                pending = None
            yield _bad(index, lines.lineno, "line", str(exc))
            index += 1
            continue
        except _ReadError as exc:
            if pending is not None:
                # Its options may lie beyond the unreadable part, so it is not known complete.
                exc.line = pending.line
            raise
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if text[0] in " \t":
            # An option line; one with no URL above it belongs to nothing.
            if pending is not None:
                pending.option(lines.lineno, stripped)
            continue
        if guessed is not None and index == 0:
            _sniff(stripped, guessed, lines.lineno)
        if pending is not None:
            item = pending.finish(name, strict=not seen)
            seen = seen or isinstance(item, Record)
            yield item
        pending = _PendingTxt(index, lines.lineno, stripped)
        index += 1
    if pending is not None:
        yield pending.finish(name, strict=not seen)


def _sniff(text: str, name: str, line: int) -> None:
    """UsageError if the first URL line of an input read as txt by default is JSON or a
    CSV/TSV header (no URL line starts with a bracket, and a header holds no URL)."""
    if _UNDECODABLE.search(text) or "\x00" in text:
        return  # not text at all: the first records will say so
    if text[:1] in ("[", "{"):
        found, formats = "JSON", "json or jsonl"
    elif "://" not in text and ("," in text or "\t" in text):
        found, formats = ("TSV" if "\t" in text else "CSV"), ("tsv" if "\t" in text else "csv")
    else:
        return
    raise UsageError(
        f"{name} looks like {found} (line {line}: {_quote(text)}), not a list of URLs: "
        f"give --input-format {formats}"
    )


def _quote(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


class _PendingTxt:
    """A URL line whose option lines may still follow."""

    def __init__(self, index: int, line: int, text: str) -> None:
        self.index = index
        self.line = line
        self.broken: str | None = None
        self._text = text
        self._options: dict[str, tuple[int, str]] = {}

    def option(self, line: int, text: str) -> None:
        key, eq, value = text.partition("=")
        key = key.strip()
        # aria2 has dozens of options; only these two decide where the file goes, and
        # checksum= what it must be. The last one given wins.
        if eq and key in ("out", "dir", "checksum"):
            self._options[key] = (line, value.strip())

    def finish(self, name: str = "the input", *, strict: bool = False) -> Record | BadRecord:
        """The record; `strict`: an invalid checksum= is a UsageError (the first record's)."""
        try:
            if self.broken is not None:
                raise _Invalid(self.broken)
            if _UNDECODABLE.search(self._text):
                raise _Invalid("not valid UTF-8")
            urls = tuple(_check_url(p.strip()) for p in self._text.split("\t") if p.strip())
            paths: dict[str, str | None] = {"out": None, "dir": None}
            for key, (line, value) in self._options.items():
                if key != "checksum":
                    paths[key] = _option_path(key, line, value)
        except _Invalid as exc:
            return _bad(self.index, self.line, "line", str(exc))
        checksum = None
        if "checksum" in self._options:
            line, value = self._options["checksum"]
            try:
                checksum = parse_digest(value, f"checksum= on line {line} of {name}")
            except UsageError as exc:
                if strict:
                    raise UsageError(f"{name}: checksum= on line {line}: {exc}") from None
                return _bad(self.index, self.line, "line", f"checksum= on line {line}: {exc}")
        return Record(
            self.index,
            self.line,
            urls,
            {"url": urls[0]},
            paths["out"],
            paths["dir"],
            checksum=checksum,
        )


def _option_path(key: str, line: int, value: str) -> str:
    if _UNDECODABLE.search(value):
        # Fetching under another name than the one asked for would be worse than failing.
        raise _Invalid(f"{key}= on line {line} is not valid UTF-8")
    try:
        return str(safe_relative(value))
    except TemplateError as exc:
        raise _Invalid(f"{key}= on line {line}: {exc}") from None


# --- csv and tsv -------------------------------------------------------------------------


def _read_header(
    reader: Iterator[list[str]], lines: _Lines, name: str, url_field: str
) -> list[str]:
    try:
        row = next((r for r in reader if any(cell.strip() for cell in r)), None)
    except _ReadError as exc:
        raise UsageError(f"cannot read {name}: {exc}") from None
    except (_LineTooLong, csv.Error) as exc:
        raise UsageError(f"{name}: bad header row on line {lines.lineno}: {exc}") from None
    if row is None:
        raise UsageError(f"{name} is empty: a CSV manifest starts with a header row")
    header = [cell.strip() for cell in row]
    if any(_UNDECODABLE.search(cell) for cell in header):
        raise UsageError(f"{name}: the header row is not valid UTF-8")
    count = header.count(url_field)
    if count == 0:
        columns = ", ".join(repr(c) for c in header if c) or "none"
        raise UsageError(
            f"{name} has no column {url_field!r} for the URLs (choose one with --url-field); "
            f"its columns are: {columns}"
        )
    if count > 1:
        raise UsageError(f"{name} has {count} columns named {url_field!r}")
    return header


def _table_records(
    reader: Iterator[list[str]], lines: _Lines, header: list[str], url_field: str
) -> Iterator[Record | BadRecord]:
    index = 0
    while True:
        start = lines.lineno + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except _ReadError as exc:
            exc.line = start
            raise
        except (_LineTooLong, csv.Error) as exc:
            # The reader starts afresh at its next call; the lines after go on as rows.
            yield _bad(index, start, "line", f"invalid CSV: {exc}")
            index += 1
            continue
        if not any(cell.strip() for cell in row):
            continue
        yield _table_record(index, start, header, row, url_field)
        index += 1


def _table_record(
    index: int, line: int, header: list[str], row: list[str], url_field: str
) -> Record | BadRecord:
    if any(_UNDECODABLE.search(cell) for cell in row):
        return _bad(index, line, "line", "not valid UTF-8")
    fields: dict[str, str] = {}
    # A short row lacks the last fields; the extra cells of a long one have no name to go by.
    for column, cell in zip(header, row, strict=False):
        if column and column not in fields:
            fields[column] = cell
    value: object = fields.get(url_field)
    if isinstance(value, str) and value.lstrip().startswith("["):
        # No URL starts with "[", so a cell that does is a JSON list of mirrors.
        try:
            value = json.loads(value)
        except ValueError as exc:
            return _bad(index, line, "line", f"{url_field!r} is not a valid JSON list: {exc}")
    return _record(index, line, "line", value, fields, url_field)


# --- json and jsonl ----------------------------------------------------------------------


def _load_json_array(stream: _Stream, name: str, records: str | None) -> list[object]:
    try:
        data = stream.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"cannot read {name}: {_describe(exc)}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name} is not valid UTF-8 (byte {exc.start})") from None
    try:
        document = _parse_json(text, one_line=False)
    except _Invalid as exc:
        hint = "; for one object per line use the jsonl format" if "Extra data" in str(exc) else ""
        raise UsageError(f"{name}: {exc}{hint}") from None
    if records is None:
        if isinstance(document, list):
            return document
        raise UsageError(
            f"{name} holds {_json_type(document)}, not an array of records; "
            "name the array inside it with --records (e.g. --records data.items)"
        )
    node = document
    for step in records.split("."):
        if not isinstance(node, dict) or step not in node:
            raise UsageError(f"--records {records!r}: {name} has nothing at {step!r}")
        node = node[step]
    if not isinstance(node, list):
        raise UsageError(f"--records {records!r} leads to {_json_type(node)}, not an array")
    return node


def _json_records(items: list[object], url_field: str, name: str) -> Iterator[Record | BadRecord]:
    for index, item in enumerate(items):
        position = index + 1
        if not isinstance(item, dict):
            yield _bad(index, position, "record", f"{_json_type(item)}, not an object")
        else:
            _check_first(index, position, "record", item, url_field, name)
            yield _object_record(index, position, "record", item, url_field)


def _check_first(
    index: int, line: int, where: str, item: dict[str, object], url_field: str, name: str
) -> None:
    """The first item lacking the URL field is the wrong --url-field, as for a CSV header.
    (Raised while the first records are read ahead, before anything is handed out.)"""
    if index == 0 and url_field not in item:
        keys = ", ".join(repr(k) for k in item) or "none"
        raise UsageError(
            f"{name}: {where} {line} has no field {url_field!r} for the URL (choose one with "
            f"--url-field); its fields are: {keys}"
        )


def _jsonl_records(lines: _Lines, url_field: str, name: str) -> Iterator[Record | BadRecord]:
    index = 0
    while True:
        try:
            text = next(lines)
        except StopIteration:
            return
        except _LineTooLong as exc:
            yield _bad(index, lines.lineno, "line", str(exc))
            index += 1
            continue
        stripped = text.strip()
        if not stripped:
            continue
        yield _jsonl_record(index, lines.lineno, stripped, url_field, name)
        index += 1


def _jsonl_record(
    index: int, line: int, text: str, url_field: str, name: str
) -> Record | BadRecord:
    if _UNDECODABLE.search(text):
        return _bad(index, line, "line", "not valid UTF-8")
    try:
        item = _parse_json(text, one_line=True)
    except _Invalid as exc:
        return _bad(index, line, "line", str(exc))
    if not isinstance(item, dict):
        return _bad(index, line, "line", f"{_json_type(item)}, not an object")
    _check_first(index, line, "line", item, url_field, name)
    return _object_record(index, line, "line", item, url_field)


def _parse_json(text: str, *, one_line: bool) -> object:
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        raise _Invalid(f"invalid JSON: {exc.msg} ({at})") from None
    except ValueError as exc:  # NaN and friends, or an integer too long to convert
        raise _Invalid(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _Invalid("invalid JSON: nested too deeply") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _object_record(
    index: int, line: int, where: str, item: dict[str, object], url_field: str
) -> Record | BadRecord:
    fields: dict[str, str] = {}
    for key, value in item.items():
        # bool first: it is an int too, and str(True) is not what JSON wrote.
        if isinstance(value, bool):
            fields[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            fields[key] = str(value)
    return _record(index, line, where, item.get(url_field), fields, url_field)


# --- shared ------------------------------------------------------------------------------


def _record(
    index: int, line: int, where: str, value: object, fields: dict[str, str], url_field: str
) -> Record | BadRecord:
    """The record whose URL field holds `value`; `fields` gets the first URL under its name."""
    try:
        urls = _urls(value, url_field)
    except _Invalid as exc:
        return _bad(index, line, where, str(exc))
    fields[url_field] = urls[0]
    return Record(index, line, urls, fields, unit=where)


def _urls(value: object, url_field: str) -> tuple[str, ...]:
    if value is None:
        raise _Invalid(f"no {url_field!r} field")
    if isinstance(value, str):
        if not value.strip():
            raise _Invalid(f"empty {url_field!r} field")
        return (_check_url(value.strip()),)
    if not isinstance(value, list):
        raise _Invalid(f"{url_field!r} is {_json_type(value)}, not a URL or a list of URLs")
    if not value:
        raise _Invalid(f"{url_field!r} is an empty list")
    for item in value:
        if not isinstance(item, str):
            raise _Invalid(f"{url_field!r} holds {_json_type(item)} among its URLs")
    return tuple(_check_url(item.strip()) for item in value)


def _check_url(url: str) -> str:
    if _URL_CONTROLS.search(url):
        raise _Invalid(f"control character in URL {url!r}")
    try:
        return check_url(url)
    except InvalidURLError as exc:
        raise _Invalid(str(exc)) from None


def _bad(index: int, line: int, where: str, reason: str) -> BadRecord:
    reason = " ".join(reason.split("\n"))
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[:_MAX_REASON_CHARS] + "..."
    return BadRecord(index, line, f"{where} {line}: {reason}")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --- counting ---------------------------------------------------------------------------


def count_records(
    source: str | os.PathLike[str],
    *,
    format: str | None = None,
    records: str | None = None,
    stop: threading.Event | None = None,
) -> int | None:
    """How many items `read_manifest` would yield from the file `source` (good and bad ones),
    counted by a quick pass over its lines that parses no URL: for a batch's progress to
    show a total early, while the batch reads the same file at its own pace. Memory stays
    bounded by one line (a json array is loaded whole, as `read_manifest` loads it).

    An estimate: the batch's own count, once its input is read to the end, is the exact one.
    None for standard input, when `stop` is set, or when the file cannot be read.
    """
    path = os.fspath(source)
    if path == "-":
        return None
    fmt = format or detect_format(path)
    try:
        with ExitStack() as stack:
            stream, _ = _open(path, stack)
            if fmt == "json":
                try:
                    return len(_load_json_array(stream, path, records))
                except UsageError:
                    return None
            return _count_lines(stream, fmt, stop)
    except (UsageError, _ReadError, OSError, EOFError, zlib.error):
        return None


def _count_lines(stream: _Stream, fmt: str, stop: threading.Event | None) -> int | None:
    count = 0
    if fmt in ("csv", "tsv"):
        # Quoted cells may hold newlines: only the csv module knows where a row ends.
        lines = _Lines(stream)
        reader = csv.reader(lines, delimiter="," if fmt == "csv" else "\t")
        header = False
        while True:
            if stop is not None and count % 4096 == 0 and stop.is_set():
                return None
            try:
                row = next(reader)
            except StopIteration:
                return count
            except (_LineTooLong, csv.Error):
                count += header
                continue
            if any(cell.strip() for cell in row):
                count += header
                header = True
    first = True
    skipping = False  # inside a line longer than MAX_LINE_BYTES
    while True:
        if stop is not None and count % 4096 == 0 and stop.is_set():
            return None
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return count
        if first:
            raw = raw.removeprefix(_BOM)
            first = False
        continued, skipping = skipping, not raw.endswith(b"\n")
        if continued:
            continue
        if fmt == "txt":
            # URL lines only: blank, comment and indented option lines are no items.
            if raw[:1] not in (b" ", b"\t") and raw.strip() and not raw.lstrip().startswith(b"#"):
                count += 1
        elif raw.strip():
            count += 1


# --- the library's item forms -------------------------------------------------------------------

# What `download_many` and the cluster take as one item: a URL, a (url, relative path) pair, a
# mapping ({"url": ..., "path": ..., other fields}), or a record of `read_manifest`.
Item: TypeAlias = str | tuple[str, str] | Mapping[str, Any] | Record | BadRecord


def records_from(items: Iterable[Item]) -> Iterator[Record | BadRecord]:
    """The library's item forms as manifest records (bad ones become failed items)."""
    for index, item in enumerate(items):
        if isinstance(item, Record | BadRecord):
            yield item
            continue
        try:
            yield _item_record(index, item)
        except (InvalidURLError, TypeError, ValueError) as exc:
            yield BadRecord(index, index + 1, f"item {index}: {exc}")


def _item_record(index: int, item: str | tuple[str, str] | Mapping[str, Any]) -> Record:
    out: str | None = None
    fields: dict[str, str] = {}
    if isinstance(item, str):
        urls: tuple[str, ...] = (item,)
    elif isinstance(item, tuple):
        url, path = item
        urls, out = (url,), str(path)
    elif isinstance(item, Mapping):
        value = item.get("url")
        if isinstance(value, str):
            urls = (value,)
        elif isinstance(value, list | tuple) and value and all(isinstance(u, str) for u in value):
            urls = tuple(value)
        else:
            raise ValueError("no 'url' (a string or a list of mirror URLs)")
        if item.get("path") is not None:
            out = str(item["path"])
        fields = {
            str(k): str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in item.items()
            if isinstance(v, str | int | float | bool) and k != "path"
        }
    else:
        raise TypeError(f"unsupported item type {type(item).__name__}")
    urls = tuple(check_url(u.strip()) for u in urls)
    fields.setdefault("url", urls[0])
    return Record(index, index + 1, urls, fields, out=out)
