"""The benchmarks' delaying TCP proxy (benchmarks/segbench/delayproxy.py) forwards every byte,
in order, in both directions, on every host address it listens on, and forwards a half-close.

It runs as `run.py _delayproxy`, as the harness starts it, in front of a small threaded TCP
server of the test. Nothing here asserts on time.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


class Backend:
    """Accepts connections; each reads until EOF, then answers the sha256 of what it read
    followed by `reply` bytes, and closes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            digest = hashlib.sha256()
            while chunk := conn.recv(65536):
                digest.update(chunk)
            conn.sendall(digest.digest() + self.reply)

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    reply = os.urandom(3 * 1024 * 1024 + 17)
    backend = Backend(reply)
    ready = tmp_path / "ready"
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RUN_PY), "_delayproxy", f"--listen-port={port}", "--hosts=3",
         f"--target-port={backend.port}", "--delay-ms=2", f"--ready-file={ready}"],
    )  # fmt: skip
    try:
        for _ in range(1000):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.01)
        assert ready.exists(), "the proxy did not start"
        yield port, reply
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        backend.close()


def _exchange(host: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the half-close must reach the backend
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def test_bytes_in_order_both_ways_on_every_host(proxied: tuple[int, bytes]) -> None:
    port, reply = proxied
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        payload = os.urandom(5 * 1024 * 1024 + 3)
        answer = _exchange(host, port, payload)
        assert answer[:32] == hashlib.sha256(payload).digest()
        assert answer[32:] == reply


def test_many_connections_at_once(proxied: tuple[int, bytes]) -> None:
    port, reply = proxied
    payloads = [os.urandom(100_000 + i) for i in range(40)]
    answers: list[bytes | None] = [None] * len(payloads)

    def run(i: int) -> None:
        answers[i] = _exchange(f"127.0.0.{i % 3 + 1}", port, payloads[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for payload, answer in zip(payloads, answers, strict=True):
        assert answer == hashlib.sha256(payload).digest() + reply


def test_not_listening_beyond_its_hosts(proxied: tuple[int, bytes]) -> None:
    port, _ = proxied
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.4", port)) != 0
