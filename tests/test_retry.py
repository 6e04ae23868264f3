from __future__ import annotations

import dataclasses
import math

import pytest

from segdl.core.retry import (
    RETRY_STATUSES,
    RetryPolicy,
    is_retryable_status,
    parse_retry_after,
    wait_before_retry,
)
from segdl.errors import (
    ConnectError,
    DestinationError,
    DiskFullError,
    HTTPStatusError,
    IntegrityError,
    Interrupted,
    InvalidURLError,
    NetworkError,
    ProtocolViolation,
    RangeIgnoredError,
    RedirectError,
    RemoteChangedError,
    TimeoutError_,
    TLSError,
    TruncatedError,
    UsageError,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the date in RFC 9110's examples.
NOW = 784111777.0


def status(code: int, retry_after: str | None = None) -> HTTPStatusError:
    return HTTPStatusError(f"HTTP {code}", status=code, retry_after=retry_after)


def no_jitter() -> float:
    return 0.5


# --- is_retryable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectError("refused"),
        TimeoutError_("read timed out"),
        TruncatedError("short body"),
        *(status(code) for code in sorted(RETRY_STATUSES)),
        status(501),
        status(505),
        status(599),
    ],
    ids=repr,
)
def test_retryable(error: BaseException) -> None:
    assert RetryPolicy().is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        TLSError("certificate verify failed"),
        status(304),
        status(400),
        status(401),
        status(403),
        status(404),
        status(410),
        status(416),
        status(600),
        RemoteChangedError("etag changed"),
        ProtocolViolation("bad Content-Range"),
        RangeIgnoredError("200 to a range request"),
        RedirectError("loop"),
        UsageError("bad option"),
        InvalidURLError("ftp://x"),
        DestinationError("exists"),
        DiskFullError("ENOSPC"),
        IntegrityError("sha256 mismatch"),
        Interrupted("SIGINT"),
        NetworkError("untyped network error"),
        TimeoutError("builtin, not translated"),
        OSError("not translated"),
        ValueError("bug"),
        KeyboardInterrupt(),
    ],
    ids=repr,
)
def test_not_retryable(error: BaseException) -> None:
    policy = RetryPolicy()
    assert not policy.is_retryable(error)
    with pytest.raises(type(error)) as excinfo:
        policy.increment(error)
    assert excinfo.value is error


def test_retryable_statuses() -> None:
    assert sorted(RETRY_STATUSES) == [408, 429, 500, 502, 503, 504]
    assert all(is_retryable_status(code) for code in range(500, 600))
    assert not any(is_retryable_status(code) for code in range(100, 500) if code not in {408, 429})


# --- increment / reset ----------------------------------------------------------------------


def test_increment_returns_new_policy_and_leaves_original_alone() -> None:
    policy = RetryPolicy()
    after = policy.increment(ConnectError("reset"))
    assert after.failures == 1
    assert policy.failures == 0
    assert after == dataclasses.replace(policy, failures=1)


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.failures = 3  # type: ignore[misc]


@pytest.mark.parametrize("total", [0, 1, 3, 5])
def test_exhausted_after_total_consecutive_failures(total: int) -> None:
    error = TimeoutError_("stalled")
    policy = RetryPolicy(total=total)
    for expected in range(1, total + 1):
        policy = policy.increment(error)
        assert policy.failures == expected
    with pytest.raises(TimeoutError_) as excinfo:
        policy.increment(error)
    assert excinfo.value is error


def test_mixed_errors_count_together() -> None:
    policy = RetryPolicy(total=2)
    policy = policy.increment(ConnectError("refused"))
    policy = policy.increment(status(503))
    with pytest.raises(TruncatedError):
        policy.increment(TruncatedError("short"))


def test_reset_returns_self_when_clean() -> None:
    policy = RetryPolicy()
    assert policy.reset() is policy


def test_reset_clears_failures_and_keeps_settings() -> None:
    policy = RetryPolicy(total=3, backoff_factor=2.0, failures=3)
    assert policy.reset() == RetryPolicy(total=3, backoff_factor=2.0)


