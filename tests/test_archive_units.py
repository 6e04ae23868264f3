"""The pure parts of segdl.archive (detection, paths, modes, link resolution, the budget) and
the staging tree's own defence against writes through links."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
from pathlib import Path

import pytest
from test_archive_rules import M, build

import segdl.archive
import segdl.errors
from segdl.archive import DETECT_SIZE, Limits, detect_format
from segdl.archive.detect import is_tar_header
from segdl.archive.safety import (
    Budget,
    LinkEscape,
    dir_mode,
    file_mode,
    included,
    member_parts,
    normalize_patterns,
    resolve_link,
)
from segdl.archive.staging import Staging
from segdl.errors import ArchiveLimitError, UnsafeArchiveError, UnsupportedArchiveError, UsageError


def test_public_names() -> None:
    for name in segdl.archive.__all__:
        assert hasattr(segdl.archive, name), name
    for name in ("ArchiveError", "CorruptArchiveError", "UnsafeArchiveError", "MissingExtraError"):
        assert name in segdl.errors.__all__
        assert name in (segdl.errors.__doc__ or "")
        assert issubclass(getattr(segdl.errors, name), segdl.errors.SegdlError)


# -- detection -----------------------------------------------------------------------------------


def _tar() -> bytes:
    return build("tar", [M("a.txt", b"a")])


def _v7_header() -> bytes:
    """An old-style header: no ustar magic, only the checksum to go by."""
    block = bytearray(_tar()[:512])
    block[257:265] = bytes(8)
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (_tar()[:DETECT_SIZE], "tar"),
        (_v7_header(), "tar"),
        (bytes(512), "tar"),  # an empty archive is its end marker
        (gzip.compress(_tar())[:DETECT_SIZE], "tar.gz"),
        (bz2.compress(_tar())[:DETECT_SIZE], "tar.bz2"),
        (lzma.compress(_tar())[:DETECT_SIZE], "tar.xz"),
        (b"\x28\xb5\x2f\xfd" + bytes(20), "tar.zst"),
        (b"\x5a\x2a\x4d\x18" + bytes(20), "tar.zst"),
        (build("zip", [M("a", b"a")])[:DETECT_SIZE], "zip"),
        (b"PK\x05\x06" + bytes(18), "zip"),
    ],
)
def test_detect_format(head: bytes, fmt: str) -> None:
    assert detect_format(head) == fmt


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"hello",
        b"BZh0" + bytes(600),
        b"%PDF-1.7" + bytes(600),
        _tar()[:511],  # too short to be a header
        bytes(100) + b"ustar\x00" + bytes(406),  # the magic at the wrong place
    ],
)
def test_detect_format_refuses(head: bytes) -> None:
    with pytest.raises(UnsupportedArchiveError, match="not an archive"):
        detect_format(head)


def test_a_bad_tar_checksum_is_no_tar_header() -> None:
    block = bytearray(_tar()[:512])
    assert is_tar_header(bytes(block))
    block[0] ^= 1
    assert not is_tar_header(bytes(block))


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("a/b/c", ("a", "b", "c")),
        ("./a//b/", ("a", "b")),
        ("a\\b", ("a", "b")),
        ("./", ()),
        ("", ()),
        ("a..b/..c", ("a..b", "..c")),
    ],
)
def test_member_parts(name: str, parts: tuple[str, ...]) -> None:
    assert member_parts(name) == parts


@pytest.mark.parametrize("name", ["/a", "\\a", "C:/a", "c:a", "a/../b", "..", "a\x00b"])
def test_member_parts_refuses(name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="refused member"):
        member_parts(name)


def test_include_patterns() -> None:
    patterns = normalize_patterns(["./pkg/src/", "*.md", "docs\\*"])
    assert patterns == ("pkg/src", "*.md", "docs/*")
    assert included(("pkg", "src"), patterns)
    assert included(("pkg", "src", "deep", "x.c"), patterns)  # below a matched directory
    assert included(("deep", "dir", "README.md"), patterns)  # * matches /
    assert not included(("pkg", "srcs", "x.c"), patterns)
    assert not included(("pkg", "README.MD"), patterns)  # case-sensitive
    assert included(("anything",), None)


@pytest.mark.parametrize(
    ("mode", "as_file", "as_dir"),
    [
        (0o644, 0o644, 0o744),
        (0o755, 0o755, 0o755),
        (0o777, 0o755, 0o755),
        (0o4755, 0o755, 0o755),
        (0o7777, 0o755, 0o755),
        (0o000, 0o600, 0o700),
        (0o070, 0o640, 0o750),  # no owner x: the group's x is dropped too
        (0o1700, 0o700, 0o700),
    ],
)
def test_modes(mode: int, as_file: int, as_dir: int) -> None:
    assert file_mode(mode) == as_file
    assert dir_mode(mode) == as_dir


def test_resolve_link() -> None:
    links = {("d", "up"): "..", ("loop1",): "loop2", ("loop2",): "loop1", ("abs",): "/etc"}
    lookup = links.get
    assert resolve_link((), "a/b", lookup) == ("a", "b")
    assert resolve_link(("d",), "../a", lookup) == ("a",)
    assert resolve_link(("d",), "up/a", lookup) == ("a",)  # d/up is the root
    assert resolve_link(("x",), "x\\..\\y", lookup) == ("x", "y")
    for directory, target in [
        ((), ".."),
        (("d",), "up/.."),
        ((), "d/up/../x"),
        ((), "loop1"),
        ((), "abs/x"),
        ((), "/x"),
        ((), "C:\\x"),
        ((), ""),
    ]:
        with pytest.raises(LinkEscape):
            resolve_link(directory, target, lookup)


# -- limits and progress -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_size": -1},
        {"max_members": 0},
        {"max_ratio": 0.5},
        {"max_ratio": float("nan")},
        {"ratio_grace": -1},
    ],
)
def test_limits_are_checked(options: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        Limits(**options)  # type: ignore[arg-type]


def test_the_ratio_applies_beyond_the_grace() -> None:
    budget = Budget(Limits(max_ratio=10, ratio_grace=1000), max_size=10**9)
    budget.output("m", 1000, member_in=1)  # within the grace, whatever the ratio
    budget.output("m", 1000, member_in=200)  # 2000 from 200: exactly 10 times
    with pytest.raises(ArchiveLimitError, match=r"'m'.*max_ratio"):
        budget.output("m", 1, member_in=200)


def test_the_overall_ratio_adds_up_members() -> None:
    budget = Budget(Limits(max_ratio=10, ratio_grace=1000), max_size=10**9)
    for name in ("a", "b", "c"):
        budget.begin_member()
        budget.member_overall(name, 900, member_in=100)
        budget.output(name, 900, member_in=100)
        budget.end_member(100)
    budget.begin_member()
    budget.member_overall("d", 300, member_in=1)  # 3000 bytes from 301
    with pytest.raises(ArchiveLimitError, match="overall"):
        budget.member_overall("d", 400, member_in=1)


def test_progress_is_throttled() -> None:
    now = [0.0]
    calls: list[tuple[int, int]] = []
    budget = Budget(
        Limits(),
        max_size=10**9,
        on_progress=lambda members, written: calls.append((members, written)),
        clock=lambda: now[0],
    )
    for _ in range(10):
        budget.output("m", 10, member_in=10)
        now[0] += 0.1
    budget.created()
    assert calls == [(0, 40), (0, 70), (0, 100)]  # every 0.3 s of fake time
    budget.tick(force=True)
    assert calls[-1] == (1, 100)


# -- the staging tree ----------------------------------------------------------------------------


def test_staging_never_writes_through_a_link(tmp_path: Path) -> None:
    """The second line of defence: even without the member checks, a write through a link of
    the tree fails (O_NOFOLLOW), and nothing reaches the link's target."""
    (tmp_path / "outside").mkdir()
    staging = Staging(tmp_path / "dest")
    try:
        staging.make_symlink("l", ("l",), str(tmp_path / "outside"), None)
        for parts in [("l", "x"), ("l", "deeper", "x")]:
            with pytest.raises(UnsafeArchiveError, match="goes through a symbolic link"):
                staging.write_file("l/x", parts, [b"evil"], 0o644, None)
        staging.make_dir("d", ("d",), 0o755, None)
        staging.write_file("f", ("f",), [b"file"], 0o644, None)
        with pytest.raises(UnsafeArchiveError, match="goes through a symbolic link or a file"):
            staging.write_file("f/x", ("f", "x"), [b"x"], 0o644, None)
    finally:
        staging.close()
    assert os.listdir(tmp_path / "outside") == []
    assert not (tmp_path / "dest").exists()


