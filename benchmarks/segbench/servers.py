"""Server processes (nginx, or the fallback Python server) and their access logs.

Every server is its own process group on 127.0.0.1 and a free port, running out of a
directory in the harness's temporary directory. `kind` selects the configuration:

* throttled: ``sendfile_max_chunk --chunk; limit_rate --rate;`` per connection
* stragglers: the same, but every Nth connection at ``--slow-rate``
* unthrottled: no limit (also the server of batch-small)
* noburst: ``sendfile_max_chunk --noburst-chunk (64k); limit_rate --rate;`` (noburst, batch-mixed)
* anypath: no limit, and every path is answered with one tiny file (batch-list)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .units import human_size, nginx_size

RUN_PY = Path(__file__).resolve().parent.parent / "run.py"
THROTTLED_KINDS = ("throttled", "stragglers", "noburst")
ANY_PATH_FILE = "batch-list-item.bin"  # what the anypath server answers for every path


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
    first_start: float | None = None  # epoch seconds when the first request started


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
    return LogStats(requests, len(conns), served, window, min(starts) if starts else None)


class LogTail:
    """Counts, while a tool runs, the access-log lines since `offset` that delivered a body
    (status 2xx and bytes > 0): one per item for the one-byte files of batch-list.
    Reading only the new bytes keeps each poll cheap."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset
        self.partial = b""
        self.items = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except OSError:
            return self.items
        self.offset += len(data)
        *complete, self.partial = (self.partial + data).split(b"\n")
        for raw in complete:
            cols = raw.split()
            if len(cols) >= 4 and cols[2].startswith(b"2") and cols[3] not in (b"0", b"-"):
                self.items += 1
        return self.items


class ManagedServer:
    """A server process on 127.0.0.1:port; `kind` is one of the kinds in the module docstring."""

    impl = "?"

    def __init__(self, kind: str, docroot: Path, workdir: Path, opts: argparse.Namespace) -> None:
        self.kind = kind
        self.docroot = docroot
        self.workdir = workdir
        self.rate: int = opts.rate if kind in THROTTLED_KINDS else 0
        self.slow_rate: int = opts.slow_rate if kind == "stragglers" else 0
        self.every: int = opts.straggler_every if kind == "stragglers" else 0
        self.chunk: int = opts.noburst_chunk if kind == "noburst" else opts.chunk
        self.any_path: str = ANY_PATH_FILE if kind == "anypath" else ""
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
            str(RUN_PY),
            "_serve",
            f"--root={self.docroot}",
            f"--port={self.port}",
            f"--rate={self.rate}",
            f"--slow-rate={self.slow_rate}",
            f"--every={self.every}",
            f"--chunk={self.chunk}",
            f"--log={self.log_path}",
            *([f"--any-path={self.any_path}"] if self.any_path else []),
        ]

    def describe(self) -> str:
        if self.kind == "anypath":
            return f"Python ThreadingHTTPServer, no limit, every path serves /{ANY_PATH_FILE}"
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
        if self.kind in ("unthrottled", "anypath"):
            return []  # default sendfile_max_chunk
        lines = [f"sendfile_max_chunk {nginx_size(self.chunk)};"]
        if self.kind in ("throttled", "noburst"):
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
        if self.any_path:  # batch-list: every URL is a valid download of one tiny file
            rate += f"        location / {{ rewrite ^ /{self.any_path} break; }}\n"
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
        if self.kind == "noburst":
            directives += " (no limit_rate_after)"
        if self.any_path:
            directives += f", every path rewritten to /{self.any_path}"
        return f"nginx {version}, sendfile on, {directives}"
