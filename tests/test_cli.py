"""The `segdl` command in a subprocess: exit codes, one-line errors, no tracebacks, files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import payload
from rangeserver import Faults, RangeHTTPServer, serve_file

MIB = 1024 * 1024


def segdl(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segdl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_PROXY": "*"},
    )


def only_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_download_with_summary(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(3 * MIB + 11)
    served = serve_file(httpserver, "/pkg/file.bin", data)
    proc = segdl(served.url, "-n", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "file.bin").read_bytes() == data
    assert proc.stdout == ""
    # Not a bar: stderr is not a terminal; `--progress lines` ends with its final report.
    end, summary = proc.stderr.strip().splitlines()
    assert end.startswith(f"segdl: end: 3.0 MiB of 3.0 MiB (100%) ({len(data)} bytes), ")
    assert (
        "file.bin" in summary and "3.0 MiB" in summary and "3 connections" in summary
    )  # 3 MiB at 1 MiB per range


def test_quiet_prints_nothing(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(1000)
    served = serve_file(httpserver, "/f", data)
    proc = segdl(served.url, "-q", "-o", "out.bin", cwd=tmp_path)
    assert proc.returncode == 0
    assert (tmp_path / "out.bin").read_bytes() == data
    assert proc.stdout == "" and proc.stderr == ""


def test_dir_is_created_and_headers_are_sent(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/x/y.tar.gz", data)
    proc = segdl(
        served.url, "-d", "new/sub", "-H", "X-Token: abc", "-k", "512K", "-q", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new/sub/y.tar.gz").read_bytes() == data
    gets = served.gets()
    assert len(gets) == 4  # 2 MiB at a 512 KiB minimum split, 8 connections allowed
    assert all(r.headers.get("X-Token") == "abc" for r in served.requests)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-n", "0"], "between 1 and 64"),
        (["-n", "65"], "between 1 and 64"),
        (["-n", "many"], "not a number"),
        (["-k", "lots"], "invalid size"),
        (["-H", "no colon"], "invalid header"),
        (["--timeout", "-1"], "positive"),
        (["--checksum", "md5=xyz"], "32 hexadecimal"),
        (["-o", "a", "-d", "b"], "not allowed with"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = segdl("http://127.0.0.1:9/f", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in only_line(proc)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("url", ["ftp://example.org/f", "file:///etc/passwd", "not a url"])
def test_bad_url_exits_2(tmp_path: Path, url: str) -> None:
    proc = segdl(url, cwd=tmp_path)
    assert proc.returncode == 2
    assert "URL" in only_line(proc)


def test_http_error_exits_1_and_leaves_nothing(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/missing").respond_with_data("not here", status=404)
    proc = segdl(httpserver.url_for("/missing"), "--retries", "0", cwd=tmp_path)
    assert proc.returncode == 1
    assert "404" in only_line(proc)
    assert os.listdir(tmp_path) == []


def test_connection_refused_exits_1(tmp_path: Path) -> None:
    proc = segdl("http://127.0.0.1:9/f", "--retries", "0", cwd=tmp_path)
    assert proc.returncode == 1
    assert "connection" in only_line(proc).lower()
    assert os.listdir(tmp_path) == []


def test_existing_file_is_not_destroyed(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(5000)
    served = serve_file(httpserver, "/f.bin", data)
    mine = tmp_path / "f.bin"
    mine.write_bytes(b"my precious")
    proc = segdl(served.url, cwd=tmp_path)
    assert proc.returncode == 1
    assert "--overwrite" in only_line(proc)
    assert mine.read_bytes() == b"my precious"
    assert served.gets() == []

    proc = segdl(served.url, "--if-exists", "skip", "-q", cwd=tmp_path)
    assert proc.returncode == 0 and mine.read_bytes() == b"my precious"

    proc = segdl(served.url, "--if-exists", "rename", "-q", cwd=tmp_path)
    assert proc.returncode == 0
    assert (tmp_path / "f.1.bin").read_bytes() == data and mine.read_bytes() == b"my precious"

    proc = segdl(served.url, "--overwrite", "-q", cwd=tmp_path)
    assert proc.returncode == 0 and mine.read_bytes() == data


def test_destination_that_is_a_directory_fails(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    served = serve_file(httpserver, "/f", payload(10))
    (tmp_path / "d").mkdir()
    proc = segdl(served.url, "-o", "d", cwd=tmp_path)
    assert proc.returncode == 1
    assert "is a directory" in only_line(proc)


def test_destination_under_a_regular_file_fails(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(httpserver, "/f", payload(10))
    (tmp_path / "plain").write_text("x")
    proc = segdl(served.url, "-o", "plain/f", cwd=tmp_path)
    assert proc.returncode == 1
    only_line(proc)
    proc = segdl(served.url, "-d", "plain", cwd=tmp_path)
    assert proc.returncode == 1
    assert "not a directory" in only_line(proc)
    assert (tmp_path / "plain").read_text() == "x"


def test_range_violation_fails_cleanly_without_a_file(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(httpserver, "/f", payload(2 * MIB), faults=Faults(gzip_always=True))
    proc = segdl(served.url, "-o", "f", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("segdl: error:") and "gzip" in lines[-1]
    assert os.listdir(tmp_path) == []


def test_console_script_and_module_agree(tmp_path: Path) -> None:
    script = shutil.which("segdl")
    assert script is not None, "the segdl console script is not installed"
    out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("segdl ")
    assert segdl("--version", cwd=tmp_path).stdout == out.stdout


def test_progress_bar_is_drawn_on_a_terminal(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    import pty

    data = payload(4 * MIB)
    served = serve_file(httpserver, "/f.bin", data, faults=Faults(rate=8 * MIB))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segdl", served.url, "-n", "2"],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert "100%" in screen and "conn" in screen and "MiB/s" in screen  # bytes, rate, connections
    assert "MB" not in screen  # binary units throughout
    assert "f.bin: 4.0 MiB in" in screen  # then the summary line
