"""Loose ends of `--extract`: what the user keeps follows the umask, a finished extraction can be
run again (a no-op while its members are in place), the `--max-ratio` option, the folders of
`-i --extract` named as the template says."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from rangeserver import Faults, RangeHTTPServer, ServedFile, serve_file
from test_archive_rules import M, build, make_tree, snapshot, tar_of, zip_of
from test_extract_cli import one_line
from test_extract_cli import segdl as run

import segdl


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


# -- the kept archive follows the umask (issue 15, item 8) --------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ranges"),
    [("tar.gz", True), ("zip", False), ("zip", True)],
    ids=["tar stream", "zip copied", "zip downloaded"],
)
def test_the_kept_archive_follows_the_umask(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    tree: Path,
    umask_022: None,
    fmt: str,
    ranges: bool,
) -> None:
    data = tar_of(tree, fmt) if fmt != "zip" else zip_of(tree, zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a", data, Faults(ignore_range=not ranges))
    kept = tmp_path / "kept.bin"
    segdl.extract(served.url, tmp_path / "out", keep_archive=kept, connections=2)
    assert kept.read_bytes() == data
    assert stat.S_IMODE(kept.stat().st_mode) == 0o644
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)


# -- --max-ratio (issue 18, item 6) ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_max_ratio_is_an_option_and_messages_name_it(
    rangeserver: RangeHTTPServer, tmp_path: Path, fmt: str
) -> None:
    zeros = bytes(4 << 20)  # about 1000:1
    served = serve_file(rangeserver, "/bomb", build(fmt, [M("zeros", zeros)]))
    proc = run(served.url, "--extract", "out", cwd=tmp_path)
    assert proc.returncode == 1
    line = one_line(proc)
    assert line.startswith("segdl: error: refused ") and "'zeros'" in line
    assert line.endswith(" (--max-ratio)"), line
    assert "max_ratio" not in line
    assert not (tmp_path / "out").exists()
    proc = run(served.url, "--extract", "out", "--max-ratio", "5000", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "zeros").read_bytes() == zeros


def test_the_other_limits_name_their_options(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    served = serve_file(rangeserver, "/a.zip", build("zip", [M("a", bytes(3000)), M("b")]))
    proc = run(served.url, "--extract", "out", "--max-extract-size", "2K", cwd=tmp_path)
    assert one_line(proc).endswith("(--max-extract-size)")
    proc = run(served.url, "--extract", "out", "--max-members", "1", cwd=tmp_path)
    assert one_line(proc).endswith("(--max-members)")
    (tmp_path / "list.txt").write_text(served.url + "\n")
    proc = run("-i", "list.txt", "--extract", "out", "--max-members", "1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "more than 1 (--max-members)" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["URL", "--max-ratio", "5"],
        ["URL", "--extract", "out", "--max-ratio", "0.5"],
        ["URL", "--extract", "out", "--max-ratio", "nan"],
    ],
)
def test_max_ratio_usage_errors(
    rangeserver: RangeHTTPServer, tmp_path: Path, argv: list[str]
) -> None:
    served = serve_file(rangeserver, "/a.tar", build("tar", [M("a", b"a")]))
    proc = run(*[served.url if a == "URL" else a for a in argv], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "--max-ratio" in proc.stderr and "Traceback" not in proc.stderr
    assert served.requests == []


# -- -i --extract: folders named as the template says (issue 18, item 7) ----------------------


def test_batch_folders_are_named_as_the_template_says(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    one = serve_file(rangeserver, "/one.tgz", tar_of(tree, "tar.gz"))
    two = serve_file(rangeserver, "/two.zip", zip_of(tree, zipfile.ZIP_DEFLATED))
    (tmp_path / "list.txt").write_text(f"{one.url}\n{two.url}\n")
    argv = ["-i", "list.txt", "--extract", "out", "--template", "set-{index}"]
    proc = run(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["set-0", "set-1"]
    for folder in ("set-0", "set-1"):
        assert snapshot(tmp_path / "out" / folder / "pkg") == snapshot(tree)
    proc = run(*argv, cwd=tmp_path)  # the folders exist: skipped
    assert proc.returncode == 0 and "0 ok, 2 skipped, 0 failed" in proc.stderr


def test_a_folder_that_would_be_the_archive_itself_fails_the_item(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    data = tar_of(tree, "tar.gz")
    served = serve_file(rangeserver, "/one.tgz", data)
    (tmp_path / "list.txt").write_text(f"{served.url}\n")
    argv = ["-i", "list.txt", "--extract", "out", "-d", "out", "--template", "set-{index}"]
    proc = run(*argv, cwd=tmp_path)
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines() if line.startswith("segdl: failed:")]
    assert len(failed) == 1 and "would be the archive itself" in failed[0], proc.stderr
    assert (tmp_path / "out" / "set-0").read_bytes() == data  # the kept archive, untouched
    assert sorted(os.listdir(tmp_path / "out")) == [".segdl", "set-0"]


def test_a_folder_that_would_be_the_downloads_folder_fails_the_item(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/archives.zip", zip_of(tree, zipfile.ZIP_DEFLATED))
    (tmp_path / "list.txt").write_text(f"{served.url}\n")
    proc = run("-i", "list.txt", "--extract", "out", "-d", "out/archives", cwd=tmp_path)
    assert proc.returncode == 1
    assert "out/archives holds the downloaded archives (-d out/archives)" in proc.stderr
    assert sorted(os.listdir(tmp_path / "out" / "archives")) == [".segdl", "archives.zip"]


# -- a finished extraction run again (issue 18, item 5) -------------------------------------------


def members_of(data: bytes, fmt: str) -> list[str]:
    if fmt == "zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [name.rstrip("/") for name in archive.namelist()]
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [member.name for member in archive.getmembers()]


def gets(served: ServedFile) -> list[object]:
    return [r for r in served.requests if r.method == "GET"]


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_the_same_extraction_again_is_a_no_op(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str
) -> None:
    data = tar_of(tree, fmt) if fmt != "zip" else zip_of(tree, zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a", data)
    out = tmp_path / "out"
    first = segdl.extract(served.url, out, connections=2)
    assert not first.already_extracted
    assert len(first.paths) == first.members and len(set(first.paths)) == len(first.paths)
    names = members_of(data, fmt)
    assert list(first.paths) == [name for name in names if name in first.paths]  # in order
    assert snapshot(out / "pkg") == snapshot(tree)
    before = snapshot(out)
    served.clear_log()
    again = segdl.extract(served.url, out, connections=2)
    assert again.already_extracted
    assert (again.members, again.paths, again.format) == (first.members, first.paths, fmt)
    assert again.bytes_written == 0 and again.fetched == 0
    assert gets(served) == []  # the probe only
    assert snapshot(out) == before


def test_missing_members_are_fetched_again_and_nothing_else_is_replaced(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/a.tgz", tar_of(tree, "tar.gz"))
    out = tmp_path / "out"
    segdl.extract(served.url, out)
    (out / "pkg" / "README").unlink()
    (out / "pkg" / "sub" / "link").unlink()
    (out / "mine.txt").write_text("mine")
    result = segdl.extract(served.url, out)
    assert not result.already_extracted and result.members == len(result.paths)
    assert snapshot(out / "pkg") == snapshot(tree)
    assert (out / "mine.txt").read_text() == "mine"
    assert segdl.extract(served.url, out).already_extracted


def test_a_changed_archive_is_not_taken_for_the_one_extracted(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/a.tar", build("tar", [M("a.txt", b"one")]))
    out = tmp_path / "out"
    segdl.extract(served.url, out)
    served.replace(build("tar", [M("a.txt", b"two")]), '"v2"')
    with pytest.raises(segdl.DestinationError, match="already exists"):
        segdl.extract(served.url, out)
    assert (out / "a.txt").read_bytes() == b"one"
    assert not segdl.extract(served.url, out, overwrite=True).already_extracted
    assert (out / "a.txt").read_bytes() == b"two"
    assert segdl.extract(served.url, out).already_extracted


def test_another_selection_is_another_extraction(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve_file(rangeserver, "/a.zip", zip_of(tree, zipfile.ZIP_DEFLATED))
    out = tmp_path / "out"
    segdl.extract(served.url, out, include=["pkg/sub/deeper"])
    result = segdl.extract(served.url, out, include=["pkg/README"])
    assert not result.already_extracted and result.paths == ("pkg/README",)
    assert (out / "pkg" / "README").read_text() == "hello\n"
    assert (out / "pkg" / "sub" / "deeper" / "note.txt").exists()


def test_the_command_run_again_says_already_extracted(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    data = zip_of(tree, zipfile.ZIP_DEFLATED)
    served = serve_file(rangeserver, "/a.zip", data)
    argv = [served.url, "--extract", "out", "--keep-archive", "a.zip"]
    proc = run(*argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = snapshot(tmp_path)
    served.clear_log()
    for extra in ([], ["--if-exists", "skip"]):
        proc = run(*argv, *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        line = one_line(proc)
        assert line.startswith(f"{tmp_path / 'out'}: already extracted (")
        assert gets(served) == []
        assert snapshot(tmp_path) == before
    (tmp_path / "out" / "pkg" / "README").unlink()
    proc = run(*argv, cwd=tmp_path)  # the kept archive is the earlier run's: replaced
    assert proc.returncode == 0, proc.stderr
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)
    assert (tmp_path / "a.zip").read_bytes() == data


class Warnings(segdl.Listener):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str) -> None:
        self.lines.append(message)


def test_a_record_that_cannot_be_written_or_read_only_costs_the_no_op(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(rangeserver, "/a.tar", build("tar", [M("a.txt", b"one")]))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".segdl").write_bytes(b"not a folder")
    listener = Warnings()
    result = segdl.extract(served.url, out, listener=listener)
    assert result.paths == ("a.txt",) and (out / "a.txt").read_bytes() == b"one"
    assert len(listener.lines) == 1 and "a re-run will extract again" in listener.lines[0]
    (out / ".segdl").unlink()
    segdl.extract(served.url, out, overwrite=True)
    [written] = (out / ".segdl").iterdir()
    written.write_text("{not json")
    with pytest.raises(segdl.DestinationError, match="already exists"):
        segdl.extract(served.url, out)  # no record: the files are not known to be ours
