"""Sizes and number formatting: binary units throughout (K = 1024)."""

from __future__ import annotations

import argparse
import re
import statistics
from collections.abc import Iterable

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}


def parse_size(text: str) -> int:
    """Parse '512K', '8m', '1G', '1MiB' or a byte count (binary units)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 512K, 8M, 1G)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_size_list(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return sorted(set(values))


def parse_count(text: str) -> int:
    """A positive count; accepts 2000, 1e6, 10^6 and 100_000."""
    cleaned = text.strip().replace("_", "")
    try:
        if "^" in cleaned:
            base, _, exp = cleaned.partition("^")
            value = int(base) ** int(exp)
        else:
            value = int(float(cleaned)) if "e" in cleaned.lower() else int(cleaned)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"count must be positive: {text!r}")
    return int(value)


def size_token(n: int, *, lower: bool = False) -> str:
    """Compact form understood by nginx, aria2c and segdl: 1G, 256M, 64K or bytes."""
    for unit, mult in (("G", GiB), ("M", MiB), ("K", KiB)):
        if n % mult == 0:
            return f"{n // mult}{unit.lower() if lower else unit}"
    return str(n)


def nginx_size(n: int) -> str:
    # nginx's ngx_parse_size knows k and m only.
    for unit, mult in (("m", MiB), ("k", KiB)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def human_size(n: int) -> str:
    for unit, mult in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= mult and n % mult == 0:
            return f"{n // mult} {unit}"
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} B"


def approx_size(n: int) -> str:
    """human_size when exact in some unit (64 KiB, 256 MiB), else MiB to one decimal."""
    text = human_size(n)
    if n >= MiB and text.endswith("KiB"):
        return f"{n / MiB:.1f} MiB"
    return text


def human_count(n: int) -> str:
    """2000 -> '2,000'; exact powers of ten from 10^5 up -> '10^6'."""
    exp = len(str(n)) - 1
    if n >= 100_000 and n == 10**exp:
        return f"10^{exp}"
    return f"{n:,}"


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None
