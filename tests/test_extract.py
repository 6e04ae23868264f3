"""`segdl.extract` end to end: archives built here with tarfile/zipfile, served by the loopback
range server, downloaded and extracted. The rules themselves are tested on the core
(tests/test_archive_*.py); here, the wiring: formats, ranges or none, what is fetched, the
checks before the move, and that a refusal leaves DIR as it was."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import zstandard
from rangeserver import Faults, RangeHTTPServer, ServedFile, serve_file
from test_archive_rules import M, build, dest, fails_untouched, make_tree, snapshot, tar_of, zip_of
from test_archive_tar import zero_members
from test_archive_zip import central_entries, patched

import segdl
from segdl.archive.zipread import TAIL

__all__ = ["dest"]  # the fixture, imported for these tests

MiB = 1 << 20
ZIP_METHODS = {
    "zip-stored": zipfile.ZIP_STORED,
    "zip-deflate": zipfile.ZIP_DEFLATED,
    "zip-bzip2": zipfile.ZIP_BZIP2,
    "zip-lzma": zipfile.ZIP_LZMA,
}
FORMATS = ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst", *ZIP_METHODS]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tree of test_archive_rules plus 600 KB of noise: an archive of several
    pieces of a 1 MiB window, fetched over several connections, larger than a zip's tail."""
    src = make_tree(tmp_path_factory.mktemp("src"))
    (src / "sub" / "noise.bin").write_bytes(os.urandom(600_000))
    return src


def archive_of(src: Path, fmt: str) -> bytes:
    if fmt in ZIP_METHODS:
        return zip_of(src, ZIP_METHODS[fmt])
    if fmt == "tar.zst":
        return zstandard.ZstdCompressor().compress(tar_of(src, "tar"))
    return tar_of(src, fmt)


def no_leftovers(root: Path) -> None:
    """No staging folder, temporary archive or partial kept archive or record anywhere under
    `root` (a finished extraction's record, `.segdl/extract-*.json`, is no leftover)."""
    assert [
        p for p in root.rglob("*") if p.name.startswith(".segdl-") or p.suffix in (".part", ".tmp")
    ] == []


def extracted(root: Path) -> dict[str, tuple[object, ...]]:
    """`snapshot(root)` without the record of the extraction (`.segdl/`)."""
    return {k: v for k, v in snapshot(root).items() if k.split("/")[0] != ".segdl"}


def serve(server: RangeHTTPServer, data: bytes, path: str = "/a", **faults: object) -> ServedFile:
    return serve_file(server, path, data, Faults(**faults))  # type: ignore[arg-type]


# -- every format, byte-exact ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_byte_exact_from_a_url_without_a_name(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str
) -> None:
    data = archive_of(tree, fmt)
    served = serve(rangeserver, data, "/download", content_type="text/html")
    result = segdl.extract(served.url + "?id=3", tmp_path / "out", connections=4, window=MiB)
    assert result.format == fmt.split("-")[0]
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)
    assert sorted(os.listdir(tmp_path / "out")) == [".segdl", "pkg"]  # .segdl: the record
    files = [v for v in snapshot(tree).values() if v[0] == "file"]
    assert result.members == len(snapshot(tree))
    assert result.bytes_written == sum(len(v[2]) for v in files)
    assert result.url == served.url + "?id=3" and result.elapsed > 0
    assert result.archive is None
    rangeserver.wait_idle()
    # Every byte once over several connections, plus the head (and a zip's tail).
    assert len(data) <= served.bytes_sent() <= len(data) + DETECT + (TAIL if "zip" in fmt else 0)
    assert result.fetched <= served.bytes_sent()
    assert len({r.connection_id for r in served.gets()}) > 2
    no_leftovers(tmp_path)


DETECT = 512


def test_the_name_and_content_type_do_not_decide_the_format(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve(rangeserver, archive_of(tree, "tar.xz"), "/data.zip", content_type="text/plain")
    assert segdl.extract(served.url, tmp_path / "out").format == "tar.xz"
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)


