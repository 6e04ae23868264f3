"""Server processes (nginx, or the fallback Python server) and their access logs.

Every server is its own process group on 127.0.0.1 and a free port, running out of a
directory in the harness's temporary directory. `kind` selects the configuration:

* throttled: ``sendfile_max_chunk --chunk; limit_rate --rate;`` per connection
* stragglers: the same, but every Nth connection at ``--slow-rate``
* unthrottled: no limit (also the server of batch-small)
* noburst: ``sendfile_max_chunk --noburst-chunk (64k); limit_rate --rate;`` (noburst, batch-mixed)
* anypath: no limit, and every path is answered with one tiny file (batch-list)
* tls: no limit, HTTPS with HTTP/2 (ALPN h2 and http/1.1), a certificate for 127.0.0.1-127.0.0.N
  and localhost from a CA made here with openssl (`ca.pem` in its directory); a second access
  log records each request's protocol (the request scenarios, behind a DelayProxy)
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
TLS_KINDS = ("tls",)  # nginx only
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
        self.tls_hosts: int = getattr(opts, "hosts", 64)
        self.h2_max_streams: int = getattr(opts, "h2_max_streams", 128)
        self.ca_path = workdir / "ca.pem"
        self.proto_log = workdir / "protocol.log"  # tls: '<conn> <protocol>' per request

    def rate_directives(self) -> list[str]:
        if self.kind in ("unthrottled", "anypath", *TLS_KINDS):
            return []  # default sendfile_max_chunk
        lines = [f"sendfile_max_chunk {nginx_size(self.chunk)};"]
        if self.kind in ("throttled", "noburst"):
            return [*lines, f"limit_rate {nginx_size(self.rate)};"]
        # limit_rate takes variables since 1.17.0; before that set $limit_rate.
        if self.version >= (1, 17, 0):
            return [*lines, "limit_rate $bench_rate;"]
        return [*lines, "set $limit_rate $bench_rate;"]

    def tls_directives(self) -> str:
        """tls: the listen line and the certificate (listen ... ssl http2 before 1.25.1)."""
        if self.version >= (1, 25, 1):
            listen = f"        listen 127.0.0.1:{self.port} ssl;\n        http2 on;\n"
        else:
            listen = f"        listen 127.0.0.1:{self.port} ssl http2;\n"
        w = self.workdir
        return (
            listen + f"        ssl_certificate {w}/server.pem;\n"
            f"        ssl_certificate_key {w}/server.key;\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_session_cache shared:SSL:10m;\n"
            f"        http2_max_concurrent_streams {self.h2_max_streams};\n"
            f"        access_log {self.proto_log} proto;\n"
            f"        access_log {self.log_path} bench;\n"
        )

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
            "    log_format proto '$connection $server_protocol';\n"
            f"    access_log {self.log_path} bench;\n"
            f"{map_block}"
            "    server {\n"
            + (
                self.tls_directives()
                if self.kind in TLS_KINDS
                else f"        listen 127.0.0.1:{self.port};\n"
            )
            + "        server_name localhost;\n"
            f"        root {self.docroot};\n"
            f"{rate}"
            "    }\n"
            "}\n"
        )

    def prepare(self) -> None:
        (self.workdir / "tmp").mkdir(exist_ok=True)
        if self.kind in TLS_KINDS and not self.ca_path.exists():
            make_tls_files(self.workdir, self.tls_hosts)
        self.conf.write_text(self.config_text())

    def url(self, name: str) -> str:
        scheme = "https" if self.kind in TLS_KINDS else "http"
        return f"{scheme}://127.0.0.1:{self.port}/{name}"

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
        if self.kind in TLS_KINDS:
            directives += (
                f", HTTPS (`listen ... ssl http2`, TLS 1.2/1.3, ECDSA P-256 certificate from a CA "
                f"made with openssl), http2_max_concurrent_streams {self.h2_max_streams}"
            )
        return f"nginx {version}, sendfile on, {directives}"


def make_tls_files(folder: Path, hosts: int) -> None:
    """ca.pem (a self-signed CA), server.pem and server.key (ECDSA P-256) valid for
    127.0.0.1-127.0.0.<hosts> and localhost, made with the openssl command."""
    names = ",".join(f"IP:127.0.0.{i}" for i in range(1, hosts + 1)) + ",DNS:localhost"
    ext = folder / "server-ext.cnf"
    ext.write_text(
        f"subjectAltName={names}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
         "-subj", "/CN=segbench test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "30", "-extfile", ext.name],
    ]  # fmt: skip
    for argv in steps:
        proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()[-500:]}")


def protocol_counts(path: Path, offset: int) -> dict[str, int]:
    """tls: requests per protocol ("HTTP/2.0", "HTTP/1.1") logged since `offset`."""
    counts: dict[str, int] = {}
    try:
        with path.open("rb") as log:
            log.seek(offset)
            for raw in log:
                cols = raw.decode("ascii", "replace").split()
                if len(cols) == 2:
                    counts[cols[1]] = counts.get(cols[1], 0) + 1
    except OSError:
        pass
    return counts


class DelayProxy(ManagedServer):
    """The delaying TCP proxy (delayproxy.py) in front of `target`, listening on
    127.0.0.1-127.0.0.<hosts> at one port: `host_url(i, name)` goes through host i."""

    impl = "delayproxy"

    def __init__(
        self, target: ManagedServer, workdir: Path, opts: argparse.Namespace, delay_ms: float
    ) -> None:
        super().__init__(f"delay-{target.kind}", target.docroot, workdir, opts)
        self.target = target
        self.hosts: int = opts.hosts
        self.delay_ms = delay_ms

    def command(self) -> list[str]:
        return [
            sys.executable,
            str(RUN_PY),
            "_delayproxy",
            f"--listen-port={self.port}",
            f"--hosts={self.hosts}",
            f"--target-port={self.target.port}",
            f"--delay-ms={self.delay_ms}",
        ]

    def host_url(self, host: int, name: str) -> str:
        scheme = "https" if self.target.kind in TLS_KINDS else "http"
        return f"{scheme}://127.0.0.{host}:{self.port}/{name}"

    def url(self, name: str) -> str:
        return self.host_url(1, name)

    def describe(self) -> str:
        return (
            f"delaying TCP proxy (delayproxy.py, asyncio) on 127.0.0.1-127.0.0.{self.hosts}, "
            f"{self.delay_ms:g} ms each way ({2 * self.delay_ms:g} ms round trip; a new "
            f"connection's TCP handshake is not delayed), in front of the {self.target.kind} server"
        )
