"""A TCP proxy that adds a round trip on loopback (`run.py _delayproxy ...`).

This machine's kernel has no netem, so the request scenarios put this proxy between the tools
and nginx. It listens on 127.0.0.1..127.0.0.N at one port (N "hosts": 127/8 is all loopback),
connects each accepted connection to the target (nginx on 127.0.0.1), and holds every chunk it
reads for the one-way delay before writing it on, in each direction, in order. A round trip
through it therefore takes 2 x delay. What it does not delay: the TCP handshake of a new
connection (the proxy accepts at once; a real link would add one round trip before the first
byte), so a new connection costs one round trip less than it would over a real link; the TLS
handshake and every request are delayed like any other bytes.

One process, one asyncio loop, any number of connections. Each direction keeps a queue of
(due time, bytes); one timer per direction writes what is due, so the order is kept whatever
the timers do. A direction stops reading while more than 4 MiB wait in its queue or the
receiving socket's buffer is full (backpressure), and resumes once that has drained. An end of
stream (FIN) and a close are forwarded after the same delay, behind the data.

Standard library only. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
from collections.abc import Sequence

QUEUE_LIMIT = 4 * 1024 * 1024
_DATA, _EOF, _CLOSE = 0, 1, 2  # what a queue entry is


class Half(asyncio.Protocol):
    """One socket of a proxied connection; what it receives goes to `peer` after `delay`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop = loop
        self.delay = delay
        self.peer: Half | None = None
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, int, bytes]] = collections.deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.holds: set[str] = set()  # why reading is paused: "queue", "peer"

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._push(_DATA, data)
        self.queued += len(data)
        if self.queued > QUEUE_LIMIT:
            self._hold("queue")

    def eof_received(self) -> bool:
        self._push(_EOF, b"")
        return True  # keep our side open: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        self._push(_CLOSE, b"")

    def pause_writing(self) -> None:  # our socket's send buffer is full: stop the peer
        if self.peer is not None:
            self.peer._hold("peer")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer._release("peer")

    # -- the delayed queue --------------------------------------------------------------

    def _push(self, kind: int, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay, kind, data))
        self.arm()

    def arm(self) -> None:
        """Schedule the next write, once the peer is connected."""
        if self.timer is None and self.queue and self.peer is not None and self.peer.transport:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        assert self.peer is not None and self.peer.transport is not None
        out = self.peer.transport
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, kind, item = self.queue.popleft()
            if kind == _CLOSE:
                self.queue.clear()
                out.close()
                return
            if kind == _EOF:
                if out.can_write_eof() and not out.is_closing():
                    out.write_eof()
                continue
            self.queued -= len(item)
            if not out.is_closing():
                out.write(item)
        if self.queued <= QUEUE_LIMIT // 2:
            self._release("queue")
        self.arm()

    def _hold(self, reason: str) -> None:
        if not self.holds and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self.holds.add(reason)

    def _release(self, reason: str) -> None:
        if reason not in self.holds:
            return
        self.holds.discard(reason)
        if not self.holds and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class Proxy:
    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target = target
        self.delay = delay
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[None]] = set()

    def accept(self) -> Half:
        client = Half(self.loop, self.delay)
        task = self.loop.create_task(self._connect(client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return client

    async def _connect(self, client: Half) -> None:
        backend = Half(self.loop, self.delay)
        try:
            await self.loop.create_connection(lambda: backend, *self.target)
        except OSError:
            if client.transport is not None:
                client.transport.abort()
            return
        client.peer, backend.peer = backend, client
        client.arm()  # bytes that arrived while connecting
        backend.arm()


async def serve(
    listen_port: int, hosts: int, target: tuple[str, int], delay: float, ready_file: str | None
) -> None:
    proxy = Proxy(target, delay)
    servers = []
    # 127.0.0.1 last: the harness takes it listening as "every host is listening".
    for i in range(hosts, 0, -1):
        servers.append(
            await proxy.loop.create_server(
                proxy.accept, f"127.0.0.{i}", listen_port, backlog=4096, reuse_address=True
            )
        )
    if ready_file:
        with open(ready_file, "w") as out:
            out.write("ready\n")
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        proxy.loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py _delayproxy")
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--hosts", type=int, default=1, help="listen on 127.0.0.1..127.0.0.N")
    p.add_argument("--target-host", default="127.0.0.1")
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    p.add_argument("--ready-file", default=None)
    o = p.parse_args(argv)
    if not 1 <= o.hosts <= 254:
        p.error("--hosts must be within 1..254")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                o.listen_port,
                o.hosts,
                (o.target_host, o.target_port),
                o.delay_ms / 1000.0,
                o.ready_file,
            )
        )
    return 0
