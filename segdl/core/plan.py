"""Pure range planning: split `[0, size)` into half-open segments; choose what a thief takes.

Everything here uses half-open Python ranges (`start` inclusive, `stop` exclusive); only `transport`
turns them into the inclusive HTTP form.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

MIN_SPLIT_DEFAULT = 1 << 20


def split(size: int, parts: int, min_split: int, align: int = 1) -> list[tuple[int, int]]:
    """Split `[0, size)` into at most `parts` contiguous ranges of about `min_split` or more.

    A zero-byte file gives one empty range so that the caller still has one unit of work to
    finish (creating the empty file); sizes are spread so that lengths differ by at most one byte,
    or, with `align`, every boundary is a multiple of `align` and lengths differ by less than
    twice that.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if parts < 1 or min_split < 1 or align < 1:
        raise ValueError("parts, min_split and align must be >= 1")
    count = max(1, min(parts, size // min_split, size // align))
    bounds = [-(-size * i // count) // align * align for i in range(count)] + [size]
    return list(itertools.pairwise(bounds))


def steal_point(
    pos: int,
    stop: int,
    min_split: int,
    owner_rate: float | None,
    thief_rate: float | None,
    align: int = 1,
) -> int | None:
    """Where to cut a range whose owner is at `pos`, so that a thief takes `[cut, stop)`.

    With both rates measured (bytes/s), the cut makes owner and thief finish together: a slow
    owner keeps little, or nothing at all when the rest is small (the thief takes at least
    `min_split`, or everything), so a straggling connection is dropped rather than waited for.
    Without rates, the back half goes, and both halves stay at least `min_split` long.
    With `align`, the cut moves up to the next multiple of `align` (block-aligned writes for
    the thief). None when there is nothing worth taking.
    """
    cut = _cut(pos, stop, min_split, owner_rate, thief_rate)
    if cut is None or align == 1:
        return cut
    cut = -(-cut // align) * align
    return cut if cut < stop else None


def _cut(
    pos: int, stop: int, min_split: int, owner_rate: float | None, thief_rate: float | None
) -> int | None:
    remaining = stop - pos
    if owner_rate is not None and thief_rate is not None and owner_rate + thief_rate > 0:
        if remaining <= 0:
            return None
        keep = int(remaining * owner_rate / (owner_rate + thief_rate))
        keep = min(keep, remaining - min(min_split, remaining))
        return pos + keep
    if remaining < 2 * min_split:
        return None
    return pos + remaining // 2


def pick_victim(
    candidates: Sequence[tuple[int, float | None] | None], min_seconds: float
) -> int | None:
    """Index of the range worth stealing from, or None.

    `candidates` holds `(remaining bytes, owner's rate in bytes/s)` per range in flight (None
    for ranges not in flight; a rate of None when not measured yet, which rules it out).
    Worth stealing means needing the longest time, at least `min_seconds`: stealing from a
    connection about to finish only throws away the bytes already on their way.
    """
    best: int | None = None
    best_time = min_seconds
    for i, candidate in enumerate(candidates):
        if candidate is None:
            continue
        remaining, rate = candidate
        if rate is None or remaining <= 0:
            continue
        seconds = remaining / rate if rate > 0 else float("inf")
        if seconds >= best_time and (best is None or seconds > best_time):
            best, best_time = i, seconds
    return best
