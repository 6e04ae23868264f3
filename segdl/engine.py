"""The download engine: plan or resume, run the worker pool with work stealing, verify, commit.

Data flow: `RemoteInfo` -> segments (a fresh plan, or what the control file says is missing) ->
N worker threads, each streaming a range into the `.part` file at its own offsets -> the main
thread samples counters for the listener and saves the control file -> every byte accounted for
-> checksum -> `os.replace` onto the final name -> control file removed.

Workers never call the listener, never log and take one uncontended lock per read buffer (to
move their position past the bytes they just wrote, so that a thief never takes bytes twice).
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import plan, state
from .errors import (
    DestinationError,
    DiskFullError,
    HTTPStatusError,
    IntegrityError,
    Interrupted,
    NetworkError,
    ProtocolViolation,
    RemoteChangedError,
    SegdlError,
    TransferError,
    TruncatedError,
)
from .options import Options
from .probe import RemoteInfo, probe_remote
from .progress import Listener, StartInfo
from .retry import RetryPolicy, wait_before_retry
from .sink import ALIGN, PartFile, direct_io_suitable, free_space
from .transport import Body, Transport, Validators
from .verify import Checksum, file_digest, server_digest

PART_SUFFIX = ".part"  # the bytes, until the final rename
CONTROL_SUFFIX = ".segdl"  # the control file that makes the bytes resumable
_UNKNOWN = 1 << 62  # stop of a single stream whose length the server does not tell
_TICK = 0.1  # how often the main thread samples progress
_MAX_RESTARTS = 2  # restarts from zero after the remote changed mid-run
_STEAL_MIN_SECONDS = 0.5  # steal only from a range that needs at least this long to finish
_RATE_AFTER = 0.25  # seconds of data before a connection's rate counts
_IDLE_POLL = 0.1  # how often an idle worker looks again for a range worth stealing
# Ranges planned per connection: a straggling connection then holds a small share of the
# file, and the others pick up the rest as they free up (reused connections make the extra
# requests cheap).
_PIECES_PER_CONNECTION = 4
# A connection much slower than the others is dropped after its range, and a new one made:
# the next may take a better path (or, on servers that limit by connection, a better slot).
_SLOW_FRACTION = 0.25
# Data is fsynced at most this often, and never so often that syncing takes over ~3% of the
# time: each sync forces to disk what would otherwise stay in the page cache. Between syncs the
# control file still records every written byte, which survives a crash of the process.
_SYNC_INTERVAL = 2.0
_SYNC_BUDGET = 30


@dataclass
class Clock:
    """Time and randomness, injectable so that tests take no real time."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    sleep: Callable[[float], object] | None = None  # None: wait on the engine's halt event


def companions(final: Path) -> tuple[Path, Path]:
    """The `.part` file and the control file that stand beside `final` while it downloads."""
    return final.with_name(final.name + PART_SUFFIX), final.with_name(final.name + CONTROL_SUFFIX)


class Segment:
    """`[start, stop)` of the file, written up to `pos`. `stop` only ever moves down (stealing)."""

    __slots__ = ("active", "lock", "opened_at", "opened_pos", "pos", "start", "stop")

    def __init__(self, start: int, pos: int, stop: int) -> None:
        self.start = start
        self.pos = pos
        self.stop = stop
        self.active = False
        self.lock = threading.Lock()
        self.opened_at: float | None = None  # when the body now being read was requested
        self.opened_pos = pos

    @property
    def remaining(self) -> int:
        return self.stop - self.pos

    def opened(self, now: float) -> None:
        self.opened_at, self.opened_pos = now, self.pos

    def rate(self, now: float) -> float | None:
        """Bytes/s of the connection serving this range, once it has been measured a while."""
        if self.opened_at is None or now - self.opened_at < _RATE_AFTER:
            return None
        return (self.pos - self.opened_pos) / (now - self.opened_at)


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


