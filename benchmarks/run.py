#!/usr/bin/env python3
"""Benchmark segdl against aria2c, axel and curl on real loopback HTTP servers.

Starts nginx (or a fallback Python throttling server) on 127.0.0.1 in a temporary directory,
generates random test files, runs every tool round-robin, verifies every download (sha256),
and writes results.json, results.md and (with matplotlib) PNG charts.

Run ``python benchmarks/run.py --help``; see benchmarks/README.md.  Standard library only;
matplotlib is optional and only used for the charts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import http.server
import json
import os
import platform
import pty
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

HERE = Path(__file__).resolve().parent

# Scenario keys in run order, with their one-letter aliases (as in the issue).
SCENARIOS: dict[str, str] = {
    "throttled": "(a) per-connection rate limit, segdl -n sweep",
    "stragglers": "(b) one connection in N much slower than the others",
    "unthrottled": "(c) unthrottled loopback",
    "memory": "(d) peak RSS, unthrottled",
    "overhead": "(e) progress bar cost (with vs. without -q, under a pty)",
}
ALIASES = {"a": "throttled", "b": "stragglers", "c": "unthrottled", "d": "memory", "e": "overhead"}
SERVER_FOR = {
    "throttled": "throttled",
    "stragglers": "stragglers",
    "unthrottled": "unthrottled",
    "memory": "unthrottled",
    "overhead": "unthrottled",
}
PEERS = ("aria2c", "axel", "curl")
TOOLS = ("segdl", *PEERS)
APT_PACKAGE = {"nginx": "nginx", "aria2c": "aria2", "axel": "axel", "curl": "curl", "time": "time"}
ARIA2_MAX_CONNS = 16  # aria2c refuses -x above 16
ARIA2_MIN_SPLIT = MiB  # aria2c refuses -k below 1M

# Sizes: full run / --quick.
FULL_SIZES: dict[str, list[int]] = {
    "throttled": [256 * MiB],
    "stragglers": [256 * MiB],
    "unthrottled": [1 * GiB],
    "memory": [256 * MiB, 2 * GiB],
    "overhead": [1 * GiB],
}
QUICK_SIZES: dict[str, list[int]] = {
    "throttled": [16 * MiB],
    "stragglers": [32 * MiB],
    "unthrottled": [64 * MiB],
    "memory": [32 * MiB, 128 * MiB],
    "overhead": [64 * MiB],
}

# The targets (thresholds, not measurements).
TARGET_IDEAL_FRACTION = 0.95  # throttled: >= 95% of n x rate
TARGET_SPEEDUP = 15.0  # throttled: top n vs. n=1
TARGET_STRAGGLERS_RATIO = 0.9  # wall <= 0.9 x aria2c
TARGET_UNTHROTTLED_RATIO = 0.6  # wall and CPU <= 0.6 x aria2c
TARGET_RSS = 64 * MiB
TARGET_BAR_COST = 0.03

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")


# --------------------------------------------------------------------------- units


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


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


# --------------------------------------------------------------------------- Python server


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
        self, port: int, root: Path, rate: int, slow_rate: int, every: int, chunk: int, log: Path
    ) -> None:
        super().__init__(("127.0.0.1", port), RangeHandler)
        self.root = root
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
    opts = parser.parse_args(argv)
    server = BenchHTTPServer(
        opts.port, opts.root, opts.rate, opts.slow_rate, opts.every, opts.chunk, opts.log
    )
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()
    return 0


# --------------------------------------------------------------------------- server processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_listening(port: int) -> bool:
    """True when something LISTENs on 127.0.0.1:port; reads /proc so no connection is used
    (a probe connection would shift nginx's $connection numbering)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", port)) == 0
    needle = f"0100007F:{port:04X}"
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1] == needle and cols[3] == "0A":
            return True
    return False


@dataclass
class LogStats:
    requests: int
    connections: int
    served_bytes: int
    window_s: float | None = None  # first request's start to last response's end


def read_log_stats(path: Path, offset: int) -> LogStats:
    """Access-log lines since `offset`:
    '<conn> <req#> <status> <bytes> <secs> "<range>" <end, epoch seconds>'.

    The window is the transfer as the server saw it, from the start of the first request
    (its end minus its duration) to the end of the last: process start-up is not in it.
    """
    conns: set[str] = set()
    requests = served = 0
    starts: list[float] = []
    ends: list[float] = []
    try:
        with path.open("rb") as log:
            log.seek(offset)
            for raw in log:
                cols = raw.decode("ascii", "replace").split()
                if len(cols) < 4:
                    continue
                requests += 1
                conns.add(cols[0])
                with contextlib.suppress(ValueError):
                    served += int(cols[3])
                if len(cols) >= 7:
                    with contextlib.suppress(ValueError):
                        end = float(cols[-1])
                        starts.append(end - float(cols[4]))
                        ends.append(end)
    except OSError:
        pass
    window = max(ends) - min(starts) if ends else None
    return LogStats(requests, len(conns), served, window)


