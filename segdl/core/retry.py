"""The retry policy: which errors are worth another try, how many, and how long to wait.

A host that has not answered yet in this run gets less patience than one that has: a name
that does not resolve fails at once, and a refused connection is tried once more quickly,
then fails (a typo or a server that is not running); once a host has answered, every failure
gets the usual budget (a server restarting mid-download deserves patience).

`RetryPolicy` is immutable, like urllib3's Retry: `increment()` hands back a new policy or
raises the error, so one policy object can be shared by every segment and each worker
threads its own copy through its loop. Time and randomness are always injected.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timezone
from email.utils import parsedate_to_datetime

from ..errors import (
    ConnectError,
    HTTPStatusError,
    NameResolutionError,
    ProxyError,
    RefusedError,
    TimeoutError_,
    TLSError,
    TruncatedError,
)

__all__ = [
    "RETRY_AFTER_STATUSES",
    "RETRY_STATUSES",
    "RetryPolicy",
    "is_retryable_status",
    "parse_retry_after",
    "wait_before_retry",
]

# Every other 5xx is retried too (see `is_retryable_status`); these are listed so the 4xx
# that are really "try again later" stand out.
RETRY_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

# RFC 9110 gives Retry-After a meaning for these; on other statuses it is ignored.
RETRY_AFTER_STATUSES: frozenset[int] = frozenset({429, 503})

# 2.0 ** 1024 overflows; any exponent this large is far past every sane backoff_max anyway.
_MAX_EXPONENT = 1023

# The wait before the one retry of a refused connection to a host not heard from yet.
_QUICK_DELAY = 0.1


def is_retryable_status(status: int) -> bool:
    """True for the statuses in RETRY_STATUSES and any 5xx."""
    return status in RETRY_STATUSES or 500 <= status <= 599


@dataclass(frozen=True)
class RetryPolicy:
    """How many consecutive failures to tolerate and how long to back off between them.

    ``total`` counts failures without progress: call `reset()` once a retry has made
    progress, so a flaky connection that keeps delivering bytes is never given up on. A
    host that has not answered in this run gets fewer (see `retries_for`).
    """

    total: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.25
    retry_after_max: float = 300.0
    failures: int = 0

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError(f"total must be >= 0, got {self.total}")
        if self.failures < 0:
            raise ValueError(f"failures must be >= 0, got {self.failures}")
        for name in ("backoff_factor", "backoff_max", "retry_after_max"):
            number = getattr(self, name)
            # NaN would slip through every comparison below and end up as a sleep(nan).
            if math.isnan(number) or number < 0:
                raise ValueError(f"{name} must be a non-negative number, got {number}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def is_retryable(self, error: BaseException) -> bool:
        """True if trying again may succeed: network trouble, timeouts, 408/429/5xx."""
        # TLSError is a ConnectError, but a certificate that failed to verify will fail again;
        # so will a proxy that is down or refused our credentials (ProxyError).
        if isinstance(error, TLSError | ProxyError):
            return False
        if isinstance(error, NameResolutionError) and not error.answered_before:
            return False  # a name that never resolved in this run: most likely a typo
        if isinstance(error, (ConnectError, TimeoutError_, TruncatedError)):
            return True
        if isinstance(error, HTTPStatusError):
            return is_retryable_status(error.status)
        return False

    def retries_for(self, error: BaseException) -> int:
        """Consecutive failures tolerated when ``error`` is the latest: ``total``, but one for
        a refused connection to a host that has not answered in this run."""
        if _first_contact_refused(error):
            return min(self.total, 1)
        return self.total

    def increment(self, error: BaseException) -> RetryPolicy:
        """Return the policy for the next try, or raise ``error`` if there is none."""
        if not self.is_retryable(error) or self.failures + 1 > self.retries_for(error):
            raise error
        return replace(self, failures=self.failures + 1)

    def reset(self) -> RetryPolicy:
        """Return the policy after progress was made: the failure count starts over."""
        if self.failures == 0:
            return self
        return replace(self, failures=0)

    def delay(self, error: BaseException, *, now: float, rand: Callable[[], float]) -> float:
        """Seconds to wait before the next try; call it on the policy `increment()` returned.

        A 429/503 with a valid Retry-After waits as told, up to ``retry_after_max``.
        Otherwise the wait is ``backoff_factor * 2 ** (failures - 1)``, capped at
        ``backoff_max``, then moved by up to ``jitter`` of itself so that segments that
        failed together do not all come back at once; the result stays within
        ``[0, backoff_max]``. A refused connection to a host that has not answered in this
        run waits at most a tenth of a second. ``now`` is epoch seconds and ``rand`` returns
        a float in [0, 1).
        """
        if isinstance(error, HTTPStatusError) and error.status in RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(error.retry_after, now)
            if retry_after is not None:
                return min(retry_after, self.retry_after_max)
        # Called before any increment, failures is 0: wait as for the first retry.
        exponent = min(max(self.failures - 1, 0), _MAX_EXPONENT)
        base = min(self.backoff_factor * 2.0**exponent, self.backoff_max)
        jittered = base * (1.0 + self.jitter * (2.0 * rand() - 1.0))
        if _first_contact_refused(error):
            return min(max(jittered, 0.0), _QUICK_DELAY)
        return min(max(jittered, 0.0), self.backoff_max)


def _first_contact_refused(error: BaseException) -> bool:
    return isinstance(error, RefusedError) and not error.answered_before


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` that a Retry-After header value asks to wait (RFC 9110 10.2.3).

    Accepts delay-seconds and HTTP-dates (IMF-fixdate, RFC 850 and asctime; a date without a
    zone is taken as GMT). A date in the past gives 0. Returns None when the value is absent
    or invalid, including negative or fractional seconds. An absurdly large delay-seconds
    gives ``math.inf``; callers cap it.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        seconds = when.timestamp() - now
    except (OverflowError, ValueError, OSError):
        return None
    return max(seconds, 0.0)


def wait_before_retry(
    policy: RetryPolicy,
    error: BaseException,
    *,
    sleep: Callable[[float], object],
    clock: Callable[[], float],
    rand: Callable[[], float] = random.random,
) -> RetryPolicy:
    """Count ``error`` against ``policy`` (raising it if exhausted), sleep, return the new policy.

    ``clock`` must give epoch seconds (time.time, not time.monotonic) because Retry-After
    dates are absolute. ``sleep`` may be an interruptible wait such as
    ``threading.Event().wait``; its return value is ignored.
    """
    next_policy = policy.increment(error)
    sleep(next_policy.delay(error, now=clock(), rand=rand))
    return next_policy
