"""The download engine: one file from its first answer to a committed file.

Data flow: `RemoteInfo` (from a HEAD probe, or from the first GET of a batch item, which also
carries the body) -> segments (a fresh plan, or what the control file says is missing) ->
`FileRanges` offered to the run's `Scheduler`, whose shared workers stream ranges into the
`.part` file at their own offsets -> the driver (the thread that called `run`) samples
counters for the listener and saves the control file -> every byte accounted for -> checksum
-> `os.replace` onto the final name -> control file removed.

Workers never call the listener, never log and take one uncontended lock per read buffer (to
move their position past the bytes they just wrote, so that a thief never takes bytes twice).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .core import plan, state
from .core.clock import Clock, page_buffer, thread_buffer
from .core.control import Control
from .core.destination import Target, settle
from .core.events import StartInfo, TransferListener
from .core.fetch import Attempts, Fetcher, Requeue, Retired, Stop
from .core.http import ResponseBody, Transport, open_transport
from .core.job import FileRanges, Segment
from .core.limit import ReadInto, Throttle
from .core.options import Options
from .core.probe import RemoteInfo, info_from_first, probe_remote
from .core.retry import RetryPolicy
from .core.scheduler import Scheduler
from .core.sink import ALIGN, PartFile, companions, direct_io_suitable, free_space
from .core.urls import origin
from .core.verify import Checksum, file_digest, server_digest
from .errors import (
    HTTPStatusError,
    InsufficientSpaceError,
    IntegrityError,
    Interrupted,
    NetworkError,
    ProtocolViolation,
    RemoteChangedError,
    SegdlError,
    TruncatedError,
)

_UNKNOWN = 1 << 62  # stop of a single stream whose length the server does not tell
_TICK = 0.1  # how often the driver samples progress
_MAX_RESTARTS = 2  # restarts from zero after the remote changed mid-run
_RATE_AFTER = 0.25  # seconds of data before a connection's rate counts
# Ranges planned per connection: a straggling connection then holds a small share of the
# file, and the others pick up the rest as they free up (reused connections make the extra
# requests cheap).
_PIECES_PER_CONNECTION = 4
# A single stream smaller than this is not preallocated: one request writes it at once, and
# two system calls per small file of a batch are worth saving.
_ALLOCATE_MIN = 1 << 20


def download_file(
    url: str,
    target: Target,
    options: Options,
    listener: TransferListener,
    *,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    throttle: Throttle | None = None,
) -> Result:
    """One file from `url` to `target`, its if-exists policy applied once the first answer
    names it: what `segdl.download` runs, and what an archive downloaded first runs (under
    the archive's `throttle`)."""
    transport = open_transport(url, options)
    engine = Engine(transport, options, listener, cancel=cancel, clock=clock, throttle=throttle)
    try:
        info = engine.probe(url)
        wanted = target.path(info)
        final = settle(wanted, options.if_exists)
        if final is None:
            return _skipped(wanted, info)
        return engine.run(info, final)
    finally:
        transport.close()


def _skipped(path: Path, info: RemoteInfo) -> Result:
    return Result(
        path=path,
        url=info.url,
        final_url=info.final_url,
        size=path.stat().st_size if path.exists() else 0,
        elapsed=0.0,
        connections=0,
        fetched=0,
        resumed=0,
        segmented=False,
        skipped=True,
    )


__all__ = ["Engine", "Requeue", "Result", "download_file"]


@dataclass
class Result:
    """What `download()` returns."""

    path: Path
    url: str
    final_url: str
    size: int
    elapsed: float  # seconds from the probe to the commit
    connections: int  # worker connections started
    fetched: int  # bytes fetched in this run
    resumed: int  # bytes already on disk from an earlier run
    segmented: bool  # False when one plain stream was used
    skipped: bool = False  # True when the file existed and if_exists="skip"
    warnings: list[str] = field(default_factory=list)
    verified: tuple[Checksum, ...] = ()  # the digests the file matched (--checksum, server's)


class Engine:
    """Runs one file's download, from its first answer to a committed file, on a scheduler."""

    def __init__(
        self,
        transport: Transport,
        options: Options,
        listener: TransferListener,
        *,
        cancel: threading.Event | None = None,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.transport = transport
        self.options = options
        self.listener = listener
        self.cancel = cancel or threading.Event()  # the caller's: set it to stop the download
        self.clock = clock or Clock()
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler or Scheduler(
            max_connections=options.connections,
            per_host=options.connections,
            buffer_factory=lambda: page_buffer(options.buffer_size),
            monotonic=self.clock.monotonic,
        )
        self.fetcher = Fetcher(self.scheduler, self.clock, cancel=self.cancel)
        # The speed limits, shared like the scheduler by every file of a run.
        self.throttle = throttle or Throttle.of(options, self.clock.monotonic)
        # Set when the current job must stop (an error, or the caller's cancel); new per job.
        self._halt = threading.Event()
        self.retry = RetryPolicy(total=options.retries)
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._count_lock = threading.Lock()
        self._fetched = 0
        # The first GET of a batch item: its open body (which holds its slot), until used.
        self._first: ResponseBody | None = None
        self.attempts = 0  # requests that opened a body or failed (for reports)
        self.http_status: int | None = None  # status of the last answer with a body
        self.protocol: str | None = None  # the HTTP version of the first answer with a body
        # The digest the file must have: the options', or a batch item's own (set before `run`).
        self.checksum: Checksum | None = options.checksum

    # -- public -------------------------------------------------------------------------------
    @property
    def fetched(self) -> int:
        """Bytes fetched so far (sampled by a batch's progress, from another thread)."""
        return self._fetched

    def run(self, info: RemoteInfo, final: Path) -> Result:
        started = self.clock.monotonic()
        part_path, control = companions(final)
        try:
            info, part, resumed, connections, segmented = self._transfer(info, final)
            size = part.size() if info.size is None else info.size
            try:
                verified = self._verify(part, size, info)
            finally:
                self.listener.finish(size)  # after `verifying`: the bar shows the check
        except IntegrityError:
            state.discard(control)  # bytes that fail the checksum are not worth resuming
            raise
        except BaseException:
            # A partial file is worth keeping only while a control file vouches for it.
            if not control.exists():
                with contextlib.suppress(OSError):
                    part_path.unlink()
            raise
        finally:
            self._drop_first()
            if self._own_scheduler:
                self.scheduler.close()
        # A file fetched in one request has no control file to vouch for it: its bytes need no
        # sync before the rename (a crash leaves the `.part`, or the whole file, never a mix).
        part.commit(sync=segmented or self.options.sync_each_file)
        if segmented or self.options.sync_each_file:
            state.discard(control)
        return Result(
            path=final,
            url=info.url,
            final_url=info.final_url,
            size=size,
            elapsed=self.clock.monotonic() - started,
            connections=connections,
            fetched=self._fetched,
            resumed=resumed,
            segmented=segmented,
            warnings=list(self.warnings),
            verified=verified,
        )

    def fetch_first(
        self,
        url: str,
        resolve: Callable[[RemoteInfo], Path | None],
        *,
        requeue: bool = False,
        started: ResponseBody | None = None,
        slot: Callable[[], None] | None = None,
    ) -> Result | None:
        """Batch path: a GET of `bytes=0-` that sizes the file and already carries its body.

        `resolve` names the destination from what the answer says (it may raise to refuse the
        item, or return None to skip it: the body is then dropped). A small file is done in
        this one request; a large one is split while this connection keeps streaming.
        With `requeue`, a host that asks for a pause (429/503 with Retry-After), or is paused,
        raises `Requeue` instead of waiting here: the caller's thread can serve other hosts.
        `started` is that GET sent already (`Transport.start_first`), on the slot that `slot`
        gives back.
        """
        final_url = url
        first = started

        def send() -> ResponseBody:
            nonlocal final_url, first
            self.attempts += 1
            sent, first = first, None
            try:
                body, final_url = self.transport.open_first(
                    url, accept=self.options.accept, started=sent
                )
            except HTTPStatusError as exc:
                self.http_status = exc.status
                raise
            return body

        tries = self.fetcher.attempts(origin(url), self.retry, leave_paused=requeue, slot=slot)
        try:
            body = tries.open(send)
        except Stop:
            raise Interrupted("interrupted") from None
        self.http_status = body.status
        self.protocol = body.protocol
        self._first = body
        try:
            info = info_from_first(url, final_url, body)
            final = resolve(info)
        except BaseException:
            self._drop_first()
            raise
        if final is None:
            self._drop_first()
            return None
        return self.run(info, final)

    def _take_first(self) -> ResponseBody | None:
        body, self._first = self._first, None
        return body

    def _drop_first(self) -> None:
        """Close an unused first body, which gives its slot back (idempotent)."""
        body = self._take_first()
        if body is not None:
            body.close()

    def _transfer(
        self, info: RemoteInfo, final: Path
    ) -> tuple[RemoteInfo, PartFile, int, int, bool]:
        """Fetch every byte into the `.part` file, falling back or restarting as needed."""
        part_path, control = companions(final)
        restarts = 0
        while True:
            try:
                if info.size == 0:
                    self._drop_first()
                    part = PartFile.create(part_path, final)
                    self.listener.start(StartInfo(info.url, final, 0, 0, 0, protocol=info.protocol))
                    return info, part, 0, 0, True
                if info.segmentable and self._worth_splitting(info):
                    part, resumed, connections = self._run_segmented(info, final)
                    return info, part, resumed, connections, True
                part, resumed, connections = self._run_stream(info, final)
                return info, part, resumed, connections, False
            except RemoteChangedError as exc:
                self._drop_first()
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise
                self.warn(f"{exc}; starting again from zero")
                state.discard(control)
                info = self.probe(info.url)
            except ProtocolViolation as exc:
                self._drop_first()
                if not info.segmentable:
                    raise
                self.warn(f"{exc}; falling back to a single connection")
                state.discard(control)
                info = dataclasses.replace(info, ranges=False)

    def _worth_splitting(self, info: RemoteInfo) -> bool:
        """A probed file is always planned in ranges (as before batches); a first GET's file
        only when it is large enough for a second connection to help."""
        if self._first is None:
            return True
        if self._first.in_memory:
            return False  # every byte is here already
        assert info.size is not None
        return self.options.connections > 1 and info.size >= 2 * self.options.min_split

    def probe(self, url: str) -> RemoteInfo:
        """Probe `url`, retrying network errors and retryable statuses like any request."""
        tries = self.fetcher.attempts(origin(url), self.retry)
        try:
            return tries.call(lambda: probe_remote(self.transport, url))
        except Stop:
            raise Interrupted("interrupted") from None

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)
            self.listener.warning(message)

    # -- segmented ------------------------------------------------------------------------------
    def _run_segmented(self, info: RemoteInfo, final: Path) -> tuple[PartFile, int, int]:
        assert info.size is not None
        part, segments, control = self._open_or_resume(info, final)
        if self.options.direct_io and direct_io_suitable(part.path):
            part.enable_direct_io()
        resumed = sum(s.pos - s.start for s in segments)
        remaining = info.size - resumed
        workers = min(
            self.options.connections,
            max(sum(1 for s in segments if s.pos < s.stop), remaining // self.options.min_split),
        )
        job = self._job(info, part, segments, workers, self._work_segment)
        first = self._take_first()
        own = segments[0] if first is not None and segments[0].pos == 0 else None
        if first is not None and own is None:
            first.close()  # resuming: the bytes from 0 are on disk already
            first = None
            self._drop_first()
        self.listener.start(
            StartInfo(info.url, part.final, info.size, workers, resumed, protocol=info.protocol)
        )
        if remaining:
            self._drive(job, control, own, first)
        if job.done_bytes() != info.size:
            # Every worker ended without error but bytes are missing: never commit that.
            raise TruncatedError(f"only {job.done_bytes()} of {info.size} bytes arrived")
        return part, resumed, workers

    def _job(
        self,
        info: RemoteInfo,
        part: PartFile,
        segments: list[Segment],
        workers: int,
        work: Callable[[FileRanges, Segment, memoryview], None],
        *,
        stealable: bool = True,
    ) -> FileRanges:
        job = FileRanges(
            info,
            part,
            segments,
            host=origin(info.final_url),
            max_workers=workers,
            min_split=self.options.min_split,
            work=work,
            # Under a speed limit no range is stolen: the thief would fetch again what is
            # already on its way in the victim's socket (and paid for once by the limit), and
            # the connections share one rate anyway.
            stealable=stealable and not self.throttle.limited,
            on_release=self.scheduler.wake,
        )
        self._halt = job.halt
        return job

    def _open_or_resume(
        self, info: RemoteInfo, final: Path
    ) -> tuple[PartFile, list[Segment], Control | None]:
        """The `.part` file and its segments, resumed when a control file vouches for them;
        and the control file to keep (None when the server gives no validator)."""
        assert info.size is not None
        part_path, control_path = companions(final)
        control = Control(control_path, self.clock.monotonic)
        if self.options.resume:
            resumed = control.resume(info, final, self.warn)
            if resumed is not None:
                return (*resumed, control)
        else:
            control.discard()
        self._check_space(part_path.parent, info.size)
        part = PartFile.create(part_path, final)
        part.allocate(info.size)
        ranges = plan.split(
            info.size,
            self.options.connections * _PIECES_PER_CONNECTION,
            self.options.min_split,
            align=ALIGN,
        )
        segments = [Segment(a, a, b) for a, b in ranges]
        if info.validators.empty:
            control.discard()  # without a validator a resume could splice two versions
            return part, segments, None
        control.start(FileRanges(info, part, segments))
        return part, segments, control

    def _check_space(self, directory: Path, size: int) -> None:
        try:
            free = free_space(directory)
        except OSError:
            return
        if size > free:
            raise InsufficientSpaceError(
                f"not enough free space in {directory}: the file needs {size} bytes, "
                f"{free} are available"
            )

    def _work_segment(self, job: FileRanges, seg: Segment, buffer: memoryview) -> None:
        """One claimed range, on a scheduler worker that holds a slot for the job's host."""
        began, first = self.clock.monotonic(), seg.pos
        try:
            self._fetch_segment(job, seg, buffer)
        except Retired:
            # The server refused one connection too many; the file keeps the others.
            with job.lock:
                job.max_workers = max(1, job.workers - 1)
            return
        elapsed = self.clock.monotonic() - began
        if elapsed > _RATE_AFTER and job.is_straggler((seg.pos - first) / elapsed):
            self.transport.reconnect()

    def _fetch_segment(
        self, job: FileRanges, seg: Segment, buffer: memoryview, body: ResponseBody | None = None
    ) -> None:
        """Stream `seg` to the end; raises Retired when this worker leaves instead.

        `body`, when given, is the open first answer of the file (`bytes=0-`), holding the slot
        taken for it: it is read up to the segment's stop and then dropped with its connection
        (a request for the rest of the range then takes a slot of its own).
        """
        info = job.info
        size = info.size
        assert size is not None
        tries = self._attempts(job, held=body is None)
        stop = seg.stop

        def send() -> ResponseBody:
            nonlocal stop
            self.attempts += 1
            stop = seg.stop
            # Lean: a batch that stops cuts a request still waiting for its answer.
            return self.transport.open_range(
                info.final_url, seg.pos, stop, total=size, validators=info.validators
            )

        try:
            while True:
                tries.check()
                pos = seg.pos
                if pos >= seg.stop:
                    return
                first = body is not None
                if body is None:
                    body = tries.open(send, retire=lambda exc: self._should_retire(job, exc))
                with job.lock:
                    job.streaming += 1
                    seg.opened(self.clock.monotonic())
                try:
                    with self.throttle.reading(job.host, body.readinto, tries.pause) as read:
                        self._pump(seg, read, buffer, job.part)
                    if seg.pos >= stop and not first:
                        body.check_no_more()
                except NetworkError as exc:
                    tries.failed(exc, progressed=seg.pos > pos)
                finally:
                    body.close()
                    body = None
                    with job.lock:
                        job.streaming -= 1
        finally:
            if body is not None:
                body.close()  # the first answer, open when the stop came

    def _pump(self, seg: Segment, read: ReadInto, buffer: memoryview, part: PartFile) -> None:
        # The hot loop: reads fill the reused buffer, and one positional write empties it when
        # it is full, at the end of the range, when its oldest byte is one save interval old
        # (so a crash loses no more than that) and before any error or stop goes on up.
        # `read` is the body's `readinto` (metered under a speed limit).
        size = len(buffer)
        # The cancel too: a batch driver streams its file's first range here, and no one sets
        # the job's halt while it does.
        halt, cancel = self._halt, self.cancel
        monotonic = self.clock.monotonic
        stale = self.options.save_interval
        fill = 0
        oldest = 0.0
        try:
            while True:
                pos = seg.pos
                want = seg.stop - pos - fill
                if want <= 0:
                    return
                # Until the position is block-aligned, fill only up to the next block boundary.
                limit = size if pos % ALIGN == 0 else ALIGN - pos % ALIGN
                n = read(buffer[fill : fill + min(limit - fill, want)])
                if n == 0:
                    raise TruncatedError(f"body ended early at byte {pos + fill}")
                if fill == 0:
                    oldest = monotonic()
                fill += n
                if halt.is_set() or cancel.is_set():
                    raise Stop
                if fill >= limit or n >= want or monotonic() - oldest >= stale:
                    self._flush(seg, buffer, fill, part)
                    fill = 0
        finally:
            if fill:
                self._flush(seg, buffer, fill, part)  # bytes that arrived are kept, always

    def _flush(self, seg: Segment, buffer: memoryview, fill: int, part: PartFile) -> None:
        """Write the buffer's `fill` bytes at the range's position, up to its (maybe cut) stop."""
        with seg.lock:
            pos = seg.pos
            end = min(pos + fill, seg.stop)
            if end > pos:
                part.write_blocks(buffer[: end - pos], pos)
                seg.pos = end
        if end > pos:
            with self._count_lock:
                self._fetched += end - pos

    def _should_retire(self, job: FileRanges, exc: SegdlError) -> bool:
        """Give up this connection when the server refuses extra ones but others are working."""
        if not (isinstance(exc, HTTPStatusError) and exc.status in (429, 503)):
            return False
        with job.lock:
            if job.streaming == 0:
                return False  # nobody is getting through: wait it out instead
        self.warn("the server refused some connections; going on with fewer")
        return True

    def _attempts(self, job: FileRanges, *, held: bool) -> Attempts:
        """The tries of one of the job's requests; `held`: on a worker's slot."""
        return self.fetcher.attempts(job.host, self.retry, halt=job.halt, held=held)

    # -- single stream --------------------------------------------------------------------------
    def _run_stream(self, info: RemoteInfo, final: Path) -> tuple[PartFile, int, int]:
        first = self._first
        if first is not None and first.in_memory and not self.throttle.limited:
            return self._write_whole(info, final, first)
        part_path, control = companions(final)
        if self._first is None:
            # A single stream from zero cannot be resumed from a control file. (A batch's
            # first GET skips the look: one file system call fewer per small file.)
            state.discard(control)
        if info.size is not None and info.size > _ALLOCATE_MIN:
            self._check_space(part_path.parent, info.size)
        part = PartFile.create(part_path, final)
        if info.size is not None and info.size > _ALLOCATE_MIN:
            part.allocate(info.size)
        seg = Segment(0, 0, info.size if info.size is not None else _UNKNOWN)
        job = self._job(info, part, [seg], 1, self._stream_worker, stealable=False)
        self.listener.start(StartInfo(info.url, final, info.size, 1, 0, protocol=info.protocol))
        first = self._take_first()
        if first is not None:
            # The first answer is already streaming on a slot this thread holds: finish here.
            seg.active = True
            try:
                self._stream_worker(job, seg, thread_buffer(self.options.buffer_size), first)
            except Stop:
                pass
            except BaseException as exc:
                job.fail(exc)
            finally:
                self._drop_first()
                job.release(seg)
            self._finish_job(job, None)
        else:
            self._drive(job, None)
        if info.size is None:
            part.truncate(seg.pos)
        elif seg.pos != info.size:
            raise TruncatedError(f"only {seg.pos} of {info.size} bytes arrived")
        return part, 0, 1

    def _write_whole(
        self, info: RemoteInfo, final: Path, body: ResponseBody
    ) -> tuple[PartFile, int, int]:
        """A first answer that came whole into memory (a small file, over libcurl): written in
        one go, with no range job, worker or progress loop to wait for."""
        self._first = None
        part = PartFile.create(companions(final)[0], final)
        self.listener.start(StartInfo(info.url, final, info.size, 1, 0, protocol=info.protocol))
        seg = Segment(0, 0, info.size if info.size is not None else _UNKNOWN)
        try:
            self._pump_stream(
                seg, body.readinto, thread_buffer(self.options.buffer_size), part, info.size
            )
        except Stop:
            part.close()
            raise Interrupted("interrupted") from None
        except BaseException:
            part.close()
            raise
        finally:
            body.close()
        if info.size is None:
            part.truncate(seg.pos)
        self.listener.progress(seg.pos, info.size, 0)
        return part, 0, 1

    def _stream_worker(
        self, job: FileRanges, seg: Segment, buffer: memoryview, first: ResponseBody | None = None
    ) -> None:
        """The single stream, on a worker's slot, or from `first` (the open first answer,
        holding its own slot: a request after it then takes a slot of its own)."""
        info = job.info
        tries = self._attempts(job, held=first is None)
        offset = 0

        def send() -> ResponseBody:
            self.attempts += 1
            return self.transport.open_stream(info.final_url, offset, validators=info.validators)

        body = first
        try:
            while True:
                tries.check()
                # Continue where a broken stream stopped only if the server proved it can.
                offset = seg.pos if info.ranges else 0
                seg.pos = offset
                if body is None:
                    body = tries.open(send)
                expected = None if body.length is None else offset + body.length
                if info.size is not None and expected not in (None, info.size):
                    raise RemoteChangedError(
                        f"the server now announces {expected} bytes instead of {info.size}"
                    )
                try:
                    with job.lock:
                        job.streaming += 1
                    with self.throttle.reading(job.host, body.readinto, tries.pause) as read:
                        self._pump_stream(seg, read, buffer, job.part, info.size)
                    seg.stop = seg.pos  # a stream of unknown length is complete where it ended
                    return
                except NetworkError as exc:
                    tries.failed(exc, progressed=seg.pos > offset)
                finally:
                    body.close()
                    body = None
                    with job.lock:
                        job.streaming -= 1
        finally:
            if body is not None:
                body.close()  # the first answer, open when the stop came, or a changed one

    def _pump_stream(
        self, seg: Segment, read: ReadInto, buffer: memoryview, part: PartFile, size: int | None
    ) -> None:
        halt, cancel = self._halt, self.cancel  # a batch driver streams here: it sees the cancel
        fetched = 0
        try:
            while True:
                n = read(buffer)
                if n == 0:
                    break
                if halt.is_set() or cancel.is_set():
                    raise Stop
                if size is not None and seg.pos + n > size:
                    raise ProtocolViolation(f"server sent more than the {size} bytes announced")
                part.write_at(buffer[:n], seg.pos)
                seg.pos += n
                fetched += n
        finally:
            with self._count_lock:
                self._fetched += fetched
        if size is not None and seg.pos != size:
            raise TruncatedError(f"stream ended after {seg.pos} of {size} bytes")

    # -- the driver -----------------------------------------------------------------------------
    def _drive(
        self,
        job: FileRanges,
        control: Control | None,
        own: Segment | None = None,
        first: ResponseBody | None = None,
    ) -> None:
        """Offer `job` to the scheduler's workers and wait for its end, sampling progress and
        saving state meanwhile. `own` is a segment this thread streams itself from `first`,
        the open first answer (on the slot this thread holds), before it waits."""
        if own is not None:
            own.active = True
        self.scheduler.add_job(job)
        try:
            if own is not None and first is not None:
                try:
                    buffer = thread_buffer(self.options.buffer_size)
                    self._fetch_segment(job, own, buffer, first)
                except Stop:
                    pass
                except BaseException as exc:
                    job.fail(exc)
                finally:
                    self._drop_first()
                    job.release(own)
            self._finish_job(job, control)
        finally:
            self.scheduler.remove_job(job)

    def _finish_job(self, job: FileRanges, control: Control | None) -> None:
        """Wait for the job's end; raise its error (after saving what can be resumed)."""
        interval = self.options.save_interval
        next_save = self.clock.monotonic() + interval
        total = job.info.size
        try:
            while not job.wait_done(_TICK):
                self.listener.progress(job.done_bytes(), total, job.streaming)
                if control is not None and self.clock.monotonic() >= next_save:
                    control.save(job)
                    next_save = self.clock.monotonic() + interval
                if self.cancel.is_set():
                    raise Stop
        except (Stop, KeyboardInterrupt):  # the caller's cancel, or Ctrl-C in this thread
            job.halt.set()
            self.scheduler.wake()
            job.wait_done(1.0)
            if control is not None:
                control.save(job, sync=True)
            job.part.close()
            self.listener.finish(job.done_bytes())
            raise Interrupted(
                "interrupted; run the same command again to resume"
                if control is not None
                else "interrupted"
            ) from None
        self.listener.progress(job.done_bytes(), total, 0)
        error = job.error
        if error is not None:
            if control is not None and isinstance(error, SegdlError):
                control.save(job, sync=True)  # keep what we have for a later resume
            job.part.close()
            self.listener.finish(job.done_bytes())
            raise error

    # -- verification ---------------------------------------------------------------------------
    def _verify(self, part: PartFile, size: int, info: RemoteInfo) -> tuple[Checksum, ...]:
        """The digests the file matched; raises IntegrityError at the first it does not."""
        checks = tuple(c for c in (self.checksum, server_digest(info.digest)) if c)
        for check in checks:
            self.listener.verifying(check)
            actual = file_digest(part.read_at, size, check.algorithm)
            if actual != check.hexdigest:
                part.discard()
                raise IntegrityError(check.mismatch(actual))
        return checks