class ManagedServer:
    """A server process on 127.0.0.1:port; `kind` is throttled, stragglers or unthrottled."""

    impl = "?"

    def __init__(self, kind: str, docroot: Path, workdir: Path, opts: argparse.Namespace) -> None:
        self.kind = kind
        self.docroot = docroot
        self.workdir = workdir
        self.rate: int = 0 if kind == "unthrottled" else opts.rate
        self.slow_rate: int = opts.slow_rate if kind == "stragglers" else 0
        self.every: int = opts.straggler_every if kind == "stragglers" else 0
        self.chunk: int = opts.chunk
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "access.log"
        self.out_path = workdir / "server.out"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration for self.port."""

    def describe(self) -> str:
        raise NotImplementedError

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        attempts = 0
        while True:
            attempts += 1
            if not self.port:
                self.port = free_port()
            self.prepare()
            with self.out_path.open("ab") as out:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_listening(self.port):
                    return
                time.sleep(0.01)
            self.stop()
            if attempts >= 3:
                tail = self.out_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.impl} ({self.kind}) did not start:\n{tail}")
            self.port = 0  # maybe somebody took the port: try another one

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of its group (nginx workers)

    def restart(self) -> None:
        """Fresh process: connection numbering (stragglers) starts over for every run."""
        self.stop()
        self.start()

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0


class PythonServer(ManagedServer):
    impl = "python"

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(Path(__file__).resolve()),
            "_serve",
            f"--root={self.docroot}",
            f"--port={self.port}",
            f"--rate={self.rate}",
            f"--slow-rate={self.slow_rate}",
            f"--every={self.every}",
            f"--chunk={self.chunk}",
            f"--log={self.log_path}",
        ]

    def describe(self) -> str:
        if self.kind == "unthrottled":
            return "Python ThreadingHTTPServer, sendfile, no limit"
        text = (
            f"Python ThreadingHTTPServer, token bucket {human_size(self.rate)}/s per connection"
            f" (burst {human_size(self.chunk)})"
        )
        if self.kind == "stragglers":
            text += f", every {self.every}th connection at {human_size(self.slow_rate)}/s"
        return text


def nginx_version(binary: str) -> tuple[int, ...]:
    proc = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/([0-9.]+)", proc.stderr + proc.stdout)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def straggler_regex(every: int) -> str:
    # $connection is a decimal serial number; the last digit tells divisibility by 2, 5, 10.
    return {2: "[02468]$", 5: "[05]$", 10: "0$"}[every]


class NginxServer(ManagedServer):
    impl = "nginx"

    def __init__(
        self,
        kind: str,
        docroot: Path,
        workdir: Path,
        opts: argparse.Namespace,
        binary: str,
        version: tuple[int, ...],
    ) -> None:
        super().__init__(kind, docroot, workdir, opts)
        self.binary = binary
        self.version = version
        self.workers: int = opts.nginx_workers
        self.conf = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"

    def rate_directives(self) -> list[str]:
        if self.kind == "unthrottled":
            return []  # default sendfile_max_chunk
        lines = [f"sendfile_max_chunk {nginx_size(self.chunk)};"]
        if self.kind == "throttled":
            return [*lines, f"limit_rate {nginx_size(self.rate)};"]
        # limit_rate takes variables since 1.17.0; before that set $limit_rate.
        if self.version >= (1, 17, 0):
            return [*lines, "limit_rate $bench_rate;"]
        return [*lines, "set $limit_rate $bench_rate;"]

    def config_text(self) -> str:
        w = self.workdir
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the 0700 temp dir
        map_block = ""
        if self.kind == "stragglers":
            map_block = (
                "    map $connection $bench_rate {\n"
                f"        ~{straggler_regex(self.every)} {nginx_size(self.slow_rate)};\n"
                f"        default {nginx_size(self.rate)};\n"
                "    }\n"
            )
        rate = "".join(f"        {line}\n" for line in self.rate_directives())
        temp = "".join(
            f"    {name}_temp_path {w}/tmp/{name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\n"
            "master_process on;\n"
            f"worker_processes {self.workers};\n"
            f"pid {w}/nginx.pid;\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    types { application/octet-stream bin; }\n"
            "    default_type application/octet-stream;\n"
            "    sendfile on;\n"
            "    tcp_nopush on;\n"
            "    keepalive_timeout 75s;\n"
            "    keepalive_requests 1000000;\n"
            f"{temp}"
            "    log_format bench '$connection $connection_requests $status $body_bytes_sent '\n"
            "                     '$request_time \"$http_range\" $msec';\n"
            f"    access_log {self.log_path} bench;\n"
            f"{map_block}"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            "        server_name localhost;\n"
            f"        root {self.docroot};\n"
            f"{rate}"
            "    }\n"
            "}\n"
        )

    def prepare(self) -> None:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self.conf.write_text(self.config_text())

    def command(self) -> list[str]:
        argv = [self.binary, "-p", f"{self.workdir}/", "-c", str(self.conf)]
        if self.version >= (1, 19, 5):
            argv += ["-e", str(self.error_log)]  # never touch /var/log/nginx
        return argv

    def describe(self) -> str:
        version = ".".join(map(str, self.version))
        directives = " ".join(self.rate_directives()) or "no limit"
        if self.kind == "stragglers":
            directives = (
                f"map $connection $bench_rate {{ ~{straggler_regex(self.every)} "
                f"{nginx_size(self.slow_rate)}; default {nginx_size(self.rate)}; }} " + directives
            )
        return f"nginx {version}, sendfile on, {directives}"


# --------------------------------------------------------------------------- measurement


@dataclass
class Measurement:
    exit_code: int | None
    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int | None
    timed_out: bool
    tty_bytes: int | None
    output_tail: str


class PtyDrain(threading.Thread):
    """Reads the master side of a pty so the child never blocks on a full terminal."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.count = 0
        self.tail = b""

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO once every slave fd is closed
                return
            if not data:
                return
            self.count += len(data)
            self.tail = (self.tail + data)[-4096:]


