"""How well `--limit-rate` holds, and what it costs: a measurement, not a test.

    python benchmarks/limit_rate.py [SIZE_MIB] [CONNECTIONS] [LIMIT_MIB] [--rcvbuf BYTES]

Serves SIZE_MIB (default 600) from the tests' range server in this process (it logs the time
of every chunk it writes; its SO_SNDBUF is 64 KiB, so the log follows what left the server)
and downloads it twice with `segdl.download` in a child process:

- limited: the server sends as fast as it can, segdl runs with `limit_rate=LIMIT`;
- throttled: no limit in segdl, the server caps each connection at LIMIT / CONNECTIONS, so
  the unlimited client runs at the same rate (the CPU baseline).

For each it prints the child's CPU time, the rate over every 10 s window (sliding by 0.25 s)
from the server's log and from segdl's own progress samples (every 0.1 s), relative to the
limit. Under a limit segdl itself caps SO_RCVBUF of its range sockets at 128 KiB; `--rcvbuf`
sets another size on every socket (an experiment:
the kernel otherwise grows a slow reader's receive buffer to megabytes on loopback, which the
server's log sees as bursts).

    python benchmarks/limit_rate.py --low [SIZE_MIB] [CONNECTIONS] [LIMIT]

shows every range moving under a limit far below the natural rate (default 32 MiB, 16
connections, 1M): the bytes each range in flight wrote in each 4 s interval.
"""

from __future__ import annotations

import bisect
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def child(url: str, out: str, connections: int, limit: str, rcvbuf: int) -> None:
    """The measured client; prints its progress samples (time, bytes) as JSON."""
    if rcvbuf:
        import socket

        import urllib3.util.connection

        made = socket.create_connection
        made3 = urllib3.util.connection.create_connection

        def small_window(sock: socket.socket) -> socket.socket:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            return sock

        # Every connection segdl makes: http.client's (lean) and urllib3's (requests).
        socket.create_connection = lambda *a, **k: small_window(made(*a, **k))  # type: ignore[assignment]
        urllib3.util.connection.create_connection = lambda *a, **k: small_window(made3(*a, **k))  # type: ignore[assignment]
    import segdl

    samples: list[tuple[float, int]] = []

    class Sample(segdl.Listener):
        def progress(self, done: int, total: int | None, connections: int) -> None:
            samples.append((time.monotonic(), done))

    segdl.download(
        url,
        out,
        connections=connections,
        if_exists="overwrite",
        trust_env=False,
        limit_rate=None if limit == "none" else limit,
        listener=Sample(),
    )
    json.dump(samples, sys.stdout)


