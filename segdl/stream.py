"""Ordered streams: a segmented download read as a file object, in file order, in bounded memory.

The file is cut into pieces of equal size. The run's scheduler workers fetch the pieces that lie
inside the *window* (`window` bytes from the reader's position) with ranged GETs, each checked
like any range (206, Content-Range, validators, If-Match) before its bytes are kept; the reader
takes them in order and frees each piece as soon as it is read. When the reader is slow, no
piece beyond the window is fetched (backpressure): memory stays within the window plus the
pieces being hedged, whatever the size of the file. When the piece the reader waits for lags
far behind the others, an idle connection fetches it again (hedging) and the first complete
copy wins. A server without ranges gets one plain stream, read in the reader's thread; a seek
back there starts it again from byte 0 (a seek forward reads on and discards).

`RemoteFile` is what `segdl.open` returns; `fetch` reads a small file into memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.clock import Clock
from .core.events import StartInfo, TransferListener
from .core.fetch import Attempts, Fetcher, Stop
from .core.http import ResponseBody, Transport
from .core.limit import Meter, ReadInto, Throttle
from .core.options import Options
from .core.probe import RemoteInfo, probe_remote
from .core.retry import RetryPolicy
from .core.scheduler import Scheduler
from .core.urls import origin
from .core.verify import server_digest
from .errors import (
    IntegrityError,
    Interrupted,
    NetworkError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    TooLargeError,
    TruncatedError,
)

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
    """The pieces of one stream: the state its reader (a `RemoteFile`) shares with the
    scheduler's workers, and the workers' side of it (its `RangeWork`).

    It holds no reference to its `RemoteFile`, and nothing of the workers' holds the
    `RemoteFile` either: a file object dropped unclosed is freed at once, in the thread that
    dropped it, and closed there as any `io` object is (`IOBase.__del__`), which halts this
    job and closes its connections; a worker never keeps it alive, fetching on. (One left in
    a cycle, e.g. by the error it raised, is closed by the collector, in whatever thread.)
    """

    def __init__(
        self,
        transport: Transport,
        info: RemoteInfo,
        options: Options,
        scheduler: Scheduler,
        clock: Clock,
        *,
        window: int,
        start: int,
        throttle: Throttle,
    ) -> None:
        self.transport = transport
        self.info = info
        self.options = options
        self.size = info.size
        self.scheduler = scheduler
        self.clock = clock
        self.fetcher = Fetcher(scheduler, clock)
        self.throttle = throttle
        self.window = window
        self.piece = piece_size(window, options.connections, info.size)
        self.host = origin(info.final_url)
        self.max_workers = options.connections
        self.workers = 0
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.pieces: dict[int, _Piece] = {}
        self.pos = start  # where reading starts (and fetching: nothing before it)
        self.error: BaseException | None = None
        self._durations: list[float] = []
        self.bodies: set[ResponseBody] = set()
        self.buffered = 0
        self.max_buffered = 0
        self.fetched = 0
        self.hedges = 0

    # -- the scheduler's side (RangeWork) ---------------------------------------------------------
    def wants_worker(self) -> bool:
        return not self.halt.is_set() and self._has_work(time.monotonic())

    def take(self, now: float) -> object | None:
        if self.halt.is_set():
            return None
        return self._take(now)

    def work(self, claim: object, buffer: memoryview) -> None:
        assert isinstance(claim, _Claim)
        try:
            self._fetch_piece(claim)
        except Stop:
            pass
        except SegdlError as exc:
            if claim.hedge and not isinstance(exc, RemoteChangedError):
                return  # a second copy that failed: the first is still on its way
            self.fail(exc)
        except BaseException as exc:
            self.fail(exc)

    def stop(self) -> None:
        """No more fetching: the workers leave their pieces, a body being read returns at once."""
        self.halt.set()
        with self.lock:
            bodies = list(self.bodies)
            for piece in self.pieces.values():
                piece.dropped = True
        for body in bodies:
            body.abort()
        self.scheduler.remove_job(self)

    def clear(self) -> None:
        """Free every piece (the job is stopped)."""
        with self.lock:
            for piece in self.pieces.values():
                piece.dropped = True
                self.release(piece)
            self.pieces.clear()
            self.error = None

    # -- the pieces (lock held) -------------------------------------------------------------------
    def window_pieces(self) -> None:
        """Make sure every piece of the window exists (they are fetched in index order)."""
        assert self.size is not None
        if self.pos >= self.size:
            return  # all read: `first` would be the last piece again, already read and freed
        first = self.pos // self.piece
        last = min((self.pos + self.window - 1) // self.piece, (self.size - 1) // self.piece)
        for index in range(first, last + 1):
            if index not in self.pieces:
                start = index * self.piece
                self.pieces[index] = _Piece(index, start, min(start + self.piece, self.size))

    def drop_outside(self) -> None:
        first = self.pos // self.piece
        last = (self.pos + self.window - 1) // self.piece
        for index in [i for i in self.pieces if i < first or i > last]:
            piece = self.pieces.pop(index)
            piece.dropped = True
            self.release(piece)

    def release(self, piece: _Piece) -> None:
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
        with self.lock:
            if self.error is not None:
                return False
            self.window_pieces()
            if any(p.state == _FREE for p in self.pieces.values()):
                return True
            return self._hedge_candidate(now) is not None

    def _take(self, now: float) -> _Claim | None:
        with self.lock:
            if self.error is not None:
                return None
            self.window_pieces()
            for index in sorted(self.pieces):
                piece = self.pieces[index]
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
        if self.throttle.limited:
            return None  # a second copy would only share the limit with the first
        head = self.pieces.get(self.pos // self.piece)
        if head is None or head.state != _FETCHING or head.hedged or not self._durations:
            return None
        typical = sorted(self._durations)[len(self._durations) // 2]
        if now - head.started < max(_HEDGE_MIN_SECONDS, _HEDGE_FACTOR * typical):
            return None
        return head

    # -- the workers' side ----------------------------------------------------------------------
    def _fetch_piece(self, claim: _Claim) -> None:
        piece = claim.piece
        size = self.size
        if self.halt.is_set() or size is None:  # closed, or fell back to a plain stream
            raise Stop
        with self.lock:
            if claim.hedge:
                data = self._allocate(piece.stop - piece.start)
                got = 0
            else:
                if piece.data is None:  # a seek left it behind before this worker began
                    raise Stop
                data, got = piece.data, piece.filled
        view = memoryview(data)
        length = piece.stop - piece.start
        tries = self.attempts(halt=self.halt, held=True)

        def send() -> ResponseBody:
            self._check_wanted(piece)
            return self.transport.open_range(
                self.info.final_url,
                piece.start + got,
                piece.stop,
                total=size,
                validators=self.info.validators,
            )

        try:
            while got < length:
                self._check_wanted(piece)
                body = tries.open(send)
                with self.lock:
                    self.bodies.add(body)
                before = got
                try:
                    with self.throttle.reading(self.host, body.readinto, tries.pause) as read:
                        while got < length:
                            n = read(view[got:])
                            if n == 0:
                                raise TruncatedError(
                                    f"body ended early at byte {piece.start + got}"
                                )
                            got += n
                            if not claim.hedge:
                                piece.filled = got
                                if piece.index == self.pos // self.piece:
                                    with self.lock:  # the reader waits for these very bytes
                                        self.arrived.notify_all()
                            self._check_wanted(piece)
                    body.check_no_more()
                except NetworkError as exc:
                    tries.failed(exc, progressed=got > before)
                finally:
                    with self.lock:
                        self.bodies.discard(body)
                        self.fetched += got - before
                    body.close()
        except BaseException:
            if claim.hedge:
                with self.lock:
                    self.buffered -= length
            view.release()
            if claim.hedge:
                _unmap(data)
            raise
        with self.lock:
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
            self.arrived.notify_all()

    def _check_wanted(self, piece: _Piece) -> None:
        if piece.state == _DONE or piece.dropped or self.halt.is_set():
            raise Stop

    def attempts(self, *, halt: threading.Event | None, held: bool) -> Attempts:
        """The tries of one request of this stream (a piece's, on a worker's slot; the plain
        stream's, on a slot of its own)."""
        policy = RetryPolicy(total=self.options.retries)
        return self.fetcher.attempts(self.host, policy, halt=halt, held=held)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                if isinstance(exc, RangeIgnoredError):
                    exc = RangeIgnoredError(f"{exc} (a stream needs ranges or one plain GET)")
                self.error = exc
            self.arrived.notify_all()
        self.halt.set()
        # Out of the workers' reach: the error, once the reader raises it, holds the reader's
        # frames, and so its RemoteFile, which nothing of the workers may keep alive.
        self.scheduler.remove_job(self)


class RemoteFile(io.RawIOBase):
    """A remote file read in order over several connections (see the module docstring).

    Seekable everywhere: with ranges, a seek inside the window keeps what is fetched, one
    outside restarts the window there; on a server without ranges, a seek forward reads on
    and discards, a seek back starts the plain stream again from byte 0. `max_buffered` is
    the most bytes held at once.
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
        listener: TransferListener | None = None,
        clock: Clock | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.info = info
        self.options = options
        self.size = info.size
        self.listener = listener or TransferListener()
        self.clock = clock or Clock()
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler or Scheduler(
            max_connections=options.connections,
            per_host=options.connections,
            monotonic=self.clock.monotonic,
        )
        # The speed limits: the run's (an archive's streams share one), else the stream's own.
        throttle = throttle or Throttle.of(options, self.clock.monotonic)
        self._job = _StreamJob(
            transport,
            info,
            options,
            self.scheduler,
            self.clock,
            window=max(window, 1),
            start=start,
            throttle=throttle,
        )
        self._ranges = False  # the job is the scheduler's: its workers fetch the pieces
        self._single: ResponseBody | None = None
        self._single_read: ReadInto | None = None  # its readinto, metered under a limit
        self._single_meter: Meter | None = None
        self._single_pos = 0  # the byte the plain stream gives next
        self._checks = [c for c in (options.checksum, server_digest(info.digest)) if c]
        self._hashers = [(c, hashlib.new(c.algorithm)) for c in self._checks]
        self._sequential = start == 0  # no seek yet: the digests cover every byte
        self._next_report = 0.0
        self.listener.start(
            StartInfo(
                info.url, Path("-"), info.size, options.connections, 0, protocol=info.protocol
            )
        )
        if info.size != 0 and info.size is not None and info.ranges is not False:
            self._ranges = True
            self.scheduler.add_job(self._job)

    # What the workers count lives in the job.
    @property
    def window(self) -> int:
        return self._job.window

    @property
    def piece(self) -> int:
        return self._job.piece

    @property
    def buffered(self) -> int:
        return self._job.buffered

    @property
    def max_buffered(self) -> int:
        return self._job.max_buffered

    @property
    def fetched(self) -> int:
        return self._job.fetched

    @property
    def hedges(self) -> int:
        return self._job.hedges

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def tell(self) -> int:
        self._check_open()
        return self._job.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        job = self._job
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = job.pos + offset
        elif whence == io.SEEK_END:
            if self.size is None:
                self._single_to(None)  # no size announced: the end of the plain stream tells
            assert self.size is not None
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target == job.pos:
            return target
        with job.lock:
            job.pos = target
            job.drop_outside()
        self._sequential = False
        self.scheduler.wake()
        return target

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self.size is not None and self._job.pos >= self.size:
            self._at_end()
            return 0
        if self._ranges:
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
            if self._ranges:
                self._job.stop()
                self.transport.abort()  # requests still waiting for their answer's headers
            if self._own_scheduler:
                self.scheduler.close()
            self._close_single()
            self._job.clear()
            self.transport.close()
            self.listener.finish(self._job.pos)
        finally:
            super().close()

    # -- the reader's side ----------------------------------------------------------------------
    def _read_ranges(self, view: memoryview) -> int:
        job = self._job
        index = job.pos // job.piece
        with job.lock:
            job.window_pieces()
            while True:
                if job.error is not None:
                    raise job.error
                piece = job.pieces.get(index)
                if piece is not None and piece.data is not None:
                    # A piece still arriving gives what its first copy has so far: the reader
                    # starts as soon as bytes come, not when a whole piece is in.
                    end = piece.stop if piece.state == _DONE else piece.start + piece.filled
                    if end > job.pos:
                        break
                job.arrived.wait(_TICK)
                self._report()
            assert piece.data is not None
            offset = job.pos - piece.start
            n = min(len(view), end - job.pos)
            view[:n] = memoryview(piece.data)[offset : offset + n]
            # The position moves before the piece goes, under the lock: a worker looking at the
            # window meanwhile must not take the piece just read for one still to fetch.
            job.pos += n
            if job.pos >= piece.stop:
                job.release(piece)
                del job.pieces[index]
        self.scheduler.wake()
        return n

    def _stop_ranges(self) -> None:
        self._ranges = False
        self._job.stop()
        self._job.clear()

    def _read_single(self, view: memoryview) -> int:
        """No ranges: one plain GET, read in this thread (no reordering to do)."""
        if not self._single_to(self._job.pos):
            return 0
        assert self._single_read is not None
        n = self._single_read(view)
        if not n:
            self._single_ended()
        self._single_pos += n
        self._job.fetched += n
        self._job.pos += n
        return n

    def _single_to(self, target: int | None) -> bool:
        """Bring the plain stream to byte `target` (None: to its end); False when it ends first.

        The bytes before `target` are read and discarded (a seek forward, or a fallback after
        some bytes came in ranges); a stream already past `target` (a seek back) starts again
        from byte 0, since the server has no ranges to start it elsewhere.
        """
        if self._single is not None and target is not None and self._single_pos > target:
            self._close_single()
        if self._single is None:
            self._open_single()
        read = self._single_read
        assert read is not None
        scratch: memoryview | None = None
        while target is None or self._single_pos < target:
            if scratch is None:
                scratch = memoryview(bytearray(1 << 20))
            left = len(scratch) if target is None else min(target - self._single_pos, len(scratch))
            n = read(scratch[:left])
            if not n:
                self._single_ended()
                return False
            self._single_pos += n
            self._job.fetched += n
        return True

    def _single_ended(self) -> None:
        """The plain stream ended cleanly: at the announced size, or it tells the size."""
        if self.size is None:
            self.size = self._single_pos
        elif self._single_pos < self.size:
            raise TruncatedError(
                f"the plain stream ended after {self._single_pos} of {self.size} bytes"
            )

    def _open_single(self) -> None:
        """The plain stream, on a slot of its own (its body gives it back when closed)."""
        tries = self._job.attempts(halt=None, held=False)
        body = tries.open(
            lambda: self.transport.open_stream(
                self.info.final_url, 0, validators=self.info.validators
            )
        )
        if self.size is not None and body.length not in (None, self.size):
            body.close()
            raise RemoteChangedError(
                f"the server now announces {body.length} bytes instead of {self.size}"
            )
        self._single, self._single_pos = body, 0
        self._single_meter = self._job.throttle.meter(self._job.host, body.readinto, tries.pause)
        self._single_read = body.readinto if self._single_meter is None else self._single_meter.read

    def _close_single(self) -> None:
        body, self._single = self._single, None
        meter, self._single_meter = self._single_meter, None
        self._single_read = None
        if meter is not None:
            meter.close()
        if body is not None:
            body.close()

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
            workers = self._job.workers if self._ranges else 0
            self.listener.progress(self._job.pos, self.size, workers)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")


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
    listener: TransferListener | None = None,
    clock: Clock | None = None,
    cancel: threading.Event | None = None,
) -> RemoteFile:
    """Probe the remote file (HEAD, or a one-byte GET) and open it as a `RemoteFile`."""
    clock = clock or Clock()
    url = transport.url
    # The probe's own slot: no stream of this scheduler is open yet, so it never waits for one.
    scheduler = Scheduler(max_connections=1, per_host=1, monotonic=clock.monotonic)
    tries = Fetcher(scheduler, clock, cancel=cancel).attempts(
        origin(url), RetryPolicy(total=options.retries)
    )
    try:
        info = tries.call(lambda: probe_remote(transport, url))
    except Stop:
        raise Interrupted("interrupted") from None
    finally:
        scheduler.close()
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
