"""Progress for logs and machines: plain lines (`--progress lines`) and JSON Lines
(`--progress json`), one listener for every job: a file, a stream, an extraction, a batch.

Like a bar (`segdl.bars`), a report is a listener: the jobs call it a few times a second from
the thread that drives them; it keeps the latest numbers and writes a line whenever one is due
by its clock (`get_time`, injectable as rich's is: tests step a fake clock instead of
sleeping), and a last one at `close()`. Library code never prints: the caller hands the
report its stream (the command gives it stderr).

The JSON objects, one a line (`null` where a value is not known)::

    {"time": "2026-12-06T22:48:42.123+00:00", "elapsed": 12.5, "bytes": 104857600,
     "total": 209715200, "rate": 8388608, "eta": 12.5, "items": null, "connections": 8,
     "protocols": {"example.org:443": "HTTP/1.1"}, "final": false}

`items` is {"ok", "skipped", "failed", "total"} for a batch (`total` null until known), null
for one transfer; `total` is null for a batch (its items' sizes are not known ahead);
`extracted` ({"members", "bytes"}) is added for an extraction. `rate` is bytes per second
over the last 10 s (over the whole run in the final object), `eta` seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any

from .api import Listener
from .batch.results import ItemResult
from .core.events import StartInfo
from .core.units import human_size, plural
from .core.urls import origin

# What today's transport speaks, for a transfer whose events do not say.
DEFAULT_PROTOCOL = "HTTP/1.1"
RATE_WINDOW = 10.0  # seconds: the rate is the bytes received over this window, over its length


def _host(url: str) -> str:
    where = origin(url)
    return f"{where.host}:{where.port}"


class ProgressReport(Listener):
    """Samples a job's events and writes a report every `interval` seconds by `get_time`, and
    a final one at `close()`. Subclasses say how a report is written (`format`)."""

    INTERVAL = 10.0
    EMIT_AT_START = False  # a first report at the first event, not only after `interval`

    def __init__(
        self,
        stream: IO[str],
        *,
        interval: float | None = None,
        get_time: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stream = stream
        self.interval = self.INTERVAL if interval is None else interval
        self._get_time = get_time
        self._wall = wall
        self._lock = threading.Lock()
        self._started: float | None = None
        self._next: float | None = None
        self._closed = False
        self._initial = 0  # bytes already there at the start (a resumed download)
        self._bytes = 0
        self._total: int | None = None
        self._connections = 0
        self._samples: deque[tuple[float, int]] = deque()
        self._batch = False
        self._items_total: int | None = None
        self.counts = {"ok": 0, "skipped": 0, "failed": 0}
        self._members: int | None = None  # an extraction's, once it has begun
        self._written = 0
        self.protocols: dict[str, str] = {}

    # -- events ----------------------------------------------------------------------------
    def start(self, info: StartInfo) -> None:
        with self._lock:
            now = self._begin()
            self._initial = self._bytes = info.resumed
            self._total = info.total
            self._samples.clear()
            self._samples.append((now, info.resumed))
            if info.url:
                self.protocols[_host(info.url)] = info.protocol or DEFAULT_PROTOCOL
            self._maybe_emit(now)

    def progress(self, done: int, total: int | None, connections: int) -> None:
        with self._lock:
            now = self._begin()
            self._bytes, self._total, self._connections = done, total, connections
            self._sample(now)
            self._maybe_emit(now)

    def finish(self, done: int) -> None:
        with self._lock:
            self._bytes, self._connections = done, 0

    def extracting(self, members: int, written: int) -> None:
        with self._lock:
            self._members, self._written = members, written

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        with self._lock:
            now = self._begin()
            self._batch = True
            self._items_total, self._bytes, self._connections = total, done, connections
            self._sample(now)
            self._maybe_emit(now)

    def item_done(self, result: ItemResult) -> None:
        with self._lock:
            self._batch = True
            self.counts[result.status] += 1
            if result.url and (result.protocol or result.http_status is not None):
                self.protocols[_host(result.url)] = result.protocol or DEFAULT_PROTOCOL

    def warning(self, message: str) -> None:
        with self._lock:
            self._write(f"segdl: warning: {message}")

    def close(self, *, final: bool = True) -> None:
        """Write the final report, if any event came (once; later events write nothing).
        `final=False` writes none: the job failed, and its error is the last word."""
        with self._lock:
            if self._closed or self._started is None or not final:
                self._closed = True
                return
            now = self._begin()
            self._write(self.format(self.snapshot(now, final=True)))
            self._closed = True

    # -- sampling --------------------------------------------------------------------------
    def _begin(self) -> float:
        now = self._get_time()
        if self._started is None:
            self._started = now
            self._next = now if self.EMIT_AT_START else now + self.interval
            self._samples.append((now, self._bytes))
        return now

    def _sample(self, now: float) -> None:
        samples = self._samples
        samples.append((now, self._bytes))
        # Keep one sample at or before the window's start, so the window is a full one.
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()

    def _maybe_emit(self, now: float) -> None:
        if self._closed or self._next is None or now < self._next:
            return
        while self._next <= now:
            self._next += self.interval
        self._write(self.format(self.snapshot(now, final=False)))

    def _write(self, line: str) -> None:
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self._closed = True  # stderr is gone: nothing more to say

    def snapshot(self, now: float, *, final: bool) -> dict[str, Any]:
        """The numbers of a report at `now` (the JSON object, as a dict)."""
        elapsed = now - (self._started if self._started is not None else now)
        if final:
            rate = (self._bytes - self._initial) / elapsed if elapsed > 0 else 0.0
        else:
            then, before = self._samples[0] if self._samples else (now, self._bytes)
            rate = (self._bytes - before) / (now - then) if now > then else 0.0
        items: dict[str, int | None] | None = None
        eta: float | None = None
        if self._batch:
            done = sum(self.counts.values())
            items = {**self.counts, "total": self._items_total}
            if final:
                eta = 0.0
            elif self._items_total is not None and done and elapsed > 0:
                eta = max(0, self._items_total - done) * elapsed / done
        elif final:
            eta = 0.0
        elif self._total is not None and rate > 0:
            eta = max(0, self._total - self._bytes) / rate
        stamp = datetime.fromtimestamp(self._wall(), timezone.utc)
        fields: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds"),
            "elapsed": round(elapsed, 3),
            "bytes": self._bytes,
            "total": None if self._batch else self._total,
            "rate": round(rate),
            "eta": None if eta is None else round(eta, 1),
            "items": items,
            "connections": 0 if final else self._connections,
            "protocols": dict(self.protocols),
            "final": final,
        }
        if self._members is not None:
            fields["extracted"] = {"members": self._members, "bytes": self._written}
        return fields

    def format(self, fields: dict[str, Any]) -> str:
        raise NotImplementedError


class LinesReport(ProgressReport):
    """`--progress lines`: a plain line every 10 s and at the end, for logs."""

    INTERVAL = 10.0

    def format(self, fields: dict[str, Any]) -> str:
        parts: list[str] = []
        items = fields["items"]
        if items is not None:
            done = items["ok"] + items["skipped"] + items["failed"]
            total = items["total"]
            parts.append(
                f"{done} of {total if total is not None else '?'} items "
                f"({items['ok']} ok, {items['skipped']} skipped, {items['failed']} failed)"
            )
        size = human_size(fields["bytes"])
        total = fields["total"]
        if total is not None:
            share = f" ({100 * fields['bytes'] // total}%)" if total else ""
            size = f"{size} of {human_size(total)}{share}"
        parts.append(f"{size} ({fields['bytes']} bytes)")
        parts.append(f"{human_size(fields['rate'])}/s")
        if not fields["final"]:
            parts.append(f"ETA {eta_text(fields['eta'])}")
            parts.append(plural(fields["connections"], "connection"))
        extracted = fields.get("extracted")
        if extracted is not None:
            parts.append(f"{extracted['members']} members extracted")
        head = "end" if fields["final"] else "progress"
        return f"segdl: {head}: {', '.join(parts)}"


class JsonReport(ProgressReport):
    """`--progress json`: one JSON object a line every second and at the end (see the module
    docstring for its fields)."""

    INTERVAL = 1.0
    EMIT_AT_START = True

    def format(self, fields: dict[str, Any]) -> str:
        return json.dumps(fields, separators=(",", ":"))


def eta_text(seconds: float | None) -> str:
    """`1:02:03`, `2:03`, `?`: an ETA for people."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


REPORTS: dict[str, type[ProgressReport]] = {"lines": LinesReport, "json": JsonReport}

__all__ = [
    "DEFAULT_PROTOCOL",
    "REPORTS",
    "JsonReport",
    "LinesReport",
    "ProgressReport",
    "eta_text",
]
