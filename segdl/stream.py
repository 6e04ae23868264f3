"""Ordered streams: a segmented download read as a file object, in file order, in bounded memory.

The file is cut into pieces of equal size. The run's scheduler workers fetch the pieces that lie
inside the *window* (`window` bytes from the reader's position) with ranged GETs, each checked
like any range (206, Content-Range, validators, If-Match) before its bytes are kept; the reader
takes them in order and frees each piece as soon as it is read. When the reader is slow, no
piece beyond the window is fetched (backpressure): memory stays within the window plus the
pieces being hedged, whatever the size of the file. When the piece the reader waits for lags
far behind the others, an idle connection fetches it again (hedging) and the first complete
copy wins. A server without ranges gets one plain stream, read in the reader's thread.

`RemoteFile` is what `segdl.open` returns; `fetch` reads a small file into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import Clock
from .errors import (
    HTTPStatusError,
    IntegrityError,
    Interrupted,
    NetworkError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    TooLargeError,
    TruncatedError,
)
from .options import Options
from .probe import RemoteInfo, probe_remote
from .progress import Listener, StartInfo
from .retry import RETRY_AFTER_STATUSES, RetryPolicy, parse_retry_after, wait_before_retry
from .scheduler import Scheduler, host_key
from .transport import Body, Transport
from .verify import server_digest

WINDOW_DEFAULT = 64 << 20
_PIECE_MIN = 256 << 10
_PIECE_MAX = 8 << 20
_PIECE_ALIGN = 64 << 10
_TICK = 0.1
_HEDGE_MIN_SECONDS = 0.5  # never hedge a piece younger than this
_HEDGE_FACTOR = 3.0  # hedge the head piece once it took this many times a typical piece

_FREE, _FETCHING, _DONE = 0, 1, 2


def piece_size(window: int, connections: int, file_size: int | None = None) -> int:
    """Pieces small enough that the window (or the whole file, when smaller) holds two per
    connection, within sane bounds: every connection then has work."""
    span = window if file_size is None else max(1, min(window, file_size))
    size = span // (2 * connections)
    size = max(_PIECE_MIN, min(_PIECE_MAX, size))
    return max(_PIECE_ALIGN, size // _PIECE_ALIGN * _PIECE_ALIGN)


class _Piece:
    __slots__ = (
        "data",
        "dropped",
        "filled",
        "hedged",
        "index",
        "start",
        "started",
        "state",
        "stop",
    )

    def __init__(self, index: int, start: int, stop: int) -> None:
        self.index = index
        self.start = start
        self.stop = stop
        self.state = _FREE
        self.data: mmap.mmap | None = None
        self.filled = 0
        self.started = 0.0
        self.hedged = False
        self.dropped = False  # left behind by a seek: whoever fetches it stops


@dataclass(frozen=True)
class _Claim:
    piece: _Piece
    hedge: bool


class _StreamJob:
    """The pieces of one stream, as the scheduler's workers see them (a `RangeJob`)."""

    def __init__(self, owner: RemoteFile, connections: int) -> None:
        # Weak: a RemoteFile dropped unclosed must be collectable (its finalizer closes it and
        # stops the workers), which a reference from the workers' job would prevent.
        self._owner = weakref.ref(owner)
        self.host = host_key(owner.info.final_url)
        self.max_workers = connections
        self.workers = 0
        self.halt = threading.Event()

    def wants_worker(self) -> bool:
        owner = self._owner()
        return owner is not None and not self.halt.is_set() and owner._has_work(time.monotonic())

    def take(self, now: float) -> object | None:
        owner = self._owner()
        if owner is None or self.halt.is_set():
            return None
        return owner._take(now)

    def work(self, claim: object, buffer: memoryview) -> None:
        assert isinstance(claim, _Claim)
        owner = self._owner()
        if owner is None:
            return
        try:
            owner._fetch_piece(claim)
        except _Abandon:
            pass
        except SegdlError as exc:
            if claim.hedge and not isinstance(exc, RemoteChangedError):
                return  # a second copy that failed: the first is still on its way
            owner._fail(exc)
        except BaseException as exc:
            owner._fail(exc)


