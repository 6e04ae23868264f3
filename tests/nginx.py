"""A real nginx for the tests: HTTPS with HTTP/2 (a CA made by trustme) and plain HTTP/1.1.

`NginxServer` runs one nginx in the foreground (`daemon off`, one worker) out of a temporary
prefix: its config, pid, error and access logs and temp paths all live there, so nothing under
/etc, /var or /run is touched. It serves the files the test puts in `root`:

* `url(name)`: https://127.0.0.1:PORT/name, TLS with ALPN h2 and http/1.1 (`ca_path` is the CA
  bundle to trust: segdl's `--ca-certificate`, curl's `--cacert`);
* `http_url(name)`: http://127.0.0.1:PORT2/name, plain HTTP/1.1, for comparison.

Every request is logged as one JSON object per line (nginx's `escape=json`), written when the
request ends and unbuffered; `requests()` parses them into `LogRecord`s: the protocol that was
spoken (`HTTP/2.0`, `HTTP/1.1`), the status, the request line, the Range header, and the
connection serial number with its request count, so a test can assert which protocol was used
and over how many connections. `http2_max_concurrent_streams` is the SETTINGS_MAX_CONCURRENT_STREAMS
nginx announces; `server_settings()` reads that SETTINGS frame off the wire.

The fixtures (`nginx_h2`, `nginx_h2_capped`) are in conftest.py; they skip, saying so, only
where no nginx binary is installed (`.ci/run` installs Debian's `nginx`, which has the ssl and
http_v2 modules).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import trustme

HOST = "127.0.0.1"
_LOG_FORMAT = (
    '{"protocol":"$server_protocol","scheme":"$scheme","port":"$server_port",'
    '"status":"$status","request":"$request","range":"$http_range",'
    '"connection":"$connection","connection_requests":"$connection_requests",'
    '"bytes_sent":"$bytes_sent","body_bytes_sent":"$body_bytes_sent"}'
)


@dataclass(frozen=True)
class LogRecord:
    """One request as nginx logged it."""

    protocol: str  # "HTTP/2.0", "HTTP/1.1", "HTTP/1.0"
    scheme: str  # "https" or "http"
    port: int
    status: int
    request: str  # the request line, e.g. "GET /a.bin HTTP/2.0"
    range: str  # the Range header, "" when absent
    connection: int  # nginx's connection serial number
    connection_requests: int  # the request's number on its connection (1 = the first)
    bytes_sent: int  # headers and body
    body_bytes_sent: int

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def path(self) -> str:
        parts = self.request.split(" ")
        return parts[1] if len(parts) > 1 else ""


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / "nginx"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def nginx_version(binary: str) -> tuple[int, ...]:
    proc = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/([0-9.]+)", proc.stderr + proc.stdout)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """True once something LISTENs on 127.0.0.1:port (read from /proc: a probe connection
    would take a connection number)."""
    needle = f"0100007F:{port:04X}"
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        with socket.socket() as sock:
            return sock.connect_ex((HOST, port)) == 0
    return any(
        len(cols) > 3 and cols[1] == needle and cols[3] == "0A"
        for cols in (line.split() for line in table.splitlines()[1:])
    )


class NginxServer:
    """One nginx out of `prefix`; see the module docstring. Use as a context manager."""

    def __init__(
        self,
        prefix: Path,
        *,
        max_concurrent_streams: int = 128,
        binary: str | None = None,
        extra_http: str = "",
    ) -> None:
        found = binary or nginx_binary()
        if found is None:
            raise FileNotFoundError("nginx")
        self.binary = found
        self.version = nginx_version(found)
        self.prefix = prefix
        self.root = prefix / "www"
        self.max_concurrent_streams = max_concurrent_streams
        self.extra_http = extra_http
        self.ca = trustme.CA()
        self.ca_path = prefix / "ca.pem"
        self.cert_path = prefix / "server.pem"  # key and chain
        self.conf = prefix / "nginx.conf"
        self.access_log = prefix / "access.log"
        self.error_log = prefix / "error.log"
        self.port = 0  # https (h2 and http/1.1)
        self.http_port = 0  # plain http/1.1
        self.proc: subprocess.Popen[bytes] | None = None

    # -- urls and logs ---------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"https://{HOST}:{self.port}/{name.lstrip('/')}"

    def http_url(self, name: str) -> str:
        return f"http://{HOST}:{self.http_port}/{name.lstrip('/')}"

    def requests(self) -> list[LogRecord]:
        """Every request logged so far, in the order nginx finished them."""
        try:
            text = self.access_log.read_text()
        except FileNotFoundError:
            return []
        records = []
        for line in text.splitlines():
            if not line.strip():
                continue
            raw = json.loads(line)
            records.append(
                LogRecord(
                    protocol=raw["protocol"],
                    scheme=raw["scheme"],
                    port=int(raw["port"]),
                    status=int(raw["status"]),
                    request=raw["request"],
                    range=raw["range"],
                    connection=int(raw["connection"]),
                    connection_requests=int(raw["connection_requests"]),
                    bytes_sent=int(raw["bytes_sent"]),
                    body_bytes_sent=int(raw["body_bytes_sent"]),
                )
            )
        return records

    def wait_requests(self, count: int, timeout: float = 10.0) -> list[LogRecord]:
        """The records once at least `count` are logged (nginx logs a request when it ends,
        which can be just after the client has read the last byte)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.requests()
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.01)

    def clear_log(self) -> None:
        """Forget the records so far (nginx keeps appending to the same file)."""
        with self.access_log.open("r+b") as log:
            log.truncate(0)

    # -- lifecycle -------------------------------------------------------------------------

    def config_text(self) -> str:
        p = self.prefix
        if self.version >= (1, 25, 1):
            tls_listen = f"listen {HOST}:{self.port} ssl;\n        http2 on;"
        else:
            tls_listen = f"listen {HOST}:{self.port} ssl http2;"
        user = "user root;\n" if os.geteuid() == 0 else ""
        temps = "".join(
            f"    {name}_temp_path {p}/tmp/{name};\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"{user}daemon off;\n"
            "master_process on;\n"
            "worker_processes 1;\n"
            f"pid {p}/nginx.pid;\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    types { application/octet-stream bin; text/plain txt; }\n"
            "    default_type application/octet-stream;\n"
            "    sendfile on;\n"
            "    keepalive_timeout 75s;\n"
            "    keepalive_requests 100000;\n"
            f"    http2_max_concurrent_streams {self.max_concurrent_streams};\n"
            f"{temps}"
            f"    log_format segdl escape=json '{_LOG_FORMAT}';\n"
            f"    access_log {self.access_log} segdl;\n"
            f"{self.extra_http}"
            "    server {\n"
            f"        {tls_listen}\n"
            "        server_name localhost;\n"
            f"        ssl_certificate {self.cert_path};\n"
            f"        ssl_certificate_key {self.cert_path};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        root {self.root};\n"
            "    }\n"
            "    server {\n"
            f"        listen {HOST}:{self.http_port};\n"
            "        server_name localhost;\n"
            f"        root {self.root};\n"
            "    }\n"
            "}\n"
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.prefix / "tmp").mkdir(exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        cert = self.ca.issue_cert(HOST, "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.cert_path))
        out = self.prefix / "nginx.out"
        for _attempt in range(3):
            self.port, self.http_port = _free_port(), _free_port()
            self.conf.write_text(self.config_text())
            argv = [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf)]
            if self.version >= (1, 19, 5):
                argv += ["-e", str(self.error_log)]  # never /var/log/nginx, even at start-up
            with out.open("ab") as sink:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _listening(self.port) and _listening(self.http_port):
                    return
                time.sleep(0.01)
            self.stop()  # exited (a port taken meanwhile?) or too slow: try other ports
        errors = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        raise RuntimeError(
            f"nginx did not start:\n{out.read_text(errors='replace')[-2000:]}\n{errors[-2000:]}"
        )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: fast shutdown of master and worker
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- HTTP/2 on the wire ---------------------------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3


def _read_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed before the server's SETTINGS")
        data += chunk
    return data


def server_settings(port: int, ca_path: Path, host: str = HOST) -> dict[int, int]:
    """The SETTINGS the server sends first on an HTTP/2 connection (ALPN h2), by identifier
    (SETTINGS_MAX_CONCURRENT_STREAMS is 0x3). Raises if the server does not pick h2."""
    context = ssl.create_default_context(cafile=str(ca_path))
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as sock,
    ):
        if sock.selected_alpn_protocol() != "h2":
            raise ConnectionError(f"ALPN chose {sock.selected_alpn_protocol()!r}, not h2")
        sock.sendall(_PREFACE + struct.pack(">I", 0)[1:] + bytes([0x4, 0x0]) + bytes(4))
        while True:
            head = _read_exact(sock, 9)
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            payload = _read_exact(sock, length)
            if kind == 0x4 and not flags & 0x1:  # SETTINGS, not an ACK
                return {
                    int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(
                        payload[i + 2 : i + 6], "big"
                    )
                    for i in range(0, len(payload), 6)
                }
