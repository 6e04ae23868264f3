"""Zip archives read through `reader(offset, length) -> bytes`: the central directory first, then
each chosen member's local header and data.

A reader can be backed by a local file or by ranged requests: `cd_tail_range` is what to fetch
first, `read_central_directory` asks for at most two more ranges (a ZIP64 record and the central
directory, when they begin before the tail), and `member_ranges` lists the ranges the chosen
members need. Nothing is trusted: the layout is checked for overlapping members (the overlapping
zip bomb) before any data is read, each local header against the central directory, and each
member's data by its CRC-32 and both sizes, with the bomb limits applied to the actual output.
"""

from __future__ import annotations

import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import (
    ArchiveLimitError,
    CorruptArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
)
from .decode import OUT_CHUNK, ZIP_METHODS, zip_decoder, zip_method_name
from .extractor import DIR, FILE, SYMLINK, Entry, Extraction, ExtractResult
from .safety import Limits, Parts, included, member_parts, normalize_patterns
from .staging import Overwrite

Reader = Callable[[int, int], bytes]

READ_CHUNK = 256 << 10  # compressed bytes asked of the reader at once
MAX_COMMENT = 0xFFFF
MAX_LOCAL_EXTRA = 0xFFFF
MAX_SYMLINK = 4096
TAIL = MAX_COMMENT + 22 + 20 + 56 + 43  # EOCD, its comment, the ZIP64 locator and record: 64 KiB

_EOCD = struct.Struct("<4s4H2LH")
_LOCATOR = struct.Struct("<4sLQL")
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_UNIX = 3  # "version made by" host system whose external attributes hold a Unix mode


@dataclass(frozen=True)
class ZipMember:
    """One central directory entry, checked and with offsets from the start of the file."""

    name: str
    raw_name: bytes
    header_offset: int  # of the local header
    compress_size: int
    file_size: int
    crc: int
    method: int
    flags: int
    mode: int | None  # Unix mode, file type bits included, when the archive has one
    is_dir: bool
    mtime: float | None
    limit: int  # where the next member's local header (or the central directory) begins

    @property
    def span(self) -> tuple[int, int]:
        """The bytes needed to extract it: local header, name, extra field (of at most 64 KiB,
        its size is only known once read) and data, never past `limit`."""
        most = self.header_offset + 30 + len(self.raw_name) + MAX_LOCAL_EXTRA + self.compress_size
        return self.header_offset, min(self.limit, most)


@dataclass(frozen=True)
class ZipDirectory:
    """The central directory: members in its order, and where it lies."""

    members: tuple[ZipMember, ...]
    cd_start: int
    cd_stop: int


def cd_tail_range(size: int) -> tuple[int, int]:
    """The half-open range to fetch first: the end of central directory record with the largest
    comment, preceded by the ZIP64 locator and record. `read_central_directory` reads it first,
    then the ZIP64 record and the central directory if they begin before it."""
    return max(0, size - TAIL), size


