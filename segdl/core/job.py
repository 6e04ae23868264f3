"""One remote file's ranges, who owns them, and how far each got.

`FileRanges` is the range work the scheduler's shared workers serve for one file: it hands out
an unowned range, or cuts the tail off the range that needs the longest still (work stealing),
runs the engine's fetch for it, and records the first fatal error. It knows nothing of threads'
origin, of HTTP or of where the bytes go: the engine's `work` callable does the fetching and
writing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from . import plan
from .probe import RemoteInfo
from .scheduler import Stop
from .sink import ALIGN, PartFile
from .urls import NO_ORIGIN, Origin

_STEAL_MIN_SECONDS = 0.5  # steal only from a range that needs at least this long to finish
_RATE_AFTER = 0.25  # seconds of data before a connection's rate counts
# A connection much slower than the others is dropped after its range, and a new one made:
# the next may take a better path (or, on servers that limit by connection, a better slot).
_SLOW_FRACTION = 0.25


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


Work = Callable[["FileRanges", Segment, memoryview], None]


class FileRanges:
    """One file's segments and the bookkeeping the workers share."""

    def __init__(
        self,
        info: RemoteInfo,
        part: PartFile,
        segments: list[Segment],
        *,
        host: Origin = NO_ORIGIN,
        max_workers: int = 1,
        min_split: int = 1,
        work: Work | None = None,
        stealable: bool = True,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.info = info
        self.part = part
        self.segments = segments
        self.host = host
        self.max_workers = max_workers
        self.workers = 0  # counted by the scheduler
        self.min_split = min_split
        self._work = work
        self.stealable = stealable
        self._on_release = on_release
        self.lock = threading.Lock()  # guards the segment list, `active` flags and counters
        # Notified when a worker lets go of a range: the driver then looks at once whether the
        # file is complete (the last range's end, above all, must not wait out a poll).
        self.released = threading.Condition(self.lock)
        self.halt = threading.Event()  # set on the first fatal error or a cancel
        self.error: BaseException | None = None
        self.streaming = 0  # workers with an open body right now
        self.rates: dict[int, float] = {}  # each worker's last measured rate, bytes/s

    # -- what the scheduler asks ----------------------------------------------------------------
    def wants_worker(self) -> bool:
        if self.halt.is_set():
            return False
        return any(not s.active and s.pos < s.stop for s in self.segments) or (
            self.stealable and self.in_flight()
        )

    def take(self, now: float) -> Segment | None:
        if self.halt.is_set():
            return None
        return self.next_work(now, self.rates.get(threading.get_ident()))

    def work(self, claim: object, buffer: memoryview) -> None:
        assert isinstance(claim, Segment) and self._work is not None
        try:
            self._work(self, claim, buffer)
        except Stop:
            pass
        except BaseException as exc:
            self.fail(exc)
        finally:
            self.release(claim)

    # -- bookkeeping ----------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """Record the first fatal error and make every worker of this file let go."""
        with self.lock:
            if self.error is None:
                self.error = exc
        self.halt.set()

    def release(self, seg: Segment) -> None:
        with self.lock:
            seg.active = False
            self.released.notify_all()
        if self._on_release is not None:
            self._on_release()

    def next_work(self, now: float, thief_rate: float | None) -> Segment | None:
        """An unowned unfinished segment, else the tail of the slowest range in flight."""
        with self.lock:
            for seg in self.segments:
                if not seg.active and seg.pos < seg.stop:
                    seg.active = True
                    return seg
            if not self.stealable:
                return None
            victim_index = plan.pick_victim(
                [(s.remaining, s.rate(now)) if s.active else None for s in self.segments],
                _STEAL_MIN_SECONDS,
            )
            if victim_index is None:
                return None
            victim = self.segments[victim_index]
            with victim.lock:
                cut = plan.steal_point(
                    victim.pos,
                    victim.stop,
                    self.min_split,
                    victim.rate(now),
                    thief_rate,
                    align=ALIGN,
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

    def wait_done(self, timeout: float) -> bool:
        """Wait up to `timeout` for the end: every byte in, or halted with no worker left."""
        with self.lock:
            if not self._done():
                self.released.wait(timeout)
            return self._done()

    def _done(self) -> bool:
        if any(s.active for s in self.segments):
            return False
        return self.halt.is_set() or all(s.pos >= s.stop for s in self.segments)

    def done_bytes(self) -> int:
        return sum(s.pos - s.start for s in self.segments)

    def snapshot(self) -> tuple[tuple[int, int, int], ...]:
        """The segments as `(start, done, stop)`, consistent with each other."""
        with self.lock:
            return tuple((s.start, s.pos, s.stop) for s in self.segments)
