"""Helpers shared by the test modules: running the command in this process or as a process,
reading what a run left on disk, waiting for a condition (a hang guard, never a timing test),
and the kill-then-rerun check of a batch."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes import payload
from rangeserver import RangeHTTPServer

from segdl.cli import main

HANG_GUARD = 30.0  # seconds: only ever reached when something is wrong


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `segdl ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([*argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env() -> dict[str, str]:
    """The environment for `python -m segdl` in a child: no proxy for the loopback servers."""
    return {**os.environ, "NO_PROXY": "*"}


def one_line_error(stderr: str | bytes, *, prefix: str = "segdl: error:") -> str:
    """The single line of `stderr`, which must start with `prefix` and hold no traceback."""
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file under `root`, segdl's own folder (`.segdl`) left out, by relative
    POSIX path, in sorted order."""
    out: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == root and ".segdl" in dirs:
            dirs.remove(".segdl")  # (a cluster's trash may be being deleted meanwhile)
        for name in files:
            path = Path(folder) / name
            if path.is_file():  # a dangling link is not a file
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return dict(sorted(out.items()))


def small_files(count: int, *, prefix: str = "f", size: int = 3000) -> dict[str, bytes]:
    """`count` small files to serve, `/f000.bin`..., each of its own size and bytes."""
    return {f"/{prefix}{i:03d}.bin": payload(size + i, seed=i) for i in range(count)}


def gets_of(server: RangeHTTPServer) -> list[str]:
    """The paths of the GETs the server saw, in order."""
    return [r.path for r in server.requests if r.method == "GET"]


def segdl_threads() -> list[threading.Thread]:
    """segdl's own threads alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("segdl-")]


def wait_for(
    condition: Callable[[], bool], what: str = "a condition", timeout: float = HANG_GUARD
) -> bool:
    """Poll `condition` until it holds; fails the test after `timeout` (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return True


# --- the kill-then-rerun check of a batch ------------------------------------------------------


def journal_ok_urls(dest: Path) -> set[str]:
    """The URLs the batch journal in `dest` has committed as finished (readable while a run
    writes it: an unreadable journal reads as empty)."""
    path = dest / ".segdl" / "journal.sqlite3"
    if not path.exists():
        return set()
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            return {row[0] for row in db.execute("SELECT url FROM items WHERE status = 'ok'")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()


def start_batch(listing: Path, dest: Path, cwd: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`segdl -i LISTING -d DEST -j 4 -q EXTRA` as a child process, to be signalled or killed."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segdl",
            "-i",
            str(listing),
            "-d",
            str(dest),
            "-j",
            "4",
            "-q",
            *extra,
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(),
    )


def wait_while_running(
    predicate: Callable[[], bool], proc: subprocess.Popen[bytes], what: str
) -> None:
    """Wait for `predicate` while `proc` runs; fail if it ends first (or after the guard)."""

    def holds() -> bool:
        assert proc.poll() is None, f"segdl ended before {what}: {proc.communicate()}"
        return predicate()

    wait_for(holds, what)


def signal_when(
    proc: subprocess.Popen[bytes],
    condition: Callable[[], bool],
    what: str,
    sig: int,
    *,
    settle: float = 0.0,
) -> bytes:
    """Once `condition` holds (`proc` still running), wait `settle` seconds, send `sig` and
    reap the child; returns its stderr. A child still running at the end is killed."""
    try:
        wait_while_running(condition, proc, what)
        if settle:
            time.sleep(settle)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=20)
        return err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
