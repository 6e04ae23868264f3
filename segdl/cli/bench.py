"""`segdl bench`: measure what several connections buy, offline by default.

This module owns the benchmark and nothing else:

- `BenchServer`, an in-process loopback HTTP/1.1 server (stdlib only) for one generated
  in-memory payload. It answers HEAD and GET with exact RFC 9110 single byte ranges, a strong
  ETag, keep-alive, and caps the rate of every connection with its own `TokenBucket`, the way
  a CDN does; that per-connection cap is what several connections work around.
- `run_bench()`, library code that never prints: it downloads a URL once per connection count
  (with `segdl.download`, the public API), verifies each file by sha256, deletes it, and
  returns one `Row` per count.
- `main()`, the `segdl bench` command (`segdl.cli` dispatches to it): argparse, the table,
  one-line errors and exit codes (0 ok, 1 failed, 2 usage, 130 interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import re
import signal
import socket
import socketserver
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

from ..api import Listener, download
from ..core.options import MAX_CONNECTIONS, parse_rate, parse_size
from ..core.sink import destination_error
from ..core.urls import check_url
from ..errors import IntegrityError, Interrupted, SegdlError, UsageError

__all__ = [
    "DEFAULT_CONNECTIONS",
    "DEFAULT_RATE",
    "DEFAULT_SIZE",
    "BenchServer",
    "Progress",
    "Row",
    "ServerStats",
    "TokenBucket",
    "UnsatisfiableRange",
    "main",
    "parse_range",
    "run_bench",
]

KiB = 1 << 10
MiB = 1 << 20
DEFAULT_SIZE = 64 * MiB
DEFAULT_RATE = 8 * MiB  # bytes per second, per connection
DEFAULT_CONNECTIONS = (1, 4, 8, 16)
MAX_PAYLOAD = 1 << 30  # the payload lives in memory
MAX_REPEAT = 100
PAYLOAD_PATH = "/payload.bin"
_TIMES = "\u00d7"  # the multiplication sign of "3.9x faster"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# -- byte ranges (RFC 9110 section 14) ---------------------------------------------------------

# Digits are spelled [0-9]: `\d` would also accept non-ASCII digits, which HTTP does not.
_RANGE_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_OWS = " \t"


class UnsatisfiableRange(Exception):
    """The Range header is valid but selects no byte of the representation: answer 416."""


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """The `(first, last)` bytes (inclusive) that a Range header value selects in `size` bytes.

    Returns None when the header must be ignored (answer 200 with everything): another unit, a
    malformed value, or several ranges (RFC 9110 lets a server ignore Range; this one serves
    single ranges only). Raises UnsatisfiableRange (answer 416) for `a-b` with `b < a`, `a >=
    size`, `-0`, and any range of an empty representation.
    """
    unit, sep, range_set = value.strip(_OWS).partition("=")
    if not sep or unit.lower() != "bytes":
        return None
    # List syntax (RFC 9110 5.6.1): whitespace around commas, empty elements skipped.
    specs = [spec.strip(_OWS) for spec in range_set.split(",") if spec.strip(_OWS)]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if (match[2] and last < first) or first >= size:
            raise UnsatisfiableRange
        return first, min(last, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        raise UnsatisfiableRange
    return max(size - suffix, 0), size - 1


def _etag_listed(header: str, etag: str) -> bool:
    """Strong comparison of `etag` against an If-Match list (or `*`)."""
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags


# -- the per-connection rate cap ---------------------------------------------------------------


class TokenBucket:
    """A rate cap: `rate` bytes/s in the long run, never more than `burst` bytes ahead.

    Pure arithmetic on times the caller passes in (a monotonic clock), so it is tested without
    sleeping. The level may go negative: that debt is what the caller sleeps off. Because the
    refill is computed from the clock rather than from the sleeps, oversleeping is credited
    back (up to `burst`) and the long-run rate stays exact.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and burst > 0):
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst  # a fresh connection may send one burst at once
        self._last = now

    def take(self, n: int, now: float) -> float:
        """Spend `n` bytes at time `now`; the seconds to wait before sending them."""
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def _slice_size(rate: int | None) -> int:
    # Small enough that sleeps are short and the cap is smooth, large enough that a fast cap
    # is not eaten by per-write overhead; uncapped, larger writes keep the CPU cost down.
    if rate is None:
        return 256 * KiB
    return max(4 * KiB, min(64 * KiB, rate // 64))


# -- the loopback server -----------------------------------------------------------------------


@dataclass
class ServerStats:
    """Counters of a `BenchServer` (updated under its lock)."""

    connections: int = 0  # TCP connections accepted
    requests: int = 0  # requests answered (any method and status)
    bytes_sent: int = 0  # body bytes handed to the sockets


class _Abort(Exception):
    """The server is stopping: drop this connection mid-body."""


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries an exact Content-Length
    server_version = "segdl-bench"
    sys_version = ""
    disable_nagle_algorithm = True  # no 40 ms stall on the short tail of a body
    timeout = 60  # an idle keep-alive connection (or a client that stops reading) ends

    def setup(self) -> None:
        super().setup()
        bench = self.server.bench
        # One bucket per TCP connection, kept across keep-alive requests, like a CDN's cap.
        self._bucket = (
            None if bench.rate is None else TokenBucket(bench.rate, bench.slice_size, bench.clock())
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a bench prints a table, not an access log

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        bench = self.server.bench
        bench.count(requests=1)
        if self.headers.get("Content-Length", "0").strip() != "0" or (
            "Transfer-Encoding" in self.headers
        ):
            # A request body is never read, so the connection cannot carry another request.
            self.close_connection = True
        try:
            if urlsplit(self.path).path != PAYLOAD_PATH:
                self._empty(404)
                return
            etag = bench.etag
            if_match = self.headers.get("If-Match")
            if if_match is not None and not _etag_listed(if_match, etag):
                self._empty(412)
                return
            size = len(bench.payload)
            first, last = 0, size - 1
            selected = None
            range_value = self.headers.get("Range")
            # A Range is only honoured on GET, and only if If-Range (when sent) names this
            # exact version; there is no Last-Modified, so a date never matches.
            if range_value is not None and body and self.headers.get("If-Range", etag) == etag:
                try:
                    selected = parse_range(range_value, size)
                except UnsatisfiableRange:
                    self._empty(416, {"Content-Range": f"bytes */{size}"})
                    return
            if selected is not None:
                first, last = selected
            self.send_response(206 if selected is not None else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", "no-store")
            if selected is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if body:
                self._send(memoryview(bench.payload)[first : last + 1])
        except (OSError, _Abort):
            # The client hung up (segdl closes a connection after its range, and its probe
            # never reads a body), or the server is stopping: drop the connection quietly.
            self.close_connection = True

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, body: memoryview) -> None:
        bench = self.server.bench
        step = bench.slice_size
        bucket = self._bucket
        try:
            for offset in range(0, len(body), step):
                chunk = body[offset : offset + step]
                if bucket is not None:
                    delay = bucket.take(len(chunk), bench.clock())
                    if delay > 0:
                        bench.sleep(delay)
                if bench.stopping.is_set():
                    raise _Abort
                self.wfile.write(chunk)
                bench.count(bytes_sent=len(chunk))
        finally:
            body.release()


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks its daemon handler threads and sockets to end them."""

    daemon_threads = True  # a stuck client can never keep the process alive ...
    request_queue_size = 128  # 16+ connections arrive at once; a full backlog costs 1 s (SYN)

    def __init__(self, bench: BenchServer) -> None:
        self.bench = bench
        self._lock = threading.Lock()
        self._handlers: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup: skip it (offline).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        # ... yet every handler thread is joined on close (the stdlib joins non-daemon only).
        assert isinstance(request, socket.socket)
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="segdl-bench-connection",
            daemon=True,
        )
        with self._lock:
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
            self._open.add(request)
        self.bench.count(connections=1)
        thread.start()

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        if isinstance(request, socket.socket):
            with self._lock:
                self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return  # a client reset an idle keep-alive connection: routine
        if error is not None:
            self.bench.errors.append(error)  # kept for tests; never printed over the table

    def end_connections(self, timeout: float) -> None:
        """Wake handlers blocked on idle connections, then wait for every handler thread."""
        with self._lock:
            sockets = list(self._open)
            threads = list(self._handlers)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def make_payload(size: int) -> bytes:
    """`size` random bytes: no two regions alike, so a misplaced range fails the sha256."""
    return os.urandom(size)


class BenchServer:
    """A loopback HTTP server for one in-memory payload, each connection capped at `rate`.

    Use it as a context manager (or `start()` / `close()`). `url` serves the payload;
    `sha256` is its digest. `rate=None` removes the cap. `clock` and `sleep` exist so that
    tests can check the throttle's sleeps without waiting; by default the sleeps are cut
    short when the server stops.
    """

    def __init__(
        self,
        size: int = DEFAULT_SIZE,
        *,
        rate: int | None = DEFAULT_RATE,
        payload: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if payload is None:
            if not 0 <= size <= MAX_PAYLOAD:
                raise UsageError(f"payload size must be between 0 and {_size_text(MAX_PAYLOAD)}")
            payload = make_payload(size)
        if rate is not None and rate < 1:
            raise UsageError("rate must be at least 1 byte/s (or None for no cap)")
        self.payload = payload
        self.size = len(payload)
        self.rate = rate
        self.slice_size = _slice_size(rate)
        self.sha256 = hashlib.sha256(payload).hexdigest()
        self.etag = f'"{self.sha256[:32]}"'
        self.clock = clock
        self.stopping = threading.Event()
        self.sleep: Callable[[float], object] = sleep or self.stopping.wait
        self.stats = ServerStats()
        self.errors: list[BaseException] = []  # unexpected handler exceptions
        self._stats_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._httpd.server_port}{PAYLOAD_PATH}"

    def count(self, *, connections: int = 0, requests: int = 0, bytes_sent: int = 0) -> None:
        with self._stats_lock:
            self.stats.connections += connections
            self.stats.requests += requests
            self.stats.bytes_sent += bytes_sent

    def start(self) -> BenchServer:
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self.stopping.clear()
        httpd = _HTTPServer(self)
        self._httpd = httpd
        # A short poll interval makes close() quick.
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="segdl-bench-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, abort bodies in flight, end every connection, join every thread."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self.stopping.set()
        httpd.shutdown()  # returns once serve_forever has left its loop: no more accepts
        thread.join(timeout)
        httpd.end_connections(timeout)
        httpd.server_close()
        self._httpd = self._thread = None

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- the benchmark -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """The result for one connection count. Rates are in MiB/s (2**20 bytes per second)."""

    connections: int  # connections asked for
    used: int  # most connections a run really opened (fewer for a small file or no ranges)
    seconds: float  # median wall time of the runs, from the request to the verified file
    times: tuple[float, ...]  # every run's wall time, in order
    size: int  # bytes per file
    sha256: str
    baseline: int  # the connection count `speedup` is relative to (the smallest measured)
    speedup: float  # baseline's seconds / these seconds
    best: bool = False  # the fastest row (the first of equals)

    @property
    def mib_per_s(self) -> float:
        return self.size / MiB / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class Progress:
    """What `run_bench` reports: bytes of a run in progress, or a finished row."""

    connections: int
    run: int  # 1-based run number for this connection count
    runs: int  # runs per connection count (`repeat`)
    done: int  # bytes on disk so far in this run
    total: int | None  # None while unknown
    row: Row | None = None  # set once, when every run of this count is done and verified


class _Forward(Listener):
    """Passes the engine's progress samples (from the calling thread) to the callback."""

    def __init__(self, callback: Callable[[Progress], None], n: int, run: int, runs: int) -> None:
        self._callback = callback
        self._context = (n, run, runs)

    def progress(self, done: int, total: int | None, connections: int) -> None:
        n, run, runs = self._context
        self._callback(Progress(n, run, runs, done, total))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def run_bench(
    url: str,
    connections: Sequence[int] = DEFAULT_CONNECTIONS,
    *,
    repeat: int = 1,
    directory: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    min_split: int = 1 << 20,
    timeout: float = 30.0,
    retries: int = 5,
    trust_env: bool = True,
    limit_rate: int | None = None,
    limit_rate_per_host: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[Row]:
    """Download `url` `repeat` times with each connection count; one `Row` per count.

    Counts run in increasing order; speed-ups are relative to the smallest. Files go to a
    private temporary directory (inside `directory` if given), are verified — against
    `expected_sha256` when given, else every run must produce the same size and sha256 — and
    deleted; the directory is removed even on failure. `limit_rate` and
    `limit_rate_per_host` are `segdl.download`'s speed limits, applied to every run.
    Raises `UsageError` on bad arguments,
    `IntegrityError` when a file does not verify, and what `segdl.download` raises.
    """
    counts = sorted(set(connections))
    if not counts:
        raise UsageError("give at least one connection count")
    if not all(1 <= n <= MAX_CONNECTIONS for n in counts):
        raise UsageError(f"connection counts must be between 1 and {MAX_CONNECTIONS}")
    if not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"repeat must be between 1 and {MAX_REPEAT}")
    report = progress or (lambda _: None)
    reference = expected_sha256.lower() if expected_sha256 else None
    rows: list[Row] = []
    try:
        workdir = tempfile.TemporaryDirectory(prefix="segdl-bench-", dir=directory)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot create a temporary directory in {directory}: {reason}") from None
    with workdir as folder:
        for n in counts:
            times: list[float] = []
            used = 0
            size, digest = 0, ""
            for run in range(1, repeat + 1):
                report(Progress(n, run, repeat, 0, None))
                dest = Path(folder) / f"bench-{n}-{run}.bin"
                began = time.monotonic()
                result = download(
                    url,
                    dest,
                    connections=n,
                    min_split=min_split,
                    timeout=timeout,
                    retries=retries,
                    resume=False,  # every run starts from zero
                    if_exists="overwrite",
                    trust_env=trust_env,
                    limit_rate=limit_rate,
                    limit_rate_per_host=limit_rate_per_host,
                    listener=_Forward(report, n, run, repeat),
                    cancel=cancel,
                )
                times.append(time.monotonic() - began)
                # Verification is outside the timing: it is the bench's check, not segdl's.
                try:
                    size = dest.stat().st_size
                    digest = _file_sha256(dest)
                    dest.unlink()
                except OSError as exc:
                    raise destination_error(exc, dest, "verify") from None
                if size != result.size:
                    raise IntegrityError(
                        f"{n} connections: the file has {size} bytes, segdl reported {result.size}"
                    )
                if reference is None:
                    reference = digest
                elif digest != reference:
                    what = "the expected" if expected_sha256 else "the first run's"
                    hint = "" if expected_sha256 else " (did the remote file change?)"
                    raise IntegrityError(
                        f"{n} connections, run {run}: sha256 {digest} differs from {what} "
                        f"{reference}{hint}"
                    )
                used = max(used, result.connections if result.segmented else 1)
            seconds = statistics.median(times)
            base = rows[0] if rows else None
            row = Row(
                connections=n,
                used=used,
                seconds=seconds,
                times=tuple(times),
                size=size,
                sha256=digest,
                baseline=base.connections if base else n,
                speedup=(base.seconds if base else seconds) / max(seconds, 1e-9),
            )
            rows.append(row)
            report(Progress(n, repeat, repeat, size, size, row))
    best = min(range(len(rows)), key=lambda i: rows[i].seconds)
    rows[best] = dataclasses.replace(rows[best], best=True)
    return rows


# -- the command line --------------------------------------------------------------------------


class _Exit(Exception):
    """argparse wants to exit: `main` returns the status instead of raising SystemExit."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        # One line, no usage dump, like the main `segdl` command.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _connection_list(text: str) -> list[int]:
    counts = []
    for item in text.split(","):
        item = item.strip()
        if not item.isascii() or not item.isdigit():
            raise argparse.ArgumentTypeError(
                f"expected numbers separated by commas, e.g. 1,4,8,16 (got {text!r})"
            )
        value = int(item)
        if not 1 <= value <= MAX_CONNECTIONS:
            raise argparse.ArgumentTypeError(
                f"connection counts must be between 1 and {MAX_CONNECTIONS} (got {value})"
            )
        counts.append(value)
    return sorted(set(counts))


def _repeat(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"must be a number from 1 to {MAX_REPEAT}")
    return int(text)


def _size_arg(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = parse_size(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum} byte(s)")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {_size_text(maximum)}")
        return value

    return convert


def _rate_arg(text: str) -> int:
    try:
        return parse_rate(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="segdl bench",
        description="Time downloads with several connection counts and show the speed-up. "
        "Without a URL, an embedded loopback server caps each connection's rate the way "
        "a CDN does, so the run needs no network.",
    )
    parser.add_argument(
        "url", nargs="?", help="http(s) URL to benchmark (default: the embedded server)"
    )
    parser.add_argument(
        "-n",
        "--connections",
        type=_connection_list,
        default=list(DEFAULT_CONNECTIONS),
        metavar="LIST",
        help="comma-separated connection counts (default 1,4,8,16)",
    )
    parser.add_argument(
        "--repeat",
        type=_repeat,
        default=1,
        metavar="N",
        help="runs per connection count; the median time is shown (default 1)",
    )
    parser.add_argument(
        "--size",
        type=_size_arg(1, MAX_PAYLOAD),
        metavar="SIZE",
        help="embedded server only: payload size, with K/M/G suffixes (default 64M)",
    )
    parser.add_argument(
        "--rate",
        type=_size_arg(0),
        metavar="RATE",
        help="embedded server only: bytes/s per connection, with K/M/G suffixes; "
        "0 for no cap (default 8M)",
    )
    parser.add_argument(
        "--limit-rate",
        type=_rate_arg,
        metavar="RATE",
        help="segdl's speed limit for each run, bytes/s in all (as segdl --limit-rate)",
    )
    parser.add_argument(
        "--limit-rate-per-host",
        type=_rate_arg,
        metavar="RATE",
        help="segdl's speed limit for each run, bytes/s from each host",
    )
    parser.add_argument(
        "-k",
        "--min-split",
        type=_size_arg(1),
        default=1 << 20,
        metavar="SIZE",
        help="smallest range per connection (default 1M)",
    )
    parser.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        help="where the temporary files go (default: the system's temporary directory)",
    )
    return parser


def _size_text(n: float) -> str:
    """`64 MiB`, `1.5 GiB`, `300 B`: whole numbers without decimals."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _times_sign(stream: IO[str]) -> str:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        _TIMES.encode(encoding)
    except (LookupError, UnicodeEncodeError):
        return "x"  # e.g. an ASCII-only terminal
    return _TIMES


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the Ctrl-C path, so the temporary files and the server are cleaned up.
    raise KeyboardInterrupt


class _Printer:
    """Prints rows as they are measured; on a terminal, a live status line on stderr."""

    HEADER = f"{'connections':>11}  {'time s':>8}  {'MiB/s':>8}  {'speed-up':>8}"

    def __init__(self, out: IO[str], err: IO[str]) -> None:
        self.out = out
        self.err = err
        self.live = err.isatty()
        self.times = _times_sign(out)
        self._status = False

    def __call__(self, event: Progress) -> None:
        if event.row is not None:
            self.clear()
            self.row(event.row)
        elif self.live:
            run = f", run {event.run}/{event.runs}" if event.runs > 1 else ""
            if event.total is not None:
                state = f"{event.done / MiB:.1f} of {event.total / MiB:.1f} MiB"
            else:
                state = f"{event.done / MiB:.1f} MiB" if event.done else "starting"
            plural = "s" if event.connections > 1 else ""
            self.err.write(f"\r\033[K  {event.connections} connection{plural}{run}: {state}")
            self.err.flush()
            self._status = True

    def clear(self) -> None:
        if self._status:
            self.err.write("\r\033[K")
            self.err.flush()
            self._status = False

    def row(self, row: Row) -> None:
        note = ""
        if row.used < row.connections:
            note = f"  (only {row.used} used)"
        print(
            f"{row.connections:>11}  {row.seconds:>8.2f}  {row.mib_per_s:>8.1f}  "
            f"{row.speedup:>7.2f}{self.times}{note}",
            file=self.out,
            flush=True,
        )

    def best(self, rows: Sequence[Row]) -> None:
        best = next(row for row in rows if row.best)
        base = rows[0]
        plural = "s" if best.connections > 1 else ""
        if best is base or len(rows) == 1:
            comment = "more connections did not help" if len(rows) > 1 else "nothing to compare"
        else:
            base_plural = "s" if base.connections > 1 else ""
            comment = (
                f"{best.speedup:.1f}{self.times} faster than {base.connections} "
                f"connection{base_plural}"
            )
        print(f"best: {best.connections} connection{plural} ({comment})", file=self.out)


def main(argv: Sequence[str] | None = None) -> int:
    """`segdl bench [URL] [options]`; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    try:
        args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except _Exit as exc:
        return exc.status
    # Bad input fails before anything is printed or started.
    problem = None
    if args.url is not None and (args.size is not None or args.rate is not None):
        problem = "--size and --rate apply to the embedded server only"
    elif args.dir is not None and not Path(args.dir).is_dir():
        problem = f"--dir: {args.dir} is not a directory"
    elif args.url is not None:
        try:
            check_url(args.url)
        except UsageError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"segdl bench: error: {problem}", file=err)
        return EXIT_USAGE
    printer = _Printer(out, err)
    server: BenchServer | None = None
    # Signal handlers can only be set from the main thread (tests may call main elsewhere).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        if args.url is None:
            size = DEFAULT_SIZE if args.size is None else args.size
            rate = DEFAULT_RATE if args.rate is None else args.rate
            server = BenchServer(size, rate=rate or None)
            try:
                server.start()
            except OSError as exc:
                print(f"segdl bench: error: cannot start the loopback server: {exc}", file=err)
                return EXIT_FAILED
            cap = (
                f"each connection capped at {_size_text(rate)}/s"
                if rate
                else "no rate cap (this measures the CPU, not a network)"
            )
            print(
                f"segdl bench: embedded loopback server, {_size_text(size)} payload, {cap}",
                file=out,
            )
            url, expected = server.url, server.sha256
        else:
            url, expected = args.url, None
            runs = f"{args.repeat} run{'s' if args.repeat > 1 else ''} per count"
            print(f"segdl bench: {url} ({runs}; files are verified, then deleted)", file=out)
        print(printer.HEADER, file=out, flush=True)
        rows = run_bench(
            url,
            args.connections,
            repeat=args.repeat,
            directory=args.dir,
            expected_sha256=expected,
            min_split=args.min_split,
            # The loopback server must not be reached through a proxy from the environment.
            trust_env=server is None,
            limit_rate=args.limit_rate,
            limit_rate_per_host=args.limit_rate_per_host,
            progress=printer,
        )
        printer.best(rows)
        return EXIT_OK
    except UsageError as exc:
        printer.clear()
        print(f"segdl bench: error: {exc}", file=err)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        printer.clear()
        print("segdl bench: interrupted", file=err)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        printer.clear()
        print(f"segdl bench: error: {exc}", file=err)
        return EXIT_FAILED
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.close()
