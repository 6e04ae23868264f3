"""`segdl URL --extract DIR` and `segdl -i LIST --extract DIR` in a subprocess: exit codes,
one-line errors, the summary line, the bar on a terminal, and batches (one folder per archive)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import zstandard
from rangeserver import Faults, RangeHTTPServer, serve_file
from test_archive_rules import M, build, make_tree, snapshot, tar_of, zip_of

MiB = 1 << 20


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


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    # stderr is not a terminal: `--progress lines` ends a run that went well with its final
    # report, before the summary (a failed one ends with its error alone).
    lines = proc.stderr.strip().splitlines()
    if len(lines) == 2 and lines[0].startswith("segdl: end: "):
        lines.pop(0)
    assert len(lines) == 1, proc.stderr
    assert proc.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = make_tree(tmp_path_factory.mktemp("src"))
    (src / "sub" / "noise.bin").write_bytes(os.urandom(300_000))
    return src


def test_extract_with_summary(rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path) -> None:
    served = serve_file(rangeserver, "/get", tar_of(tree, "tar.gz"))
    proc = segdl(served.url + "?id=3", "--extract", "data/train", "-n", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(tmp_path / "data" / "train" / "pkg") == snapshot(tree)
    line = one_line(proc)  # not a bar: stderr is not a terminal
    assert line.startswith(f"{tmp_path / 'data' / 'train'}: 14 members, ")
    assert "(tar.gz, " in line and " fetched) in " in line


def test_include_and_strip_components(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/data.zip", zip_of(tree, zipfile.ZIP_DEFLATED))
    proc = segdl(
        served.url,
        "--extract",
        "out",
        "--include",
        "pkg/sub/deeper",
        "--include",
        "pkg/README",
        "--strip-components",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert [name for name in found if not name.startswith(".segdl")] == [  # .segdl: the record
        "README",
        "sub",
        "sub/deeper",
        "sub/deeper/note.txt",
    ]
    assert "left out" in one_line(proc)


def test_a_refused_archive_is_one_line_and_exit_1(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(rangeserver, "/evil.zip", build("zip", [M("ok"), M("../evil", b"x")]))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("mine")
    proc = segdl(served.url, "--extract", "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert one_line(proc) == "segdl: error: refused member '../evil': path with a '..' component"
    assert os.listdir(tmp_path / "out") == ["mine.txt"]
    assert not (tmp_path / "evil").exists()


def test_limits_from_the_command_line(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = build("tar.gz", [M("a", os.urandom(3000)), M("b"), M("c")])
    served = serve_file(rangeserver, "/a.tgz", data)
    proc = segdl(served.url, "--extract", "out", "--max-extract-size", "2K", cwd=tmp_path)
    assert proc.returncode == 1
    assert "(--max-extract-size)" in one_line(proc)
    proc = segdl(served.url, "--extract", "out", "--max-members", "2", cwd=tmp_path)
    assert proc.returncode == 1
    assert "(--max-members)" in one_line(proc)
    assert not (tmp_path / "out").exists()


def test_existing_files_need_overwrite(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/a.tar.xz", tar_of(tree, "tar.xz"))
    (tmp_path / "out" / "pkg").mkdir(parents=True)
    (tmp_path / "out" / "pkg" / "README").write_text("mine")
    proc = segdl(served.url, "--extract", "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert "README" in one_line(proc) and "already exists" in proc.stderr
    assert (tmp_path / "out" / "pkg" / "README").read_text() == "mine"
    proc = segdl(served.url, "--extract", "out", "--overwrite", "-q", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no ranges"])
def test_keep_archive(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, ranges: bool
) -> None:
    data = zip_of(tree, zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a.zip", data, Faults(ignore_range=not ranges))
    proc = segdl(served.url, "--extract", "out", "--keep-archive", "a.zip", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a.zip").read_bytes() == data
    assert "archive kept as a.zip" in one_line(proc)
    assert sorted(os.listdir(tmp_path)) == ["a.zip", "out"]


@pytest.mark.parametrize(
    "argv",
    [
        ["URL", "--strip-components", "1"],
        ["URL", "--include", "x"],
        ["URL", "--keep-archive", "k"],
        ["URL", "--max-members", "5"],
        ["URL", "--extract", "out", "-o", "file"],
        ["URL", "--extract", "out", "-d", "dir"],
        ["URL", "--extract", "out", "--if-exists", "rename"],
        ["URL", "--extract", "out", "--max-members", "0"],
        ["URL", "--extract", "out", "--strip-components", "-1"],
        ["URL", "--extract", "out", "--max-extract-size", "lots"],
        ["-i", "list.txt", "--extract", "out", "--keep-archive", "k"],
        ["URL", "--extract", "out", "--window", "1K"],
        ["URL", "--extract", "out", "--checksum", "sha256=00"],
    ],
)
def test_usage_errors_exit_2(rangeserver: RangeHTTPServer, tmp_path: Path, argv: list[str]) -> None:
    served = serve_file(rangeserver, "/a.tar", build("tar", [M("a", b"a")]))
    (tmp_path / "list.txt").write_text(served.url + "\n")
    proc = segdl(*[served.url if a == "URL" else a for a in argv], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error" in proc.stderr
    assert served.requests == []
    assert sorted(os.listdir(tmp_path)) == ["list.txt"]


def test_the_bar_shows_download_and_extraction_on_a_terminal(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    import pty

    data = tar_of(tree, "tar.gz")
    served = serve_file(rangeserver, "/a.tgz", data, Faults(rate=len(data)))  # about 1 s
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "segdl", served.url, "--extract", "out", "-n", "2"],
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
    assert "out:" in screen and " conn, " in screen and " extracted]" in screen  # the bar
    assert "100%" in screen
    assert f"{tmp_path / 'out'}: 14 members" in screen  # then the summary line


# -- batches ---------------------------------------------------------------------------------------


def test_batch_extracts_each_archive_into_its_own_folder(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    archives = {
        "/a/train.tar.gz": tar_of(tree, "tar.gz"),
        "/b/val.zip": zip_of(tree, zipfile.ZIP_DEFLATED),
        "/c/test.tar.zst?x=1": zstandard.ZstdCompressor().compress(tar_of(tree, "tar")),
        "/d/evil.zip": build("zip", [M("../evil", b"x")]),
        "/e/same/train.zip": build("zip", [M("x.txt", b"x")]),
    }
    urls = []
    for path, data in archives.items():
        served = serve_file(rangeserver, path.split("?")[0], data)
        urls.append(served.url + ("?x=1" if "?" in path else ""))
    (tmp_path / "list.txt").write_text("\n".join(urls) + "\n")
    proc = segdl(
        "-i", "list.txt", "--extract", "data", "--report", "report.csv", "-j", "1", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for folder in ("train", "val", "test"):
        assert snapshot(tmp_path / "data" / folder / "pkg") == snapshot(tree), folder
    assert sorted(os.listdir(tmp_path / "data")) == ["test", "train", "val"]
    failed = [line for line in proc.stderr.splitlines() if line.startswith("segdl: failed:")]
    assert len(failed) == 2
    assert any("evil.zip: refused member '../evil'" in line for line in failed)
    assert any("same/train.zip: its folder" in line and "taken by" in line for line in failed)
    assert "3 ok, 0 skipped, 2 failed" in proc.stderr
    with (tmp_path / "report.csv").open() as report:
        rows = {row["url"]: row for row in csv.DictReader(report)}
    assert rows[urls[0]]["status"] == "ok" and rows[urls[0]]["path"].endswith("data/train")
    assert rows[urls[3]]["status"] == "failed" and "refused" in rows[urls[3]]["error"]
    assert not list(tmp_path.rglob(".segdl-*"))  # the temporary archives are gone


def test_batch_keeps_the_archives_in_d_and_a_rerun_skips(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    one = serve_file(rangeserver, "/one.tar.bz2", tar_of(tree, "tar.bz2"))
    two = serve_file(rangeserver, "/two.zip", zip_of(tree, zipfile.ZIP_STORED))
    (tmp_path / "list.txt").write_text(f"{one.url}\n{two.url}\n")
    argv = ["-i", "list.txt", "--extract", "data", "-d", "archives", "--template", "x-{name}"]
    proc = segdl(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "archives")) == [".segdl", "x-one.tar.bz2", "x-two.zip"]
    assert sorted(os.listdir(tmp_path / "data")) == ["x-one", "x-two"]
    assert snapshot(tmp_path / "data" / "x-two" / "pkg") == snapshot(tree)
    one.clear_log()
    proc = segdl(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0 ok, 2 skipped, 0 failed" in proc.stderr
    assert one.requests == []  # the journal: no request for a finished item


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_ctrl_c_leaves_dir_as_it_was(
    rangeserver: RangeHTTPServer, tmp_path: Path, fmt: str
) -> None:
    members = [M(f"f{i}.bin", os.urandom(256 << 10)) for i in range(8)]
    data = build(fmt, members)
    served = serve_file(rangeserver, "/a", data, Faults(rate=len(data) / 4))  # about 4 s
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("mine")
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdl", served.url, "--extract", "out", "-n", "2"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_PROXY": "*"},
    )
    deadline = time.monotonic() + 10
    while served.bytes_sent() < len(data) // 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert os.listdir(tmp_path / "out") == ["mine.txt"]
