"""Download and extract in one step: `extract(url, directory)`, and `extract_file` for an archive
already on disk.

The wiring between the network and the extraction core (the rest of this package, which knows
no HTTP). The format comes from the first bytes, never from the name or the Content-Type:

- tar, plain or compressed: the ordered stream of `segdl.open` (a `RemoteFile`: N
  connections, a reorder window) is read once, in order, by `extract_stream`, so extraction
  runs while the connections fetch; no temporary archive (`keep_archive` copies the bytes
  as they pass);
- zip from a server with ranges: the tail (end of central directory) and the central
  directory come from exact ranged GETs; the chosen members' bytes through an ordered stream
  that is positioned on each member, its window sized to the members' ranges so that an
  `include` of one member costs little more than that member;
- zip from a server without ranges or of unknown size, a zip to keep, and a zip whose whole
  bytes must be checked (`checksum`, or the server's digest without `include`): the archive is
  downloaded into a temporary folder beside DIR (same file system) or to `keep_archive`,
  checked, extracted from there, and the temporary folder removed.

The archive's checksum and the server's digest are checked before anything is moved into DIR:
the stream raises `IntegrityError` when its end is read, and `extract_stream` reads its source
to the end before it moves the staged tree into place; `segdl.download` checks a file before
it gets its name, and only then is it extracted.

A few small requests are spent to avoid fetching what is not needed: the probe and a 512-byte
ranged GET tell the format before any stream starts (a stream starts fetching at once, and
for a zip it starts at the first member), and the stream then probes nothing again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..core.clock import Clock
from ..core.cookies import Cookies
from ..core.destination import Target, taken
from ..core.events import StartInfo, TransferListener
from ..core.fetch import Fetcher
from ..core.http import Transport, open_transport
from ..core.limit import Throttle, Wait
from ..core.options import Options, options_from
from ..core.probe import RemoteInfo, probe_remote
from ..core.retry import RetryPolicy
from ..core.scheduler import Scheduler
from ..core.sink import NOFOLLOW, destination_error
from ..core.urls import check_url, origin
from ..core.verify import Checksum, server_digest
from ..errors import DestinationError, RangeIgnoredError, TruncatedError, UsageError
from ..file import download_file
from ..stream import WINDOW_DEFAULT, RemoteFile
from . import record
from .detect import DETECT_SIZE, detect_format
from .extractor import ExtractResult
from .safety import Limits, normalize_patterns
from .staging import Overwrite
from .tarstream import extract_stream
from .zipread import extract_zip, member_ranges, read_central_directory, select_members

MIN_WINDOW = 1 << 20  # the smallest window for a few zip members
TEMP_PREFIX = ".segdl-archive-"  # the temporary folder of an archive downloaded first
_COPY_CHUNK = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class ExtractListener(TransferListener):
    """Receives an extraction's events: its transfer's, and how far the extraction is."""

    def extracting(self, members: int, written: int) -> None:
        """`members` entries and `written` bytes of file data are extracted (into the
        staging folder) so far; called from the extracting thread."""


@dataclass(frozen=True)
class RemoteExtractResult(ExtractResult):
    """What `segdl.extract` did: the extraction's result, plus where from and at what cost."""

    url: str = ""
    elapsed: float = 0.0  # seconds, from the first request to the last member in place
    fetched: int = 0  # bytes received from the server
    archive: Path | None = None  # the kept archive (`keep_archive`), if any
    # True when the same extraction had been done before and its members were in place:
    # nothing was fetched or written (`members`, `skipped` and `paths` are the earlier run's).
    already_extracted: bool = False
    verified: tuple[Checksum, ...] = ()  # the `checksum` the archive matched (before the move)