class _Abandon(Exception):
    """A worker leaves a piece that is no longer wanted (internal)."""


class RemoteFile(io.RawIOBase):
    """A remote file read in order over several connections (see the module docstring).

    Seekable when the server supports ranges: a seek inside the window keeps what is fetched,
    one outside restarts the window there. `max_buffered` is the most bytes held at once.
    """

    def __init__(
        self,
        transport: Transport,
        info: RemoteInfo,
        options: Options,
        *,
        window: int = WINDOW_DEFAULT,
        start: int = 0,
        scheduler: Scheduler | None = None,
        listener: Listener | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.info = info
        self.options = options
        self.size = info.size
        self.listener = listener or Listener()
        self.clock = clock or Clock()
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler or Scheduler(
            max_connections=options.connections,
            per_host=options.connections,
            buffer_factory=lambda: memoryview(bytearray(0)),
            monotonic=self.clock.monotonic,
        )
        self.window = max(window, 1)
        self.piece = piece_size(self.window, options.connections, info.size)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pieces: dict[int, _Piece] = {}
        self._pos = start  # where reading starts (and fetching: nothing before it)
        self._error: BaseException | None = None
        self._durations: list[float] = []
        self._bodies: set[Body] = set()
        self.buffered = 0
        self.max_buffered = 0
        self.fetched = 0
        self.hedges = 0
        self._single: Body | None = None
        self._single_slot = False
        self._checks = [c for c in (options.checksum, server_digest(info.digest)) if c]
        self._hashers = [(c, hashlib.new(c.algorithm)) for c in self._checks]
        self._sequential = start == 0  # no seek yet: the digests cover every byte
        self._next_report = 0.0
        self._job: _StreamJob | None = None
        self.listener.start(StartInfo(info.url, Path("-"), info.size, options.connections, 0))
        if info.size != 0 and info.size is not None and info.ranges is not False:
            self._job = _StreamJob(self, options.connections)
            self.scheduler.add_job(self._job)

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._job is not None or self.size == 0

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            if self.size is None:
                raise io.UnsupportedOperation("the size of the remote file is unknown")
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target == self._pos:
            return target
        if not self.seekable():
            raise io.UnsupportedOperation("the server does not support ranges")
        with self._lock:
            self._pos = target
            self._sequential = False
            self._drop_outside()
        self.scheduler.wake()
        return target

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self.size is not None and self._pos >= self.size:
            self._at_end()
            return 0
        if self._job is not None:
            try:
                n = self._read_ranges(view)
            except RangeIgnoredError:
                self._stop_ranges()  # the server ignores ranges after all: one plain stream
                n = self._read_single(view)
        else:
            n = self._read_single(view)
        if n:
            for _, hasher in self._hashers:
                hasher.update(view[:n])
        else:
            self._at_end()
        self._report()
        return n

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        chunk = bytearray(self.piece)
        while True:
            n = self.readinto(chunk)
            if not n:
                return b"".join(chunks)
            chunks.append(bytes(chunk[:n]))

    def close(self) -> None:
        if self.closed:
            return
        try:
            job = self._job
            if job is not None:
                job.halt.set()
                with self._lock:
                    bodies = list(self._bodies)
                    for piece in self._pieces.values():
                        piece.dropped = True
                for body in bodies:
                    body.abort()
                self.transport.abort()  # requests still waiting for their answer's headers
                self.scheduler.remove_job(job)
            if self._own_scheduler:
                self.scheduler.close()
            self._close_single()
            with self._lock:
                self._pieces.clear()
                self.buffered = 0
            self.transport.close()
            self.listener.finish(self._pos)
        finally:
            super().close()

    # -- the reader's side ----------------------------------------------------------------------
    def _read_ranges(self, view: memoryview) -> int:
        assert self.size is not None
        index = self._pos // self.piece
        with self._lock:
            self._window_pieces()
            while True:
                if self._error is not None:
                    raise self._error
                piece = self._pieces.get(index)
                if piece is not None and piece.data is not None:
                    # A piece still arriving gives what its first copy has so far: the reader
                    # starts as soon as bytes come, not when a whole piece is in.
                    end = piece.stop if piece.state == _DONE else piece.start + piece.filled
                    if end > self._pos:
                        break
                self._arrived.wait(_TICK)
                self._report()
            assert piece.data is not None
            offset = self._pos - piece.start
            n = min(len(view), end - self._pos)
            view[:n] = memoryview(piece.data)[offset : offset + n]
            # The position moves before the piece goes, under the lock: a worker looking at the
            # window meanwhile must not take the piece just read for one still to fetch.
            self._pos += n
            if self._pos >= piece.stop:
                self._release(piece)
                del self._pieces[index]
        self.scheduler.wake()
        return n

    def _stop_ranges(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.halt.set()
            self.scheduler.remove_job(job)
        with self._lock:
            for piece in self._pieces.values():
                piece.dropped = True
                self._release(piece)
            self._pieces.clear()
            self._error = None

    def _read_single(self, view: memoryview) -> int:
        """No ranges: one plain GET, read in this thread (no reordering to do)."""
        if self._single is None:
            single = self._open_single()
            skip = self._pos  # a fallback after some bytes came in ranges: skip those
            scratch = bytearray(min(skip, 1 << 20))
            while skip:
                n = single.readinto(memoryview(scratch)[: min(skip, len(scratch))])
                if not n:
                    raise TruncatedError("the plain stream ended before the position reached")
                skip -= n
        assert self._single is not None
        n = self._single.readinto(view)
        self.fetched += n
        self._pos += n
        return n

    def _open_single(self) -> Body:
        key = host_key(self.info.final_url)
        policy = RetryPolicy(total=self.options.retries)
        while True:
            try:
                self.scheduler.acquire(key)
                self._single_slot = True
                self._single = self.transport.open_stream(
                    self.info.final_url, 0, validators=self.info.validators
                )
                if self.size is not None and self._single.length not in (None, self.size):
                    raise RemoteChangedError(
                        f"the server now announces {self._single.length} bytes instead of "
                        f"{self.size}"
                    )
                return self._single
            except (NetworkError, HTTPStatusError) as exc:
                self._close_single()
                policy = self._wait(policy, exc)

    def _close_single(self) -> None:
        body, self._single = self._single, None
        if body is not None:
            body.close()
        if self._single_slot:
            self._single_slot = False
            self.scheduler.release(host_key(self.info.final_url))

    def _at_end(self) -> None:
        """Every byte was read: check the digests over them (when read from 0, in order)."""
        hashers, self._hashers = self._hashers, []
        if not self._sequential:
            return
        for check, hasher in hashers:
            actual = hasher.hexdigest()
            if actual != check.hexdigest:
                raise IntegrityError(check.mismatch(actual))

    def _report(self) -> None:
        now = self.clock.monotonic()
        if now >= self._next_report:
            self._next_report = now + _TICK
            workers = 0 if self._job is None else self._job.workers
            self.listener.progress(self._pos, self.size, workers)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    # -- the pieces (lock held) -------------------------------------------------------------------
    def _window_pieces(self) -> None:
        """Make sure every piece of the window exists (they are fetched in index order)."""
        assert self.size is not None
        if self._pos >= self.size:
            return  # all read: `first` would be the last piece again, already read and freed
        first = self._pos // self.piece
        last = min((self._pos + self.window - 1) // self.piece, (self.size - 1) // self.piece)
        for index in range(first, last + 1):
            if index not in self._pieces:
                start = index * self.piece
                self._pieces[index] = _Piece(index, start, min(start + self.piece, self.size))

    def _drop_outside(self) -> None:
        first = self._pos // self.piece
        last = (self._pos + self.window - 1) // self.piece
        for index in [i for i in self._pieces if i < first or i > last]:
            piece = self._pieces.pop(index)
            piece.dropped = True
            self._release(piece)

    def _release(self, piece: _Piece) -> None:
        if piece.data is not None:
            self.buffered -= len(piece.data)
            _unmap(piece.data)
            piece.data = None

    def _allocate(self, size: int) -> mmap.mmap:
        # Anonymous maps, not bytearrays: freed pieces go back to the system at once, where
        # malloc would keep them (its mmap threshold grows after the first large free), and
        # the process would hold far more than the window.
        self.buffered += size
        self.max_buffered = max(self.max_buffered, self.buffered)
        return mmap.mmap(-1, size)

    def _has_work(self, now: float) -> bool:
        with self._lock:
            if self._error is not None:
                return False
            self._window_pieces()
            if any(p.state == _FREE for p in self._pieces.values()):
                return True
            return self._hedge_candidate(now) is not None

    def _take(self, now: float) -> _Claim | None:
        with self._lock:
            if self._error is not None:
                return None
            self._window_pieces()
            for index in sorted(self._pieces):
                piece = self._pieces[index]
                if piece.state == _FREE:
                    piece.state = _FETCHING
                    piece.started = now
                    piece.data = self._allocate(piece.stop - piece.start)
                    return _Claim(piece, hedge=False)
            head = self._hedge_candidate(now)
            if head is None:
                return None
            head.hedged = True
            self.hedges += 1
            return _Claim(head, hedge=True)

    def _hedge_candidate(self, now: float) -> _Piece | None:
        """The piece the reader waits for, when it lags far behind what a piece takes."""
        head = self._pieces.get(self._pos // self.piece)
        if head is None or head.state != _FETCHING or head.hedged or not self._durations:
            return None
        typical = sorted(self._durations)[len(self._durations) // 2]
        if now - head.started < max(_HEDGE_MIN_SECONDS, _HEDGE_FACTOR * typical):
            return None
        return head

    # -- the workers' side ----------------------------------------------------------------------
    def _fetch_piece(self, claim: _Claim) -> None:
        piece = claim.piece
        job = self._job
        if job is None or self.size is None:  # fell back to one plain stream meanwhile
            raise _Abandon
        with self._lock:
            if claim.hedge:
                data = self._allocate(piece.stop - piece.start)
                got = 0
            else:
                if piece.data is None:  # a seek left it behind before this worker began
                    raise _Abandon
                data, got = piece.data, piece.filled
        view = memoryview(data)
        length = piece.stop - piece.start
        policy = RetryPolicy(total=self.options.retries)
        halt = job.halt
        try:
            while got < length:
                self._check_wanted(piece)
                try:
                    body = self.transport.open_range(
                        self.info.final_url,
                        piece.start + got,
                        piece.stop,
                        total=self.size,
                        validators=self.info.validators,
                        lean=True,
                    )
                except (NetworkError, HTTPStatusError) as exc:
                    policy = self._wait(policy, exc, halt)
                    continue
                with self._lock:
                    self._bodies.add(body)
                before = got
                try:
                    while got < length:
                        n = body.readinto(view[got:])
                        if n == 0:
                            raise TruncatedError(f"body ended early at byte {piece.start + got}")
                        got += n
                        if not claim.hedge:
                            piece.filled = got
                            if piece.index == self._pos // self.piece:
                                with self._lock:  # the reader waits for these very bytes
                                    self._arrived.notify_all()
                        self._check_wanted(piece)
                    body.check_no_more()
                except NetworkError as exc:
                    if got > before:
                        policy = policy.reset()
                    policy = self._wait(policy, exc, halt)
                finally:
                    with self._lock:
                        self._bodies.discard(body)
                        self.fetched += got - before
                    body.close()
        except BaseException:
            if claim.hedge:
                with self._lock:
                    self.buffered -= length
            view.release()
            if claim.hedge:
                _unmap(data)
            raise
        with self._lock:
            if piece.state == _DONE or piece.dropped:
                if claim.hedge:
                    self.buffered -= length  # the other copy won
                    _unmap(data)
                return
            if claim.hedge and piece.data is not None:
                self.buffered -= len(piece.data)  # the hedge won: the first copy goes
                _unmap(piece.data)
            piece.data = data
            piece.state = _DONE
            self._durations.append(time.monotonic() - piece.started)
            if len(self._durations) > 64:
                del self._durations[:32]
            self._arrived.notify_all()

    def _check_wanted(self, piece: _Piece) -> None:
        job = self._job
        if job is None or piece.state == _DONE or piece.dropped or job.halt.is_set():
            raise _Abandon

    def _wait(
        self, policy: RetryPolicy, exc: Exception, halt: threading.Event | None = None
    ) -> RetryPolicy:
        if isinstance(exc, HTTPStatusError) and exc.status in RETRY_AFTER_STATUSES:
            delay = parse_retry_after(exc.retry_after, self.clock.wall())
            self.scheduler.refused(host_key(self.info.final_url), delay)
        sleep: Callable[[float], object] = self.clock.sleep or (halt or threading.Event()).wait
        policy = wait_before_retry(
            policy, exc, sleep=sleep, clock=self.clock.wall, rand=self.clock.rand
        )
        if halt is not None and halt.is_set():
            raise _Abandon
        return policy

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                if isinstance(exc, RangeIgnoredError):
                    exc = RangeIgnoredError(f"{exc} (a stream needs ranges or one plain GET)")
                self._error = exc
            self._arrived.notify_all()
        if self._job is not None:
            self._job.halt.set()


def _unmap(data: mmap.mmap) -> None:
    """Give a piece's memory back now, unless a worker still writes into it (its view then
    keeps the map alive until the worker lets go)."""
    with contextlib.suppress(BufferError):
        data.close()


def open_remote(
    transport: Transport,
    options: Options,
    *,
    window: int = WINDOW_DEFAULT,
    listener: Listener | None = None,
    clock: Clock | None = None,
    cancel: threading.Event | None = None,
) -> RemoteFile:
    """Probe the remote file (HEAD, or a one-byte GET) and open it as a `RemoteFile`."""
    clock = clock or Clock()
    policy = RetryPolicy(total=options.retries)
    url = transport.url
    while True:
        if cancel is not None and cancel.is_set():
            raise Interrupted("interrupted")
        try:
            info = probe_remote(transport, url)
            break
        except (NetworkError, HTTPStatusError) as exc:
            policy = wait_before_retry(
                policy,
                exc,
                sleep=clock.sleep or (cancel or threading.Event()).wait,
                clock=clock.wall,
                rand=clock.rand,
            )
    return RemoteFile(transport, info, options, window=window, listener=listener, clock=clock)


def read_limited(remote: RemoteFile, max_size: int) -> bytes:
    """All of `remote`, refusing (up front by its size, or mid-way) more than `max_size` bytes."""
    if remote.size is not None and remote.size > max_size:
        raise TooLargeError(
            f"{remote.info.url} is {remote.size} bytes, more than the {max_size} allowed"
        )
    out = bytearray()
    chunk = bytearray(min(max_size + 1, 1 << 20) or 1)
    while True:
        n = remote.readinto(chunk)
        if not n:
            return bytes(out)
        out += memoryview(chunk)[:n]
        if len(out) > max_size:
            raise TooLargeError(f"{remote.info.url} sent more than the {max_size} bytes allowed")
