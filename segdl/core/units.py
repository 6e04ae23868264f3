"""Counts and sizes written for people: `1 connection`, `1.5 MiB`."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`1 connection`, `8 connections`: counts for people (nouns that take an s)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def human_size(size: float) -> str:
    """`1.5 MiB`: sizes for people (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
