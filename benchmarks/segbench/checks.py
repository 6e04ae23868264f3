"""Targets and their verdicts: PASS, MISS (measured, but off target), FAIL (a run failed) or
SKIP (no data). Margins are relative to the limit and positive when there is headroom."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .records import Check, Summary
from .units import MiB

# The targets (thresholds, not measurements).
TARGET_IDEAL_FRACTION = 0.95  # throttled: >= 95% of n x rate
TARGET_SPEEDUP = 15.0  # throttled: top n vs. n=1
TARGET_STRAGGLERS_RATIO = 0.9  # wall <= 0.9 x aria2c
TARGET_UNTHROTTLED_RATIO = 0.6  # wall and CPU <= 0.6 x aria2c
TARGET_RSS = 64 * MiB
TARGET_BAR_COST = 0.03
TARGET_NOBURST_VS_IDEAL = 1.05  # noburst: whole-process wall <= 1.05 x ideal
TARGET_BATCH_SMALL_VS_ARIA2 = 0.5  # batch-small: wall <= 0.5 x aria2c
TARGET_BATCH_SMALL_VS_PYTHON = 0.35  # batch-small: wall <= 0.35 x the ThreadPool script
TARGET_BATCH_MIXED_VS_IDEAL = 1.15  # batch-mixed: wall <= 1.15 x ideal
TARGET_FIRST_REQUEST_S = 1.0  # batch-list: process start to the first request
TARGET_LIST_RSS = 150 * MiB  # batch-list: peak RSS


def make_check(
    target: str, measured: str, result: str, margin: str, value: float | None = None
) -> Check:
    """`target` starts with the check id ("a1 ...")."""
    cid, _, text = target.partition(" ")
    return Check(cid, text, measured, result, margin, value)


def unusable(target: str, rows: Sequence[Summary | None]) -> Check | None:
    """SKIP when a needed row is missing, FAIL when one of its runs failed."""
    if any(r is not None and r.status != "ok" for r in rows):
        return make_check(target, "a run failed (see the tables)", "FAIL", "-")
    if any(r is None for r in rows):
        return make_check(target, "no data (scenario or tool not run)", "SKIP", "-")
    return None


def at_least(
    target: str,
    row: Summary | None,
    get: Callable[[Summary], float | None],
    limit: float,
    unit: str,
    extra: Callable[[float], str] | None = None,
    depends: Sequence[Summary | None] = (),
) -> Check:
    bad = unusable(target, [row, *depends])
    value = get(row) if row is not None else None
    if bad or value is None:
        return bad or make_check(target, "no data", "SKIP", "-")
    margin = (value - limit) / limit
    measured = f"{value:.2f} {unit}" + (extra(value) if extra else "")
    result = "PASS" if value >= limit else "MISS"
    return make_check(target, measured, result, f"{margin:+.1%} vs {limit:.2f} {unit}", margin)


def at_most(
    target: str,
    row: Summary | None,
    get: Callable[[Summary], float | None],
    limit: float,
    unit: str,
    digits: int = 1,
    strict: bool = False,
) -> Check:
    """value <= limit (< limit when `strict`)."""
    bad = unusable(target, [row])
    value = get(row) if row is not None else None
    if bad or value is None:
        return bad or make_check(target, "no data", "SKIP", "-")
    margin = (limit - value) / limit
    result = "PASS" if value < limit or (value == limit and not strict) else "MISS"
    text = f"{margin:+.1%} headroom vs {limit:.{digits}f} {unit}"
    return make_check(target, f"{value:.{digits}f} {unit}", result, text, margin)


def ratio_at_most(
    target: str,
    row: Summary | None,
    ref: Summary | None,
    get: Callable[[Summary], float | None],
    limit: float,
    *,
    ref_name: str = "aria2c",
    strict: bool = False,
) -> Check:
    """row / ref <= limit (< limit when `strict`)."""
    bad = unusable(target, [row, ref])
    a = get(row) if row is not None else None
    b = get(ref) if ref is not None else None
    if bad or a is None or not b:
        return bad or make_check(target, "no data", "SKIP", "-")
    ratio = a / b
    margin = (limit - ratio) / limit
    measured = f"segdl {a:.2f} vs {ref_name} {b:.2f} (ratio {ratio:.3f})"
    result = "PASS" if ratio < limit or (ratio == limit and not strict) else "MISS"
    return make_check(target, measured, result, f"{margin:+.1%} headroom vs {limit}", margin)


def bar_cost_check(bar: Summary | None, quiet: Summary | None) -> Check:
    target = f"e1 progress bar cost (wall, bar vs -q) < {TARGET_BAR_COST:.0%}"
    bad = unusable(target, [bar, quiet])
    if bad or bar is None or quiet is None or not bar.wall_s or not quiet.wall_s:
        return bad or make_check(target, "no data", "SKIP", "-")
    cost = bar.wall_s / quiet.wall_s - 1
    measured = f"wall {bar.wall_s:.2f} vs {quiet.wall_s:.2f} s ({cost:+.1%})"
    if bar.cpu_s and quiet.cpu_s:
        measured += (
            f"; CPU {bar.cpu_s:.2f} vs {quiet.cpu_s:.2f} s ({bar.cpu_s / quiet.cpu_s - 1:+.1%})"
        )
    if not bar.tty_bytes:
        measured += "; WARNING: nothing was drawn on the terminal"
    margin = TARGET_BAR_COST - cost
    result = "PASS" if cost < TARGET_BAR_COST else "MISS"
    return make_check(target, measured, result, f"{margin * 100:+.1f} pp vs 3%", margin)


def wall_vs_ideal(target: str, row: Summary | None, limit: float) -> Check:
    """Whole-process wall <= limit x the row's ideal_s."""
    bad = unusable(target, [row])
    if bad or row is None or row.wall_s is None or not row.ideal_s:
        return bad or make_check(target, "no data", "SKIP", "-")
    ratio = row.wall_s / row.ideal_s
    margin = (limit - ratio) / limit
    measured = f"wall {row.wall_s:.3f} s vs ideal {row.ideal_s:.3f} s ({ratio:.3f}x)"
    result = "PASS" if ratio <= limit else "MISS"
    return make_check(target, measured, result, f"{margin:+.1%} headroom vs {limit}x", margin)
