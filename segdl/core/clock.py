"""Time, randomness and buffers: injectable clocks (tests take no real time), and page-aligned
read buffers reused across requests (no allocation per chunk or per file)."""

from __future__ import annotations

import mmap
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .sink import ALIGN

_local = threading.local()


def thread_buffer(size: int) -> memoryview:
    """This thread's reused read buffer (drivers of a batch fetch one small file after another)."""
    buffer: memoryview | None = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _local.buffer = page_buffer(size)
    return buffer[:size] if len(buffer) > size else buffer


def page_buffer(size: int) -> memoryview:
    """A page-aligned buffer of whole pages, as direct writes need and the kernel maps them."""
    return memoryview(mmap.mmap(-1, -(-size // ALIGN) * ALIGN))


@dataclass
class Clock:
    """Time and randomness, injectable so that tests take no real time."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    sleep: Callable[[float], object] | None = None  # None: wait on the engine's halt event
