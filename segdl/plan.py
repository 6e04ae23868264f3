"""Pure range planning: split `[0, size)` into half-open segments; choose what a thief takes.

Everything here uses half-open Python ranges (`start` inclusive, `stop` exclusive); only `transport`
turns them into the inclusive HTTP form.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_SPLIT_DEFAULT = 1 << 20


def split(size: int, parts: int, min_split: int) -> list[tuple[int, int]]:
    """Split `[0, size)` into at most `parts` contiguous ranges, none smaller than `min_split`.

    A zero-byte file gives one empty range so that the caller still has one unit of work to
    finish (creating the empty file); sizes are spread so that lengths differ by at most one byte.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if parts < 1 or min_split < 1:
        raise ValueError("parts and min_split must be >= 1")
    count = max(1, min(parts, size // min_split))
    base, extra = divmod(size, count)
    ranges = []
    start = 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        ranges.append((start, stop))
        start = stop
    return ranges


def steal_point(
    pos: int, stop: int, min_split: int, owner_rate: float | None, thief_rate: float | None
) -> int | None:
    """Where to cut a range whose owner is at `pos`, so that a thief takes `[cut, stop)`.

    The cut makes both finish together at their measured rates (bytes/s): a slow owner keeps
    little, an equal one keeps half. Both parts stay at least `min_split` long, otherwise
    stealing would cost a new connection for too little work and None is returned.
    """
    remaining = stop - pos
    if remaining < 2 * min_split:
        return None
    keep = remaining // 2
    if owner_rate is not None and thief_rate is not None and owner_rate + thief_rate > 0:
        keep = int(remaining * owner_rate / (owner_rate + thief_rate))
    keep = max(min_split, min(keep, remaining - min_split))
    return pos + keep


def pick_victim(
    candidates: Sequence[tuple[int, float | None] | None], min_split: int, min_seconds: float
) -> int | None:
    """Index of the range worth stealing from, or None.

    `candidates` holds `(remaining bytes, owner's rate in bytes/s)` per range in flight (None
    for ranges not in flight; a rate of None when not measured yet). Worth stealing means
    big enough to split and needing the longest time, at least `min_seconds`: stealing from
    a connection about to finish only throws away the bytes already on their way.
    """
    best: int | None = None
    best_time = min_seconds
    for i, candidate in enumerate(candidates):
        if candidate is None:
            continue
        remaining, rate = candidate
        if remaining < 2 * min_split or rate is None:
            continue
        seconds = remaining / rate if rate > 0 else float("inf")
        if seconds >= best_time and (best is None or seconds > best_time):
            best, best_time = i, seconds
    return best