def member_ranges(members: Sequence[ZipMember], merge_gap: int = 1 << 20) -> list[tuple[int, int]]:
    """Half-open byte ranges covering what `members` need (see `ZipMember.span`), sorted, with
    neighbours at most `merge_gap` bytes apart merged into one range."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(member.span for member in members):
        if merged and start - merged[-1][1] <= merge_gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def select_members(
    directory: ZipDirectory,
    *,
    include: Sequence[str] | None = None,
    strip_components: int = 0,
) -> list[ZipMember]:
    """The members whose data `extract_zip` will read with these options (directories need
    none), in offset order: what to pass to `member_ranges`. Raises `UnsafeArchiveError` for
    a member name that would refuse the whole archive anyway."""
    patterns = normalize_patterns(include)
    chosen = []
    for member in sorted(directory.members, key=lambda m: m.header_offset):
        parts = member_parts(member.name)
        if member.is_dir or len(parts) <= strip_components or not included(parts, patterns):
            continue
        chosen.append(member)
    return chosen


def _corrupt(message: str) -> CorruptArchiveError:
    return CorruptArchiveError(f"corrupt archive: {message}")


def _read(reader: Reader, offset: int, length: int) -> bytes:
    data = bytes(reader(offset, length)) if length else b""
    if len(data) != length:
        raise _corrupt(f"{length} bytes at offset {offset} are beyond its end (truncated)")
    return data


def read_central_directory(
    reader: Reader, size: int, *, max_members: int = 1_000_000
) -> ZipDirectory:
    """Reads and checks the central directory of a zip of `size` bytes.

    Refuses an archive with more than `max_members` entries before reading its directory, and
    one whose members overlap (each member's local header, name and data must end before the
    next member's header, the last one before the central directory).
    """
    tail_start, tail_stop = cd_tail_range(size)
    tail = _read(reader, tail_start, tail_stop - tail_start)
    pos = _find_eocd(tail)
    (_, disk, cd_disk, on_disk, count, cd_size, cd_offset, _) = _EOCD.unpack_from(tail, pos)
    eocd = tail_start + pos
    cd_stop = eocd  # where the central directory must end
    if eocd >= 20 and _locator(reader, tail, tail_start, eocd - 20):
        record_at = eocd - 20 - _EOCD64.size
        if record_at < 0:
            raise _corrupt("the ZIP64 end of central directory record is missing")
        if record_at >= tail_start:
            record = tail[record_at - tail_start : record_at - tail_start + _EOCD64.size]
        else:
            record = _read(reader, record_at, _EOCD64.size)
        fields = _EOCD64.unpack(record)
        if fields[0] != b"PK\x06\x06":
            raise _corrupt("the ZIP64 end of central directory record is missing")
        disk, cd_disk, on_disk, count, cd_size, cd_offset = fields[4:10]
        cd_stop = record_at
    if disk or cd_disk or on_disk != count:
        raise UnsupportedArchiveError("unsupported zip: it is split over several files")
    if count > max_members:
        raise ArchiveLimitError(
            f"refused archive: it has {count} members, more than {max_members} (max_members)",
            rule="max_members",
        )
    prefix = cd_stop - cd_size - cd_offset  # bytes before the archive (a self-extractor)
    if prefix < 0 or cd_size < count * _CENTRAL.size:
        raise _corrupt("the central directory's size and offset do not add up")
    cd_start = cd_stop - cd_size
    if cd_start >= tail_start:
        directory = tail[cd_start - tail_start : cd_stop - tail_start]
    else:
        directory = _read(reader, cd_start, cd_size)
    members = _parse_directory(directory, count, prefix)
    return ZipDirectory(_with_limits(members, cd_start), cd_start, cd_stop)


def _find_eocd(tail: bytes) -> int:
    """The end of central directory record: the last signature whose comment ends the file."""
    pos = tail.rfind(b"PK\x05\x06", 0, len(tail) - _EOCD.size + 4)
    while pos >= 0:
        (comment,) = struct.unpack_from("<H", tail, pos + 20)
        if pos + _EOCD.size + comment == len(tail):
            return pos
        pos = tail.rfind(b"PK\x05\x06", 0, pos + 3)
    raise _corrupt("no end of central directory record: not a zip, or truncated")


def _locator(reader: Reader, tail: bytes, tail_start: int, at: int) -> bool:
    data = tail[at - tail_start : at - tail_start + 20] if at >= tail_start else None
    if data is None:
        data = _read(reader, at, 20)
    return data[:4] == b"PK\x06\x07"


def _parse_directory(data: bytes, count: int, prefix: int) -> list[ZipMember]:
    members: list[ZipMember] = []
    pos = 0
    for _ in range(count):
        if pos + _CENTRAL.size > len(data):
            raise _corrupt("the central directory is truncated")
        (
            signature,
            _,
            system,
            _,
            _,
            flags,
            method,
            dos_time,
            dos_date,
            crc,
            compress_size,
            file_size,
            name_len,
            extra_len,
            comment_len,
            disk,
            _,
            external,
            header_offset,
        ) = _CENTRAL.unpack_from(data, pos)
        if signature != b"PK\x01\x02":
            raise _corrupt(f"bad central directory entry at offset {pos}")
        pos += _CENTRAL.size
        end = pos + name_len + extra_len + comment_len
        if end > len(data):
            raise _corrupt("the central directory is truncated")
        raw_name = data[pos : pos + name_len]
        extra = data[pos + name_len : pos + name_len + extra_len]
        pos = end
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "surrogateescape")
        file_size, compress_size, header_offset, disk = _zip64(
            extra, name, file_size, compress_size, header_offset, disk
        )
        if disk:
            raise UnsupportedArchiveError("unsupported zip: it is split over several files")
        mode = external >> 16 if system == _UNIX and external >> 16 else None
        is_dir = raw_name.endswith((b"/", b"\\")) or bool(external & 0x10)
        if mode is not None and stat.S_IFMT(mode) == stat.S_IFDIR:
            is_dir = True
        members.append(
            ZipMember(
                name=name,
                raw_name=raw_name,
                header_offset=header_offset + prefix,
                compress_size=compress_size,
                file_size=file_size,
                crc=crc,
                method=method,
                flags=flags,
                mode=mode,
                is_dir=is_dir,
                mtime=_mtime(extra, dos_date, dos_time),
                limit=0,
            )
        )
    if pos != len(data):
        raise _corrupt("the central directory has more entries than its end record says")
    return members


def _extra_fields(extra: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(extra):
        kind, size = struct.unpack_from("<2H", extra, pos)
        yield kind, extra[pos + 4 : pos + 4 + size]
        pos += 4 + size


def _zip64(
    extra: bytes, name: str, file_size: int, compress_size: int, offset: int, disk: int
) -> tuple[int, int, int, int]:
    """The sizes, offset and disk, from the ZIP64 extra field where the entry says so."""
    wanted = [file_size == 0xFFFFFFFF, compress_size == 0xFFFFFFFF, offset == 0xFFFFFFFF]
    if not any(wanted) and disk != 0xFFFF:
        return file_size, compress_size, offset, disk
    for kind, data in _extra_fields(extra):
        if kind != 1:
            continue
        values = [file_size, compress_size, offset]
        pos = 0
        for i, want in enumerate(wanted):
            if want:
                if pos + 8 > len(data):
                    raise _corrupt(f"member {name!r}: its ZIP64 extra field is too short")
                (values[i],) = struct.unpack_from("<Q", data, pos)
                pos += 8
        if disk == 0xFFFF:
            if pos + 4 > len(data):
                raise _corrupt(f"member {name!r}: its ZIP64 extra field is too short")
            (disk,) = struct.unpack_from("<L", data, pos)
        return values[0], values[1], values[2], disk
    raise _corrupt(f"member {name!r}: its ZIP64 extra field is missing")


def _mtime(extra: bytes, dos_date: int, dos_time: int) -> float | None:
    """The extended timestamp (UTC) when there is one, else the DOS date (local time)."""
    for kind, data in _extra_fields(extra):
        if kind == 0x5455 and len(data) >= 5 and data[0] & 1:
            return float(struct.unpack_from("<l", data, 1)[0])
    fields = (
        (dos_date >> 9) + 1980,
        dos_date >> 5 & 0xF,
        dos_date & 0x1F,
        dos_time >> 11,
        dos_time >> 5 & 0x3F,
        (dos_time & 0x1F) * 2,
    )
    if not 1 <= fields[1] <= 12 or not 1 <= fields[2] <= 31:
        return None
    try:
        return time.mktime((*fields, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _with_limits(members: list[ZipMember], cd_start: int) -> tuple[ZipMember, ...]:
    """Sets each member's `limit` (the next local header, or the central directory) and refuses
    members whose smallest possible extent reaches past it: overlapping entries."""
    order = sorted(range(len(members)), key=lambda i: members[i].header_offset)
    limits = [0] * len(members)
    for rank, i in enumerate(order):
        member = members[i]
        following = members[order[rank + 1]] if rank + 1 < len(order) else None
        limit = following.header_offset if following is not None else cd_start
        least = member.header_offset + 30 + len(member.raw_name) + member.compress_size
        if least > limit:
            other = f"member {following.name!r}" if following else "the central directory"
            raise UnsafeArchiveError(
                f"refused member {member.name!r}: it overlaps {other} (overlapping zip entries)"
            )
        limits[i] = limit
    pairs = zip(members, limits, strict=True)
    return tuple(replace(member, limit=limit) for member, limit in pairs)


def _entry(member: ZipMember) -> Entry:
    mode = member.mode
    kind = FILE
    if member.is_dir:
        kind = DIR
    elif mode is not None:
        file_type = stat.S_IFMT(mode)
        if file_type == stat.S_IFLNK:
            kind = SYMLINK
        elif file_type in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            kind = {
                stat.S_IFCHR: "character device",
                stat.S_IFBLK: "block device",
                stat.S_IFIFO: "FIFO",
                stat.S_IFSOCK: "socket",
            }[file_type]
        elif file_type not in (0, stat.S_IFREG):
            kind = f"member of unknown type {oct(file_type)}"
    permissions = mode & 0o7777 if mode else 0
    if not permissions:  # no Unix mode: what unzip gives
        permissions = 0o755 if kind == DIR else 0o644
    return Entry(
        name=member.name,
        kind=kind,
        mode=permissions,
        mtime=member.mtime,
        size=member.file_size if kind == FILE else 0,
    )


def extract_zip(
    reader: Reader,
    size: int,
    dest: str | Path,
    *,
    directory: ZipDirectory | None = None,
    limits: Limits | None = None,
    overwrite: Overwrite = False,
    strip_components: int = 0,
    include: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extracts a zip of `size` bytes read through `reader(offset, length)` into `dest`.

    `directory` is `read_central_directory`'s result when the caller has it already. Every
    member is planned (names, types, destination conflicts, declared sizes against the limits)
    before any member data is read; then members are extracted in the order of their offsets.
    Staging, the final move and `on_progress` are as for `extract_stream`.
    """
    limits = limits if limits is not None else Limits()
    if directory is None:
        directory = read_central_directory(reader, size, max_members=limits.max_members)
    with Extraction(
        dest,
        format="zip",
        limits=limits,
        overwrite=overwrite,
        strip_components=strip_components,
        include=include,
        on_progress=on_progress,
    ) as extraction:
        chosen = _plan(directory, extraction)
        for member, entry, parts in chosen:
            _extract_member(reader, member, entry, parts, extraction)
        return extraction.finish()


def _plan(directory: ZipDirectory, extraction: Extraction) -> list[tuple[ZipMember, Entry, Parts]]:
    """The members to extract, in offset order, once all of them passed the early checks."""
    chosen: list[tuple[ZipMember, Entry, Parts]] = []
    taken: dict[Parts, str] = {}
    for member in sorted(directory.members, key=lambda m: m.header_offset):
        entry = _entry(member)
        parts = extraction.plan(entry)
        if parts is None:
            continue
        if parts in taken:
            raise UnsafeArchiveError(
                f"refused member {member.name!r}: it has the same path as {taken[parts]!r}"
            )
        taken[parts] = member.name
        if member.flags & 0x41:
            raise UnsupportedArchiveError(f"unsupported zip: member {member.name!r} is encrypted")
        if entry.kind != DIR and member.method not in ZIP_METHODS:
            raise UnsupportedArchiveError(
                f"unsupported zip: member {member.name!r} uses {zip_method_name(member.method)}"
            )
        if entry.kind == SYMLINK and member.file_size > MAX_SYMLINK:
            raise UnsafeArchiveError(
                f"refused member {member.name!r}: a symbolic link target of "
                f"{member.file_size} bytes"
            )
        chosen.append((member, entry, parts))
    _declared_limits(chosen, extraction)
    return chosen


def _declared_limits(chosen: list[tuple[ZipMember, Entry, Parts]], extraction: Extraction) -> None:
    """Refuses up front what the declared sizes already show to break a limit: actual sizes
    must equal them, so such an archive would fail anyway, only later."""
    budget = extraction.budget
    total_in = total_out = 0
    for member, entry, _ in chosen:
        if entry.kind == DIR:
            continue
        total_in += member.compress_size
        total_out += member.file_size
        if budget.ratio_exceeded(member.file_size, member.compress_size):
            raise ArchiveLimitError(
                f"refused member {member.name!r}: it declares {member.file_size} bytes from "
                f"{member.compress_size}, more than {budget.limits.max_ratio:g} times (max_ratio)",
                rule="max_ratio",
            )
        budget.declare(member.name, total_out)
    budget.overall(total_in, total_out, None)


def _extract_member(
    reader: Reader, member: ZipMember, entry: Entry, parts: Parts, extraction: Extraction
) -> None:
    if entry.kind == DIR:
        extraction.add_dir(entry, parts)
        return
    data = _MemberData(reader, member)
    if entry.kind == SYMLINK:
        target = b"".join(data.chunks()).decode("utf-8", "surrogateescape")
        extraction.add_symlink(replace(entry, link=target), parts)
        return
    budget = extraction.budget

    def checked() -> Iterator[bytes]:
        for chunk in data.chunks():
            budget.member_overall(entry.name, len(chunk), data.consumed())
            yield chunk

    extraction.add_file(entry, parts, checked(), data.consumed)


class _MemberData:
    """One member's data, decompressed in chunks and checked: its local header against the
    central directory, its extent against the next member, its sizes and CRC-32."""

    def __init__(self, reader: Reader, member: ZipMember) -> None:
        self._reader = reader
        self._member = member
        self._remaining = member.compress_size
        self._pending = b""
        self._decoder = zip_decoder(member.method, member.file_size)

    def consumed(self) -> int:
        """Compressed bytes of the member consumed so far."""
        unread = self._remaining + len(self._pending) + self._decoder.held()
        return self._member.compress_size - unread

    def _corrupt(self, problem: str) -> CorruptArchiveError:
        return _corrupt(f"member {self._member.name!r}: {problem}")

    def _data_start(self) -> int:
        member = self._member
        header = _read(self._reader, member.header_offset, _LOCAL.size)
        fields: tuple[bytes, int, int, int, int, int, int, int, int, int, int, int]
        fields = _LOCAL.unpack(header)
        signature, flags, method, name_len, extra_len = (
            fields[0],
            fields[3],
            fields[4],
            fields[10],
            fields[11],
        )
        if signature != b"PK\x03\x04":
            raise self._corrupt("no local header at its offset")
        name = _read(self._reader, member.header_offset + _LOCAL.size, name_len)
        if name != member.raw_name:
            raise self._corrupt(f"its local header names {name!r}")
        if method != member.method or (flags ^ member.flags) & 0x41:
            raise self._corrupt("its local header differs from the central directory")
        start = member.header_offset + _LOCAL.size + name_len + extra_len
        if start + member.compress_size > member.limit:
            raise UnsafeArchiveError(
                f"refused member {member.name!r}: its data overlaps the next member or the "
                "central directory (overlapping zip entries)"
            )
        return start

    def chunks(self) -> Iterator[bytes]:
        member = self._member
        position = self._data_start()
        decoder = self._decoder
        crc = 0
        produced = 0
        while True:
            if not decoder.needs_input:
                out = decoder.decompress(b"", OUT_CHUNK)
            elif self._pending or self._remaining:
                if not self._pending:
                    length = min(READ_CHUNK, self._remaining)
                    self._pending = _read(self._reader, position, length)
                    position += length
                    self._remaining -= length
                feed = decoder.feed_size
                out = decoder.decompress(self._pending[:feed], OUT_CHUNK)
                self._pending = self._pending[feed:]
            else:
                break
            if out:
                produced += len(out)
                if produced > member.file_size:
                    raise self._corrupt(f"it is larger than the {member.file_size} bytes declared")
                crc = zlib.crc32(out, crc)
                yield out
            if decoder.eof:
                break
        if self._pending or self._remaining or decoder.unused_data:
            raise self._corrupt("its compressed data ends before its compressed size")
        if member.method in (8, 12) and not decoder.eof:
            raise self._corrupt("its compressed data is truncated")
        if produced != member.file_size:
            raise self._corrupt(f"{produced} bytes instead of the {member.file_size} declared")
        if crc != member.crc:
            raise self._corrupt("CRC-32 mismatch")
