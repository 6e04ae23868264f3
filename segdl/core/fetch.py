"""The one seam every request goes through: a slot, the request, the retries.

Every request segdl sends (a probe, a batch item's first GET, a range, a stream's piece or
plain stream, a zip's directory or member) is sent by `Attempts`: it takes a slot of the
request's host from the scheduler (unless the caller's claim already holds one), sends the
request through the callable the job gives (which checks what the answer means), and on a
failure consumes the immutable `RetryPolicy` (as urllib3's `connectionpool.urlopen`
consumes `Retry`): it tells the scheduler of a 429/503 (with its Retry-After), waits the
policy's delay in a wait that a stop ends at once, and tries again, or raises the error
when the policy has no retry left. A body it opened gives its slot back when it is closed
(as httpcore's pool is told by the stream's `close()`), exactly once; the reads themselves
never pass through here (the hot loop reads the body directly).

A stop (the job halted, the caller cancelled) raises `Stop` from every wait; the job's
public entry points turn it into `segdl.Interrupted`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import HTTPStatusError, NetworkError, SegdlError
from .clock import Clock
from .http import ResponseBody
from .retry import RETRY_AFTER_STATUSES, RetryPolicy, parse_retry_after, wait_before_retry
from .scheduler import Paused, Scheduler, Stop
from .urls import Origin

__all__ = ["Attempts", "Fetcher", "Requeue", "Retired", "Stop", "giver"]

T = TypeVar("T")

_TICK = 0.1  # how often a wait on the job's halt also looks at the caller's cancel


class Requeue(Exception):
    """The host asked for a pause (or is paused): run the request again later, with `policy`
    (the retries it has left), rather than wait in this thread."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__("host paused")
        self.policy = policy


class Retired(Stop):
    """A range worker leaves: the host refused one connection too many while others stream."""


def giver(scheduler: Scheduler, host: Origin) -> Callable[[], None]:
    """For a slot of `host` just taken: the callable that gives it back, once, whoever calls
    it and however often."""
    lock = threading.Lock()
    held = [True]

    def release() -> None:
        with lock:
            if not held[0]:
                return
            held[0] = False
        scheduler.release(host)

    return release


class Fetcher:
    """Sends a job's requests on `scheduler`'s slots; `cancel` is the caller's stop."""

    def __init__(
        self, scheduler: Scheduler, clock: Clock, *, cancel: threading.Event | None = None
    ) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self.cancel = cancel or threading.Event()

    def attempts(
        self,
        host: Origin,
        policy: RetryPolicy,
        *,
        halt: threading.Event | None = None,
        held: bool = False,
        leave_paused: bool = False,
        slot: Callable[[], None] | None = None,
    ) -> Attempts:
        """The tries of one request (and of the requests that continue it, e.g. the rest of
        a range after a broken body) under `policy`.

        `halt` is the job's stop (besides the caller's cancel); `held` means the caller's
        claim holds a slot of `host` already (a range worker); `leave_paused` raises
        `Requeue` rather than wait out a pause of the host; `slot` gives back a slot of
        `host` taken already for the first try (which then waits for none).
        """
        return Attempts(
            self, host, policy, halt=halt, held=held, leave_paused=leave_paused, slot=slot
        )


