"""`segdl URL -o -`: the file in order on stdout, through real pipes into other processes.

Every test runs `python -m segdl` in a subprocess against the loopback range server and
compares what came out of the pipe with the served bytes; exit codes and stderr are checked
as a shell pipeline sees them. Timeouts are hang guards only.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from fakes import payload
from helpers import one_line_error
from rangeserver import Faults, RangeHTTPServer, pattern_bytes, serve_file

KiB = 1 << 10
MiB = 1 << 20
HANG_GUARD = 60  # seconds for any one command
SHA256_OF_STDIN = (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "while chunk := sys.stdin.buffer.read(1 << 16):\n"
    "    h.update(chunk)\n"
    "print(h.hexdigest())\n"
)


def env() -> dict[str, str]:
    return {**os.environ, "NO_PROXY": "*"}


def segdl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "segdl", *args]


def data_of(size: int, seed: int = 1) -> bytes:
    return payload(size, seed) if size <= 2 * MiB else pattern_bytes(size, seed)


def run_segdl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        segdl_argv(*args),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env(),
        timeout=HANG_GUARD,
        check=False,
    )


# --- a real pipe into another process -------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1_000_003, 3 * MiB + 17])
def test_stdout_through_a_pipe_into_a_subprocess(
    rangeserver: RangeHTTPServer, tmp_path: Path, size: int
) -> None:
    data = data_of(size)
    served = serve_file(rangeserver, "/f.bin", data)
    errors = tmp_path / "segdl.err"
    with errors.open("wb") as err:
        producer = subprocess.Popen(
            segdl_argv(served.url, "-o", "-", "-n", "4", "--window", "256K"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env(),
        )
        assert producer.stdout is not None
        consumer = subprocess.Popen(
            [sys.executable, "-c", SHA256_OF_STDIN],
            stdin=producer.stdout,
            stdout=subprocess.PIPE,
        )
        producer.stdout.close()  # the consumer holds the only reading end
        out, _ = consumer.communicate(timeout=HANG_GUARD)
        assert producer.wait(timeout=HANG_GUARD) == 0, errors.read_text()
    assert consumer.returncode == 0
    assert out.decode().strip() == hashlib.sha256(data).hexdigest()
    text = errors.read_text()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1].startswith("segdl: ")  # the summary, on stderr


def test_stdout_bytes_and_messages_on_stderr(rangeserver: RangeHTTPServer) -> None:
    data = data_of(2 * MiB + 3, seed=2)
    served = serve_file(rangeserver, "/f.bin", data)
    proc = run_segdl(served.url, "-o", "-", "-n", "3", "--window", "512K")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data  # nothing but the file on stdout
    lines = proc.stderr.decode().strip().splitlines()
    # stderr is not a terminal: the final report of `--progress lines`, then the summary.
    assert len(lines) == 2 and "to stdout" in lines[1], lines
    assert lines[0].startswith(f"segdl: end: 2.0 MiB of 2.0 MiB (100%) ({len(data)} bytes), ")
    quiet = run_segdl(served.url, "-o", "-", "-q")
    assert quiet.returncode == 0
    assert quiet.stdout == data
    assert quiet.stderr == b""


def test_pipe_into_tar(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    """`segdl URL -o - -n 4 | tar xzf -`: the shell pipeline of the issue."""
    members = {
        "top.txt": b"top\n" * 1000,
        "sub/random.bin": pattern_bytes(1_200_000, 3),
        "sub/more.bin": pattern_bytes(900_001, 4),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    served = serve_file(rangeserver, "/a.tar.gz", raw.getvalue())
    out = tmp_path / "out"
    out.mkdir()
    command = (
        f"set -o pipefail; {shlex.join(segdl_argv(served.url, '-o', '-', '-n', '4', '-q'))}"
        f" --window 256K | tar -xzf - -C {shlex.quote(str(out))}"
    )
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, env=env(), timeout=HANG_GUARD, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for name, content in members.items():
        assert (out / name).read_bytes() == content


# --- checksums, failures mid-stream ---------------------------------------------------------


def test_checksum_mismatch_exits_1_with_one_line(rangeserver: RangeHTTPServer) -> None:
    data = data_of(1_500_000, seed=5)
    served = serve_file(rangeserver, "/f.bin", data)
    wrong = hashlib.sha256(b"something else").hexdigest()
    proc = run_segdl(served.url, "-o", "-", "-n", "4", "--checksum", f"sha256={wrong}")
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "sha256" in line
    assert proc.stdout == data  # written before the end could be checked; the exit code says


def test_checksum_match_exits_0(rangeserver: RangeHTTPServer) -> None:
    data = data_of(1_500_000, seed=6)
    served = serve_file(rangeserver, "/f.bin", data)
    right = hashlib.sha256(data).hexdigest()
    proc = run_segdl(served.url, "-o", "-", "-n", "4", "-q", "--checksum", f"sha256={right}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    assert proc.stderr == b""


def test_remote_changing_mid_stream_exits_1_after_a_clean_prefix(
    rangeserver: RangeHTTPServer,
) -> None:
    data = data_of(4 * MiB, seed=7)
    served = serve_file(rangeserver, "/f.bin", data, Faults(change_after_bytes=MiB))
    proc = run_segdl(served.url, "-o", "-", "-n", "3", "--window", "256K")
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "changed" in line
    assert len(proc.stdout) < len(data)
    assert proc.stdout == data[: len(proc.stdout)]  # never a spliced byte


def test_503s_mid_stream_recover(rangeserver: RangeHTTPServer) -> None:
    data = data_of(2 * MiB + 1, seed=8)
    served = serve_file(rangeserver, "/f.bin", data, Faults(fail_first=3, retry_after="0"))
    proc = run_segdl(served.url, "-o", "-", "-n", "4", "--window", "512K", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    assert sum(1 for r in served.gets() if r.status == 503) == 3


@pytest.mark.parametrize(
    "faults",
    [Faults(ignore_range=True), Faults(ignore_range=True, chunked=True)],
    ids=["ranges-ignored", "chunked"],
)
def test_server_without_ranges(rangeserver: RangeHTTPServer, faults: Faults) -> None:
    data = data_of(1_000_003, seed=9)
    served = serve_file(rangeserver, "/f.bin", data, faults)
    proc = run_segdl(served.url, "-o", "-", "-n", "8", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


# --- the reader goes away -------------------------------------------------------------------


def test_head_closing_the_pipe_ends_segdl_quietly(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """`segdl URL -o - | head -c 100`: 141 as for SIGPIPE, no traceback, and the download
    stops (the server sends far less than the file)."""
    size = 32 * MiB
    data = data_of(size, seed=10)
    served = serve_file(rangeserver, "/f.bin", data, Faults(rate=2 * MiB))
    errors = tmp_path / "segdl.err"
    segdl_cmd = shlex.join(segdl_argv(served.url, "-o", "-", "-n", "4", "--window", "1M"))
    command = f"set -o pipefail; {segdl_cmd} 2>{shlex.quote(str(errors))} | head -c 100 | wc -c"
    proc = subprocess.run(
        ["bash", "-c", command], capture_output=True, env=env(), timeout=HANG_GUARD, check=False
    )
    assert proc.returncode == 141, (proc.returncode, errors.read_text())
    assert proc.stdout.decode().strip() == "100"
    text = errors.read_text()
    assert "Traceback" not in text
    assert text.strip() == "", text
    assert served.bytes_sent() < size // 2


# --- usage and errors -----------------------------------------------------------------------


def test_404_exits_1_with_one_line(rangeserver: RangeHTTPServer) -> None:
    rangeserver.expect_request("/missing").respond_with_data("no such file", status=404)
    proc = run_segdl(rangeserver.url_for("/missing"), "-o", "-")
    assert proc.returncode == 1
    assert "404" in one_line_error(proc.stderr)
    assert proc.stdout == b""


def test_bad_url_exits_2() -> None:
    proc = run_segdl("ftp://127.0.0.1/f", "-o", "-")
    assert proc.returncode == 2
    one_line_error(proc.stderr)
    assert proc.stdout == b""


@pytest.mark.parametrize("window", ["0", "lots"])
def test_bad_window_exits_2(rangeserver: RangeHTTPServer, window: str) -> None:
    served = serve_file(rangeserver, "/f.bin", b"abc")
    proc = run_segdl(served.url, "-o", "-", "--window", window)
    assert proc.returncode == 2
    assert b"Traceback" not in proc.stderr
    assert proc.stdout == b""
    assert served.gets() == []


def test_window_bounds_what_is_fetched_ahead_of_a_stalled_reader(
    rangeserver: RangeHTTPServer,
) -> None:
    """A reader that takes nothing: segdl fetches its window (and the pipe's buffer), no more.

    The pipe is never read until the server has stopped receiving requests for a while, so
    what it sent is what segdl asked for with nobody reading.
    """
    size = 16 * MiB
    data = data_of(size, seed=11)
    served = serve_file(rangeserver, "/f.bin", data)
    proc = subprocess.Popen(
        segdl_argv(served.url, "-o", "-", "-n", "4", "--window", "1M", "-q"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
    )
    try:
        # Wait (bounded) until the requests stop: the window is full and the pipe too.
        # The bound below holds whenever it is checked; waiting only gives segdl every chance
        # to overshoot it.
        counts: list[int] = []
        while len(counts) < 100 and not (len(counts) > 3 and counts[-1] == counts[-4] > 0):
            counts.append(len(served.gets()))
            time.sleep(0.1)
        pipe_buffer = 1 * MiB  # Linux pipes hold at most 1 MiB by default (pipe-max-size)
        window, chunk = MiB, MiB  # the CLI's write chunk
        assert served.bytes_sent() <= window + pipe_buffer + chunk + 4 * 256 * KiB
        out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == data