def extract(
    url: str,
    directory: str | os.PathLike[str],
    *,
    include: Sequence[str] | None = None,
    strip_components: int = 0,
    keep_archive: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    max_size: int | None = None,
    max_members: int = 1_000_000,
    max_ratio: float = 200.0,
    connections: int = 8,
    window: int = WINDOW_DEFAULT,
    listener: ExtractListener | None = None,
    checksum: str | Checksum | None = None,
    min_split: int = Options.min_split,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    timeout: float = Options.timeout,
    connect_timeout: float = Options.connect_timeout,
    retries: int = Options.retries,
    verify: bool | str = True,
    max_redirects: int = Options.max_redirects,
    location_trusted: bool = False,
    allow_downgrade: bool = False,
    trust_env: bool = True,
    transport: str = Options.transport,
    http_version: str = Options.http_version,
    streams: int = Options.streams,
    user_agent: str | None = None,
    cookies: str | Cookies | None = None,
    load_cookies: str | os.PathLike[str] | None = None,
    proxy: str | None = None,
    noproxy: str | Iterable[str] | None = None,
    limit_rate: int | str | None = None,
    limit_rate_per_host: int | str | None = None,
) -> RemoteExtractResult:
    """Download the archive at `url` and extract it into `directory` (created if needed).

    zip, tar, tar.gz, tar.bz2, tar.xz and tar.zst (with the `zstd` extra), detected from the
    first bytes. `include` (glob patterns, matched before `strip_components` removes leading
    components) selects members; on a zip from a server with ranges only the central
    directory and the chosen members are fetched. Every member obeys the safety rules and
    the bomb limits (`max_size`: bytes written, default the free space of the destination's
    file system; `max_members`; `max_ratio` per member and overall). Existing files are not
    overwritten unless `overwrite`. All or nothing: on any error, `directory` is left as it
    was. `keep_archive` also saves the archive there (it gets its name once every byte arrived
    and checked out). `checksum` (`ALGO=HEX`) and the server's digest of the archive are
    checked before anything is moved into `directory`. At most `window` bytes are fetched
    ahead of the extraction (over `connections` connections). `listener` gets the download's
    progress and, through `ExtractListener.extracting`, the extraction's. The other keyword
    arguments are `segdl.download`'s.

    A finished extraction leaves a record in `directory/.segdl/`: running the same one again
    (same URL, `include` and `strip_components`) is a no-op when the probe finds the same
    archive (validators, size) and every member it wrote is still in place
    (`already_extracted`); when some are missing, it extracts again, replacing the members it
    wrote before (and nothing else, unless `overwrite`). `overwrite` always extracts again.
    The result's `paths` lists the members written, relative to `directory`.

    Raises a `segdl.SegdlError`: `ArchiveError` and its subclasses for a corrupt, unsupported
    or refused archive, the download errors otherwise.
    """
    check_url(url)
    if window < MIN_WINDOW:
        raise UsageError(f"the window must be at least {MIN_WINDOW} bytes")
    options = options_from(locals())
    dest, selection, strip = Path(directory), _patterns(include), _strip(strip_components)
    previous = None if overwrite else record.load(dest, url, selection, strip)
    keep = _keep_target(keep_archive)
    # What an earlier run of the same extraction kept there may be replaced.
    replace_keep = bool(overwrite) or (previous is not None and previous.archive == str(keep))
    if keep is not None and taken(keep) and not replace_keep:
        raise DestinationError(f"{keep} already exists (use --overwrite to replace it)")
    plan = _Plan(
        dest=dest,
        limits=Limits(max_size=max_size, max_members=max_members, max_ratio=max_ratio),
        include=selection,
        strip_components=strip,
        overwrite=bool(overwrite),
        keep=keep,
        replace_keep=replace_keep,
        listener=listener or ExtractListener(),
        window=window,
        previous=previous,
    )
    return _Job(url, plan, options).run()