def test_progress_lets_a_flaky_stream_go_on_forever() -> None:
    error = TruncatedError("connection dropped mid-body")
    policy = RetryPolicy(total=2)
    # Far more failures than total, but never more than two in a row without progress.
    for _ in range(1000):
        policy = policy.increment(error)
        policy = policy.increment(error)
        policy = policy.reset()
    assert policy.failures == 0


def test_without_progress_the_same_stream_gives_up() -> None:
    error = TruncatedError("connection dropped mid-body")
    policy = RetryPolicy(total=2)
    policy = policy.increment(error).increment(error)
    with pytest.raises(TruncatedError):
        policy.increment(error)


# --- delay: backoff and jitter --------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(total=100, backoff_factor=0.5, backoff_max=30.0)
    error = ConnectError("refused")
    delays = []
    for _ in range(9):
        policy = policy.increment(error)
        delays.append(policy.delay(error, now=NOW, rand=no_jitter))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_delay_before_any_failure_is_the_first_backoff() -> None:
    assert RetryPolicy().delay(ConnectError("x"), now=NOW, rand=no_jitter) == 0.5


def test_backoff_does_not_overflow_with_huge_failure_counts() -> None:
    policy = RetryPolicy(total=10**9, failures=10**9)
    assert policy.delay(ConnectError("x"), now=NOW, rand=no_jitter) == 30.0


def test_zero_backoff_factor_means_no_wait() -> None:
    policy = RetryPolicy(backoff_factor=0.0, failures=10)
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.99) == 0.0


@pytest.mark.parametrize(
    ("rand_value", "expected"),
    [
        (0.0, 3.0),  # 4 * (1 - 0.25)
        (0.25, 3.5),
        (0.5, 4.0),
        (0.75, 4.5),
        (1.0, 5.0),  # the open end of [0, 1): the upper bound
    ],
)
def test_jitter_bounds(rand_value: float, expected: float) -> None:
    policy = RetryPolicy(backoff_factor=0.5, jitter=0.25, failures=4)
    delay = policy.delay(ConnectError("x"), now=NOW, rand=lambda: rand_value)
    assert delay == pytest.approx(expected)


def test_jitter_never_exceeds_backoff_max() -> None:
    policy = RetryPolicy(backoff_max=30.0, jitter=0.25, failures=20)
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.0) == pytest.approx(22.5)
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.999) == 30.0


def test_full_jitter_never_goes_negative() -> None:
    policy = RetryPolicy(jitter=1.0, failures=3)
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.0) == 0.0


def test_no_jitter_ignores_rand() -> None:
    policy = RetryPolicy(jitter=0.0, failures=2)
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.0) == 1.0
    assert policy.delay(ConnectError("x"), now=NOW, rand=lambda: 0.999) == 1.0


# --- delay: Retry-After ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_seconds_wins(code: int) -> None:
    policy = RetryPolicy(failures=1)
    assert policy.delay(status(code, "120"), now=NOW, rand=no_jitter) == 120.0


def test_retry_after_is_not_jittered() -> None:
    policy = RetryPolicy(failures=1)
    assert policy.delay(status(503, "10"), now=NOW, rand=lambda: 0.0) == 10.0


def test_retry_after_http_date_uses_now() -> None:
    policy = RetryPolicy(failures=1)
    error = status(429, "Sun, 06 Nov 1994 08:50:37 GMT")
    assert policy.delay(error, now=NOW, rand=no_jitter) == 60.0


def test_retry_after_zero_and_past_dates_mean_no_wait() -> None:
    policy = RetryPolicy(failures=3)
    assert policy.delay(status(503, "0"), now=NOW, rand=no_jitter) == 0.0
    past = status(503, "Sun, 06 Nov 1994 08:00:00 GMT")
    assert policy.delay(past, now=NOW, rand=no_jitter) == 0.0


