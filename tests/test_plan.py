"""Unit tests of segdl.core.plan: splitting, steal points and victim choice (pure, no I/O)."""

from __future__ import annotations

import itertools

import pytest

from segdl.core.plan import MIN_SPLIT_DEFAULT, pick_victim, split, steal_point

MiB = 1 << 20

# --- split -------------------------------------------------------------------------------


def _assert_tiles(ranges: list[tuple[int, int]], size: int) -> None:
    assert ranges, "split never returns an empty list"
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size
    for (_, stop), (start, _) in itertools.pairwise(ranges):
        assert stop == start, f"gap or overlap in {ranges}"
    for start, stop in ranges:
        assert start <= stop


def test_split_zero_size_gives_one_empty_range() -> None:
    assert split(0, 8, MIN_SPLIT_DEFAULT) == [(0, 0)]
    assert split(0, 1, 1) == [(0, 0)]


def test_split_single_part() -> None:
    assert split(100, 1, 1) == [(0, 100)]


def test_split_even() -> None:
    assert split(100, 4, 1) == [(0, 25), (25, 50), (50, 75), (75, 100)]


def test_split_remainder_goes_to_first_ranges() -> None:
    assert split(10, 3, 1) == [(0, 4), (4, 7), (7, 10)]


def test_split_limited_by_min_split() -> None:
    # 10 MiB with a 4 MiB minimum: only two ranges fit.
    assert split(10 * MiB, 8, 4 * MiB) == [(0, 5 * MiB), (5 * MiB, 10 * MiB)]


def test_split_smaller_than_min_split_is_one_range() -> None:
    assert split(MiB - 1, 16, MiB) == [(0, MiB - 1)]


def test_split_more_parts_than_bytes() -> None:
    assert split(3, 10, 1) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize(
    ("size", "parts", "min_split"),
    [(-1, 1, 1), (10, 0, 1), (10, -3, 1), (10, 1, 0), (10, 1, -1)],
)
def test_split_rejects_bad_arguments(size: int, parts: int, min_split: int) -> None:
    with pytest.raises(ValueError):
        split(size, parts, min_split)