_live_children: set[int] = set()


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    log_path: Path,
    use_pty: bool,
    time_bin: str | None,
) -> Measurement:
    """Run one child, reap it with os.wait4 and return its own resource usage.

    With `time_bin` (GNU time) the tool is forked by that small process: its max RSS comes from
    time's report, because a child's ru_maxrss starts at the RSS high-water mark of the process
    that exec'd it. CPU is always from wait4 (it includes the tool, reaped by time).
    """
    report = log_path.with_suffix(".rusage")
    full = list(argv)
    if time_bin:
        full = [time_bin, "-f", "%M", "-o", str(report), "--", *argv]
    master = slave = -1
    drain: PtyDrain | None = None
    if use_pty:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        stdin: int | IO[bytes] = slave
        stdout: int | IO[bytes] = slave
    else:
        stdin = subprocess.DEVNULL
        stdout = log_path.open("wb")
    timed_out = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    reaped = False
    pid = -1
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(
            full,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pid = proc.pid
        _live_children.add(pid)
        if use_pty:
            os.close(slave)
            slave = -1
            drain = PtyDrain(master)
            drain.start()
        else:
            assert not isinstance(stdout, int)
            stdout.close()

        def on_timeout() -> None:
            with lock:
                if not done.is_set():
                    timed_out.set()
                    kill_group(pid)

        timer = threading.Timer(timeout_s, on_timeout)
        timer.daemon = True
        timer.start()
        # Wait without reaping (the pid stays ours), stop the clock, then reap with wait4.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        with lock:
            done.set()
        timer.cancel()
        _, status, usage = os.wait4(pid, 0)
        reaped = True
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if pid > 0:
            if not reaped:
                kill_group(pid)
                with contextlib.suppress(ChildProcessError):
                    os.wait4(pid, 0)
            kill_group(pid)  # anything the tool left behind in its process group
            _live_children.discard(pid)
        if slave >= 0:
            os.close(slave)
        if not use_pty and not isinstance(stdout, int) and not stdout.closed:
            stdout.close()
        if drain is not None:
            drain.join(timeout=2)
        if master >= 0:
            os.close(master)

    maxrss: int | None = usage.ru_maxrss
    if time_bin:
        maxrss = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            maxrss = int(report.read_text().split()[-1])
    if drain is not None:
        tail = drain.tail.decode("utf-8", "replace")
    else:
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - 2048))
            tail = log.read().decode("utf-8", "replace")
    return Measurement(
        exit_code=proc.returncode,
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        maxrss_kib=maxrss,
        timed_out=timed_out.is_set(),
        tty_bytes=drain.count if drain is not None else None,
        output_tail=tail,
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as src:
        while n := src.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def verify_download(path: Path, size: int, sha256: str) -> str | None:
    """None when `path` is exactly the source file, else what is wrong."""
    try:
        actual = path.stat().st_size
    except OSError:
        return "output file missing"
    if actual != size:
        return f"wrong size {actual} (expected {size})"
    if sha256_file(path) != sha256:
        return "sha256 mismatch"
    return None


def make_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- tools


@dataclass
class ToolInfo:
    name: str
    path: str | None
    version: str = ""
    version_full: str = ""
    note: str = ""


def which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def apt_install(packages: Sequence[str]) -> None:
    if not packages:
        return
    if os.geteuid() != 0 or not which("apt-get"):
        print(f"  cannot install {' '.join(packages)}: need root and apt-get", flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"  installing {' '.join(packages)} with apt-get: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        print("  apt-get install failed; running apt-get update and retrying", flush=True)
        subprocess.run(["apt-get", "update"], env=env, check=False, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL)


def first_line(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=cwd
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        if line.strip():
            return line.strip()
    return ""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every tool: no proxies (loopback only)."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- cases and records


@dataclass(frozen=True)
class Case:
    scenario: str
    label: str
    tool: str
    conns: int
    size: int
    use_pty: bool = False
    quiet: bool = True


@dataclass
class RunRecord:
    scenario: str
    label: str
    tool: str
    conns: int
    size: int
    repeat: int
    seq: int
    started_at: str
    argv: list[str]
    ok: bool
    error: str | None
    exit_code: int | None
    wall_s: float
    user_s: float
    sys_s: float
    cpu_s: float
    maxrss_kib: int | None
    throughput_mib_s: float | None
    requests: int | None
    connections: int | None
    served_bytes: int | None
    server_window_s: float | None
    tty_bytes: int | None
    loadavg_before: float
    loadavg_after: float
    output_tail: str = ""


@dataclass
class Summary:
    scenario: str
    label: str
    tool: str
    conns: int
    size: int
    runs: int
    ok_runs: int
    status: str
    errors: list[str] = field(default_factory=list)
    wall_s: float | None = None
    wall_min_s: float | None = None
    wall_max_s: float | None = None
    throughput_mib_s: float | None = None
    cpu_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    maxrss_mib: float | None = None
    maxrss_max_mib: float | None = None
    requests: float | None = None
    connections: float | None = None
    served_mib: float | None = None
    server_window_s: float | None = None
    tty_bytes: float | None = None
    ideal_mib_s: float | None = None
    wall_vs_aria2c: float | None = None
    cpu_vs_aria2c: float | None = None
    speedup_vs_n1: float | None = None
    server_speedup_vs_n1: float | None = None


@dataclass
class Check:
    id: str
    target: str
    measured: str
    result: str  # PASS, MISS, FAIL (a run failed), SKIP (no data)
    margin: str
    margin_value: float | None = None


def median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.quick: bool = opts.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="segdl-benchrun-", dir=opts.tmpdir))
        self.www = self.tmp / "www"
        self.www.mkdir()
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        base = Path(opts.download_dir) if opts.download_dir else self.tmp
        self.dl_dir = Path(tempfile.mkdtemp(prefix="segdl-benchrun-dl-", dir=base))
        self.env = child_env()
        self.tools: dict[str, ToolInfo] = {}
        self.servers: dict[str, ManagedServer] = {}
        self.files: dict[int, tuple[Path, str]] = {}
        self.records: list[RunRecord] = []
        self.notes: list[str] = []
        self.time_bin: str | None = None
        self.aria2_alloc = opts.aria2_file_allocation
        default_cmd = [sys.executable, "-m", "segdl"]  # the same interpreter as this script
        self.segdl_cmd = shlex.split(opts.segdl_cmd) if opts.segdl_cmd else default_cmd
        self.startup: dict[str, float | None] = {}
        self.started = dt.datetime.now(dt.timezone.utc)
        self.seq = 0

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        for pid in list(_live_children):
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(pid, 0)
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        if self.opts.keep_temp:
            print(f"kept temporary directory {self.tmp}", flush=True)
            return
        shutil.rmtree(self.dl_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- setup ----------------------------------------------------------------------------

    def scenarios(self) -> list[str]:
        return [s for s in SCENARIOS if s in self.opts.scenario]

    def sizes(self, scenario: str) -> list[int]:
        override = getattr(self.opts, f"size_{scenario}")
        if override:
            return list(override)
        return (QUICK_SIZES if self.quick else FULL_SIZES)[scenario]

    def setup_tools(self) -> None:
        print("== tools", flush=True)
        wanted = [t for t in self.opts.tools if t != "segdl"]
        binaries = {"aria2c": "aria2c", "axel": "axel", "curl": "curl"}
        needed = [binaries[t] for t in wanted]
        if self.opts.server in ("auto", "nginx"):
            needed.append("nginx")
        missing = [b for b in needed if not which(b)]
        if self.opts.rusage == "time" and not self._time_ok():
            missing.append("time")  # GNU time, for clean peak RSS figures
        if missing and not self.opts.no_install:
            apt_install([APT_PACKAGE[b] for b in missing])
        elif missing:
            print(f"  missing (not installing, --no-install): {' '.join(missing)}", flush=True)

        if self.opts.rusage == "time":
            if self._time_ok():
                self.time_bin = "/usr/bin/time"
            else:
                self.notes.append(
                    "GNU /usr/bin/time unavailable: peak RSS from os.wait4 (see README caveats)"
                )
        for tool in wanted:
            path = which(binaries[tool])
            info = ToolInfo(tool, path)
            if path:
                info.version_full = first_line([path, "--version"])
                info.version = info.version_full.split(" (")[0]
            else:
                info.note = "not installed"
            self.tools[tool] = info
        if "segdl" in self.opts.tools:
            self.tools["segdl"] = self._probe_segdl()
        for info in self.tools.values():
            state = info.version if info.path else f"SKIPPED: {info.note}"
            print(f"  {info.name:7s} {state}", flush=True)
        if "aria2c" in self.tools and self.tools["aria2c"].path and self.aria2_alloc == "auto":
            self.aria2_alloc = "falloc" if self._fallocate_works() else "none"

    def _time_ok(self) -> bool:
        try:
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "true"], capture_output=True, text=True, check=False
            )
        except OSError:
            return False
        return proc.returncode == 0 and proc.stderr.strip().isdigit()

    def _fallocate_works(self) -> bool:
        probe = self.dl_dir / ".fallocate-probe"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, MiB)
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            probe.unlink(missing_ok=True)

    def _probe_segdl(self) -> ToolInfo:
        info = ToolInfo("segdl", shlex.join(self.segdl_cmd))
        try:
            proc = subprocess.run(
                [*self.segdl_cmd, "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=self.env,
                cwd=self.dl_dir,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc = None
            info.note = f"{shlex.join(self.segdl_cmd)} --help: {exc}"
        if proc is not None and proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            info.note = f"`{shlex.join(self.segdl_cmd)} --help` exited {proc.returncode}: {last}"
            if "No module named" in proc.stderr:
                info.note += " (install it: pip install -e /path/to/repo)"
        if info.note:
            info.path = None
            return info
        self._compile_segdl()
        version = first_line([*self.segdl_cmd, "--version"], self.env, self.dl_dir)
        if not re.search(r"[0-9]+\.[0-9]+", version):
            version = (
                first_line(
                    [
                        self.segdl_cmd[0],
                        "-c",
                        "import importlib.metadata as m; print('segdl', m.version('segdl'))",
                    ],
                    self.env,
                    self.dl_dir,
                )
                or "unknown version"
            )
        info.version = version
        return info

    def _compile_segdl(self) -> None:
        """Byte-compile segdl's package, as `pip install` does for a regular install.

        An editable install run with PYTHONDONTWRITEBYTECODE=1 (set on some machines) would
        otherwise compile every module from source on every run, a cost no user pays.
        """
        python = self.segdl_cmd[0]
        where = first_line(
            [python, "-c", "import os, segdl; print(os.path.dirname(segdl.__file__))"],
            self.env,
            self.dl_dir,
        )
        if not where or not Path(where).is_dir():
            return
        proc = subprocess.run(
            [python, "-m", "compileall", "-q", where],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
        )
        if proc.returncode == 0:
            self.notes.append(f"segdl's modules were byte-compiled first (`compileall {where}`)")

    def available(self, tool: str) -> bool:
        info = self.tools.get(tool)
        return info is not None and info.path is not None

    def setup_servers(self) -> None:
        print("== servers", flush=True)
        kinds = sorted({SERVER_FOR[s] for s in self.scenarios()})
        binary = which("nginx")
        impl = self.opts.server
        if impl == "auto":
            impl = "nginx" if binary else "python"
        if impl == "nginx" and not binary:
            raise SystemExit("nginx not found (use --server python)")
        version = nginx_version(binary) if impl == "nginx" and binary else (0,)
        for kind in kinds:
            workdir = self.tmp / f"server-{kind}"
            if impl == "nginx" and binary:
                server: ManagedServer = NginxServer(
                    kind, self.www, workdir, self.opts, binary, version
                )
            else:
                server = PythonServer(kind, self.www, workdir, self.opts)
            server.start()
            self.servers[kind] = server
            print(f"  {kind:11s} {server.url('')}  {server.describe()}", flush=True)

    def setup_files(self) -> None:
        print("== test files", flush=True)
        for size in sorted({s for sc in self.scenarios() for s in self.sizes(sc)}):
            path = self.www / f"file-{size_token(size)}.bin"
            started = time.perf_counter()
            self.files[size] = (path, make_random_file(path, size))
            took = time.perf_counter() - started
            print(
                f"  {path.name:18s} {human_size(size):>9s}  sha256 {self.files[size][1][:16]}..."
                f"  ({took:.1f} s)",
                flush=True,
            )

    def measure_startup(self) -> None:
        """Interpreter startup, included in every segdl wall time."""
        if not self.available("segdl"):
            return
        probes = {
            "python -c pass": [self.segdl_cmd[0], "-c", "pass"],
            "segdl --help": [*self.segdl_cmd, "--help"],
        }
        for name, argv in probes.items():
            walls = []
            for i in range(max(3, self.opts.repeat)):
                m = run_measured(
                    argv,
                    cwd=self.dl_dir,
                    env=self.env,
                    timeout_s=60,
                    log_path=self.logs / f"startup-{i}.log",
                    use_pty=False,
                    time_bin=None,
                )
                if m.exit_code == 0:
                    walls.append(m.wall_s)
            self.startup[name] = median(walls)

    # -- commands -------------------------------------------------------------------------

    def argv_for(self, case: Case, url: str, out: Path) -> list[str]:
        split = self.opts.split
        if case.tool == "segdl":
            argv = [*self.segdl_cmd, url, "-o", str(out), "-n", str(case.conns)]
            argv += ["-k", size_token(split)]
            return [*argv, "-q"] if case.quiet else argv
        path = self.tools[case.tool].path
        assert path is not None
        if case.tool == "aria2c":
            n = min(case.conns, ARIA2_MAX_CONNS)
            return [
                path,
                "--no-conf=true",
                f"-x{n}",
                f"-s{n}",
                f"-k{size_token(max(split, ARIA2_MIN_SPLIT))}",
                f"--file-allocation={self.aria2_alloc}",
                f"--dir={out.parent}",
                f"--out={out.name}",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--quiet=true",
                "--summary-interval=0",
                url,
            ]
        if case.tool == "axel":
            return [path, "-q", "-n", str(case.conns), "-o", str(out), url]
        if case.tool == "curl":
            return [path, "-q", "--silent", "--show-error", "--fail", "-o", str(out), url]
        raise ValueError(case.tool)

    def peer_cases(self, scenario: str, size: int, conns: Iterable[int]) -> list[Case]:
        cases = []
        for n in conns:
            if self.available("aria2c"):
                cases.append(Case(scenario, f"aria2c -x{min(n, 16)}", "aria2c", n, size))
            if self.available("axel"):
                cases.append(Case(scenario, f"axel -n{n}", "axel", n, size))
        return cases

    def cases_for(self, scenario: str) -> list[Case]:
        n = self.opts.conns
        seg = self.available("segdl")
        curl = self.available("curl")
        cases: list[Case] = []
        for size in self.sizes(scenario):
            if scenario == "throttled":
                sweep = self.opts.sweep
                if seg:
                    cases += [Case(scenario, f"segdl -n{k}", "segdl", k, size) for k in sweep]
                peer_ns = sweep if self.opts.peers_sweep else [max(sweep)]
                cases += self.peer_cases(scenario, size, peer_ns)
                if curl:
                    cases.append(Case(scenario, "curl", "curl", 1, size))
            elif scenario == "stragglers":
                if seg:
                    cases.append(Case(scenario, f"segdl -n{n}", "segdl", n, size))
                cases += self.peer_cases(scenario, size, [n])
            elif scenario in ("unthrottled", "memory"):
                if seg:
                    cases.append(Case(scenario, f"segdl -n{n}", "segdl", n, size))
                cases += self.peer_cases(scenario, size, [n])
                if curl:
                    cases.append(Case(scenario, "curl", "curl", 1, size))
            elif scenario == "overhead" and seg:
                cases.append(Case(scenario, f"segdl -n{n} (bar)", "segdl", n, size, True, False))
                cases.append(Case(scenario, f"segdl -n{n} -q", "segdl", n, size, True, True))
        return cases

    def timeout_for(self, case: Case) -> float:
        if self.opts.timeout:
            return float(self.opts.timeout)
        server = self.servers[SERVER_FOR[case.scenario]]
        worst = server.slow_rate or server.rate or 20 * MiB  # everything over the slowest link
        return 60 + 3 * case.size / worst

    # -- running --------------------------------------------------------------------------

    def run(self) -> None:
        for scenario in self.scenarios():
            cases = self.cases_for(scenario)
            print(f"== {scenario}: {SCENARIOS[scenario]}", flush=True)
            if not cases:
                print("  nothing to run (tools missing)", flush=True)
                continue
            total = len(cases) * self.opts.repeat
            done = 0
            for rep in range(-self.opts.warmup, self.opts.repeat):
                shift = rep % len(cases)  # rotate the start so no tool always goes first
                for case in cases[shift:] + cases[:shift]:
                    record = self.run_case(case, rep)
                    if rep < 0:
                        print(f"  warm-up {case.label}: {'ok' if record.ok else 'FAIL'}")
                        continue
                    done += 1
                    self.records.append(record)
                    self.print_record(record, done, total)

    def clean_download_dir(self) -> None:
        for entry in self.dl_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def run_case(self, case: Case, rep: int) -> RunRecord:
        server = self.servers[SERVER_FOR[case.scenario]]
        src, digest = self.files[case.size]
        self.clean_download_dir()
        os.sync()  # write-back of the previous run must not land in this one
        if server.kind == "stragglers":
            server.restart()
        out = self.dl_dir / "download.bin"
        argv = self.argv_for(case, server.url(src.name), out)
        offset = server.log_offset()
        self.seq += 1
        load_before = os.getloadavg()[0]
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        m = run_measured(
            argv,
            cwd=self.dl_dir,
            env=self.env,
            timeout_s=self.timeout_for(case),
            log_path=self.logs / f"run-{self.seq:04d}.log",
            use_pty=case.use_pty,
            time_bin=self.time_bin,
        )
        load_after = os.getloadavg()[0]
        time.sleep(0.05)  # let the server finish logging aborted requests
        stats = read_log_stats(server.log_path, offset)
        error: str | None
        if m.timed_out:
            error = f"timed out after {self.timeout_for(case):.0f} s"
        elif m.exit_code != 0:
            last = m.output_tail.strip().splitlines()[-1:] or [""]
            error = f"exit code {m.exit_code}: {last[0][:200]}"
        else:
            error = verify_download(out, case.size, digest)
        ok = error is None
        self.clean_download_dir()
        return RunRecord(
            scenario=case.scenario,
            label=case.label,
            tool=case.tool,
            conns=case.conns,
            size=case.size,
            repeat=rep,
            seq=self.seq,
            started_at=started_at,
            argv=argv,
            ok=ok,
            error=error,
            exit_code=m.exit_code,
            wall_s=m.wall_s,
            user_s=m.user_s,
            sys_s=m.sys_s,
            cpu_s=m.user_s + m.sys_s,
            maxrss_kib=m.maxrss_kib,
            throughput_mib_s=case.size / MiB / m.wall_s if ok and m.wall_s > 0 else None,
            requests=stats.requests,
            connections=stats.connections,
            served_bytes=stats.served_bytes,
            server_window_s=stats.window_s,
            tty_bytes=m.tty_bytes,
            loadavg_before=load_before,
            loadavg_after=load_after,
            output_tail="" if ok else m.output_tail[-1000:],
        )

    def print_record(self, r: RunRecord, done: int, total: int) -> None:
        head = f"  [{done}/{total}] {r.label:18s} {human_size(r.size):>8s}"
        if not r.ok:
            print(f"{head}  FAIL: {r.error}", flush=True)
            return
        rss = f"{r.maxrss_kib / KiB:.0f} MiB" if r.maxrss_kib is not None else "?"
        extra = f"  tty {r.tty_bytes} B" if r.tty_bytes is not None else ""
        print(
            f"{head}  {r.wall_s:7.2f} s {r.throughput_mib_s or 0:8.1f} MiB/s"
            f"  cpu {r.cpu_s:6.2f} s  rss {rss:>8s}  req {r.requests} conn {r.connections}"
            f"{extra}  ok",
            flush=True,
        )

    # -- summary --------------------------------------------------------------------------

    def summarize(self) -> list[Summary]:
        groups: dict[tuple[str, str, int], list[RunRecord]] = {}
        for r in self.records:
            groups.setdefault((r.scenario, r.label, r.size), []).append(r)
        rows: list[Summary] = []
        for (scenario, label, size), runs in groups.items():
            ok = [r for r in runs if r.ok]
            failed = [r for r in runs if not r.ok]
            row = Summary(
                scenario=scenario,
                label=label,
                tool=runs[0].tool,
                conns=runs[0].conns,
                size=size,
                runs=len(runs),
                ok_runs=len(ok),
                status="ok" if not failed else "FAIL",
                errors=sorted({r.error or "" for r in failed}),
            )
            if scenario == "throttled":
                server = self.servers["throttled"]
                row.ideal_mib_s = row.conns * server.rate / MiB
            if ok and not failed:  # a failure is reported as FAIL, never as a time
                walls = [r.wall_s for r in ok]
                row.wall_s = median(walls)
                row.wall_min_s, row.wall_max_s = min(walls), max(walls)
                row.throughput_mib_s = size / MiB / row.wall_s if row.wall_s else None
                row.cpu_s = median(r.cpu_s for r in ok)
                row.user_s = median(r.user_s for r in ok)
                row.sys_s = median(r.sys_s for r in ok)
                rss = [r.maxrss_kib / KiB for r in ok if r.maxrss_kib is not None]
                row.maxrss_mib = median(rss)
                row.maxrss_max_mib = max(rss) if rss else None
                row.requests = median(r.requests for r in ok)
                row.connections = median(r.connections for r in ok)
                served = [r.served_bytes / MiB for r in ok if r.served_bytes is not None]
                row.served_mib = median(served)
                row.server_window_s = median(r.server_window_s for r in ok)
                row.tty_bytes = median(r.tty_bytes for r in ok)
            rows.append(row)
        for row in rows:
            ref = self.aria2_reference(rows, row)
            if ref is not None and ref.wall_s and row.wall_s is not None:
                row.wall_vs_aria2c = row.wall_s / ref.wall_s
                if ref.cpu_s and row.cpu_s is not None:
                    row.cpu_vs_aria2c = row.cpu_s / ref.cpu_s
            if row.scenario == "throttled" and row.wall_s is not None:
                base = self.find(rows, "throttled", "segdl", 1, row.size)
                if base is not None and base.wall_s:
                    row.speedup_vs_n1 = base.wall_s / row.wall_s
                if base is not None and base.server_window_s and row.server_window_s:
                    row.server_speedup_vs_n1 = base.server_window_s / row.server_window_s
        return rows

    @staticmethod
    def find(
        rows: list[Summary],
        scenario: str,
        tool: str,
        conns: int,
        size: int,
        label: str | None = None,
    ) -> Summary | None:
        for row in rows:
            if (row.scenario, row.tool, row.conns, row.size) == (scenario, tool, conns, size) and (
                label is None or row.label == label
            ):
                return row
        return None

    def aria2_reference(self, rows: list[Summary], row: Summary) -> Summary | None:
        same = [
            r
            for r in rows
            if r.scenario == row.scenario and r.size == row.size and r.tool == "aria2c"
        ]
        for r in same:
            if r.conns == row.conns:
                return r
        return max(same, key=lambda r: r.conns) if same else None

    # -- checks ---------------------------------------------------------------------------

    def checks(self, rows: list[Summary]) -> list[Check]:
        out: list[Check] = []
        n = self.opts.conns
        if "throttled" in self.scenarios():
            top = max(self.opts.sweep)
            size = self.sizes("throttled")[0]
            seg = self.find(rows, "throttled", "segdl", top, size)
            aria = self.aria2_reference(rows, seg) if seg else None
            rate = self.servers["throttled"].rate
            ideal = top * rate / MiB
            out.append(
                at_least(
                    f"a1 throttled: segdl -n{top} throughput >= "
                    f"{TARGET_IDEAL_FRACTION:.0%} of ideal {top} x {human_size(rate)}/s",
                    seg,
                    lambda r: r.throughput_mib_s,
                    TARGET_IDEAL_FRACTION * ideal,
                    "MiB/s",
                    extra=lambda v: f" ({v / ideal:.1%} of ideal {ideal:.0f} MiB/s)",
                )
            )
            out.append(
                ratio_at_most(
                    f"a2 throttled: segdl -n{top} wall <= aria2c wall",
                    seg,
                    aria,
                    lambda r: r.wall_s,
                    1.0,
                )
            )
            out.append(
                at_least(
                    f"a3 throttled: speed-up -n{top} vs -n1 >= {TARGET_SPEEDUP:.0f}x",
                    seg,
                    lambda r: r.speedup_vs_n1,
                    TARGET_SPEEDUP,
                    "x",
                    depends=[self.find(rows, "throttled", "segdl", 1, size)],
                )
            )
        if "stragglers" in self.scenarios():
            size = self.sizes("stragglers")[0]
            seg = self.find(rows, "stragglers", "segdl", n, size)
            aria = self.aria2_reference(rows, seg) if seg else None
            out.append(
                ratio_at_most(
                    f"b1 stragglers: segdl -n{n} wall <= {TARGET_STRAGGLERS_RATIO}x aria2c",
                    seg,
                    aria,
                    lambda r: r.wall_s,
                    TARGET_STRAGGLERS_RATIO,
                )
            )
        if "unthrottled" in self.scenarios():
            size = self.sizes("unthrottled")[0]
            seg = self.find(rows, "unthrottled", "segdl", n, size)
            aria = self.aria2_reference(rows, seg) if seg else None
            out.append(
                ratio_at_most(
                    f"c1 unthrottled {human_size(size)}: segdl wall <= "
                    f"{TARGET_UNTHROTTLED_RATIO}x aria2c",
                    seg,
                    aria,
                    lambda r: r.wall_s,
                    TARGET_UNTHROTTLED_RATIO,
                )
            )
            out.append(
                ratio_at_most(
                    f"c2 unthrottled {human_size(size)}: segdl CPU <= "
                    f"{TARGET_UNTHROTTLED_RATIO}x aria2c",
                    seg,
                    aria,
                    lambda r: r.cpu_s,
                    TARGET_UNTHROTTLED_RATIO,
                )
            )
        if "memory" in self.scenarios():
            for i, size in enumerate(self.sizes("memory"), 1):
                seg = self.find(rows, "memory", "segdl", n, size)
                out.append(
                    at_most(
                        f"d{i} memory {human_size(size)}: segdl -n{n} peak RSS <= "
                        f"{human_size(TARGET_RSS)} (max over runs)",
                        seg,
                        lambda r: r.maxrss_max_mib,
                        TARGET_RSS / MiB,
                        "MiB",
                    )
                )
        if "overhead" in self.scenarios():
            size = self.sizes("overhead")[0]
            bar = self.find(rows, "overhead", "segdl", n, size, f"segdl -n{n} (bar)")
            quiet = self.find(rows, "overhead", "segdl", n, size, f"segdl -n{n} -q")
            out.append(bar_cost_check(bar, quiet))
        return out

    # -- output ---------------------------------------------------------------------------

    def machine(self) -> dict[str, Any]:
        cpu = ""
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
        mem = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * KiB
        distro = ""
        with contextlib.suppress(OSError):
            for line in Path("/etc/os-release").read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip('"')
        return {
            "cpu_model": cpu or platform.processor() or "unknown",
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "ram_bytes": mem,
            "ram": f"{mem / GiB:.1f} GiB" if mem else "unknown",
            "kernel": f"{platform.system()} {platform.release()}",
            "os": distro,
            "python": sys.version.split()[0],
            "python_executable": sys.executable,
            "download_fs": fs_type(self.dl_dir),
        }

    def meta(self) -> dict[str, Any]:
        hwm = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return {
            "command": shlex.join([sys.executable, *sys.argv]),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "quick": self.quick,
            "repeat": self.opts.repeat,
            "warmup": self.opts.warmup,
            "scenarios": self.scenarios(),
            "sizes": {s: self.sizes(s) for s in self.scenarios()},
            "rate_bytes_s": self.opts.rate,
            "slow_rate_bytes_s": self.opts.slow_rate,
            "straggler_every": self.opts.straggler_every,
            "conns": self.opts.conns,
            "sweep": self.opts.sweep,
            "split_bytes": self.opts.split,
            "aria2c_file_allocation": self.aria2_alloc,
            "rusage": "GNU time (%M) + os.wait4" if self.time_bin else "os.wait4",
            "parent_rss_hwm_kib": hwm,
            "machine": self.machine(),
            "tools": {k: asdict(v) for k, v in self.tools.items()},
            "servers": {
                k: {"impl": s.impl, "describe": s.describe(), "url": s.url("")}
                for k, s in self.servers.items()
            },
            "startup_s": self.startup,
            "files": {
                str(size): {"name": p.name, "sha256": d} for size, (p, d) in self.files.items()
            },
            "notes": self.notes,
        }

    def write(self, rows: list[Summary], checks: list[Check]) -> None:
        out_dir = Path(self.opts.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        doc = {
            "meta": meta,
            "checks": [asdict(c) for c in checks],
            "summary": [asdict(r) for r in rows],
            "runs": [asdict(r) for r in self.records],
        }
        (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
        charts = draw_charts(out_dir, rows, self.servers, self.sizes, self.scenarios())
        md_paths = [out_dir / "results.md"]
        if self.opts.results_md:
            md_paths.append(Path(self.opts.results_md))
        for md in md_paths:
            md.parent.mkdir(parents=True, exist_ok=True)
            md.write_text(self.markdown(meta, rows, checks, charts, md))
        print(f"== wrote {', '.join(str(p) for p in [out_dir / 'results.json', *md_paths])}")
        if charts:
            print(f"   charts: {', '.join(str(c) for c in charts)}")
        elif not has_matplotlib():
            print("   (no charts: matplotlib is not importable)")

    def markdown(
        self,
        meta: dict[str, Any],
        rows: list[Summary],
        checks: list[Check],
        charts: list[Path],
        md_path: Path,
    ) -> str:
        m = meta["machine"]
        lines = ["# segdl benchmark results", ""]
        if self.quick:
            lines += [
                "> **DRAFT - SMOKE RUN (`--quick`)**: reduced sizes and a single repeat. These",
                "> figures only show that the harness works; they are not representative results",
                "> and must be replaced by a full run (`python benchmarks/run.py`).",
                "",
            ]
        lines += [
            f"Generated {meta['finished']} by `{meta['command']}`",
            f"({meta['repeat']} repeat(s) per case, medians; tools alternate run by run).",
            "",
            "## Machine",
            "",
            "| | |",
            "|---|---|",
            f"| CPU | {m['cpu_model']} ({m['cpu_count']} logical, {m['cpu_affinity']} usable) |",
            f"| RAM | {m['ram']} |",
            f"| OS / kernel | {m['os']} / {m['kernel']} |",
            f"| Python | {m['python']} (`{m['python_executable']}`) |",
            f"| Download file system | {m['download_fs']} |",
            "",
            "## Tools and servers",
            "",
            "| tool | version | command (URL and output vary) |",
            "|---|---|---|",
        ]
        examples = self.example_argvs()
        for name, info in self.tools.items():
            version = info.version if info.path else f"not run: {info.note}"
            lines.append(f"| {name} | {version} | `{examples.get(name, '')}` |")
        lines += ["", "| server | implementation |", "|---|---|"]
        for kind, server in self.servers.items():
            lines.append(f"| {kind} | {server.describe()} |")
        lines += [
            "",
            "## Targets",
            "",
            "| id | target | measured | result | margin |",
            "|---|---|---|---|---|",
        ]
        for c in checks:
            lines.append(f"| {c.id} | {c.target} | {c.measured} | **{c.result}** | {c.margin} |")
        if self.quick:
            lines += ["", "_Smoke-run sizes are far too small for these targets to mean anything._"]
        for scenario in self.scenarios():
            srows = [r for r in rows if r.scenario == scenario]
            lines += ["", f"## {SCENARIOS[scenario]}", ""]
            lines += scenario_intro(scenario, self)
            lines += markdown_table(scenario, srows)
            for chart in charts:
                if chart.stem == scenario:
                    rel = os.path.relpath(chart, md_path.parent)
                    lines += ["", f"![{scenario}]({rel})"]
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in self.auto_notes(meta)]
        return "\n".join(lines) + "\n"

    def example_argvs(self) -> dict[str, str]:
        examples: dict[str, str] = {}
        url, out = "URL", Path("OUT")
        for tool in self.tools:
            if not self.available(tool):
                continue
            case = Case("unthrottled", tool, tool, 1 if tool == "curl" else self.opts.conns, 0)
            argv = self.argv_for(case, url, out)
            argv = [a.replace(f"--dir={out.parent}", "--dir=DIR") for a in argv]
            examples[tool] = shlex.join(argv)
        return examples

    def auto_notes(self, meta: dict[str, Any]) -> list[str]:
        notes = list(self.notes)
        loads = [r.loadavg_before for r in self.records] + [r.loadavg_after for r in self.records]
        if loads:
            notes.append(
                f"1-minute load average during the runs: {min(loads):.2f}-{max(loads):.2f} "
                f"on {meta['machine']['cpu_count']} CPUs (other work on the machine adds noise)."
            )
        startup = self.startup
        if startup.get("segdl --help") is not None:
            notes.append(
                f"segdl runs as `{shlex.join(self.segdl_cmd)}`; its wall times include interpreter "
                f"start-up and imports: `segdl --help` takes {startup['segdl --help']:.3f} s, "
                f"`python -c pass` {startup.get('python -c pass') or 0:.3f} s (medians)."
            )
        if self.time_bin:
            notes.append(
                "CPU = user+sys from os.wait4 on each tool's own process tree; peak RSS from GNU "
                "time's report of the tool (a child's ru_maxrss would start at the exec'ing "
                "process's high-water mark)."
            )
        else:
            notes.append(
                "CPU and peak RSS from os.wait4; RSS values cannot be below the parent "
                f"harness's high-water mark ({meta['parent_rss_hwm_kib']} KiB)."
            )
        if "aria2c" in self.tools:
            notes.append(
                f"aria2c uses --file-allocation={self.aria2_alloc}: its default (prealloc) may "
                "write the whole file before downloading; falloc (when the file system supports "
                "it) or none are its cheapest modes, so it is not handicapped. aria2c caps -x at "
                "16 and -k at >= 1M."
            )
        if any(s.impl == "nginx" and s.kind != "unthrottled" for s in self.servers.values()):
            notes.append(
                "nginx's limit_rate applies per request: each response's first "
                f"sendfile_max_chunk ({human_size(self.opts.chunk)}) goes out unthrottled, so a "
                "tool issuing many small range requests gains a little over the ideal n x rate."
            )
        if "stragglers" in self.servers:
            notes.append(
                "The stragglers server is restarted before every run so connection numbers (and "
                "therefore which connections are slow) start over for each tool."
            )
        notes.append(
            "Every run's output was compared with the source by size and sha256; a run "
            "that fails or produces a wrong file is shown as FAIL without a time."
        )
        notes.append("Throughput is in MiB/s (2^20 bytes per second), like the rates.")
        return notes


def fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            cols = line.split()
            if len(cols) < 3:
                continue
            mnt = cols[1]
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, f"{cols[2]} ({cols[0]} on {mnt})"
    return kind


def scenario_intro(scenario: str, bench: Bench) -> list[str]:
    o = bench.opts
    sizes = ", ".join(human_size(s) for s in bench.sizes(scenario))
    rate, slow = human_size(o.rate), human_size(o.slow_rate)
    text = {
        "throttled": f"{sizes}, {rate}/s per connection; ideal = n x {rate}/s.",
        "stragglers": f"{sizes}, {o.conns} connections; every {o.straggler_every}th connection "
        f"at {slow}/s, the others at {rate}/s.",
        "unthrottled": f"{sizes} over loopback, no rate limit.",
        "memory": f"{sizes}, unthrottled, {o.conns} connections; peak RSS of each tool's process.",
        "overhead": f"{sizes}, unthrottled; both variants run on a pseudo-terminal so the bar "
        "really draws (`tty bytes` = what the tool wrote to the terminal).",
    }[scenario]
    return [text, ""]


def markdown_table(scenario: str, rows: list[Summary]) -> list[str]:
    cols = ["tool", "size", "runs ok", "wall s (median)", "min-max s", "MiB/s"]
    if scenario == "throttled":
        cols += ["ideal MiB/s", "speed-up vs segdl -n1"]
        cols += ["server window s", "server MiB/s", "server speed-up"]
    cols += ["wall ÷ aria2c", "CPU s", "CPU ÷ aria2c", "peak RSS MiB"]
    cols += ["requests", "conns", "served MiB"]
    if scenario == "overhead":
        cols += ["tty bytes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r.size, TOOLS.index(r.tool), r.conns, r.label)):
        failed = r.status != "ok"
        wall = (
            f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
            if failed
            else fmt(r.wall_s)
        )
        cells = [
            r.label,
            human_size(r.size),
            f"{r.ok_runs}/{r.runs}",
            wall,
            "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
            fmt(r.throughput_mib_s, 1),
        ]
        if scenario == "throttled":
            cells += [fmt(r.ideal_mib_s, 0), fmt(r.speedup_vs_n1, 2, "x")]
            window = r.server_window_s
            cells += [
                fmt(window),
                fmt(r.size / MiB / window if window else None, 1),
                fmt(r.server_speedup_vs_n1, 2, "x"),
            ]
        cells += [
            fmt(r.wall_vs_aria2c),
            fmt(r.cpu_s),
            fmt(r.cpu_vs_aria2c),
            fmt(r.maxrss_mib, 1),
            fmt(r.requests, 0),
            fmt(r.connections, 0),
            fmt(r.served_mib, 1),
        ]
        if scenario == "overhead":
            cells.append(fmt(r.tty_bytes, 0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# --------------------------------------------------------------------------- checks


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
) -> Check:
    bad = unusable(target, [row])
    value = get(row) if row is not None else None
    if bad or value is None:
        return bad or make_check(target, "no data", "SKIP", "-")
    margin = (limit - value) / limit
    result = "PASS" if value <= limit else "MISS"
    text = f"{margin:+.1%} headroom vs {limit:.1f} {unit}"
    return make_check(target, f"{value:.1f} {unit}", result, text, margin)


def ratio_at_most(
    target: str,
    row: Summary | None,
    ref: Summary | None,
    get: Callable[[Summary], float | None],
    limit: float,
) -> Check:
    bad = unusable(target, [row, ref])
    a = get(row) if row is not None else None
    b = get(ref) if ref is not None else None
    if bad or a is None or not b:
        return bad or make_check(target, "no data", "SKIP", "-")
    ratio = a / b
    margin = (limit - ratio) / limit
    measured = f"segdl {a:.2f} vs aria2c {b:.2f} (ratio {ratio:.3f})"
    result = "PASS" if ratio <= limit else "MISS"
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


# --------------------------------------------------------------------------- charts


def has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_charts(
    out_dir: Path,
    rows: list[Summary],
    servers: dict[str, ManagedServer],
    sizes: Callable[[str], list[int]],
    scenarios: list[str],
) -> list[Path]:
    for name in SCENARIOS:  # never leave a chart of an earlier run next to these results
        (out_dir / f"{name}.png").unlink(missing_ok=True)
    if not has_matplotlib():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: list[Path] = []
    ok = [r for r in rows if r.status == "ok"]
    if "throttled" in scenarios:
        size = sizes("throttled")[0]
        seg = sorted(
            (r for r in ok if r.scenario == "throttled" and r.tool == "segdl" and r.size == size),
            key=lambda r: r.conns,
        )
        peers = [r for r in ok if r.scenario == "throttled" and r.tool != "segdl"]
        if seg or peers:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            rate = servers["throttled"].rate / MiB
            xs = sorted({r.conns for r in seg + peers})
            ax.plot(xs, [x * rate for x in xs], "k--", label=f"ideal n x {rate:g} MiB/s")
            if seg:
                ax.plot(
                    [r.conns for r in seg],
                    [r.throughput_mib_s or 0.0 for r in seg],
                    "o-",
                    label="segdl",
                )
            for tool, marker in (("aria2c", "s"), ("axel", "^"), ("curl", "D")):
                pts = sorted((r for r in peers if r.tool == tool), key=lambda r: r.conns)
                if pts:
                    ax.plot(
                        [r.conns for r in pts],
                        [r.throughput_mib_s or 0.0 for r in pts],
                        marker,
                        linestyle=":" if len(pts) > 1 else "none",
                        label=tool,
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel("connections")
            ax.set_ylabel("throughput (MiB/s, median)")
            ax.set_title(f"Throttled {rate:g} MiB/s per connection, {human_size(size)}")
            ax.grid(True, alpha=0.3)
            ax.legend()
            charts.append(_save(fig, out_dir / "throttled.png"))
    for scenario in ("stragglers", "unthrottled", "overhead"):
        if scenario not in scenarios:
            continue
        srows = sorted(
            (r for r in ok if r.scenario == scenario), key=lambda r: (TOOLS.index(r.tool), r.label)
        )
        if not srows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
        labels = [r.label for r in srows]
        ax1.bar(labels, [r.wall_s or 0 for r in srows], color="tab:blue")
        ax1.set_ylabel("wall time (s, median)")
        ax2.bar(labels, [r.cpu_s or 0 for r in srows], color="tab:orange")
        ax2.set_ylabel("CPU user+sys (s, median)")
        for ax in (ax1, ax2):
            ax.tick_params(axis="x", rotation=30)
            ax.grid(True, axis="y", alpha=0.3)
        fig.suptitle(f"{scenario} ({human_size(srows[0].size)})")
        charts.append(_save(fig, out_dir / f"{scenario}.png"))
    if "memory" in scenarios:
        mrows = [r for r in ok if r.scenario == "memory"]
        if mrows:
            fig, ax = plt.subplots(figsize=(7, 4))
            msizes = sizes("memory")
            tools = [t for t in TOOLS if any(r.tool == t for r in mrows)]
            width = 0.8 / max(1, len(msizes))
            for i, size in enumerate(msizes):
                vals = []
                for tool in tools:
                    match = [r for r in mrows if r.tool == tool and r.size == size]
                    vals.append(match[0].maxrss_max_mib or 0 if match else 0)
                ax.bar(
                    [j + i * width for j in range(len(tools))], vals, width, label=human_size(size)
                )
            ax.axhline(
                TARGET_RSS / MiB,
                color="red",
                linestyle="--",
                label=f"target {human_size(TARGET_RSS)}",
            )
            ax.set_xticks([j + width * (len(msizes) - 1) / 2 for j in range(len(tools))], tools)
            ax.set_ylabel("peak RSS (MiB, max over runs)")
            ax.set_title("Peak RSS, unthrottled")
            ax.legend()
            ax.grid(True, axis="y", alpha=0.3)
            charts.append(_save(fig, out_dir / "memory.png"))
    return charts


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Benchmark segdl against aria2c, axel and curl on loopback nginx servers.",
        epilog="Scenarios: "
        + "; ".join(f"{k} ({a})" for a, k in ALIASES.items())
        + ". Sizes use binary units (K, M, G).",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="scenario(s) to run, comma separated or repeated: "
        "throttled/a, stragglers/b, unthrottled/c, memory/d, overhead/e, all "
        "(default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: small sizes and 1 repeat (about a minute)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per case, medians reported (default 3, 1 with --quick)",
    )
    p.add_argument(
        "--warmup", type=int, default=0, help="unrecorded warm-up rounds per scenario (default 0)"
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="tools to run, comma separated; missing peers are skipped "
        "(default: all of %(default)s)",
    )
    p.add_argument(
        "--server",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="server implementation; auto (default) = nginx, installed with apt-get "
        "when missing, else python",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install missing nginx/aria2/axel/curl/time",
    )
    p.add_argument(
        "--rate",
        type=parse_size,
        default=parse_size("8M"),
        help="per-connection rate of the throttled servers, bytes/s (default 8M)",
    )
    p.add_argument(
        "--slow-rate",
        type=parse_size,
        default=parse_size("1M"),
        help="rate of the slow connections in stragglers (default 1M)",
    )
    p.add_argument(
        "--straggler-every",
        type=int,
        choices=(2, 5, 10),
        default=5,
        help="stragglers: every Nth connection is slow (default 5)",
    )
    p.add_argument(
        "--chunk",
        type=parse_size,
        default=parse_size("256K"),
        help="throttling granularity: nginx sendfile_max_chunk / Python token bucket "
        "(default 256K)",
    )
    p.add_argument(
        "--nginx-workers", type=int, default=1, help="nginx worker_processes (default 1)"
    )
    p.add_argument(
        "--conns",
        type=int,
        default=16,
        help="connections for stragglers, unthrottled, memory and overhead (default 16)",
    )
    p.add_argument(
        "--sweep",
        type=parse_int_list,
        default=parse_int_list("1,2,4,8,16"),
        help="segdl -n values for the throttled scenario (default 1,2,4,8,16)",
    )
    p.add_argument(
        "--peers-sweep",
        action="store_true",
        help="also run aria2c/axel at every --sweep value (default: only the largest)",
    )
    p.add_argument(
        "--split",
        type=parse_size,
        default=parse_size("1M"),
        help="minimum split size: segdl -k and aria2c -k (default 1M)",
    )
    for name in ("throttled", "stragglers", "unthrottled", "overhead"):
        p.add_argument(
            f"--size-{name}",
            type=parse_size_list,
            default=None,
            metavar="SIZE",
            help=f"file size for {name} (default {full_default(name)}, "
            f"--quick {quick_default(name)})",
        )
    p.add_argument(
        "--size-memory",
        type=parse_size_list,
        default=None,
        metavar="SIZES",
        help=f"comma separated sizes for memory (default {full_default('memory')}, "
        f"--quick {quick_default('memory')})",
    )
    p.add_argument(
        "--aria2-file-allocation",
        default="auto",
        choices=("auto", "none", "prealloc", "trunc", "falloc"),
        help="aria2c --file-allocation; auto = falloc if the download file system "
        "supports fallocate, else none",
    )
    p.add_argument(
        "--segdl-cmd",
        default=None,
        help="command prefix for segdl (default: sys.executable -m segdl)",
    )
    p.add_argument(
        "--rusage",
        choices=("time", "wait4"),
        default="time",
        help="peak RSS via GNU /usr/bin/time (default; accurate) or os.wait4 only",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-run timeout in seconds (default: from size and slowest rate)",
    )
    p.add_argument("--tmpdir", default=None, help="where the temporary directory is created")
    p.add_argument(
        "--download-dir",
        default=None,
        help="parent of the (shared, emptied between runs) download directory; "
        "default: inside the temporary directory",
    )
    p.add_argument(
        "--out",
        default=str(HERE / "results"),
        help="output directory for results.json, results.md and charts "
        "(default benchmarks/results)",
    )
    p.add_argument(
        "--results-md",
        default=None,
        help="also write the Markdown report here (e.g. benchmarks/RESULTS.md)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory")
    opts = p.parse_args(argv)

    chosen: list[str] = []
    for item in opts.scenario or ["all"]:
        for name in item.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "all":
                chosen += list(SCENARIOS)
                continue
            name = ALIASES.get(name, name)
            if name not in SCENARIOS:
                p.error(f"unknown scenario {name!r}")
            chosen.append(name)
    opts.scenario = chosen
    tools = [t.strip() for t in opts.tools.split(",") if t.strip()]
    for tool in tools:
        if tool not in TOOLS:
            p.error(f"unknown tool {tool!r} (choose from {', '.join(TOOLS)})")
    opts.tools = tools
    if opts.repeat is None:
        opts.repeat = 1 if opts.quick else 3
    if opts.repeat < 1 or opts.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    if not 1 <= opts.conns <= 64 or max(opts.sweep) > 64:
        p.error("connections must be within 1..64")
    if opts.slow_rate >= opts.rate:
        p.error("--slow-rate must be below --rate")
    return opts


def full_default(name: str) -> str:
    return ",".join(size_token(s) for s in FULL_SIZES[name])


def quick_default(name: str) -> str:
    return ",".join(size_token(s) for s in QUICK_SIZES[name])


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_serve"]:
        return serve_main(args[1:])
    opts = parse_args(args)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    bench = Bench(opts)
    try:
        print(f"temporary directory {bench.tmp}, downloads in {bench.dl_dir}", flush=True)
        bench.setup_tools()
        if not any(bench.available(t) for t in opts.tools):
            print("no tool available to benchmark", file=sys.stderr)
            return 2
        bench.setup_files()
        bench.setup_servers()
        bench.measure_startup()
        bench.run()
        rows = bench.summarize()
        checks = bench.checks(rows)
        bench.write(rows, checks)
        print("== targets")
        for c in checks:
            print(f"  {c.result:4s} {c.id} {c.target}: {c.measured}; margin {c.margin}")
        failed = [r for r in bench.records if not r.ok]
        if failed:
            print(f"{len(failed)} run(s) FAILED", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.close()


if __name__ == "__main__":
    sys.exit(main())
