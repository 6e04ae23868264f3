"""Real proxies for the tests: Debian's `tinyproxy` (HTTP, CONNECT) and `microsocks` (SOCKS5),
each started on a free loopback port with a configuration of its own, and read back from its
log (what it was asked to fetch). Fixtures skip only when the binary is not installed (the CI
script installs both: `apt-get install tinyproxy microsocks`).

Import the fixtures into a test module (`from proxies import start_tinyproxy, ...`).
"""

from __future__ import annotations

import contextlib
import re
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

HANG_GUARD = 30.0  # seconds: only ever reached when something is wrong

__all__ = [
    "Proxy",
    "TLSFront",
    "free_port",
    "start_microsocks",
    "start_tinyproxy",
]


def free_port() -> int:
    """A loopback TCP port nothing listens on now (tinyproxy takes no `Port 0`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proxy:
    """A proxy process on 127.0.0.1:`port`; `url` carries the credentials it requires."""

    def __init__(
        self,
        scheme: str,
        argv: list[str],
        port: int,
        log: Path,
        auth: tuple[str, str] | None,
        output: Path,
    ) -> None:
        self.scheme, self.port, self.log_path, self.auth = scheme, port, log, auth
        with open(output, "wb") as out:  # microsocks logs there; tinyproxy to its LogFile
            self.process = subprocess.Popen(
                argv,
                cwd=output.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._wait_listening()

    @property
    def url(self) -> str:
        """The proxy's URL, with its credentials."""
        user = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"{self.scheme}://{user}127.0.0.1:{self.port}"

    def url_with(self, scheme: str | None = None, password: str | None = None) -> str:
        """The URL with another scheme (socks5h) or another password."""
        user = ""
        if self.auth is not None:
            user = f"{self.auth[0]}:{self.auth[1] if password is None else password}@"
        return f"{scheme or self.scheme}://{user}127.0.0.1:{self.port}"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + HANG_GUARD
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited at start: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"proxy not listening: {self.log()}") from None
                time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[tuple[str, str]]:
        """What the proxy was asked: (method, target) per request, in order. tinyproxy:
        `("GET", "http://host:port/path")`, `("CONNECT", "host:port")`; microsocks:
        `("CONNECT", "host:port")` per connection it made."""
        if self.scheme == "http":
            pattern = r"Request \(file descriptor \d+\): (\S+) (\S+) HTTP/"
        else:
            pattern = r"client\[\d+\] \S+: (connected) to (\S+)"
        found = re.findall(pattern, self.log())
        return [("CONNECT" if m == "connected" else m, t) for m, t in found]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=HANG_GUARD)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian: apt-get install {binary})")
    return path


@pytest.fixture
def start_tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Proxy]]:
    """`start_tinyproxy(connect_ports=[...], auth=None) -> Proxy`: a tinyproxy on a free
    port that allows 127.0.0.1, CONNECT to `connect_ports`, and Basic credentials `auth`."""
    binary = _need("tinyproxy")
    started: list[Proxy] = []

    def start(connect_ports: Sequence[int] = (), auth: tuple[str, str] | None = None) -> Proxy:
        folder = tmp_path_factory.mktemp("tinyproxy")
        port = free_port()
        log = folder / "tinyproxy.log"
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            "Allow 127.0.0.1",
            f'LogFile "{log}"',
            "LogLevel Info",
            "MaxClients 200",
        ]
        lines += [f"ConnectPort {p}" for p in connect_ports]
        if auth is not None:
            lines.append(f"BasicAuth {auth[0]} {auth[1]}")
        config = folder / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        argv = [binary, "-d", "-c", str(config)]
        proxy = Proxy("http", argv, port, log, auth, folder / "stdout.txt")
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def start_microsocks(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Proxy]]:
    """`start_microsocks(auth=None) -> Proxy`: a SOCKS5 server on a free port (`-u/-P`)."""
    binary = _need("microsocks")
    started: list[Proxy] = []

    def start(auth: tuple[str, str] | None = None) -> Proxy:
        folder = tmp_path_factory.mktemp("microsocks")
        port = free_port()
        argv = [binary, "-i", "127.0.0.1", "-p", str(port)]
        if auth is not None:
            argv += ["-u", auth[0], "-P", auth[1]]
        log = folder / "microsocks.log"
        proxy = Proxy("socks5", argv, port, log, auth, log)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


class TLSFront:
    """A TLS listener on 127.0.0.1 that relays every connection to `backend_port`: an
    `https://` proxy made of tinyproxy (Debian has no HTTPS proxy that takes a config
    this small). Each connection is relayed by a thread until either side closes."""

    def __init__(self, backend_port: int, context: ssl.SSLContext) -> None:
        self.backend_port = backend_port
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                client = self.context.wrap_socket(raw, server_side=True)
                backend = socket.create_connection(("127.0.0.1", self.backend_port))
            except OSError:
                raw.close()
                continue
            with self._lock:
                self.accepted += 1
                self._sockets += [client, backend]
                thread = threading.Thread(target=_relay, args=(client, backend), daemon=True)
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self._accept_thread.join(HANG_GUARD)
        self.listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(HANG_GUARD)


def _relay(client: ssl.SSLSocket, backend: socket.socket) -> None:
    """Relay both ways in one thread (an SSL socket is not used by two threads at once)."""
    try:
        while True:
            ready = [client] if client.pending() else select.select([client, backend], [], [])[0]
            for source in ready:
                data = source.recv(65536)
                if not data:
                    return
                (backend if source is client else client).sendall(data)
    except OSError:
        pass
    finally:
        for sock in (client, backend):
            with contextlib.suppress(OSError):
                sock.close()