def test_a_zip_smaller_than_its_tail_is_fetched_once(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    tiny = build("zip", [M("a.txt", b"a" * 100), M("b/c.txt", b"c")])
    assert len(tiny) < DETECT
    small = build("zip", [M("a.txt", os.urandom(5000)), M("b/c.txt", b"c")])
    for name, data in (("tiny", tiny), ("small", small)):
        served = serve(rangeserver, data, f"/{name}")
        segdl.extract(served.url, tmp_path / name)
        assert (tmp_path / name / "b" / "c.txt").read_bytes() == b"c"
        rangeserver.wait_idle()
        # The head (the whole zip when tiny), then the tail (the whole zip), nothing more.
        assert served.bytes_sent() == len(data) + (DETECT if name == "small" else 0), name


# -- servers without ranges -----------------------------------------------------------------------

NO_RANGES = {
    "ignores ranges": {"ignore_range": True},
    "says none": {"ignore_range": True, "advertise_ranges": False},
    "unknown size": {"ignore_range": True, "chunked": True, "head_no_length": True},
}


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
@pytest.mark.parametrize("faults", list(NO_RANGES.values()), ids=list(NO_RANGES))
def test_a_server_without_ranges(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str, faults: dict[str, bool]
) -> None:
    data = archive_of(tree, fmt)
    served = serve(rangeserver, data, **faults)
    result = segdl.extract(served.url, tmp_path / "out", connections=4)
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)
    assert sorted(os.listdir(tmp_path / "out")) == [".segdl", "pkg"]  # no temporary copy
    no_leftovers(tmp_path)
    rangeserver.wait_idle()
    # One plain stream (a probe GET that gets the whole file may be dropped early).
    assert len(data) <= served.bytes_sent() < 2 * len(data) + DETECT
    assert result.format == fmt.split("-")[0]


def test_a_failed_zip_from_a_server_without_ranges_leaves_nothing(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path
) -> None:
    data = build("zip", [M("a.txt", b"a"), M("../evil", b"x")])
    served = serve(rangeserver, data, ignore_range=True)
    fails_untouched(
        dest, segdl.UnsafeArchiveError, lambda: segdl.extract(served.url, dest), "'../evil'"
    )
    no_leftovers(tmp_path)
    assert not (tmp_path / "evil").exists()


# -- safety, end to end ---------------------------------------------------------------------------

REFUSED = {
    "zip-slip": ("zip", [M("ok.txt", b"ok"), M("../evil", b"x")], ("'../evil'", "'..'")),
    "absolute": ("tar.gz", [M("/tmp/evil", b"x")], ("'/tmp/evil'", "absolute")),
    "backslashes": ("zip", [M("..\\evil", b"x")], ("'..\\\\evil'", "'..'")),
    "symlink out, then through it": (
        "tar.gz",
        [M("l", kind="symlink", link=".."), M("l/evil", b"x")],
        ("'l'", "symbolic link"),
    ),
    "zip symlink out": ("zip", [M("l", kind="symlink", link="/etc")], ("'l'", "absolute")),
    "hardlink out": ("tar", [M("h", kind="hardlink", link="../evil")], ("'h'", "hard link")),
    "device": ("tar.xz", [M("dev", kind="chardev")], ("'dev'", "character device")),
    "fifo in a zip": ("zip", [M("p", kind="fifo")], ("'p'", "FIFO")),
}


@pytest.mark.parametrize(("fmt", "members", "words"), REFUSED.values(), ids=list(REFUSED))
def test_a_refused_member_leaves_dir_untouched(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    dest: Path,
    fmt: str,
    members: list[M],
    words: tuple[str, ...],
) -> None:
    (tmp_path / "outside").mkdir()
    served = serve(rangeserver, build(fmt, members))
    call = lambda: segdl.extract(served.url, dest / "sub")  # noqa: E731
    fails_untouched(tmp_path, segdl.UnsafeArchiveError, call, *words)
    assert not (dest / "sub").exists()
    assert os.listdir(tmp_path / "outside") == []


