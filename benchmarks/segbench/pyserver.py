"""The fallback Python range server (``run.py _serve ...``, or ``--server python``).

A ThreadingHTTPServer (HTTP/1.1, keep-alive) in its own process that serves the files of one
directory with os.sendfile, single byte ranges per RFC 9110, If-Range, and an optional
per-connection token bucket: every Nth connection can be slow (stragglers).
"""

from __future__ import annotations

import argparse
import email.utils
import http.server
import os
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .units import KiB, MiB

_RANGE_SPEC = re.compile(r"^([0-9]*)-([0-9]*)$")


def evaluate_range(header: str, size: int) -> tuple[str, int, int]:
    """Evaluate a Range header per RFC 9110 §14.

    Returns ("ignore", 0, 0) when the header must or may be ignored (unknown unit, invalid
    syntax, several satisfiable ranges: the server then answers 200 with the whole file, which
    §14.2 permits), ("unsatisfiable", 0, 0) for 416, or ("partial", first, last).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return ("ignore", 0, 0)
    ranges: list[tuple[int, int]] = []
    seen = False
    for raw in spec.split(","):
        item = raw.strip(" \t")
        if not item:  # empty list elements are allowed (§5.6.1)
            continue
        match = _RANGE_SPEC.match(item)
        if match is None:
            return ("ignore", 0, 0)
        first_s, last_s = match.groups()
        seen = True
        if first_s:
            first = int(first_s)
            last = int(last_s) if last_s else size - 1
            if last_s and last < first:
                return ("ignore", 0, 0)  # invalid range-spec
            if first < size:
                ranges.append((first, min(last, size - 1)))
        elif last_s:
            suffix = int(last_s)
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size - 1))
        else:
            return ("ignore", 0, 0)
    if not seen:
        return ("ignore", 0, 0)
    if not ranges:
        return ("unsatisfiable", 0, 0)
    if len(ranges) == 1:
        return ("partial", ranges[0][0], ranges[0][1])
    return ("ignore", 0, 0)


class TokenBucket:
    """Per-connection pacer: `rate` bytes/s with at most `burst` bytes ahead."""

    def __init__(self, rate: int, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def consume(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return
            time.sleep((n - self.tokens) / self.rate)


class BenchHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        port: int,
        root: Path,
        rate: int,
        slow_rate: int,
        every: int,
        chunk: int,
        log: Path,
        any_path: str = "",
    ) -> None:
        super().__init__(("127.0.0.1", port), RangeHandler)
        self.root = root
        self.any_path = any_path  # when set, every path serves this file (batch-list)
        self.rate = rate
        self.slow_rate = slow_rate
        self.every = every
        self.chunk = chunk
        self._serial = 0
        self._lock = threading.Lock()
        self._log: IO[str] = log.open("a", buffering=1)

    def next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def rate_for(self, serial: int) -> int:
        if self.every and serial % self.every == 0:
            return self.slow_rate
        return self.rate

    def log_line(self, line: str) -> None:
        with self._lock:
            self._log.write(line + "\n")


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of files in the root with single-range support and per-connection pacing."""

    protocol_version = "HTTP/1.1"
    server_version = "segdl-bench"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        bench = self.bench
        self.serial = bench.next_serial()
        rate = bench.rate_for(self.serial)
        self.bucket = TokenBucket(rate, bench.chunk) if rate else None
        self.requests_on_conn = 0

    @property
    def bench(self) -> BenchHTTPServer:
        assert isinstance(self.server, BenchHTTPServer)
        return self.server

    def log_message(self, format: str, *args: Any) -> None:
        return  # the access log is written by _serve

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        started = time.monotonic()
        self.requests_on_conn += 1
        status, sent = self._respond(head)
        rng = self.headers.get("Range", "-")
        self.bench.log_line(
            f"{self.serial} {self.requests_on_conn} {status} {sent} "
            f'{time.monotonic() - started:.3f} "{rng}" {time.time():.3f}'
        )

    def _respond(self, head: bool) -> tuple[int, int]:
        name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if self.bench.any_path:
            name = self.bench.any_path
        path = self.bench.root / name
        if not name or "/" in name or name.startswith(".") or not path.is_file():
            return self._plain(404, b"not found\n", head)
        st = path.stat()
        size = st.st_size
        etag = f'"{size:x}-{st.st_mtime_ns:x}"'
        last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        status, first, last = 200, 0, size - 1
        header = self.headers.get("Range")
        # Range is defined for GET only (§14.2); If-Range gates it (§13.1.5).
        if header is not None and not head and self._if_range_matches(etag, last_modified):
            kind, first_r, last_r = evaluate_range(header, size)
            if kind == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return 416, 0
            if kind == "partial":
                status, first, last = 206, first_r, last_r
        length = last - first + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if head or length == 0:
            return status, 0
        with path.open("rb") as src:
            return status, self._send_file(src.fileno(), first, length)

    def _if_range_matches(self, etag: str, last_modified: str) -> bool:
        value = self.headers.get("If-Range")
        if value is None:
            return True
        value = value.strip()
        if value.startswith(('"', "W/")):
            return value == etag  # strong comparison; our ETag is strong
        return value == last_modified  # an HTTP-date must match exactly

    def _send_file(self, fd: int, offset: int, length: int) -> int:
        sock = self.connection.fileno()
        sent = 0
        try:
            while sent < length:
                step = min(length - sent, self.bench.chunk if self.bucket else 8 * MiB)
                if self.bucket is not None:
                    self.bucket.consume(step)
                done = 0
                while done < step:
                    n = os.sendfile(sock, fd, offset + sent + done, step - done)
                    if n == 0:
                        raise ConnectionAbortedError("file shrank")
                    done += n
                sent += done
        except OSError:
            self.close_connection = True
        return sent

    def _plain(self, status: int, body: bytes, head: bool) -> tuple[int, int]:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return status, 0 if head else len(body)


def serve_main(argv: Sequence[str]) -> int:
    """Internal entry point: ``run.py _serve ...`` runs the Python server in its own process."""
    parser = argparse.ArgumentParser(prog="run.py _serve")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--slow-rate", type=int, default=0)
    parser.add_argument("--every", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=256 * KiB)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--any-path", default="", help="serve this file for every path")
    opts = parser.parse_args(argv)
    server = BenchHTTPServer(
        opts.port,
        opts.root,
        opts.rate,
        opts.slow_rate,
        opts.every,
        opts.chunk,
        opts.log,
        opts.any_path,
    )
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()
    return 0
