"""Running one command measured: wall time, CPU, peak RSS, optionally on a pty; and checking
its output against the source.

See "How it measures" in benchmarks/README.md for why peak RSS comes from GNU time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .units import MiB


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
    stopped: bool = False  # ended by the `watch` callback (bounded runs: batch-list)
    started_epoch: float = 0.0  # time.time() just before the child was started


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


def stop_tool(pid: int, wrapped: bool) -> None:
    """SIGKILL the tool. When GNU time wrapped it, kill only time's child so that time still
    reaps it and writes the tool's peak RSS."""
    if wrapped:
        children: list[int] = []
        with contextlib.suppress(OSError, ValueError):
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            children = [int(c) for c in text.split()]
        if children:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            return
    kill_group(pid)


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    log_path: Path,
    use_pty: bool,
    time_bin: str | None,
    watch: Callable[[float], bool] | None = None,
    watch_interval_s: float = 0.02,
) -> Measurement:
    """Run one child, reap it with os.wait4 and return its own resource usage.

    With `time_bin` (GNU time) the tool is forked by that small process: its max RSS comes from
    time's report, because a child's ru_maxrss starts at the RSS high-water mark of the process
    that exec'd it. CPU is always from wait4 (it includes the tool, reaped by time).

    `watch`, when given, is called every `watch_interval_s` with the seconds since the start;
    once it returns True the tool is killed (see stop_tool) and the result has stopped=True.
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
    stopped = threading.Event()
    pid = -1
    try:
        started_epoch = time.time()
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
        if watch is not None:
            threading.Thread(
                target=_watch_loop,
                args=(watch, watch_interval_s, start, done, lock, stopped, pid, bool(time_bin)),
                daemon=True,
            ).start()
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
        stopped=stopped.is_set(),
        started_epoch=started_epoch,
    )


def _watch_loop(
    watch: Callable[[float], bool],
    interval: float,
    start: float,
    done: threading.Event,
    lock: threading.Lock,
    stopped: threading.Event,
    pid: int,
    wrapped: bool,
) -> None:
    while not done.is_set():
        if watch(time.perf_counter() - start):
            with lock:
                if not done.is_set():
                    stopped.set()
                    stop_tool(pid, wrapped)
            return
        done.wait(interval)


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