def test_split_properties_over_many_combinations() -> None:
    sizes = [*range(0, 40), 63, 64, 65, 100, 999, 1000, 1001, 4096, 10**6, MiB, 10 * MiB + 7]
    parts_values = [1, 2, 3, 4, 7, 8, 16, 64]
    min_splits = [1, 2, 3, 5, 10, 64, 1000, MiB]
    checked = 0
    for size, parts, min_split in itertools.product(sizes, parts_values, min_splits):
        ranges = split(size, parts, min_split)
        _assert_tiles(ranges, size)
        assert len(ranges) == max(1, min(parts, size // min_split))
        lengths = [stop - start for start, stop in ranges]
        assert max(lengths) - min(lengths) <= 1
        if len(ranges) > 1:
            assert min(lengths) >= min_split
        checked += 1
    assert checked == len(sizes) * len(parts_values) * len(min_splits)


# --- steal_point -------------------------------------------------------------------------


def test_steal_point_unknown_rates_need_two_min_splits() -> None:
    assert steal_point(0, 2 * MiB - 1, MiB, None, None) is None
    assert steal_point(0, 2 * MiB, MiB, None, None) == MiB
    assert steal_point(5, 5, 1, None, None) is None
    assert steal_point(10, 5, 1, None, None) is None  # pos past stop


def test_steal_point_half_when_rates_unknown() -> None:
    assert steal_point(100, 100 + 10 * MiB, MiB, None, None) == 100 + 5 * MiB
    assert steal_point(0, 10 * MiB, MiB, 3.0, None) == 5 * MiB
    assert steal_point(0, 10 * MiB, MiB, None, 3.0) == 5 * MiB


def test_steal_point_half_when_both_rates_zero() -> None:
    assert steal_point(0, 10 * MiB, MiB, 0.0, 0.0) == 5 * MiB


def test_steal_point_equal_rates_half() -> None:
    assert steal_point(0, 10 * MiB, MiB, 2.0 * MiB, 2.0 * MiB) == 5 * MiB


def test_steal_point_proportional_slow_owner_keeps_little() -> None:
    remaining = 90 * MiB
    cut = steal_point(0, remaining, MiB, 1.0 * MiB, 8.0 * MiB)
    assert cut is not None
    assert cut == pytest.approx(remaining / 9, abs=1)


def test_steal_point_proportional_fast_owner_keeps_most() -> None:
    remaining = 90 * MiB
    cut = steal_point(0, remaining, MiB, 8.0 * MiB, 1.0 * MiB)
    assert cut is not None
    assert cut == pytest.approx(remaining * 8 / 9, abs=1)


def test_steal_point_stalled_owner_is_dropped() -> None:
    # A connection that delivers nothing keeps nothing: the thief takes the whole rest.
    assert steal_point(0, 10 * MiB, MiB, 0.0, 5.0) == 0
    assert steal_point(7, 7 + MiB // 2, MiB, 0.0, 5.0) == 7


def test_steal_point_thief_takes_at_least_min_split_or_everything() -> None:
    # A slow owner with little left: the thief's share would be under min_split.
    assert steal_point(0, 3 * MiB, 2 * MiB, 1.0 * MiB, 1.0 * MiB) == MiB
    assert steal_point(0, MiB, 2 * MiB, 1.0, 8.0) == 0  # less than min_split left: all of it
    # A stalled thief still takes min_split.
    assert steal_point(0, 10 * MiB, MiB, 5.0, 0.0) == 9 * MiB


def test_steal_point_properties_over_many_combinations() -> None:
    rates: list[float | None] = [None, 0.0, 1.0, 1000.0, 1e6, 8e6, 1e12]
    for pos, length, min_split, owner, thief in itertools.product(
        [0, 1, 12345], [0, 1, 2, 3, 9, 10, 100, 4096, 10**6], [1, 2, 5, 1000], rates, rates
    ):
        stop = pos + length
        cut = steal_point(pos, stop, min_split, owner, thief)
        measured = owner is not None and thief is not None and owner + thief > 0
        if not measured:
            if length < 2 * min_split:
                assert cut is None
                continue
            assert cut is not None
            assert pos < cut < stop
            assert cut - pos >= min_split and stop - cut >= min_split
            continue
        if length <= 0:
            assert cut is None
            continue
        assert cut is not None
        assert pos <= cut < stop  # the thief always gets something
        assert stop - cut >= min(min_split, length)


# --- pick_victim -------------------------------------------------------------------------


def test_pick_victim_empty() -> None:
    assert pick_victim([], 1.0) is None


def test_pick_victim_skips_none_entries_unknown_rates_and_finished_ranges() -> None:
    assert pick_victim([None, (100 * MiB, None), None], 1.0) is None
    assert pick_victim([None, (100 * MiB, None), (10 * MiB, 1.0 * MiB)], 1.0) == 2
    assert pick_victim([(0, 0.0)], 0.0) is None


def test_pick_victim_longest_time_wins_not_largest_remaining() -> None:
    candidates: list[tuple[int, float | None] | None] = [
        (100 * MiB, 100.0 * MiB),  # 1 s
        (10 * MiB, 1.0 * MiB),  # 10 s
        (50 * MiB, 10.0 * MiB),  # 5 s
    ]
    assert pick_victim(candidates, 0.5) == 1


def test_pick_victim_zero_rate_is_infinite_time() -> None:
    candidates: list[tuple[int, float | None] | None] = [
        (1000 * MiB, 1.0),  # very slow but finite
        (2 * MiB, 0.0),  # stalled
    ]
    assert pick_victim(candidates, 1.0) == 1


def test_pick_victim_below_min_seconds_is_none() -> None:
    assert pick_victim([(10 * MiB, 10.0 * MiB)], 2.0) is None  # 1 s < 2 s


def test_pick_victim_exactly_min_seconds_counts() -> None:
    assert pick_victim([(10 * MiB, 5.0 * MiB)], 2.0) == 0  # exactly 2 s


def test_pick_victim_tie_keeps_first() -> None:
    candidates: list[tuple[int, float | None] | None] = [
        (10 * MiB, 1.0 * MiB),
        (10 * MiB, 1.0 * MiB),
    ]
    assert pick_victim(candidates, 1.0) == 0


def test_pick_victim_zero_min_seconds() -> None:
    assert pick_victim([(2 * MiB, 1e12)], 0.0) == 0


@pytest.mark.parametrize(
    ("size", "parts", "min_split"),
    [(10 * 4096 + 7, 3, 1), (1_000_003, 64, 4096), (3 * 4096, 8, 1), (4095, 4, 1), (0, 4, 1)],
)
def test_split_aligned_boundaries(size: int, parts: int, min_split: int) -> None:
    ranges = split(size, parts, min_split, align=4096)
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(start % 4096 == 0 for start, _ in ranges)
    assert len(ranges) <= max(1, size // 4096) and len(ranges) <= parts
    if size:
        assert all(stop > start for start, stop in ranges)
        lengths = [stop - start for start, stop in ranges]
        assert max(lengths) - min(lengths) < 2 * 4096


def test_split_align_one_is_the_plain_split() -> None:
    assert split(10, 3, 1, align=1) == split(10, 3, 1) == [(0, 4), (4, 7), (7, 10)]


def test_steal_point_aligned_rounds_up() -> None:
    assert steal_point(0, 100_000, 1, None, None) == 50_000
    assert steal_point(0, 100_000, 1, None, None, align=4096) == 53_248  # 13 * 4096
    # Owner at 10 B/s and thief at 30 B/s over 20000 bytes: keep 5000, cut at 8192.
    assert steal_point(0, 20_000, 1, 10.0, 30.0, align=4096) == 8192
    # A cut that rounds up to the stop leaves nothing to take.
    assert steal_point(0, 9000, 1, 30.0, 1.0, align=4096) is None
