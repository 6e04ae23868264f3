"""The one owner of every connection of a run: slots and the range workers.

A *slot* is the right to have one request open to a host. The scheduler enforces a global cap
(`max_connections`) and a per-host cap (`per_host`), lowers a host's cap and pauses it when it
answers 429/503 (never the other hosts'), and hands slots out first come, first served, so a
busy host cannot starve the files of another.

*Range work* (`RangeWork`: a file's ranges, `job.FileRanges`, or a stream's pieces) is served by
a pool of `max_connections` worker threads, shared by every file of the run: a worker takes an
unowned range of any registered range work whose host has a free slot, or else the tail of the
slowest range (work stealing across files), and holds the slot while it serves the claim. What
a range's bytes mean (a file, a stream) is the range work's business, not the scheduler's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .urls import Origin

_IDLE_POLL = 0.1  # how often an idle worker looks again for a range worth stealing
_RECOVER_AFTER = 2.0  # seconds without a refusal before a throttled host gets one more slot


def _no_buffer() -> memoryview:
    return memoryview(bytearray(0))


class Stop(Exception):
    """A wait or a request given up because its job halted or its caller cancelled (internal:
    the job's public entry points raise `segdl.Interrupted`)."""


class Paused(Exception):
    """Raised from `acquire(..., leave_paused=True)` when the host is paused by a 429/503."""


class RangeWork(Protocol):
    """What the scheduler needs of work split into ranges (a file's, a stream's pieces)."""

    host: Origin
    max_workers: int  # connections this file may use at once
    workers: int  # connections it uses now (counted by the scheduler)

    def wants_worker(self) -> bool:
        """Whether an unowned range or a tail worth stealing may be waiting."""
        ...

    def take(self, now: float) -> object | None:
        """Claim a range (an unowned one, else a stolen tail); None when there is none."""
        ...

    def work(self, claim: object, buffer: memoryview) -> None:
        """Fetch the claimed range with the slot held; must release the claim before returning."""
        ...


@dataclass
class _Host:
    cap: int
    limit: int  # the most `cap` recovers to: per_host, times streams once it spoke HTTP/2
    cond: threading.Condition  # requests waiting for a slot of this host wait here
    active: int = 0
    waiting: int = 0
    paused_until: float = 0.0
    last_refusal: float = 0.0
    protocol: str = ""


class Scheduler:
    """Connection slots with a global and a per-host cap, and the shared range workers."""

    def __init__(
        self,
        *,
        max_connections: int,
        per_host: int,
        streams: int = 1,
        buffer_factory: Callable[[], memoryview] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_connections < 1 or per_host < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.per_host = per_host
        self.streams = streams  # requests at once on one HTTP/2 connection
        # The workers' read buffer; none when the range work reads into its own (a stream's
        # pieces) or there is no range work (requests of their own only).
        self._buffer_factory = buffer_factory or _no_buffer
        self._monotonic = monotonic
        # One lock; idle range workers wait on `_cond`, requests waiting for a slot on their
        # host's own condition: a freed slot wakes one waiter of that host, not every thread.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # requests waiting for a slot, all hosts
        self._total = 0
        self._hosts: dict[Origin, _Host] = {}
        self._jobs: list[RangeWork] = []
        self._next_job = 0
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    # -- slots --------------------------------------------------------------------------------
    def _host(self, key: Origin) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(
                cap=self.per_host, limit=self.per_host, cond=threading.Condition(self._lock)
            )
        return host

    def _free(self, host: _Host, now: float) -> bool:
        return (
            self._total < self.max_connections
            and host.active < host.cap
            and (host.paused_until <= now)
        )

    def _take_slot(self, key: Origin, host: _Host) -> None:
        host.active += 1
        self._total += 1

    def acquire(
        self,
        key: Origin,
        stopped: Callable[[], bool] | None = None,
        *,
        leave_paused: bool = False,
    ) -> None:
        """Wait for a slot of host `key`; raises Stop when `stopped()` turns true meanwhile,
        and with `leave_paused` Paused rather than wait out a pause of the host (now or
        meanwhile)."""
        with self._lock:
            host = self._host(key)
            now = self._monotonic()
            if not host.waiting and self._free(host, now):
                self._take_slot(key, host)
                return
            host.waiting += 1
            self._waiting += 1
            try:
                while True:
                    if stopped is not None and stopped():
                        raise Stop
                    now = self._monotonic()
                    if self._free(host, now):
                        self._take_slot(key, host)
                        return
                    if leave_paused and host.paused_until > now:
                        raise Paused
                    timeout = _IDLE_POLL
                    if host.paused_until > now:
                        timeout = min(timeout, host.paused_until - now)
                    host.cond.wait(timeout)
            finally:
                host.waiting -= 1
                self._waiting -= 1

    def try_acquire(self, key: Origin) -> bool:
        """Take a slot of host `key` if one is free now and nobody waits for one."""
        with self._lock:
            host = self._host(key)
            if host.waiting or not self._free(host, self._monotonic()):
                return False
            self._take_slot(key, host)
            return True

    def release(self, key: Origin) -> None:
        with self._lock:
            self._freed(self._hosts[key])

    def _freed(self, host: _Host) -> None:
        """A slot of `host` came free (lock held): wake whoever can use it, and only them."""
        host.active -= 1
        self._total -= 1
        if host.waiting:
            host.cond.notify()
        if self._waiting > host.waiting and self._total == self.max_connections - 1:
            # The global cap was what held the others back.
            for other in self._hosts.values():
                if other.waiting and other is not host:
                    other.cond.notify()
        if self._jobs:
            self._cond.notify()

    def refused(self, key: Origin, delay: float | None) -> None:
        """Host `key` answered 429/503: one slot fewer for it, and a pause of `delay` seconds."""
        with self._cond:
            host = self._host(key)
            now = self._monotonic()
            host.cap = max(1, min(host.cap, host.active) - 1)
            host.last_refusal = now
            if delay is not None and delay > 0:
                host.paused_until = max(host.paused_until, now + delay)
                host.cond.notify_all()  # for those that leave rather than wait (leave_paused)

    def succeeded(self, key: Origin) -> None:
        """A request to `key` went through: a throttled host slowly gets its slots back."""
        with self._cond:
            host = self._hosts.get(key)
            if host is None or host.cap >= host.limit:
                return
            now = self._monotonic()
            if now - host.last_refusal >= _RECOVER_AFTER:
                host.cap += 1
                host.last_refusal = now
                host.cond.notify()
                self._cond.notify()

    def spoke(self, key: Origin, protocol: str) -> None:
        """Host `key` answered over `protocol`. Once it speaks HTTP/2, each of its connections
        carries up to `streams` requests at once: its slots (and what a 429/503 takes from
        them) count streams, and the transport keeps counting its connections."""
        known = self._hosts.get(key)
        if known is not None and known.protocol == protocol:
            return  # the common case, without the lock
        with self._cond:
            host = self._host(key)
            if host.protocol == protocol:
                return
            host.protocol = protocol
            if protocol == "HTTP/2" and host.limit == self.per_host and self.streams > 1:
                host.limit = self.per_host * self.streams
                host.cap *= self.streams
                host.cond.notify_all()

    def protocols(self) -> dict[Origin, str]:
        """The protocol each host answered over so far."""
        with self._cond:
            return {key: host.protocol for key, host in self._hosts.items() if host.protocol}

    def host_load(self, key: Origin) -> tuple[int, int, float]:
        """(requests open or waiting for a slot, cap, seconds left of its pause) of one host:
        how busy it is, and whether a request to it would have to wait out a 429/503."""
        with self._cond:
            host = self._hosts.get(key)
            if host is None:
                return 0, self.per_host, 0.0
            pause = max(0.0, host.paused_until - self._monotonic())
            return host.active + host.waiting, host.cap, pause

    # -- range jobs and their workers ---------------------------------------------------------
    def add_job(self, job: RangeWork) -> None:
        """Offer a file's ranges to the shared workers (starting more workers if allowed)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler closed")
            self._jobs.append(job)
            wanted = min(self.max_connections, sum(j.max_workers for j in self._jobs))
            while len(self._workers) < wanted:
                thread = threading.Thread(
                    target=self._worker, name=f"segdl-worker-{len(self._workers)}", daemon=True
                )
                self._workers.append(thread)
                thread.start()
            self._cond.notify_all()

    def remove_job(self, job: RangeWork) -> None:
        with self._cond:
            with contextlib.suppress(ValueError):
                self._jobs.remove(job)
            self._cond.notify_all()

    def wake(self) -> None:
        """A range was released or a job changed: idle workers look again at once."""
        with self._cond:
            self._cond.notify_all()

    def _pick(self) -> tuple[RangeWork, object] | None:
        """An unowned range or a stealable tail of some job whose host has a free slot."""
        jobs = self._jobs
        if not jobs:
            return None
        now = self._monotonic()
        count = len(jobs)
        start = self._next_job % count
        for offset in range(count):
            job = jobs[(start + offset) % count]
            if job.workers >= job.max_workers or not job.wants_worker():
                continue
            host = self._host(job.host)
            if host.waiting or not self._free(host, now):
                continue  # requests already waiting for this host go first
            claim = job.take(now)
            if claim is None:
                continue
            self._next_job = (start + offset + 1) % count
            self._take_slot(job.host, host)
            job.workers += 1
            return job, claim
        return None

    def _worker(self) -> None:
        buffer = self._buffer_factory()
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    picked = self._pick()
                    if picked is not None:
                        break
                    self._cond.wait(_IDLE_POLL)
            job, claim = picked
            try:
                job.work(claim, buffer)
            finally:
                with self._lock:
                    job.workers -= 1
                    self._freed(self._hosts[job.host])
            # An idle worker keeps no job alive (nor what its job holds, e.g. a stream's error).
            del picked, job, claim

    def close(self) -> None:
        """Stop the workers once they finish what they hold (jobs must have been halted)."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()
            for host in self._hosts.values():
                host.cond.notify_all()
            workers, self._workers = self._workers, []
        for thread in workers:
            if thread is not threading.current_thread():  # a worker closing it ends on return
                thread.join(timeout=2.0)