class _Stop(Exception):
    """A worker leaves its loop because the job was cancelled (internal)."""


class Job:
    """One file's segments and the bookkeeping the workers share."""

    def __init__(self, info: RemoteInfo, part: PartFile, segments: list[Segment]) -> None:
        self.info = info
        self.part = part
        self.segments = segments
        self.lock = threading.Lock()  # guards the segment list, `active` flags and counters
        # Notified when a worker lets go of a range: idle workers then look again at once
        # (the last range's end, above all, must not wait out an idle poll).
        self.released = threading.Condition(self.lock)
        self.streaming = 0  # workers with an open body right now
        self.rates: dict[int, float] = {}  # each worker's last measured rate, bytes/s

    def next_work(self, min_split: int, now: float, thief_rate: float | None) -> Segment | None:
        """An unowned unfinished segment, else the tail of the slowest range in flight."""
        with self.lock:
            for seg in self.segments:
                if not seg.active and seg.pos < seg.stop:
                    seg.active = True
                    return seg
            victim_index = plan.pick_victim(
                [(s.remaining, s.rate(now)) if s.active else None for s in self.segments],
                _STEAL_MIN_SECONDS,
            )
            if victim_index is None:
                return None
            victim = self.segments[victim_index]
            with victim.lock:
                cut = plan.steal_point(
                    victim.pos, victim.stop, min_split, victim.rate(now), thief_rate, align=ALIGN
                )
                if cut is None:
                    return None
                stolen = Segment(cut, cut, victim.stop)
                victim.stop = cut
            stolen.active = True
            self.segments.insert(victim_index + 1, stolen)
            return stolen

    def is_straggler(self, rate: float) -> bool:
        """Record this worker's rate; True when it is far below the others' median."""
        me = threading.get_ident()
        with self.lock:
            self.rates[me] = rate
            others = sorted(r for worker, r in self.rates.items() if worker != me)
        if len(others) < 3:
            return False
        return rate < _SLOW_FRACTION * others[len(others) // 2]

    def in_flight(self) -> bool:
        """Whether some range is still being fetched (and may yet be worth taking over)."""
        return any(s.active and s.remaining > 0 for s in self.segments)

    def done_bytes(self) -> int:
        return sum(s.pos - s.start for s in self.segments)

    def snapshot(self) -> tuple[tuple[int, int, int], ...]:
        """The segments as `(start, done, stop)`, consistent with each other."""
        with self.lock:
            return tuple((s.start, s.pos, s.stop) for s in self.segments)


class Engine:
    """Runs one download from a probed `RemoteInfo` to a committed file."""

    def __init__(
        self,
        transport: Transport,
        options: Options,
        listener: Listener,
        *,
        cancel: threading.Event | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.transport = transport
        self.options = options
        self.listener = listener
        self.cancel = cancel or threading.Event()  # the caller's: set it to stop the download
        self.clock = clock or Clock()
        # Set when the current pool must stop (an error, or the caller's cancel); new per pool.
        self._halt = threading.Event()
        self.sleep = self.clock.sleep or self._interruptible_sleep
        self.retry = RetryPolicy(total=options.retries)
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._fetched = 0
        self._boot_id = state.current_boot_id()
        self._durable: tuple[tuple[int, int, int], ...] | None = None
        self._next_sync = 0.0

    # -- public -------------------------------------------------------------------------------
    def run(self, info: RemoteInfo, final: Path) -> Result:
        started = self.clock.monotonic()
        part_path, control = companions(final)
        try:
            info, part, resumed, connections, segmented = self._transfer(info, final)
            size = part.size() if info.size is None else info.size
            self.listener.finish(size)
            self._verify(part, size, info)
        except IntegrityError:
            state.discard(control)  # bytes that fail the checksum are not worth resuming
            raise
        except BaseException:
            # A partial file is worth keeping only while a control file vouches for it.
            if not control.exists():
                with contextlib.suppress(OSError):
                    part_path.unlink()
            raise
        part.commit()
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
        )

    def _transfer(
        self, info: RemoteInfo, final: Path
    ) -> tuple[RemoteInfo, PartFile, int, int, bool]:
        """Fetch every byte into the `.part` file, falling back or restarting as needed."""
        part_path, control = companions(final)
        restarts = 0
        while True:
            try:
                if info.size == 0:
                    part = PartFile.create(part_path, final)
                    self.listener.start(StartInfo(info.url, final, 0, 0, 0))
                    return info, part, 0, 0, True
                if info.segmentable:
                    part, resumed, connections = self._run_segmented(info, final)
                    return info, part, resumed, connections, True
                part, resumed, connections = self._run_stream(info, final)
                return info, part, resumed, connections, False
            except RemoteChangedError as exc:
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    raise
                self.warn(f"{exc}; starting again from zero")
                state.discard(control)
                info = self.probe(info.url)
            except ProtocolViolation as exc:
                if not info.segmentable:
                    raise
                self.warn(f"{exc}; falling back to a single connection")
                state.discard(control)
                info = dataclasses.replace(info, ranges=False)

    def probe(self, url: str) -> RemoteInfo:
        """Probe `url`, retrying network errors and retryable statuses like any request."""
        policy = self.retry
        while True:
            try:
                return probe_remote(self.transport, url)
            except (NetworkError, HTTPStatusError) as exc:
                policy = self._wait(policy, exc)
                if self.cancel.is_set():
                    raise Interrupted("interrupted") from None

    def _interruptible_sleep(self, seconds: float) -> None:
        self._halt.wait(seconds)
        if self.cancel.is_set():
            self._halt.set()

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)
            self.listener.warning(message)

    # -- segmented ------------------------------------------------------------------------------
    def _run_segmented(self, info: RemoteInfo, final: Path) -> tuple[PartFile, int, int]:
        assert info.size is not None
        control = companions(final)[1]
        part, segments = self._open_or_resume(info, final)
        if self.options.direct_io and direct_io_suitable(part.path):
            part.enable_direct_io()
        job = Job(info, part, segments)
        resumed = job.done_bytes()
        remaining = info.size - resumed
        workers = min(
            self.options.connections,
            max(sum(1 for s in segments if s.pos < s.stop), remaining // self.options.min_split),
        )
        self.listener.start(StartInfo(info.url, part.final, info.size, workers, resumed))
        if remaining:
            self._pool(job, workers, lambda: self._segment_worker(job), control)
        if job.done_bytes() != info.size:
            # Every worker ended without error but bytes are missing: never commit that.
            raise TruncatedError(f"only {job.done_bytes()} of {info.size} bytes arrived")
        return part, resumed, workers

    def _open_or_resume(self, info: RemoteInfo, final: Path) -> tuple[PartFile, list[Segment]]:
        assert info.size is not None
        part_path, control = companions(final)
        if self.options.resume:
            resumed = self._try_resume(info, final)
            if resumed is not None:
                return resumed
        else:
            state.discard(control)
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
            state.discard(control)  # without a validator a resume could splice two versions
        else:
            self._durable = tuple((a, a, b) for a, b in ranges)  # nothing written yet
            self._save(Job(info, part, segments), control, sync=False)
        return part, segments

    def _try_resume(self, info: RemoteInfo, final: Path) -> tuple[PartFile, list[Segment]] | None:
        assert info.size is not None
        part_path, control = companions(final)
        had_part = part_path.exists() or part_path.is_symlink()
        try:
            saved = state.load(control)
        except state.StateError as exc:
            if had_part or control.exists():
                self.warn(f"cannot resume ({exc}); starting from zero")
            return None
        reason = None
        if saved.url != info.url:
            reason = "the control file belongs to another URL"
        elif saved.size != info.size:
            reason = f"the remote size changed from {saved.size} to {info.size}"
        elif Validators(saved.etag, saved.last_modified).empty:
            reason = "the server gives no ETag or Last-Modified to check the partial file against"
        elif (saved.etag, saved.last_modified) != (
            info.validators.etag,
            info.validators.last_modified,
        ):
            reason = "the remote file changed since the partial download"
        if reason is None:
            part = PartFile.reopen(part_path, final)
            if part is None:
                reason = "the partial file is missing"
            elif part.size() != info.size:
                part.close()
                reason = "the partial file has the wrong size"
            else:
                trusted = saved.trusted_segments(self._boot_id)
                try:
                    part.sync()  # reports a write-back error that hit the bytes we trust
                except DestinationError as exc:
                    part.close()
                    reason = str(exc)
                else:
                    self._durable = trusted
                    self._next_sync = self.clock.monotonic() + _SYNC_INTERVAL
                    return part, [Segment(a, d, b) for a, d, b in trusted]
        self.warn(f"cannot resume: {reason}; starting from zero")
        return None

    def _check_space(self, directory: Path, size: int) -> None:
        try:
            free = free_space(directory)
        except OSError:
            return
        if size > free:
            raise DiskFullError(
                f"not enough free space in {directory}: the file needs {size} bytes, "
                f"{free} are available"
            )

    def _segment_worker(self, job: Job) -> None:
        # Page-aligned, as direct writes need; whole pages, as the kernel maps them.
        buffer = memoryview(mmap.mmap(-1, -(-self.options.buffer_size // ALIGN) * ALIGN))
        min_split = self.options.min_split
        rate: float | None = None  # this worker's own last measured rate
        while not self._halt.is_set():
            seg = job.next_work(min_split, self.clock.monotonic(), rate)
            if seg is None:
                with job.lock:
                    if not job.in_flight():
                        return
                    # A range may yet turn out slow enough to be worth taking over.
                    job.released.wait(_IDLE_POLL)
                continue
            try:
                began, first = self.clock.monotonic(), seg.pos
                if not self._fetch_segment(job, seg, buffer):
                    return  # retired: the server refused one connection too many
                elapsed = self.clock.monotonic() - began
                if elapsed > _RATE_AFTER:
                    rate = (seg.pos - first) / elapsed
                    if job.is_straggler(rate):
                        self.transport.reconnect()
            finally:
                with job.lock:
                    seg.active = False
                    job.released.notify_all()

    def _fetch_segment(self, job: Job, seg: Segment, buffer: memoryview) -> bool:
        """Stream `seg` to the end; False when this worker retires instead."""
        info = job.info
        assert info.size is not None
        policy = self.retry
        while True:
            self._check_cancel()
            pos, stop = seg.pos, seg.stop
            if pos >= stop:
                return True
            try:
                body = self.transport.open_range(
                    info.final_url, pos, stop, total=info.size, validators=info.validators
                )
            except (NetworkError, HTTPStatusError) as exc:
                if self._should_retire(job, exc):
                    return False
                policy = self._backoff(policy, exc)
                continue
            with job.lock:
                job.streaming += 1
                seg.opened(self.clock.monotonic())
            try:
                self._pump(seg, body, buffer, job.part)
                if seg.pos >= stop:
                    body.check_no_more()
            except NetworkError as exc:
                if seg.pos > pos:
                    policy = policy.reset()
                policy = self._backoff(policy, exc)
            finally:
                body.close()
                with job.lock:
                    job.streaming -= 1

    def _pump(self, seg: Segment, body: Body, buffer: memoryview, part: PartFile) -> None:
        # The hot loop: reads fill the reused buffer, and one positional write empties it when
        # it is full, at the end of the range, when its oldest byte is one save interval old
        # (so a crash loses no more than that) and before any error or stop goes on up.
        size = len(buffer)
        halt = self._halt
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
                n = body.readinto(buffer[fill : fill + min(limit - fill, want)])
                if n == 0:
                    raise TruncatedError(f"body ended early at byte {pos + fill}")
                if fill == 0:
                    oldest = monotonic()
                fill += n
                if halt.is_set():
                    raise _Stop
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
            with self._error_lock:
                self._fetched += end - pos

    def _should_retire(self, job: Job, exc: TransferError) -> bool:
        """Give up this connection when the server refuses extra ones but others are working."""
        if not (isinstance(exc, HTTPStatusError) and exc.status in (429, 503)):
            return False
        with job.lock:
            if job.streaming == 0:
                return False  # nobody is getting through: wait it out instead
        self.warn("the server refused some connections; going on with fewer")
        return True

    def _wait(self, policy: RetryPolicy, exc: SegdlError) -> RetryPolicy:
        """Count `exc` against `policy` (raising it when exhausted) and sleep before the retry."""
        return wait_before_retry(
            policy, exc, sleep=self.sleep, clock=self.clock.wall, rand=self.clock.rand
        )

    def _backoff(self, policy: RetryPolicy, exc: SegdlError) -> RetryPolicy:
        self._check_cancel()
        policy = self._wait(policy, exc)
        self._check_cancel()
        return policy

    def _check_cancel(self) -> None:
        if self._halt.is_set():
            raise _Stop

    # -- single stream --------------------------------------------------------------------------
    def _run_stream(self, info: RemoteInfo, final: Path) -> tuple[PartFile, int, int]:
        part_path, control = companions(final)
        state.discard(control)  # a single stream from zero cannot be resumed from a control file
        if info.size is not None:
            self._check_space(part_path.parent, info.size)
        part = PartFile.create(part_path, final)
        if info.size is not None:
            part.allocate(info.size)
        seg = Segment(0, 0, info.size if info.size is not None else _UNKNOWN)
        job = Job(info, part, [seg])
        self.listener.start(StartInfo(info.url, final, info.size, 1, 0))
        self._pool(job, 1, lambda: self._stream_worker(job, seg), None)
        if info.size is None:
            part.truncate(seg.pos)
        elif seg.pos != info.size:
            raise TruncatedError(f"only {seg.pos} of {info.size} bytes arrived")
        return part, 0, 1

    def _stream_worker(self, job: Job, seg: Segment) -> None:
        info = job.info
        buffer = memoryview(bytearray(self.options.buffer_size))
        policy = self.retry
        while True:
            self._check_cancel()
            # Continue where a broken stream stopped only if the server proved it can.
            offset = seg.pos if info.ranges else 0
            seg.pos = offset
            try:
                body = self.transport.open_stream(
                    info.final_url, offset, validators=info.validators
                )
            except (NetworkError, HTTPStatusError) as exc:
                policy = self._backoff(policy, exc)
                continue
            expected = None if body.length is None else offset + body.length
            if info.size is not None and expected not in (None, info.size):
                body.close()
                raise RemoteChangedError(
                    f"the server now announces {expected} bytes instead of {info.size}"
                )
            try:
                with job.lock:
                    job.streaming += 1
                self._pump_stream(seg, body, buffer, job.part, info.size)
                return
            except NetworkError as exc:
                if seg.pos > offset:
                    policy = policy.reset()
                policy = self._backoff(policy, exc)
            finally:
                body.close()
                with job.lock:
                    job.streaming -= 1

    def _pump_stream(
        self, seg: Segment, body: Body, buffer: memoryview, part: PartFile, size: int | None
    ) -> None:
        halt = self._halt
        fetched = 0
        try:
            while True:
                n = body.readinto(buffer)
                if n == 0:
                    break
                if halt.is_set():
                    raise _Stop
                if size is not None and seg.pos + n > size:
                    raise ProtocolViolation(f"server sent more than the {size} bytes announced")
                part.write_at(buffer[:n], seg.pos)
                seg.pos += n
                fetched += n
        finally:
            with self._error_lock:
                self._fetched += fetched
        if size is not None and seg.pos != size:
            raise TruncatedError(f"stream ended after {seg.pos} of {size} bytes")

    # -- the pool and the reporter --------------------------------------------------------------
    def _pool(
        self, job: Job, workers: int, target: Callable[[], None], control: Path | None
    ) -> None:
        """Run `workers` threads of `target`; sample progress and save state until they end."""
        self._error = None
        self._halt = threading.Event()
        remaining = [workers]
        all_done = threading.Event()

        def run() -> None:
            try:
                target()
            except _Stop:
                pass
            except BaseException as exc:
                with self._error_lock:
                    if self._error is None:
                        self._error = exc
                self._halt.set()
            finally:
                with self._error_lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        all_done.set()

        threads = [
            threading.Thread(target=run, name=f"segdl-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        interval = self.options.save_interval
        next_save = self.clock.monotonic() + interval
        total = job.info.size
        try:
            while not all_done.wait(_TICK):
                self.listener.progress(job.done_bytes(), total, job.streaming)
                if control is not None and self.clock.monotonic() >= next_save:
                    self._save(job, control)
                    next_save = self.clock.monotonic() + interval
                if self.cancel.is_set():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._halt.set()
            all_done.wait(1.0)
            if control is not None:
                self._save(job, control, sync=True)
            job.part.close()
            self.listener.finish(job.done_bytes())
            raise Interrupted(
                "interrupted; run the same command again to resume"
                if control is not None
                else "interrupted"
            ) from None
        self.listener.progress(job.done_bytes(), total, 0)
        error = self._error
        if error is not None:
            if control is not None and isinstance(error, SegdlError):
                self._save(job, control, sync=True)  # keep what we have for a later resume
            job.part.close()
            self.listener.finish(job.done_bytes())
            raise error

    def _save(self, job: Job, control: Path, *, sync: bool | None = None) -> None:
        """Save the control file; `sync` True flushes the data first, None does when it is due.

        The snapshot is taken before the flush, so the durable view never counts a byte the
        flush may have missed.
        """
        snapshot = _merge(job.snapshot())
        now = self.clock.monotonic()
        if sync is None:
            sync = self._boot_id is None or now >= self._next_sync
        if sync:
            job.part.sync()
            self._durable = snapshot
            spent = self.clock.monotonic() - now
            self._next_sync = now + max(_SYNC_INTERVAL, _SYNC_BUDGET * spent)
        info = job.info
        assert info.size is not None
        state.save(
            control,
            state.State(
                url=info.url,
                size=info.size,
                etag=info.validators.etag,
                last_modified=info.validators.last_modified,
                segments=snapshot,
                durable=self._durable,
                boot_id=self._boot_id,
            ),
        )

    # -- verification ---------------------------------------------------------------------------
    def _verify(self, part: PartFile, size: int, info: RemoteInfo) -> None:
        checks = [c for c in (self.options.checksum, server_digest(info.digest)) if c]
        for check in checks:
            actual = file_digest(part.read_at, size, check.algorithm)
            if actual != check.hexdigest:
                part.discard()
                raise IntegrityError(_mismatch(check, actual))


def _mismatch(check: Checksum, actual: str) -> str:
    return (
        f"{check.algorithm} mismatch (from {check.source}): expected {check.hexdigest}, "
        f"got {actual}"
    )


def _merge(segments: tuple[tuple[int, int, int], ...]) -> tuple[tuple[int, int, int], ...]:
    """Join finished neighbours so that the control file stays small however much was stolen."""
    merged: list[tuple[int, int, int]] = []
    for start, done, stop in segments:
        if merged:
            p_start, p_done, p_stop = merged[-1]
            if p_done == p_stop == start:
                merged[-1] = (p_start, done, stop)
                continue
        merged.append((start, done, stop))
    return tuple(merged)
