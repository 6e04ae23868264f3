"""Speed limits: token buckets shared by every connection of a run.

A `Bucket` hands out `rate` bytes a second (a token bucket kept as one timestamp, the time at
which every byte granted so far is paid for). A grant is at most one *slice* (about 1/50 s
worth, within 4 KiB..256 KiB), and grants are given in the order asked: each reserves the
next slice of the bucket's time line, and its reader waits until that slice is paid for. A
connection that used its slice asks again behind the others, so when many connections wait
they take turns and every one of them moves, however far the limit is below their natural
rate. After an idle spell a bucket holds at most `BURST` seconds' worth (never more than one
second's, as curl's `--limit-rate` allows).

`Throttle` is the run's: one bucket for every byte of the run (`limit_rate`) and one per
`Origin`, made the first time a host is read from (`limit_rate_per_host`). It is shared by
whatever reads response bodies in the run (a file's ranges, a batch's files, a stream's
pieces, an archive's reads) and knows nothing of the transport: `meter()` wraps a body's
`readinto` so that a read never takes more bytes than were granted (the view is cut to the
grant), which keeps the rate over short windows too. Without a limit the readers get the
body's own `readinto`: the hot loops pay nothing.

Waits go through the caller's `wait(seconds)` (the fetch seam's `Attempts.pause`), which
ends at once when the job halts or the caller cancels (it raises, and the unused grant goes
back to the buckets).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator

from .options import Options
from .urls import Origin

__all__ = ["BURST", "Bucket", "Meter", "Throttle"]

BURST = 0.1  # seconds' worth a bucket holds after an idle spell
_SLICES_PER_SECOND = 50
_MIN_SLICE = 4 << 10
_MAX_SLICE = 256 << 10

ReadInto = Callable[[memoryview], int]
Wait = Callable[[float], None]  # waits that long; raises when stopped meanwhile


class Bucket:
    """`rate` bytes a second, for whoever asks, in the order they ask (thread-safe)."""

    def __init__(
        self,
        rate: int,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        burst: float = BURST,
    ) -> None:
        if rate < 1 or not 0 < burst <= 1:
            raise ValueError("a bucket needs a rate >= 1 and a burst of at most one second")
        self.rate = rate
        self.burst = burst
        self.capacity = max(1, int(rate * burst))  # bytes available at once after idling
        self.slice = max(
            1, min(self.capacity, _MAX_SLICE, max(_MIN_SLICE, rate // _SLICES_PER_SECOND))
        )
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._paid = -math.inf  # when every byte granted so far is paid for

    def reserve(self, want: int) -> tuple[int, float]:
        """Grant up to one slice of `want` bytes: (bytes granted, seconds to wait before
        reading them). The grant is taken now: later callers wait behind it."""
        n = max(0, min(want, self.slice))
        with self._lock:
            now = self._monotonic()
            # Credit after idling is capped at `burst` seconds' worth.
            paid = max(self._paid, now - self.burst) + n / self.rate
            self._paid = paid
        return n, max(0.0, paid - now)

    def refund(self, n: int) -> None:
        """Give back `n` granted bytes that were not read."""
        if n > 0:
            with self._lock:
                self._paid -= n / self.rate


class Meter:
    """One body's reads under some buckets: `read(view)` reads at most what was granted."""

    def __init__(self, buckets: tuple[Bucket, ...], readinto: ReadInto, wait: Wait) -> None:
        self._buckets = buckets
        self._readinto = readinto
        self._wait = wait
        self._slice = min(b.slice for b in buckets)
        self._credit = 0  # bytes granted and not read yet

    def read(self, view: memoryview) -> int:
        credit = self._credit
        if credit <= 0:
            if not len(view):
                return self._readinto(view)
            # A whole slice, whatever this read wants: every turn of every connection is
            # worth the same (what is left over serves the next reads, or goes back).
            credit = self._grant(self._slice)
        n = self._readinto(view[:credit] if len(view) > credit else view)
        self._credit = credit - n
        return n

    def _grant(self, n: int) -> int:
        """`n` bytes from every bucket, each in its turn (the host's first: the run's bucket,
        shared by every host, is reserved only once the host's allows)."""
        taken: list[Bucket] = []
        try:
            for bucket in self._buckets:
                got, delay = bucket.reserve(n)
                taken.append(bucket)
                if delay > 0:
                    self._wait(delay)
                assert got == n  # n is within every bucket's slice
        except BaseException:
            for bucket in taken:
                bucket.refund(n)
            raise
        return n

    def close(self) -> None:
        """Give back what was granted and not read."""
        credit, self._credit = self._credit, 0
        for bucket in self._buckets:
            bucket.refund(credit)


class Throttle:
    """The run's speed limits: a bucket for all, and one per host (see the module docstring)."""

    def __init__(
        self,
        rate: int | None = None,
        per_host: int | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._all = None if rate is None else Bucket(rate, monotonic=monotonic)
        self._per_host = per_host
        self._hosts: dict[Origin, Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, options: Options, monotonic: Callable[[], float] = time.monotonic) -> Throttle:
        return cls(options.limit_rate, options.limit_rate_per_host, monotonic=monotonic)

    @property
    def limited(self) -> bool:
        return self._all is not None or self._per_host is not None

    def buckets(self, host: Origin) -> tuple[Bucket, ...]:
        """The buckets a read from `host` takes from: the host's first, then the run's."""
        found: list[Bucket] = []
        if self._per_host is not None:
            with self._lock:
                bucket = self._hosts.get(host)
                if bucket is None:
                    bucket = self._hosts[host] = Bucket(self._per_host, monotonic=self._monotonic)
            found.append(bucket)
        if self._all is not None:
            found.append(self._all)
        return tuple(found)

    def meter(self, host: Origin, readinto: ReadInto, wait: Wait) -> Meter | None:
        """A metered `readinto` for a body from `host`; None when nothing limits it. Close it
        when done with the body (what was granted and not read goes back)."""
        if not self.limited:
            return None
        return Meter(self.buckets(host), readinto, wait)

    @contextlib.contextmanager
    def reading(self, host: Origin, readinto: ReadInto, wait: Wait) -> Iterator[ReadInto]:
        """`readinto` itself without a limit, else a metered one, closed on the way out."""
        meter = self.meter(host, readinto, wait)
        if meter is None:
            yield readinto
            return
        try:
            yield meter.read
        finally:
            meter.close()
