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


def steal_point(pos: int, stop: int, min_split: int) -> int | None:
    """Where to cut a range whose owner is at `pos` so that a thief takes `[cut, stop)`.

    The thief takes the back half; both halves must stay at least `min_split` long, otherwise
    stealing would cost a new connection for too little work and None is returned.
    """
    remaining = stop - pos
    if remaining < 2 * min_split:
        return None
    return pos + remaining // 2


def pick_victim(remaining: Sequence[int]) -> int | None:
    """Index of the range with the most bytes left, or None when nothing is left anywhere."""
    best: int | None = None
    for i, left in enumerate(remaining):
        if left > 0 and (best is None or left > remaining[best]):
            best = i
    return best
