"""Extraction of tar, tar.gz, tar.bz2, tar.xz and tar.zst from a binary stream read once, in order.

The decompression is ours (`decode`), below `tarfile`'s stream mode, so the compressed bytes
consumed and the bytes produced are both counted: the overall ratio is checked on every chunk,
each member's ratio on the compressed bytes consumed while it was read. `tarfile` only parses
headers; its own extraction and filters are not used. Members go to disk in chunks, never whole
in memory. The source is read to its end before anything is moved into the destination, so a
reader that raises at its end (a checksum that does not match) still aborts the extraction.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Protocol, cast

from ..errors import ArchiveLimitError, CorruptArchiveError, UnsupportedArchiveError, UsageError
from .decode import OUT_CHUNK, Decoder, ZstdFrames, import_zstandard, tar_decoder
from .detect import DETECT_SIZE, FORMATS, TAR_FORMATS, detect_format, is_tar_header
from .extractor import DIR, FILE, HARDLINK, SYMLINK, Entry, Extraction, ExtractResult
from .safety import Limits
from .staging import Overwrite

READ_CHUNK = 64 << 10  # bytes asked of the source at once
_COMPRESSION = {"tar.gz": "gzip", "tar.bz2": "bzip2", "tar.xz": "xz", "tar.zst": "zstd"}
MAX_EXTENDED_HEADER = 1 << 20  # pax and GNU long-name headers are read whole into memory
# Not in typeshed: the header errors `TarFile.next` tells apart.
_EOF_HEADER: type[tarfile.HeaderError] = vars(tarfile)["EOFHeaderError"]
_EMPTY_HEADER: type[tarfile.HeaderError] = vars(tarfile)["EmptyHeaderError"]
_EXTENDED_TYPES = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, b"X", tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


class BinaryReader(Protocol):
    """What `extract_stream` reads from: `read(n)` returns up to n bytes, b"" at the end."""

    def read(self, size: int, /) -> bytes: ...


def extract_stream(
    source: BinaryReader,
    dest: str | Path,
    *,
    format: str | None = None,
    limits: Limits | None = None,
    overwrite: Overwrite = False,
    strip_components: int = 0,
    include: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extracts a tar archive, plain or compressed, read once from `source` into `dest`.

    `format` ("tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst") is detected from the first bytes
    when None. `dest` is created if missing. Members are written into a staging folder inside
    `dest` and moved into place only once the whole archive was read and checked: on any error
    or interrupt `dest` is left as it was. `on_progress(members, bytes_written)` is called a few
    times a second at most, and once at the end; an exception it raises aborts the extraction.
    """
    head = _read_head(source)
    fmt = format if format is not None else detect_format(head)
    if fmt == "zip":
        raise UnsupportedArchiveError(
            "a zip archive cannot be extracted from a stream: it needs random access (extract_zip)"
        )
    if fmt not in TAR_FORMATS:
        raise UsageError(f"unknown archive format {fmt!r} (one of {', '.join(FORMATS)})")
    stream = _Decoded(_backend(_Source(head, source), fmt))  # zstd's extra missing: fail here
    with Extraction(
        dest,
        format=fmt,
        limits=limits,
        overwrite=overwrite,
        strip_components=strip_components,
        include=include,
        on_progress=on_progress,
    ) as extraction:
        budget = extraction.budget
        stream.check = lambda consumed, produced: budget.overall(consumed, produced, stream.member)
        _extract(stream, extraction, fmt)
        stream.drain()
        return extraction.finish()


def _read_head(source: BinaryReader) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while size < DETECT_SIZE:
        data = source.read(DETECT_SIZE - size)
        if not data:
            break
        pieces.append(bytes(data))
        size += len(data)
    return b"".join(pieces)


class _Source:
    """The caller's stream with the sniffed head put back in front; counts the bytes read."""

    def __init__(self, head: bytes, stream: BinaryReader) -> None:
        self._head = head
        self._stream = stream
        self.consumed = 0

    def read(self, size: int) -> bytes:
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
        else:
            data = bytes(self._stream.read(size))
        self.consumed += len(data)
        return data


class _Backend(Protocol):
    @property
    def compressed_in(self) -> int: ...

    def produce(self) -> bytes:
        """The next decompressed chunk, b"" at the end of the stream."""
        ...


class _Plain:
    def __init__(self, source: _Source) -> None:
        self._source = source

    @property
    def compressed_in(self) -> int:
        return self._source.consumed

    def produce(self) -> bytes:
        return self._source.read(READ_CHUNK)