class Attempts:
    """One request's tries under one retry policy (see the module docstring)."""

    def __init__(
        self,
        fetcher: Fetcher,
        host: Origin,
        policy: RetryPolicy,
        *,
        halt: threading.Event | None,
        held: bool,
        leave_paused: bool,
        slot: Callable[[], None] | None = None,
    ) -> None:
        self.fetcher = fetcher
        self._slot = slot
        self.host = host
        self.policy = policy
        self.halt = halt
        self.held = held
        self.leave_paused = leave_paused

    def stopped(self) -> bool:
        return self.fetcher.cancel.is_set() or (self.halt is not None and self.halt.is_set())

    def check(self) -> None:
        """Raise Stop when the job halted or the caller cancelled."""
        if self.stopped():
            raise Stop

    def open(
        self,
        send: Callable[[], ResponseBody],
        *,
        retire: Callable[[SegdlError], bool] | None = None,
    ) -> ResponseBody:
        """Send until a body opens; closing the body gives back the slot taken for it.

        `retire(error)` True for a failed try raises `Retired` instead of a retry.
        """
        body, release = self._send(send, retire)
        if release is not None:
            body.on_close = release
        self.fetcher.scheduler.spoke(self.host, body.protocol)
        return body

    def call(self, send: Callable[[], T]) -> T:
        """Send until `send` returns (a request whose answer it reads whole); the slot is
        given back when it returns."""
        result, release = self._send(send, None)
        if release is not None:
            release()
        return result

    def failed(self, error: SegdlError, *, progressed: bool = False) -> None:
        """Count a failed try (after `progressed`, the count starts over), tell the scheduler
        of a 429/503, and wait before the next; raises `error` when no retry is left, `Stop`
        when stopped, `Requeue` when the host paused and the request may leave."""
        if progressed:
            self.policy = self.policy.reset()
        paused = self._refused(error)
        if paused and self.leave_paused:
            raise Requeue(self.policy.increment(error)) from None
        self.check()
        clock = self.fetcher.clock
        self.policy = wait_before_retry(
            self.policy, error, sleep=self._sleep, clock=clock.wall, rand=clock.rand
        )
        self.check()

    def pause(self, seconds: float) -> None:
        """Wait `seconds` (a speed limit's turn); raises Stop when stopped before its end."""
        self._sleep(seconds)
        self.check()

    # -- inside -----------------------------------------------------------------------------
    def _send(
        self, send: Callable[[], T], retire: Callable[[SegdlError], bool] | None
    ) -> tuple[T, Callable[[], None] | None]:
        scheduler = self.fetcher.scheduler
        while True:
            release, self._slot = self._slot, None
            if release is None:
                self.check()
                release = None if self.held else self._acquire()
            try:
                result = send()
            except (NetworkError, HTTPStatusError) as exc:
                if release is not None:
                    release()
                if retire is not None and retire(exc):
                    raise Retired from exc
                self.failed(exc)
                continue
            except BaseException:
                if release is not None:
                    release()
                raise
            scheduler.succeeded(self.host)
            return result, release

    def _acquire(self) -> Callable[[], None]:
        """A slot of the host, and the callable that gives it back (once, whoever calls)."""
        scheduler, host = self.fetcher.scheduler, self.host
        try:
            scheduler.acquire(host, self.stopped, leave_paused=self.leave_paused)
        except Paused:
            raise Requeue(self.policy) from None
        return giver(scheduler, host)

    def _refused(self, error: SegdlError) -> bool:
        """Tell the scheduler of a 429 or 503; True when the host is now paused."""
        if not (isinstance(error, HTTPStatusError) and error.status in RETRY_AFTER_STATUSES):
            return False
        delay = parse_retry_after(error.retry_after, self.fetcher.clock.wall())
        if delay is not None:
            delay = min(delay, self.policy.retry_after_max)  # as long as the retry would wait
        self.fetcher.scheduler.refused(self.host, delay)
        return delay is not None and delay > 0

    def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when stopped meanwhile (an injected sleep: as it says)."""
        fetcher = self.fetcher
        if fetcher.clock.sleep is not None:
            fetcher.clock.sleep(seconds)
            return
        cancel, halt = fetcher.cancel, self.halt
        if halt is None:
            cancel.wait(seconds)
            return
        # Two events cannot be waited on at once: the job's halt wakes this wait at once, the
        # caller's cancel within a tick (the driver also sets the halt when it sees it).
        end = time.monotonic() + seconds
        while not (halt.is_set() or cancel.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                return
            halt.wait(min(left, _TICK))