def test_setuid_and_wide_modes_are_masked(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    members = [
        M("d", kind="dir", mode=0o3777),
        M("d/run", b"#!/bin/sh\n", mode=0o4777),
        M("d/data", b"x", mode=0o2666),
    ]
    for fmt in ("tar.gz", "zip"):
        served = serve(rangeserver, build(fmt, members), f"/{fmt}")
        segdl.extract(served.url, tmp_path / fmt)
        modes = {k.split("/")[-1]: v[1] for k, v in extracted(tmp_path / fmt).items()}
        assert modes == {".": 0o755, "d": 0o755, "run": 0o755, "data": 0o644}, fmt


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """A ~100 KB zip of one 100 MiB member of zeros."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros", "w") as member,
    ):
        for _ in range(100):
            member.write(bytes(MiB))
    return buf.getvalue()


def test_a_zip_bomb_is_refused_from_its_directory(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, zip_bomb: bytes
) -> None:
    served = serve(rangeserver, zip_bomb)
    call = lambda: segdl.extract(served.url, dest)  # noqa: E731
    fails_untouched(dest, segdl.ArchiveLimitError, call, "'zeros'", "max_ratio")
    rangeserver.wait_idle()
    assert len(served.gets()) == 2  # the head and the tail: no member data was fetched
    no_leftovers(tmp_path)


def test_a_tar_gz_bomb_is_stopped(rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path) -> None:
    data = zero_members("w:gz", [100 * MiB])
    served = serve(rangeserver, data)
    call = lambda: segdl.extract(served.url, dest, window=MiB)  # noqa: E731
    fails_untouched(dest, segdl.ArchiveLimitError, call, "'zeros0'", "max_ratio")
    no_leftovers(tmp_path)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_size_and_member_limits(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, fmt: str
) -> None:
    served = serve(rangeserver, build(fmt, [M("a", os.urandom(5000)), M("b", b"b"), M("c")]))
    call = lambda: segdl.extract(served.url, dest, max_size=4000)  # noqa: E731
    fails_untouched(dest, segdl.ArchiveLimitError, call, "'a'", "max_size")
    call = lambda: segdl.extract(served.url, dest, max_members=2)  # noqa: E731
    fails_untouched(dest, segdl.ArchiveLimitError, call, "max_members")


def test_overlapping_zip_entries_are_refused(
    rangeserver: RangeHTTPServer, dest: Path, tree: Path
) -> None:
    data = build("zip", [M("a", b"1" * 100), M("b", b"2" * 100)])
    first, second = central_entries(data)
    header = struct.unpack_from("<L", data, first + 42)[0]
    served = serve(rangeserver, patched(data, (second + 42, "<L", header)))
    call = lambda: segdl.extract(served.url, dest)  # noqa: E731
    fails_untouched(dest, segdl.UnsafeArchiveError, call, "overlap")


# -- truncated, corrupted, changed ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-stored", "tar.bz2"])
@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_archive_leaves_dir_untouched(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, tree: Path, fmt: str, damage: str
) -> None:
    data = archive_of(tree, fmt)
    if damage == "truncated":
        data = data[: len(data) // 2] if "zip" not in fmt else data[: len(data) - 30]
    else:
        at = len(data) // 2
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    served = serve(rangeserver, data)
    # A corrupted bzip2 block may decompress to something that is not a tar at all.
    error = segdl.ArchiveError if fmt == "tar.bz2" else segdl.CorruptArchiveError
    fails_untouched(dest, error, lambda: segdl.extract(served.url, dest))
    no_leftovers(tmp_path)


def test_a_remote_that_changes_mid_way_leaves_dir_untouched(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, tree: Path
) -> None:
    data = archive_of(tree, "tar.gz")
    served = serve(rangeserver, data, change_after_bytes=DETECT)  # after the head
    call = lambda: segdl.extract(served.url, dest, retries=0)  # noqa: E731
    fails_untouched(dest, segdl.RemoteChangedError, call)
    no_leftovers(tmp_path)


def test_not_an_archive(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    served = serve(rangeserver, b"<html>Not found</html>" * 40, content_type="text/html")
    with pytest.raises(segdl.UnsupportedArchiveError, match="not an archive"):
        segdl.extract(served.url, tmp_path / "new" / "out")
    assert os.listdir(tmp_path) == []


# -- include and strip-components ------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_zip() -> tuple[bytes, bytes]:
    """An 8.3 MB zip of eight 1 MiB members of noise, and a 300 KiB member in the middle."""
    member = os.urandom(300 << 10)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(8):
            archive.writestr(f"big/{i}.bin", os.urandom(MiB))
            if i == 3:
                archive.writestr("wanted/member.bin", member)
    return buf.getvalue(), member


def test_include_fetches_only_the_members_ranges(
    rangeserver: RangeHTTPServer, tmp_path: Path, big_zip: tuple[bytes, bytes]
) -> None:
    data, member = big_zip
    served = serve(rangeserver, data)
    result = segdl.extract(served.url, tmp_path / "out", include=["wanted/*.bin"])
    assert extracted(tmp_path / "out") == {
        ".": ("dir", 0o755),
        "wanted": ("dir", 0o755),
        "wanted/member.bin": ("file", 0o600, member),  # zipfile's mode for writestr
    }
    assert (result.members, result.skipped) == (1, 8)
    assert result.paths == ("wanted/member.bin",)
    rangeserver.wait_idle()
    sent = served.bytes_sent()
    assert sent < len(member) + 2 * MiB < len(data) // 3  # the window past it is 1 MiB at most
    assert result.fetched <= sent  # a piece in flight at the end is cut off, not counted
    start = data.index(b"wanted/member.bin")  # its local header's name
    stream = [r for r in served.ranges_requested() if r[0] > DETECT and r[1] < len(data) - TAIL]
    assert stream and min(r[0] for r in stream) <= start < max(r[1] for r in stream)
    assert min(r[0] for r in stream) > 3 * MiB  # nothing before the member: no byte 0 start


def test_include_of_a_tar_reads_the_stream_and_keeps_the_chosen(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path
) -> None:
    served = serve(rangeserver, archive_of(tree, "tar.gz"))
    result = segdl.extract(served.url, tmp_path / "out", include=["pkg/sub/deeper"])
    out = tmp_path / "out"
    assert sorted(extracted(out)) == [
        ".",
        "pkg",
        "pkg/sub",
        "pkg/sub/deeper",
        "pkg/sub/deeper/note.txt",
    ]
    assert result.members == 2  # deeper/ and note.txt; the parents are made, not members
    assert result.paths == ("pkg/sub/deeper", "pkg/sub/deeper/note.txt")


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
def test_strip_components(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str
) -> None:
    served = serve(rangeserver, archive_of(tree, fmt))
    result = segdl.extract(served.url, tmp_path / "out", strip_components=1)
    assert extracted(tmp_path / "out") == snapshot(tree)
    assert result.skipped == 1  # "pkg/" itself
    segdl.extract(served.url, tmp_path / "two", strip_components=2, include=["pkg/sub"])
    two = sorted(os.listdir(tmp_path / "two"))
    assert two == [".segdl", "data.bin", "deeper", "link", "noise.bin"]


# -- existing files, kept archives, checksums -----------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
def test_existing_files_are_not_overwritten(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    (out / "pkg").mkdir(parents=True)
    (out / "pkg" / "README").write_text("mine")
    served = serve(rangeserver, archive_of(tree, fmt))
    call = lambda: segdl.extract(served.url, out)  # noqa: E731
    fails_untouched(out, segdl.DestinationError, call, "README", "already exists")
    segdl.extract(served.url, out, overwrite=True)
    assert snapshot(out / "pkg") == snapshot(tree)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no ranges"])
def test_keep_archive(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str, ranges: bool
) -> None:
    data = archive_of(tree, fmt)
    served = serve(rangeserver, data, ignore_range=not ranges)
    kept = tmp_path / "kept.bin"
    result = segdl.extract(served.url, tmp_path / "out", keep_archive=kept, connections=4)
    assert kept.read_bytes() == data
    assert result.archive == kept
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(tree)
    assert sorted(os.listdir(tmp_path)) == ["kept.bin", "out"]
    served.clear_log()
    with pytest.raises(segdl.DestinationError, match="already exists"):
        segdl.extract(served.url, tmp_path / "again", keep_archive=kept)
    assert served.requests == []  # refused before any request


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no ranges"])
def test_checksum_is_checked_before_the_move(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, tree: Path, fmt: str, ranges: bool
) -> None:
    data = archive_of(tree, fmt)
    served = serve(rangeserver, data, ignore_range=not ranges)
    good = "sha256=" + hashlib.sha256(data).hexdigest()
    bad = "sha256=" + hashlib.sha256(data + b"x").hexdigest()
    kept = tmp_path / "kept"
    call = lambda: segdl.extract(served.url, dest, checksum=bad, keep_archive=kept)  # noqa: E731
    fails_untouched(dest, segdl.IntegrityError, call, "sha256")
    assert not kept.exists()
    no_leftovers(tmp_path)
    segdl.extract(served.url, dest, checksum=good)
    assert snapshot(dest / "pkg") == snapshot(tree)


# -- options, progress, interruption ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"include": "*.txt"},
        {"include": [""]},
        {"strip_components": -1},
        {"window": 1000},
        {"checksum": "sha256=12"},
        {"max_members": 0},
        {"max_ratio": 0.5},
        {"connections": 0},
    ],
)
def test_bad_options_are_usage_errors_before_any_request(
    rangeserver: RangeHTTPServer, tmp_path: Path, options: dict[str, object]
) -> None:
    served = serve(rangeserver, build("tar", [M("a", b"a")]))
    with pytest.raises(segdl.UsageError):
        segdl.extract(served.url, tmp_path / "out", **options)  # type: ignore[arg-type]
    assert served.requests == []
    assert os.listdir(tmp_path) == []


class Recorder(segdl.Listener):
    def __init__(self) -> None:
        self.totals: list[int | None] = []
        self.progress_calls: list[tuple[int, int | None]] = []
        self.finished: list[int] = []
        self.extracted: list[tuple[int, int]] = []

    def start(self, info: segdl.StartInfo) -> None:
        self.totals.append(info.total)

    def progress(self, done: int, total: int | None, connections: int) -> None:
        self.progress_calls.append((done, total))

    def finish(self, done: int) -> None:
        self.finished.append(done)

    def extracting(self, members: int, written: int) -> None:
        self.extracted.append((members, written))


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
def test_the_listener_sees_download_and_extraction(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, fmt: str
) -> None:
    data = archive_of(tree, fmt)
    served = serve(rangeserver, data)
    listener = Recorder()
    result = segdl.extract(served.url, tmp_path / "out", listener=listener)
    assert listener.progress_calls and listener.extracted
    assert listener.extracted[-1] == (result.members, result.bytes_written)
    assert len(listener.totals) == len(listener.finished) == 1
    total, done = listener.totals[0], listener.finished[0]
    assert total is not None and 0 < done <= total <= len(data)
    assert all(t == total for _, t in listener.progress_calls)


@pytest.mark.parametrize("fmt", ["tar.gz", "zip-deflate"])
@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no ranges"])
def test_an_interrupt_leaves_dir_as_it_was(
    rangeserver: RangeHTTPServer, tmp_path: Path, dest: Path, tree: Path, fmt: str, ranges: bool
) -> None:
    class Interrupting(segdl.Listener):
        def extracting(self, members: int, written: int) -> None:
            if members >= 3:
                raise KeyboardInterrupt

    served = serve(rangeserver, archive_of(tree, fmt), ignore_range=not ranges)
    call = lambda: segdl.extract(served.url, dest, listener=Interrupting())  # noqa: E731
    fails_untouched(dest, KeyboardInterrupt, call)
    no_leftovers(tmp_path)


def test_tar_zst_without_its_extra_names_it(
    rangeserver: RangeHTTPServer, tmp_path: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(rangeserver, archive_of(tree, "tar.zst"))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard raises ImportError
    with pytest.raises(segdl.MissingExtraError, match=r"pip install 'segdl\[zstd\]'") as caught:
        segdl.extract(served.url, tmp_path / "out")
    assert caught.value.extra == "zstd"
    assert os.listdir(tmp_path) == []