class _Compressed:
    """gzip, bzip2 or xz. Streams that follow one another are one stream (as gzip, bzip2 and
    xz decompress them); zero bytes after the last one are ignored (tape padding)."""

    def __init__(self, source: _Source, factory: Callable[[], Decoder], label: str) -> None:
        self._source = source
        self._factory = factory
        self._label = label
        self._decoder = factory()
        self._pending = b""  # read from the source, not yet given to the decoder
        self._done = False

    @property
    def compressed_in(self) -> int:
        return self._source.consumed - len(self._pending) - self._decoder.held()

    def produce(self) -> bytes:
        while not self._done:
            decoder = self._decoder
            if decoder.eof:
                self._next_stream()
                continue
            if not decoder.needs_input:
                out = decoder.decompress(b"", OUT_CHUNK)
                if out:
                    return out
                if decoder.eof:
                    continue
            if not self._pending:
                self._pending = self._source.read(READ_CHUNK)
                if not self._pending:
                    raise CorruptArchiveError(
                        f"corrupt archive: the {self._label} data is truncated"
                    )
            feed = decoder.feed_size
            out = decoder.decompress(self._pending[:feed], OUT_CHUNK)
            self._pending = self._pending[feed:]
            if out:
                return out
        return b""

    def _next_stream(self) -> None:
        rest = (self._decoder.unused_data + self._pending).lstrip(b"\x00")
        self._pending = b""
        while not rest:
            chunk = self._source.read(READ_CHUNK)
            if not chunk:
                self._done = True
                return
            rest = chunk.lstrip(b"\x00")
        self._decoder = self._factory()
        self._pending = rest


class _Tap:
    """Feeds the bytes the zstd reader takes to the frame follower."""

    def __init__(self, source: _Source, frames: ZstdFrames) -> None:
        self._source = source
        self._frames = frames

    def read(self, size: int) -> bytes:
        data = self._source.read(size)
        self._frames.feed(data)
        return data


class _Zstd:
    def __init__(self, source: _Source) -> None:
        zstandard = import_zstandard()
        self._source = source
        self._frames = ZstdFrames()
        self._error: type[Exception] = zstandard.ZstdError
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _Tap(source, self._frames), read_size=8 << 10, read_across_frames=True
        )
        self._done = False

    @property
    def compressed_in(self) -> int:
        return self._source.consumed

    def produce(self) -> bytes:
        if self._done:
            return b""
        try:
            out = bytes(self._reader.read(OUT_CHUNK))
        except self._error as exc:
            raise CorruptArchiveError(f"corrupt archive: invalid zstd data ({exc})") from None
        if out:
            return out
        self._done = True
        if not self._frames.complete:
            raise CorruptArchiveError("corrupt archive: the zstd data is truncated")
        return b""


def _backend(source: _Source, fmt: str) -> _Backend:
    if fmt == "tar":
        return _Plain(source)
    if fmt == "tar.zst":
        return _Zstd(source)
    return _Compressed(source, tar_decoder(fmt), _COMPRESSION[fmt])


class _Decoded:
    """The decompressed tar stream, as `tarfile` reads it; `check(consumed, produced)` runs
    on every chunk (the overall ratio)."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._buf = b""
        self._pos = 0
        self.produced = 0
        self.member: str | None = None  # the member being read, for messages
        self.check: Callable[[int, int], None] | None = None

    @property
    def compressed_in(self) -> int:
        return self._backend.compressed_in

    def _fill(self) -> bool:
        data = self._backend.produce()
        if not data:
            return False
        self.produced += len(data)
        if self.check is not None:
            self.check(self._backend.compressed_in, self.produced)
        self._buf, self._pos = data, 0
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = OUT_CHUNK
        pieces = []
        while size > 0:
            if self._pos >= len(self._buf) and not self._fill():
                break
            piece = self._buf[self._pos : self._pos + size]
            self._pos += len(piece)
            size -= len(piece)
            pieces.append(piece)
        return b"".join(pieces)

    def unread(self, data: bytes) -> None:
        self._buf, self._pos = data + self._buf[self._pos :], 0

    def drain(self) -> None:
        """Reads (and counts) the rest of the stream: the end of a compressed stream and its
        checksum, and whatever the source still holds."""
        self._pos = len(self._buf)
        while self._fill():
            self._pos = len(self._buf)


class _TarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header too large to be read into memory."""

    @classmethod
    def fromtarfile(cls, tarfile: tarfile.TarFile) -> _TarInfo:
        fileobj = cast("IO[bytes]", tarfile.fileobj)
        buf = fileobj.read(512)
        obj = cls.frombuf(buf, tarfile.encoding, tarfile.errors)
        obj.offset = fileobj.tell() - 512
        if obj.size < 0:
            raise CorruptArchiveError(f"corrupt archive: negative size at offset {obj.offset}")
        if obj.type in _EXTENDED_TYPES and obj.size > MAX_EXTENDED_HEADER:
            raise ArchiveLimitError(
                f"refused archive: an extended header of {obj.size} bytes at offset "
                f"{obj.offset} (more than {MAX_EXTENDED_HEADER})"
            )
        member: _TarInfo = obj._proc_member(tarfile)  # type: ignore[attr-defined]
        return member