def test_retry_after_is_capped() -> None:
    policy = RetryPolicy(failures=1, retry_after_max=300.0)
    assert policy.delay(status(503, "86400"), now=NOW, rand=no_jitter) == 300.0
    assert policy.delay(status(503, "9" * 400), now=NOW, rand=no_jitter) == 300.0
    far = status(429, "Fri, 31 Dec 9999 23:59:59 GMT")
    assert policy.delay(far, now=NOW, rand=no_jitter) == 300.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Wed, 31 Feb 2015 07:28:00 GMT"])
def test_invalid_retry_after_falls_back_to_backoff(value: str | None) -> None:
    policy = RetryPolicy(failures=3)
    assert policy.delay(status(503, value), now=NOW, rand=no_jitter) == 2.0


@pytest.mark.parametrize("code", [500, 502, 504, 408])
def test_retry_after_ignored_on_other_statuses(code: int) -> None:
    policy = RetryPolicy(failures=1)
    assert policy.delay(status(code, "120"), now=NOW, rand=no_jitter) == 0.5


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("007", 7.0),
        # IMF-fixdate, obsolete RFC 850 and asctime forms of the same instant + 1 minute.
        ("Sun, 06 Nov 1994 08:50:37 GMT", 60.0),
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),
        ("Sun Nov  6 08:50:37 1994", 60.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("Sat, 05 Nov 1994 08:49:37 GMT", 0.0),
        ("Mon, 07 Nov 1994 08:49:37 GMT", 86400.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-1",
        "+5",
        "1.5",
        "1e3",
        "\uff11\uff12",  # full-width digits
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Nov 99999 08:49:37 GMT",
        "Wed, 31 Feb 2015 07:28:00 GMT",
    ],
)
def test_parse_retry_after_invalid(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_parse_retry_after_huge_seconds_is_infinite() -> None:
    assert parse_retry_after("9" * 400, NOW) == math.inf


# --- wait_before_retry ----------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when something sleeps."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_fake_sleep_receives_expected_delays() -> None:
    fake = FakeTime(NOW)
    policy = RetryPolicy(total=4, backoff_factor=1.0, backoff_max=10.0)
    errors: list[BaseException] = [
        ConnectError("refused"),
        status(503, "Sun, 06 Nov 1994 08:50:37 GMT"),  # 60 s after NOW, 1 s has passed
        TimeoutError_("stalled"),
        status(500),
    ]
    for error in errors:
        policy = wait_before_retry(
            policy, error, sleep=fake.sleep, clock=fake.clock, rand=no_jitter
        )
    assert fake.sleeps == [1.0, 59.0, 4.0, 8.0]
    assert policy.failures == 4

    last = TruncatedError("short")
    with pytest.raises(TruncatedError) as excinfo:
        wait_before_retry(policy, last, sleep=fake.sleep, clock=fake.clock, rand=no_jitter)
    assert excinfo.value is last
    assert len(fake.sleeps) == 4  # no sleep before giving up


def test_wait_before_retry_does_not_sleep_on_fatal_errors() -> None:
    fake = FakeTime(NOW)
    with pytest.raises(TLSError):
        wait_before_retry(
            RetryPolicy(), TLSError("bad cert"), sleep=fake.sleep, clock=fake.clock, rand=no_jitter
        )
    assert fake.sleeps == []


def test_wait_before_retry_with_progress_in_between() -> None:
    fake = FakeTime(NOW)
    policy = RetryPolicy(total=1, jitter=0.25)
    for _ in range(50):
        policy = wait_before_retry(
            policy, ConnectError("reset"), sleep=fake.sleep, clock=fake.clock, rand=lambda: 0.0
        )
        policy = policy.reset()
    assert fake.sleeps == [0.375] * 50


def test_wait_before_retry_accepts_an_event_style_sleep() -> None:
    waited: list[float] = []

    def event_wait(timeout: float) -> bool:
        waited.append(timeout)
        return False

    wait_before_retry(
        RetryPolicy(), ConnectError("x"), sleep=event_wait, clock=lambda: NOW, rand=no_jitter
    )
    assert waited == [0.5]


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total": -1},
        {"failures": -1},
        {"backoff_factor": -0.1},
        {"backoff_factor": math.nan},
        {"backoff_max": -1.0},
        {"retry_after_max": math.nan},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"jitter": math.nan},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