def extract_file(
    path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    include: Sequence[str] | None = None,
    strip_components: int = 0,
    overwrite: bool = False,
    limits: Limits | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extract the archive file at `path` into `directory`, whatever its format (detected)."""
    path, directory = Path(path), Path(directory)
    try:
        with open(path, "rb") as archive:
            head = archive.read(DETECT_SIZE)
            fmt = detect_format(head)
            archive.seek(0)
            options: dict[str, Any] = {
                "limits": limits,
                "overwrite": overwrite,
                "strip_components": strip_components,
                "include": include,
                "on_progress": on_progress,
            }
            if fmt != "zip":
                return extract_stream(archive, directory, format=fmt, **options)
            fd = archive.fileno()
            size = os.fstat(fd).st_size
            return extract_zip(
                lambda offset, n: os.pread(fd, n, offset), size, directory, **options
            )
    except OSError as exc:
        raise destination_error(exc, path, "read the archive") from exc


# -- options -------------------------------------------------------------------------------------


def _patterns(include: Sequence[str] | None) -> tuple[str, ...] | None:
    normalize_patterns(include)  # raises UsageError for a bad pattern, before any request
    return tuple(include) if include is not None else None


def _strip(strip_components: int) -> int:
    if not isinstance(strip_components, int) or strip_components < 0:
        raise UsageError(f"strip_components must be 0 or more, not {strip_components!r}")
    return strip_components


def _keep_target(keep: str | os.PathLike[str] | None) -> Path | None:
    if keep is None:
        return None
    path = Path(keep)
    if path.is_dir():
        raise DestinationError(f"cannot keep the archive as {path}: it is a directory")
    if not path.parent.is_dir():
        raise DestinationError(f"cannot keep the archive as {path}: no directory {path.parent}")
    return path


@dataclass(frozen=True)
class _Plan:
    """What to extract where, and how; the same for every path through `_Job`."""

    dest: Path
    limits: Limits
    include: tuple[str, ...] | None
    strip_components: int
    overwrite: bool
    keep: Path | None
    replace_keep: bool  # whether an existing file at `keep` may be replaced
    listener: ExtractListener
    window: int
    previous: record.Record | None  # the record of this extraction done before, if any


# -- the job -------------------------------------------------------------------------------------


class _Job:
    """One archive from its URL to its members in place (see the module docstring)."""

    def __init__(self, url: str, plan: _Plan, options: Options) -> None:
        self.url = url
        self.plan = plan
        self.options = options
        self.started = time.monotonic()
        self.meta_fetched = 0  # bytes of the ranged GETs of the head, tail and directory
        self.streams: list[RemoteFile] = []
        self.downloaded = 0  # bytes fetched by `download_file` (a zip downloaded first)
        self.kept: Path | None = None
        self.overwrite: Overwrite = plan.overwrite
        self.info: RemoteInfo | None = None
        self.already = False
        self.throttle = Throttle.of(options)  # shared by every read of the archive

    def run(self) -> RemoteExtractResult:
        transport = open_transport(self.url, self.options)
        # The probe's and the ranged GETs' slots (each stream has its own scheduler).
        connections = self.options.connections
        scheduler = Scheduler(max_connections=connections, per_host=connections)
        self.fetcher = Fetcher(scheduler, Clock())
        try:
            result = self._run(transport)
        finally:
            for stream in self.streams:
                stream.close()
            scheduler.close()
            transport.close()
        if not self.already:
            self._record(result)
        return RemoteExtractResult(
            **{f.name: getattr(result, f.name) for f in fields(result)},
            url=self.url,
            elapsed=time.monotonic() - self.started,
            fetched=self.meta_fetched + sum(s.fetched for s in self.streams) + self.downloaded,
            archive=self.kept,
            already_extracted=self.already,
            verified=(self.options.checksum,) if self.options.checksum and not self.already else (),
        )

    def _run(self, transport: Transport) -> ExtractResult:
        info = self.info = self._probe(transport)
        previous = self.plan.previous
        if previous is not None and previous.same_archive(info):
            keep = self.plan.keep
            if previous.in_place(self.plan.dest) and (keep is None or keep.exists()):
                self.already = True
                self.kept = keep
                return ExtractResult(
                    format=previous.format,
                    dest=Path(os.path.abspath(self.plan.dest)),
                    members=previous.members,
                    bytes_written=0,
                    skipped=previous.skipped,
                    paths=tuple(path for path, _ in previous.paths),
                )
            if not self.plan.overwrite:  # some are missing: what it wrote may be replaced
                self.overwrite = frozenset(path for path, _ in previous.paths)
        if info.segmentable and info.size:
            meta = _Ranges(self.fetcher, transport, info, self._policy(), self.throttle)
            try:
                head = meta(0, min(DETECT_SIZE, info.size))
            except RangeIgnoredError:
                pass  # a server that answers ranges with the whole file: read it as a stream
            else:
                try:
                    fmt = detect_format(head)
                    if fmt == "zip":
                        return self._zip_ranges(info, meta)
                finally:
                    self.meta_fetched = meta.fetched
                return self._tar(self._source(self._open(info, self.plan.window)), fmt)
            info = replace(info, ranges=False)
        source = self._source(self._open(info, self.plan.window))
        fmt = detect_format(source.peek(DETECT_SIZE))
        if fmt == "zip":
            return self._zip_copied(source)
        return self._tar(source, fmt)

    def _probe(self, transport: Transport) -> RemoteInfo:
        """HEAD (or a one-byte GET), retried as the stream's own probe is."""
        tries = self.fetcher.attempts(origin(self.url), self._policy())
        return tries.call(lambda: probe_remote(transport, self.url))

    def _policy(self) -> RetryPolicy:
        return RetryPolicy(total=self.options.retries)

    def _open(
        self,
        info: RemoteInfo,
        window: int,
        listener: TransferListener | None = None,
        start: int = 0,
    ) -> RemoteFile:
        """The ordered stream of the archive probed as `info` (its validators guard every
        range), over its own connections. It starts fetching at `start` at once."""
        transport = open_transport(self.url, self.options)
        try:
            stream = RemoteFile(
                transport,
                info,
                self.options,
                window=window,
                start=start,
                listener=listener or self.plan.listener,
                throttle=self.throttle,
            )
        except BaseException:
            transport.close()
            raise
        self.streams.append(stream)
        return stream

    def _extract_options(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "limits": plan.limits,
            "overwrite": self.overwrite,
            "strip_components": plan.strip_components,
            "include": plan.include,
            "on_progress": plan.listener.extracting,
        }

    # -- tar -----------------------------------------------------------------------------------

    def _source(self, stream: RemoteFile) -> _Source:
        keep = _KeepCopy(self.plan.keep) if self.plan.keep is not None else None
        return _Source(stream, keep=keep)

    def _tar(self, source: _Source, fmt: str) -> ExtractResult:
        try:
            result = extract_stream(source, self.plan.dest, format=fmt, **self._extract_options())
        finally:
            source.discard()
        self.kept = source.kept
        return result

    # -- zip -----------------------------------------------------------------------------------

    def _zip_ranges(self, info: RemoteInfo, meta: _Ranges) -> ExtractResult:
        """A zip from a server with ranges: the directory first, then the chosen members."""
        assert info.size is not None
        plan = self.plan
        check_all = self.options.checksum is not None or (
            server_digest(info.digest) is not None and plan.include is None
        )
        if plan.keep is not None or check_all:
            return self._zip_downloaded()
        directory = read_central_directory(meta, info.size, max_members=plan.limits.max_members)
        chosen = select_members(
            directory, include=plan.include, strip_components=plan.strip_components
        )
        ranges = member_ranges(chosen)
        if meta.whole is not None:  # a zip smaller than its tail: every byte is here already
            whole = meta.whole
            return extract_zip(
                lambda offset, n: whole[offset : offset + n],
                info.size,
                plan.dest,
                directory=directory,
                **self._extract_options(),
            )
        reader = _Positioned(lambda start: self._open(info, window, progress, start=start))
        window = _window(ranges, plan.window, info.size)
        progress = _Planned(plan.listener, sum(b - a for a, b in ranges), reader)
        return extract_zip(
            reader, info.size, plan.dest, directory=directory, **self._extract_options()
        )

    def _zip_downloaded(self) -> ExtractResult:
        """The whole zip downloaded first by `download_file` (which checks the checksum and
        the server's digest before the file gets its name), to `keep_archive` or into a
        temporary folder, then extracted from there."""
        plan = self.plan
        with self._temporary(plan.keep is None) as folder:
            target = plan.keep if folder is None else folder / "archive"
            assert target is not None
            if_exists = "overwrite" if plan.replace_keep else "error"
            result = download_file(
                self.url,
                Target(target, None),
                replace(self.options, if_exists=if_exists),
                plan.listener,
                throttle=self.throttle,
            )
            self.downloaded = result.fetched
            if folder is None:
                self.kept = target
            return self._extract_local(target)

    def _zip_copied(self, source: _Source) -> ExtractResult:
        """A zip from a stream that cannot seek: copied into `keep_archive` or a temporary
        folder (the stream checks the digests at its end), then extracted from there."""
        with self._temporary(self.plan.keep is None) as folder:
            if folder is not None:
                source.attach(_KeepCopy(folder / "archive"))
            try:
                while source.read(_COPY_CHUNK):
                    pass
            finally:
                source.discard()
            assert source.kept is not None
            if folder is None:
                self.kept = source.kept
            return self._extract_local(source.kept)

    def _record(self, result: ExtractResult) -> None:
        """Leaves the record of this extraction in DIR; failing to is only a warning: the
        members are in place, only a re-run will not know it."""
        info = self.info
        assert info is not None
        done = record.Record(
            url=self.url,
            include=self.plan.include,
            strip_components=self.plan.strip_components,
            etag=info.validators.etag,
            last_modified=info.validators.last_modified,
            size=info.size,
            format=result.format,
            skipped=result.skipped,
            members=result.members,
            paths=record.kinds(result.dest, result.paths),
            archive=str(self.kept) if self.kept is not None else None,
        )
        try:
            record.save(result.dest, done)
        except DestinationError as exc:
            self.plan.listener.warning(f"{exc} (a re-run will extract again)")

    def _extract_local(self, path: Path) -> ExtractResult:
        opts = self._extract_options()
        return extract_file(path, self.plan.dest, **opts)

    @contextlib.contextmanager
    def _temporary(self, needed: bool) -> Iterator[Path | None]:
        """A temporary folder on the destination's file system (inside the destination when
        it exists), removed afterwards; None when not `needed`."""
        if not needed:
            yield None
            return
        where = _existing_ancestor(self.plan.dest)
        try:
            folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=where))
        except OSError as exc:
            raise destination_error(exc, where, "make a temporary folder in") from exc
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _window(ranges: list[tuple[int, int]], window: int, size: int) -> int:
    """The reorder window for reading `ranges` of a `size`-byte zip: the whole `window` when
    they are most of the archive; for a few members, one small enough that what is fetched
    past a member's end (before the next seek, or the end) stays a fraction of the member."""
    if sum(stop - start for start, stop in ranges) >= size // 2:
        return window
    longest = max((stop - start for start, stop in ranges), default=0)
    return min(window, max(MIN_WINDOW, longest // 8))


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    if not path.is_dir():
        raise DestinationError(f"cannot extract into {path}: it is not a directory")
    return path


# -- readers ---------------------------------------------------------------------------------------


class _Ranges:
    """Exact ranged GETs of the remote file (the head, the zip's tail and directory): one
    request each, retried as the engine retries (failures without progress)."""

    def __init__(
        self,
        fetcher: Fetcher,
        transport: Transport,
        info: RemoteInfo,
        policy: RetryPolicy,
        throttle: Throttle,
    ) -> None:
        assert info.size is not None
        self.fetcher = fetcher
        self.throttle = throttle
        self.transport = transport
        self.info = info
        self.size = info.size
        self.policy = policy
        self.fetched = 0
        self.whole: bytes | None = None  # the whole file, when one request asked for all of it
        self._last = (0, b"")  # the last range fetched: the head holds a tiny zip's tail

    def __call__(self, offset: int, length: int) -> bytes:
        stop = min(offset + length, self.size)
        if offset >= stop:
            return b""
        at, last = self._last
        if at <= offset and stop <= at + len(last):
            data = last[offset - at : stop - at]
            if offset == 0 and stop == self.size:
                self.whole = data
            return data
        tries = self.fetcher.attempts(origin(self.info.final_url), self.policy)
        data = tries.call(lambda: self._get(offset, stop, tries.pause))
        self._last = (offset, data)
        if offset == 0 and stop == self.size:
            self.whole = data
        return data

    def _get(self, start: int, stop: int, wait: Wait) -> bytes:
        url = self.info.final_url
        body = self.transport.open_range(
            url, start, stop, total=self.size, validators=self.info.validators
        )
        buf = bytearray(stop - start)
        view = memoryview(buf)
        got = 0
        try:
            with self.throttle.reading(origin(url), body.readinto, wait) as read:
                while got < len(buf):
                    got += read(view[got:])  # raises TruncatedError on a short body
        finally:
            body.close()
            self.fetched += got
        return bytes(buf)


class _Positioned:
    """A zip reader over an ordered stream, opened (by `open(start)`) at the first member
    data asked for, so that an archive refused from its directory fetches no member data;
    then seeks where asked (members come in offset order, so mostly forward and within the
    window) and reads exactly."""

    def __init__(self, open: Callable[[int], RemoteFile]) -> None:
        self.open = open
        self.stream: RemoteFile | None = None
        self.pos = 0
        self.read = 0  # bytes given to the extraction

    def __call__(self, offset: int, length: int) -> bytes:
        stream = self.stream
        if stream is None:
            stream = self.stream = self.open(offset)
            self.pos = offset
        elif offset != self.pos:
            stream.seek(offset)
            self.pos = offset
        pieces: list[bytes] = []
        left = length
        while left > 0:
            data = stream.read(left)
            if not data:
                break
            pieces.append(data)
            left -= len(data)
        self.pos += length - left
        self.read += length - left
        return b"".join(pieces)


class _KeepCopy:
    """The archive's bytes copied as they pass, into a temporary file beside `path` that gets
    its name only once every byte arrived and checked out."""

    def __init__(self, path: Path) -> None:
        self.path = path
        where = path.parent
        # Not mkstemp: its 0600 would stay on the kept file. Created 0644 as every output is,
        # so the umask decides, under a random name that O_EXCL makes ours.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | _CLOEXEC
        while True:
            part = where / f".{path.name[:100]}.{secrets.token_hex(4)}.part"
            try:
                fd = os.open(part, flags, 0o644)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise destination_error(exc, where, "write the archive into") from exc
        self.part = part
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.committed = False

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise destination_error(exc, self.path, "write the archive") from exc

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.part, self.path)
        except OSError as exc:
            raise destination_error(exc, self.path, "keep the archive as") from exc
        self.committed = True

    def discard(self) -> None:
        """Removes the copy unless it was committed."""
        if not self.file.closed:
            self.file.close()
        if not self.committed:
            with contextlib.suppress(OSError):
                self.part.unlink()


class _Source:
    """The stream as `extract_stream` reads it, copied to the kept archive as it passes. The
    stream checks the checksum and the server's digest when its end is read (raising, so
    the extraction aborts before the move); the copy gets its name only then."""

    def __init__(self, stream: RemoteFile, *, keep: _KeepCopy | None) -> None:
        self.stream = stream
        self.size = stream.size
        self.keep = keep
        self.kept: Path | None = None
        self.done = 0
        self._head = b""  # peeked bytes, given again by `read`
        self._ended = False

    def peek(self, size: int) -> bytes:
        """The first `size` bytes (fewer when the archive is shorter), read again later."""
        while len(self._head) < size:
            data = self._pull(size - len(self._head))
            if not data:
                break
            self._head += data
        return self._head[:size]

    def attach(self, keep: _KeepCopy) -> None:
        """Copies the bytes from now on, and those peeked (nothing else was read yet)."""
        assert self.keep is None and self.done == len(self._head)
        self.keep = keep
        keep.write(self._head)
        if self._ended:  # the whole archive was in the peek
            self._commit()

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            data = self._head if size < 0 else self._head[:size]
            self._head = self._head[len(data) :]
            return data
        return self._pull(size)

    def _pull(self, size: int) -> bytes:
        if self._ended:
            return b""
        data = self.stream.read(size if size > 0 else _COPY_CHUNK)
        if data:
            self.done += len(data)
            if self.keep is not None:
                self.keep.write(data)
            return data
        self._ended = True
        self.stream.close()  # every byte is in: stop the connections now, not after the move
        if self.size is not None and self.done != self.size:
            raise TruncatedError(f"the archive ended after {self.done} of {self.size} bytes")
        self._commit()
        return b""

    def _commit(self) -> None:
        if self.keep is not None:
            self.keep.commit()
            self.kept = self.keep.path

    def discard(self) -> None:
        """Removes the copy unless it was committed."""
        if self.keep is not None:
            self.keep.discard()


class _Planned(TransferListener):
    """The stream's events for a zip's chosen members: done and total are the member bytes
    read and planned, not positions in the whole file."""

    def __init__(self, inner: TransferListener, total: int, reader: _Positioned) -> None:
        self.inner = inner
        self.total = total
        self.reader = reader

    def start(self, info: StartInfo) -> None:
        self.inner.start(replace(info, total=self.total))

    def progress(self, done: int, total: int | None, connections: int) -> None:
        self.inner.progress(self.reader.read, self.total, connections)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def finish(self, done: int) -> None:
        self.inner.finish(self.reader.read)


__all__ = ["ExtractListener", "RemoteExtractResult", "extract", "extract_file"]