def _extract(stream: _Decoded, extraction: Extraction, fmt: str) -> None:
    first = stream.read(512)
    if not is_tar_header(first):
        inside = f" inside the {_COMPRESSION[fmt]} compression" if fmt != "tar" else ""
        raise UnsupportedArchiveError(f"not a tar archive{inside}")
    stream.unread(first)
    try:
        with tarfile.open(
            fileobj=cast("IO[bytes]", stream),
            mode="r|",
            tarinfo=_TarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        ) as archive:
            info = archive.next()
            while info is not None:
                archive.members.clear()  # type: ignore[attr-defined]  # a stream needs none kept
                stream.member = info.name
                _member(archive, info, stream, extraction)
                info = _next(archive)
    except tarfile.TarError as exc:
        raise CorruptArchiveError(f"corrupt archive: {exc}") from None
    stream.member = None


def _next(archive: tarfile.TarFile) -> tarfile.TarInfo | None:
    """`TarFile.next`, strict: a bad or truncated header is an error, not the end."""
    fileobj = cast("IO[bytes]", archive.fileobj)
    offset = archive.offset
    if offset != fileobj.tell():
        fileobj.seek(offset - 1)
        if not fileobj.read(1):
            raise CorruptArchiveError("corrupt archive: it ends inside a member (truncated)")
    try:
        return archive.tarinfo.fromtarfile(archive)
    except _EOF_HEADER:
        return None
    except _EMPTY_HEADER:
        raise CorruptArchiveError(
            "corrupt archive: it ends without its end-of-archive marker (truncated)"
        ) from None
    except tarfile.HeaderError as exc:
        problem = f"bad header at offset {offset} ({exc})"
        raise CorruptArchiveError(f"corrupt archive: {problem}") from None


def _entry(info: tarfile.TarInfo) -> Entry:
    if info.isreg():
        kind = FILE
    elif info.isdir():
        kind = DIR
    elif info.issym():
        kind = SYMLINK
    elif info.islnk():
        kind = HARDLINK
    elif info.ischr():
        kind = "character device"
    elif info.isblk():
        kind = "block device"
    elif info.isfifo():
        kind = "FIFO"
    else:
        kind = f"member of unknown type {info.type!r}"
    return Entry(
        name=info.name,
        kind=kind,
        mode=info.mode & 0o7777,
        mtime=float(info.mtime),
        size=info.size if kind == FILE else 0,
        link=info.linkname,
    )


def _member(
    archive: tarfile.TarFile, info: tarfile.TarInfo, stream: _Decoded, extraction: Extraction
) -> None:
    entry = _entry(info)
    parts = extraction.plan(entry)
    if parts is None:
        return
    if entry.kind == FILE:
        data = archive.extractfile(info)
        assert data is not None
        start = stream.compressed_in
        extraction.add_file(
            entry,
            parts,
            _chunks(data, info.size, entry.name),
            lambda: stream.compressed_in - start,
        )
    elif entry.kind == DIR:
        extraction.add_dir(entry, parts)
    elif entry.kind == SYMLINK:
        extraction.add_symlink(entry, parts)
    else:
        extraction.add_hardlink(entry, parts)


def _chunks(data: IO[bytes], size: int, name: str) -> Iterator[bytes]:
    remaining = size
    while remaining > 0:
        try:
            chunk = data.read(min(OUT_CHUNK, remaining))
        except tarfile.ReadError as exc:
            raise CorruptArchiveError(f"corrupt archive: member {name!r}: {exc}") from None
        if not chunk:
            raise CorruptArchiveError(f"corrupt archive: member {name!r} is truncated")
        remaining -= len(chunk)
        yield chunk
