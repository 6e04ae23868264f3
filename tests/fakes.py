"""Shared test helpers: injected time (a sleep that returns at once and records what it was
asked to wait, a clock with a fixed wall time and centred jitter) and the served bytes."""

from __future__ import annotations

from segdl import Clock

NOW = 1_800_000_000.0  # the injected wall clock (epoch seconds)


class Sleeps:
    """A fake sleep that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def fast_clock() -> tuple[Clock, Sleeps]:
    """A Clock whose sleeps take no time, whose wall clock is NOW and whose jitter is zero."""
    sleeps = Sleeps()
    return Clock(sleep=sleeps, wall=lambda: NOW, rand=lambda: 0.5), sleeps


def payload(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes where every offset differs from its neighbours (shifts show up)."""
    return bytes((i * 7 + seed + (i >> 8) * 13) % 251 for i in range(size))