def low_child(url: str, out: str, connections: int, limit: str) -> None:
    """Per range, the bytes written in each 4 s interval (from `Engine._flush`, the one place
    a range's position moves)."""
    import segdl
    from segdl.file import Engine

    log: list[tuple[float, int, int]] = []
    flush = Engine._flush

    def logged(self: Engine, seg, buffer, fill, part) -> None:  # type: ignore[no-untyped-def]
        before = seg.pos
        flush(self, seg, buffer, fill, part)
        log.append((time.monotonic(), seg.start, seg.pos - before))

    Engine._flush = logged  # type: ignore[method-assign]
    began = time.monotonic()
    segdl.download(
        url, out, connections=connections, if_exists="overwrite", trust_env=False,
        limit_rate=limit, min_split=MiB,
    )  # fmt: skip
    print(f"{time.monotonic() - began:.2f} s")
    per: dict[int, dict[int, int]] = collections.defaultdict(lambda: collections.defaultdict(int))
    span: dict[int, tuple[float, float]] = {}
    for t, start, n in log:
        per[int((t - began) // 4)][start] += n
        first, last = span.get(start, (t, t))
        span[start] = (min(first, t), max(last, t))
    for k in sorted(per):
        lo, hi = began + 4 * k, began + 4 * (k + 1)
        moving = [s for s, (a, b) in span.items() if a < lo and b > hi]
        got = [per[k].get(s, 0) for s in moving]
        if got:
            print(
                f"  {4 * k:3d}-{4 * k + 4:3d} s: {len(moving)} ranges in flight all along, "
                f"KiB each: min {min(got) / 1024:.0f} max {max(got) / 1024:.0f}; "
                f"{sum(per[k].values()) / MiB / 4:.3f} MiB/s in all"
            )


def windows(times: list[float], counts: list[int], start: float, end: float) -> list[float]:
    """Bytes/s over every 10 s window inside [start, end], sliding by 0.25 s."""
    rates = []
    a = start
    while a + 10 <= end:
        i, j = bisect.bisect_right(times, a), bisect.bisect_right(times, a + 10)
        rates.append((counts[j] - counts[i]) / 10)
        a += 0.25
    return rates


def run(size: int, connections: int, limit: float, mode: str, rcvbuf: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from rangeserver import Faults, RangeHTTPServer, serve_file

    server = RangeHTTPServer(send_buffer=64 << 10)  # its log then follows what left it
    server.start()
    faults = Faults(rate=limit * MiB / connections) if mode == "throttled" else Faults()
    served = serve_file(server, "/f.bin", bytes(size * MiB), faults)
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        out = str(Path(folder) / "f.bin")
        arg = f"{limit:g}M" if mode == "limited" else "none"
        cmd = [sys.executable, __file__, "--child", served.url, out, str(connections), arg]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        env = {**os.environ, "NO_PROXY": "*", "PYTHONPATH": str(ROOT), "RCVBUF": str(rcvbuf)}
        proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert os.path.getsize(out) == size * MiB
    server.stop()
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    gets = [r for r in server.requests if r.method == "GET"]
    print(
        f"{mode}: {size} MiB, {connections} connections, {limit:g} MiB/s: CPU {user + system:.2f}"
        f" s (user {user:.2f}, sys {system:.2f}), {len(gets)} GETs"
    )
    sends = sorted(s for r in gets for s in r.sends)
    times = [t for t, _ in sends]
    counts = [0]
    for _, n in sends:
        counts.append(counts[-1] + n)
    rates = windows(times, counts, times[0], times[-1])
    if rates:
        low, high = min(rates) / (limit * MiB), max(rates) / (limit * MiB)
        print(f"  server's log, {len(rates)} windows of 10 s: {low:.3f} to {high:.3f} of the limit")
    samples = json.loads(proc.stdout)
    started = next(t for t, d in samples if d > 0)
    ended = next(t for t, d in samples if d >= size * MiB)
    times = [t for t, _ in samples]
    counts = [0] + [d for _, d in samples]
    rates = windows(times, counts, started, ended)
    if rates:
        low, high = min(rates) / (limit * MiB), max(rates) / (limit * MiB)
        print(f"  segdl's progress, {len(rates)} windows: {low:.3f} to {high:.3f} of the limit")


def low(size: int, connections: int, limit: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from rangeserver import RangeHTTPServer, serve_file

    server = RangeHTTPServer()
    server.start()
    served = serve_file(server, "/f.bin", bytes(size * MiB))
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        out = str(Path(folder) / "f.bin")
        cmd = [sys.executable, __file__, "--low-child", served.url, out, str(connections), limit]
        env = {**os.environ, "NO_PROXY": "*", "PYTHONPATH": str(ROOT)}
        print(f"{size} MiB, {connections} connections, --limit-rate {limit}: ", end="", flush=True)
        subprocess.run(cmd, check=True, env=env)
        assert os.path.getsize(out) == size * MiB
    server.stop()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        url, out, connections, limit = argv[1:5]
        child(url, out, int(connections), limit, int(os.environ.get("RCVBUF", "0")))
    elif argv[:1] == ["--low-child"]:
        url, out, connections, limit = argv[1:5]
        low_child(url, out, int(connections), limit)
    elif argv[:1] == ["--low"]:
        rest = argv[1:] + ["32", "16", "1M"][len(argv) - 1 :]
        low(int(rest[0]), int(rest[1]), rest[2])
    else:
        rcvbuf = 0
        if "--rcvbuf" in argv:
            at = argv.index("--rcvbuf")
            rcvbuf = int(argv[at + 1])
            del argv[at : at + 2]
        size, connections, limit = (argv + ["600", "16", "20"][len(argv) :])[:3]
        for mode in ("limited", "throttled"):
            run(int(size), int(connections), float(limit), mode, rcvbuf)


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    main(sys.argv[1:])