def test_the_staging_folder_lives_in_dest_until_the_end(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    staging = Staging(dest)
    [name] = os.listdir(dest)
    assert name.startswith(".segdl-extract-")
    staging.write_file("a", ("a",), [b"a"], 0o644, None)
    staging.finish_dirs()
    staging.commit(overwrite=False)
    staging.close()
    assert os.listdir(dest) == ["a"]


def test_a_member_named_like_the_staging_folder(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    staging = Staging(dest)
    try:
        assert staging.box is not None
        assert "staging" in (staging.dest_conflict((staging.box.name,), False, True) or "")
    finally:
        staging.close()


def test_tar_info_members_are_not_kept(tmp_path: Path) -> None:
    """A stream of many members holds none of them in memory (tarfile would keep them all)."""
    seen: list[int] = []
    real = tarfile.TarFile.next

    def spy(self: tarfile.TarFile) -> tarfile.TarInfo | None:
        seen.append(len(self.members))  # type: ignore[attr-defined]
        return real(self)

    data = build("tar", [M(f"f{i}", b"x") for i in range(50)])
    tarfile.TarFile.next = spy  # type: ignore[method-assign]
    try:
        segdl.archive.extract_stream(io.BytesIO(data), tmp_path / "out")
    finally:
        tarfile.TarFile.next = real  # type: ignore[method-assign]
    assert len(os.listdir(tmp_path / "out")) == 50
    assert seen and max(seen) <= 1
