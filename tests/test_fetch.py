"""The fetch seam (core/fetch.py): slots taken and given back exactly once, the retry policy
consumed, 429/503 told to the scheduler with their Retry-After, stops honoured at every wait.

A fake request (a callable that fails as told, then answers with a fake body) and a fake clock:
no test waits for a backoff, and none measures time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pytest
from fakes import NOW, fast_clock, payload
from rangeserver import RangeHTTPServer, serve_file

from segdl import Clock
from segdl.core.fetch import Attempts, Fetcher, Requeue, Retired, Stop
from segdl.core.http import ResponseBody, Validators, open_transport
from segdl.core.options import Options
from segdl.core.retry import RetryPolicy
from segdl.core.scheduler import Scheduler
from segdl.core.urls import Origin
from segdl.errors import ConnectError, HTTPStatusError, RefusedError, SegdlError, TLSError

HOST: Origin = ("http", "a.example", 80)
DEADLINE = 10.0  # generous: only for a test that would otherwise hang


class FakeBody:
    """What the seam needs of a body: the close hook, its protocol, and a count of closes."""

    def __init__(self, protocol: str = "HTTP/1.1") -> None:
        self.on_close: Callable[[], None] | None = None
        self.protocol = protocol
        self.closes = 0

    def close(self) -> None:
        self.closes += 1
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


class Server:
    """A fake request: raises the listed errors one per try, then answers with a body."""

    def __init__(self, *errors: SegdlError) -> None:
        self.errors = list(errors)
        self.tries = 0
        self.bodies: list[FakeBody] = []

    def __call__(self) -> ResponseBody:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        body = FakeBody()
        self.bodies.append(body)
        return cast(ResponseBody, body)


def too_many(retry_after: str | None = None, status: int = 429) -> HTTPStatusError:
    return HTTPStatusError(f"HTTP {status}", status=status, retry_after=retry_after)


@pytest.fixture
def scheduler() -> Any:
    scheduler = Scheduler(
        max_connections=4, per_host=2, buffer_factory=lambda: memoryview(bytearray(1))
    )
    yield scheduler
    scheduler.close()


def active(scheduler: Scheduler) -> int:
    load, _, _ = scheduler.host_load(HOST)
    return load


def attempts(
    scheduler: Scheduler,
    clock: Clock,
    *,
    total: int = 5,
    cancel: threading.Event | None = None,
    **kwargs: Any,
) -> Attempts:
    fetcher = Fetcher(scheduler, clock, cancel=cancel)
    return fetcher.attempts(HOST, RetryPolicy(total=total), **kwargs)


# --- slots ------------------------------------------------------------------------------------


def test_a_body_holds_its_slot_until_closed_and_gives_it_back_once(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    server = Server()
    body = attempts(scheduler, clock).open(server)
    assert active(scheduler) == 1
    body.close()
    assert active(scheduler) == 0
    body.close()  # a second close gives back nothing more
    other = attempts(scheduler, clock).open(server)
    assert active(scheduler) == 1
    other.close()
    assert active(scheduler) == 0


def test_a_failed_try_gives_its_slot_back_before_the_wait(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    seen: list[int] = []

    def sleep(seconds: float) -> None:
        seen.append(active(scheduler))

    clock.sleep = sleep
    server = Server(ConnectError("reset", answered_before=True))
    body = attempts(scheduler, clock).open(server)
    assert seen == [0]  # no slot held while waiting
    assert active(scheduler) == 1
    body.close()
    assert active(scheduler) == 0


def test_an_error_that_is_not_retried_gives_the_slot_back(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    server = Server(TLSError("bad certificate"))
    with pytest.raises(TLSError):
        attempts(scheduler, clock).open(server)
    assert (server.tries, sleeps.delays, active(scheduler)) == (1, [], 0)


def test_a_bug_in_the_request_gives_the_slot_back(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()

    def broken() -> ResponseBody:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        attempts(scheduler, clock).open(broken)
    assert active(scheduler) == 0


def test_call_gives_the_slot_back_when_the_request_returns(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    loads: list[int] = []

    def probe() -> str:
        loads.append(active(scheduler))
        return "info"

    assert attempts(scheduler, clock).call(probe) == "info"
    assert loads == [1]
    assert active(scheduler) == 0


def test_a_claim_that_holds_a_slot_takes_none(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    body = attempts(scheduler, clock, held=True).open(Server())
    assert active(scheduler) == 0
    body.close()
    assert active(scheduler) == 0


def test_a_real_body_gives_its_slot_back_on_close(
    scheduler: Scheduler, rangeserver: RangeHTTPServer
) -> None:
    data = payload(4096)
    served = serve_file(rangeserver, "/f", data)
    transport = open_transport(served.url, Options())
    clock, _ = fast_clock()
    try:
        fetcher = Fetcher(scheduler, clock)
        host = ("http", "127.0.0.1", rangeserver.port)
        tries = fetcher.attempts(host, RetryPolicy())
        body = tries.open(
            lambda: transport.open_range(served.url, 0, 4096, total=4096, validators=Validators())
        )
        assert scheduler.host_load(host)[0] == 1
        buffer = bytearray(4096)
        assert body.readinto(memoryview(buffer)) == 4096
        body.close()
        assert bytes(buffer) == data
        assert scheduler.host_load(host)[0] == 0
    finally:
        transport.close()


# --- the retry policy -------------------------------------------------------------------------


def test_retries_consume_the_policy_and_wait_its_delays(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()  # jitter centred: the delays are the policy's own
    reset = ConnectError("reset", answered_before=True)
    server = Server(reset, reset, reset)
    tries = attempts(scheduler, clock)
    tries.open(server).close()
    assert server.tries == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]
    assert tries.policy.failures == 3


def test_the_error_is_raised_when_no_retry_is_left(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    errors = [ConnectError(f"reset {i}", answered_before=True) for i in range(3)]
    with pytest.raises(ConnectError, match="reset 2"):
        attempts(scheduler, clock, total=2).open(Server(*errors))
    assert len(sleeps.delays) == 2
    assert active(scheduler) == 0


def test_a_refused_new_host_is_tried_once_more_quickly(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    refused = [RefusedError("refused"), RefusedError("refused again")]
    with pytest.raises(RefusedError, match="again"):
        attempts(scheduler, clock).open(Server(*refused))
    assert len(sleeps.delays) == 1 and sleeps.delays[0] <= 0.1


def test_progress_starts_the_count_over(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    tries = attempts(scheduler, clock, total=1)
    broken = ConnectError("broke off", answered_before=True)
    tries.failed(broken, progressed=True)
    tries.failed(broken, progressed=True)  # each after progress: never exhausted
    with pytest.raises(ConnectError):
        tries.failed(broken)
    assert sleeps.delays == [0.5, 0.5]


# --- throttling -------------------------------------------------------------------------------


def test_a_429_is_told_to_the_scheduler_with_its_retry_after(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    now = [0.0]
    scheduler._monotonic = lambda: now[0]  # the pause is measured on the scheduler's clock
    loads: list[tuple[int, int, float]] = []

    def sleep(seconds: float) -> None:
        sleeps(seconds)
        loads.append(scheduler.host_load(HOST))
        now[0] += seconds

    clock.sleep = sleep
    server = Server(too_many("7"))
    tries = attempts(scheduler, clock)
    tries.open(server)  # the pause is over when it retries
    assert sleeps.delays == [7.0]
    assert loads == [(0, 1, 7.0)]  # one slot fewer, paused for the Retry-After
    tries.failed(too_many("Thu, 01 Jan 2099 00:00:00 GMT", status=503))
    assert sleeps.delays[1] == RetryPolicy().retry_after_max  # capped, as the pause is
    assert loads[1][2] == RetryPolicy().retry_after_max


def test_other_errors_are_not_told_to_the_scheduler(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    tries = attempts(scheduler, clock)
    tries.open(Server(HTTPStatusError("HTTP 500", status=500, retry_after="60"))).close()
    assert scheduler.host_load(HOST) == (0, 2, 0.0)


def test_a_request_that_may_leave_is_requeued_by_a_pause_with_its_retries_left(
    scheduler: Scheduler,
) -> None:
    clock, sleeps = fast_clock()
    tries = attempts(scheduler, clock, leave_paused=True)
    with pytest.raises(Requeue) as paused:
        tries.open(Server(too_many("3600")))
    assert paused.value.policy.failures == 1
    assert sleeps.delays == []
    # Its host is paused: the next try leaves before taking a slot, the count unchanged.
    again = attempts(scheduler, clock, leave_paused=True)
    again.policy = paused.value.policy
    server = Server()
    with pytest.raises(Requeue) as still:
        again.open(server)
    assert (server.tries, still.value.policy.failures) == (0, 1)


def test_a_worker_retires_when_told_to_without_waiting(scheduler: Scheduler) -> None:
    clock, sleeps = fast_clock()
    tries = attempts(scheduler, clock, held=True)
    with pytest.raises(Retired):
        tries.open(Server(too_many()), retire=lambda exc: isinstance(exc, HTTPStatusError))
    assert sleeps.delays == []
    assert scheduler.host_load(HOST) == (0, 2, 0.0)  # retiring is not a 429 told twice


# --- stops ------------------------------------------------------------------------------------


def test_a_cancel_before_the_request_sends_nothing(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    cancel = threading.Event()
    cancel.set()
    server = Server()
    with pytest.raises(Stop):
        attempts(scheduler, clock, cancel=cancel).open(server)
    assert (server.tries, active(scheduler)) == (0, 0)


def test_a_stop_during_the_wait_ends_it_without_another_try(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    halt = threading.Event()
    clock.sleep = lambda seconds: halt.set()  # the job halts while the retry waits
    server = Server(ConnectError("reset", answered_before=True))
    with pytest.raises(Stop):
        attempts(scheduler, clock, halt=halt).open(server)
    assert (server.tries, active(scheduler)) == (1, 0)


@pytest.mark.parametrize("which", ["cancel", "halt"])
def test_a_stop_wakes_a_real_backoff_wait_at_once(scheduler: Scheduler, which: str) -> None:
    """A real wait of an hour (the Retry-After) ends as soon as the stop comes."""
    clock = Clock(wall=lambda: NOW, rand=lambda: 0.5)  # real waits
    cancel, halt = threading.Event(), threading.Event()
    server = Server(too_many("3600"))
    tries = attempts(scheduler, clock, cancel=cancel, halt=halt)
    outcome: list[str] = []

    def run() -> None:
        try:
            tries.open(server)
        except Stop:
            outcome.append("stopped")

    thread = threading.Thread(target=run)
    thread.start()
    deadline = threading.Event()
    while server.tries == 0 and not deadline.wait(0.01):
        pass
    (cancel if which == "cancel" else halt).set()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the wait did not end"
    assert outcome == ["stopped"]
    assert (server.tries, active(scheduler)) == (1, 0)


def test_a_stop_while_waiting_for_a_slot_leaves(scheduler: Scheduler) -> None:
    clock, _ = fast_clock()
    held = [attempts(scheduler, clock).open(Server()) for _ in range(2)]  # the host's 2 slots
    cancel = threading.Event()
    outcome: list[str] = []
    server = Server()

    def run() -> None:
        try:
            attempts(scheduler, clock, cancel=cancel).open(server)
        except Stop:
            outcome.append("stopped")

    thread = threading.Thread(target=run)
    thread.start()
    waited = threading.Event()
    while scheduler.host_load(HOST)[0] < 3 and not waited.wait(0.01):
        pass
    cancel.set()
    thread.join(DEADLINE)
    assert outcome == ["stopped"] and server.tries == 0
    for body in held:
        body.close()
    assert active(scheduler) == 0
