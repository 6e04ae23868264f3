"""The extraction rules, for every format: paths, links, special files, modes, conflicts, options,
all or nothing. Archives are built here with tarfile and zipfile; the helpers at the top are
shared by the other test_archive_* modules."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from segdl.archive import ExtractResult, Limits, extract_stream, extract_zip
from segdl.errors import ArchiveLimitError, DestinationError, SegdlError, UnsafeArchiveError

TAR_MODES = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}
ALL = [*TAR_MODES, "zip"]


@dataclass
class M:
    """One member of an archive to build."""

    name: str
    data: bytes = b""
    kind: str = "file"  # file, dir, symlink, hardlink, fifo, chardev, blockdev
    mode: int = 0o644
    link: str = ""
    mtime: int = 1_600_000_000


_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
}
_ZIP_TYPES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "chardev": stat.S_IFCHR,
    "socket": stat.S_IFSOCK,
}


def build(fmt: str, members: list[M], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """An archive of `fmt` holding `members`, names and all exactly as given."""
    buf = io.BytesIO()
    if fmt == "zip":
        with zipfile.ZipFile(buf, "w", compression) as archive:
            for m in members:
                name = m.name + "/" if m.kind == "dir" and not m.name.endswith("/") else m.name
                info = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
                info.create_system = 3
                info.external_attr = (_ZIP_TYPES[m.kind] | m.mode) << 16
                if m.kind == "dir":
                    info.external_attr |= 0x10
                data = m.link.encode() if m.kind == "symlink" else m.data
                archive.writestr(info, data, compress_type=compression)
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode=TAR_MODES[fmt], format=tarfile.PAX_FORMAT) as archive:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TAR_TYPES[m.kind]
            info.mode = m.mode
            info.mtime = m.mtime
            info.linkname = m.link
            info.size = len(m.data) if m.kind == "file" else 0
            archive.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    return buf.getvalue()


def extract(fmt: str, data: bytes, dest: Path, **options: Any) -> ExtractResult:
    """Extracts with the entry point the format needs; tar formats are detected."""
    if fmt == "zip":
        return extract_zip(
            lambda offset, length: data[offset : offset + length], len(data), dest, **options
        )
    return extract_stream(io.BytesIO(data), dest, **options)


def tar_of(src: Path, fmt: str, arcname: str = "pkg") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=TAR_MODES[fmt]) as archive:
        archive.add(src, arcname=arcname)
    return buf.getvalue()


def zip_of(src: Path, compression: int, arcname: str = "pkg", **options: Any) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression, **options) as archive:
        for path in sorted([src, *src.rglob("*")]):
            name = "/".join([arcname, *path.relative_to(src).parts])
            if path.is_symlink():
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, os.readlink(path))
            elif path.is_dir():
                archive.writestr(zipfile.ZipInfo.from_file(path, name + "/"), b"")
            else:
                info = zipfile.ZipInfo.from_file(path, name)
                archive.writestr(info, path.read_bytes(), compress_type=compression)
    return buf.getvalue()


def make_tree(root: Path) -> Path:
    """A source tree with the modes extraction keeps, nesting, an empty file, binary data and
    a relative symbolic link."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "private").mkdir(mode=0o700)
    (root / "README").write_text("hello\n")
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "secret").write_bytes(b"s")
    (root / "secret").chmod(0o600)
    (root / "empty").write_bytes(b"")
    (root / "sub" / "data.bin").write_bytes(bytes(range(256)) * 1000 + os.urandom(5000))
    (root / "sub" / "deeper" / "note.txt").write_text("deep\n" * 100)
    (root / "private" / "key").write_text("k")
    (root / "sub" / "link").symlink_to("deeper/note.txt")
    for directory in (root, root / "sub", root / "sub" / "deeper", root / "empty-dir"):
        directory.chmod(0o755)
    return root


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Everything under `root`, links not followed: kind, mode and content or target."""
    if not root.exists():
        return {}
    seen: dict[str, tuple[Any, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        rel = path.relative_to(root).as_posix()
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            seen[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            seen[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            seen[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return seen


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A destination that already holds a file and a directory."""
    root = tmp_path / "dest"
    (root / "old-dir").mkdir(parents=True)
    (root / "old-dir" / "kept.txt").write_text("kept")
    (root / "old.txt").write_text("old")
    return root


def fails_untouched(
    dest: Path, error: type[BaseException], call: Callable[[], object], *names: str
) -> str:
    """Runs `call`, expects `error`, and checks that `dest` is exactly as before (no staging
    folder either). Returns the message, checked to be one line naming `names`."""
    before = snapshot(dest)
    with pytest.raises(error) as caught:
        call()
    assert snapshot(dest) == before
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message
    return message


# -- every format extracted byte-exact ---------------------------------------------------------


@pytest.mark.parametrize("fmt", list(TAR_MODES))
def test_tar_formats_extract_byte_exact_without_a_name(tmp_path: Path, fmt: str) -> None:
    src = make_tree(tmp_path / "src")
    data = tar_of(src, fmt)
    result = extract_stream(io.BytesIO(data), tmp_path / "out")  # no name, no format: detected
    assert result.format == fmt
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(src)
    assert sorted(os.listdir(tmp_path / "out")) == ["pkg"]
    assert result.members == len(snapshot(src))
    assert result.bytes_written == sum(len(v[2]) for v in snapshot(src).values() if v[0] == "file")


@pytest.mark.parametrize(
    "compression",
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
    ids=["stored", "deflate", "bzip2", "lzma"],
)
def test_zip_methods_extract_byte_exact(tmp_path: Path, compression: int) -> None:
    src = make_tree(tmp_path / "src")
    data = zip_of(src, compression)
    result = extract("zip", data, tmp_path / "out")
    assert result.format == "zip"
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(src)
    assert sorted(os.listdir(tmp_path / "out")) == ["pkg"]


def test_file_mtimes_are_kept(tmp_path: Path) -> None:
    for fmt in ("tar", "zip"):
        extract(fmt, build(fmt, [M("a.txt", b"x", mtime=1_600_000_000)]), tmp_path / fmt)
        mtime = (tmp_path / fmt / "a.txt").stat().st_mtime
        assert abs(mtime - 1_600_000_000) < 86_400  # zip's DOS time is local time


def test_dest_is_created_with_its_parents(tmp_path: Path) -> None:
    extract("tar", build("tar", [M("a.txt", b"x")]), tmp_path / "new" / "dir")
    assert (tmp_path / "new" / "dir" / "a.txt").read_bytes() == b"x"


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/x", "absolute"),
        ("/tmp/x", "absolute"),
        ("C:\\x", "drive letter"),
        ("C:x", "drive letter"),
        ("..\\x", "'..'"),
        ("a\\..\\..\\x", "'..'"),
        ("\\\\server\\share\\x", "absolute"),
    ],
)
def test_zip_slip_is_refused(tmp_path: Path, dest: Path, fmt: str, name: str, rule: str) -> None:
    data = build(fmt, [M("fine.txt", b"ok"), M(name, b"evil")])
    message = fails_untouched(dest, UnsafeArchiveError, lambda: extract(fmt, data, dest), rule)
    assert repr(name) in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", ALL)
def test_a_refused_member_that_would_be_skipped_still_refuses(dest: Path, fmt: str) -> None:
    data = build(fmt, [M("pkg/a.txt", b"a"), M("../x", b"evil")])
    fails_untouched(
        dest, UnsafeArchiveError, lambda: extract(fmt, data, dest, include=["pkg"]), "'../x'"
    )


@pytest.mark.parametrize("fmt", ALL)
def test_backslashes_are_separators(tmp_path: Path, fmt: str) -> None:
    extract(fmt, build(fmt, [M("dir\\file.txt", b"x")]), tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "file.txt").read_bytes() == b"x"


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_dot_components_and_root_entries_are_harmless(tmp_path: Path, fmt: str) -> None:
    data = build(fmt, [M("./", kind="dir", mode=0o777), M("./a/./b.txt", b"b")])
    extract(fmt, data, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"b"
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) != 0o777


# -- links ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("target", ["/etc", "..", "../outside", "a/../../x", "C:\\Windows"])
def test_a_symlink_out_is_refused(tmp_path: Path, dest: Path, fmt: str, target: str) -> None:
    (tmp_path / "outside").mkdir()
    data = build(fmt, [M("evil", kind="symlink", link=target), M("evil/pwned", b"pwned")])
    message = fails_untouched(dest, UnsafeArchiveError, lambda: extract(fmt, data, dest))
    assert message.startswith(f"refused member 'evil': symbolic link to {target!r}: it ")
    assert os.listdir(tmp_path / "outside") == []


THROUGH = {
    "file": M("l/x.txt", b"through"),
    "dir": M("l/x.txt", kind="dir"),
    "symlink": M("l/x.txt", kind="symlink", link="f.txt"),
    "hardlink": M("l/x.txt", kind="hardlink", link="d/f.txt"),
}


@pytest.mark.parametrize(
    ("fmt", "through"),
    [(f, k) for f in ("tar", "zip") for k in THROUGH if (f, k) != ("zip", "hardlink")],
)
def test_symlinks_inside_are_kept_but_not_written_through(
    tmp_path: Path, dest: Path, fmt: str, through: str
) -> None:
    """Decision: a symbolic link that resolves inside is extracted; a member whose path goes
    through a link of the archive is refused, even when the link points inside."""
    fine = [M("d", kind="dir"), M("d/f.txt", b"f"), M("l", kind="symlink", link="d")]
    extract(fmt, build(fmt, [*fine, M("up", kind="symlink", link="d/../d/f.txt")]), tmp_path / "ok")
    assert os.readlink(tmp_path / "ok" / "l") == "d"
    assert (tmp_path / "ok" / "up").read_bytes() == b"f"

    data = build(fmt, [*fine, THROUGH[through]])
    fails_untouched(
        dest,
        UnsafeArchiveError,
        lambda: extract(fmt, data, dest),
        "'l/x.txt",  # a zip directory's name ends with a slash
        "'l', a symbolic link of the archive",
    )


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_a_link_made_to_escape_by_a_later_link_is_refused(dest: Path, fmt: str) -> None:
    # "a" resolves to d/x when it is created (d/p does not exist yet), d/p -> .. is inside, but
    # in the finished tree a -> d/p/../x is DIR/../x.
    members = [
        M("a", kind="symlink", link="d/p/../x"),
        M("d", kind="dir"),
        M("d/p", kind="symlink", link=".."),
    ]
    data = build(fmt, members)
    fails_untouched(dest, UnsafeArchiveError, lambda: extract(fmt, data, dest), "'a'", "outside")


def test_a_symlink_through_a_link_already_in_dest_is_refused(tmp_path: Path, dest: Path) -> None:
    (tmp_path / "outside").mkdir()
    (dest / "ext").symlink_to(tmp_path / "outside")
    data = build("tar", [M("l", kind="symlink", link="ext/file")])
    fails_untouched(dest, UnsafeArchiveError, lambda: extract("tar", data, dest), "'l'")


def test_a_loop_of_symlinks_is_refused(dest: Path) -> None:
    data = build("tar", [M("a", kind="symlink", link="b"), M("b", kind="symlink", link="a")])
    fails_untouched(dest, UnsafeArchiveError, lambda: extract("tar", data, dest), "loop")


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "missing.txt", "dir"])
def test_a_hardlink_out_or_to_nothing_is_refused(dest: Path, target: str) -> None:
    data = build("tar", [M("dir", kind="dir"), M("h", kind="hardlink", link=target)])
    fails_untouched(dest, UnsafeArchiveError, lambda: extract("tar", data, dest), "'h'")


def test_a_hardlink_through_a_symlink_is_refused(dest: Path) -> None:
    members = [
        M("d/f", b"f"),
        M("l", kind="symlink", link="d"),
        M("h", kind="hardlink", link="l/f"),
    ]
    data = build("tar", members)
    fails_untouched(dest, UnsafeArchiveError, lambda: extract("tar", data, dest), "'h'")


def test_hardlinks_inside_share_the_file(tmp_path: Path) -> None:
    data = build("tar", [M("a/f", b"data"), M("b/h", kind="hardlink", link="a/f")])
    extract("tar", data, tmp_path / "out")
    assert (tmp_path / "out" / "b" / "h").read_bytes() == b"data"
    assert os.path.samefile(tmp_path / "out" / "a" / "f", tmp_path / "out" / "b" / "h")


def test_a_hardlink_target_is_stripped_too(tmp_path: Path) -> None:
    data = build("tar", [M("pkg/f", b"data"), M("pkg/h", kind="hardlink", link="pkg/f")])
    extract("tar", data, tmp_path / "out", strip_components=1)
    assert os.path.samefile(tmp_path / "out" / "f", tmp_path / "out" / "h")


# -- special files, modes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "kind", "word"),
    [
        ("tar", "fifo", "FIFO"),
        ("tar", "chardev", "character device"),
        ("tar", "blockdev", "block device"),
        ("zip", "fifo", "FIFO"),
        ("zip", "chardev", "character device"),
        ("zip", "socket", "socket"),
    ],
)
def test_special_files_are_refused(dest: Path, fmt: str, kind: str, word: str) -> None:
    data = build(fmt, [M("ok.txt", b"ok"), M("special", kind=kind)])
    fails_untouched(dest, UnsafeArchiveError, lambda: extract(fmt, data, dest), "'special'", word)


@pytest.mark.parametrize("fmt", ALL)
def test_modes_are_masked_and_special_bits_cleared(tmp_path: Path, fmt: str) -> None:
    members = [
        M("setuid", b"x", mode=0o4755),
        M("setgid", b"x", mode=0o2711),
        M("world", b"x", mode=0o777),
        M("rw", b"x", mode=0o666),
        M("readonly", b"x", mode=0o444),
        M("dir-sticky", kind="dir", mode=0o1777),
        M("dir-setgid", kind="dir", mode=0o2775),
        M("dir-closed", kind="dir", mode=0o500),
    ]
    extract(fmt, build(fmt, members), tmp_path / "out")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == {
        "setuid": 0o755,
        "setgid": 0o711,
        "world": 0o755,
        "rw": 0o644,
        "readonly": 0o644,
        "dir-sticky": 0o755,
        "dir-setgid": 0o755,
        "dir-closed": 0o700,
    }


def test_owners_are_not_applied(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("owned")
        info.uid, info.gid, info.uname, info.gname = 4242, 4242, "nobody", "nogroup"
        archive.addfile(info, io.BytesIO())
    extract("tar", buf.getvalue(), tmp_path / "out")
    st = (tmp_path / "out" / "owned").stat()
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


# -- existing files ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_existing_files_are_not_overwritten(dest: Path, fmt: str) -> None:
    data = build(fmt, [M("new.txt", b"new"), M("old.txt", b"replaced")])
    fails_untouched(
        dest, DestinationError, lambda: extract(fmt, data, dest), "'old.txt'", "overwrite"
    )


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_overwrite_replaces_files_and_merges_directories(dest: Path, fmt: str) -> None:
    data = build(fmt, [M("old.txt", b"replaced"), M("old-dir/new.txt", b"new")])
    extract(fmt, data, dest, overwrite=True)
    assert (dest / "old.txt").read_bytes() == b"replaced"
    assert (dest / "old-dir" / "kept.txt").read_text() == "kept"
    assert (dest / "old-dir" / "new.txt").read_bytes() == b"new"
    assert sorted(os.listdir(dest)) == ["old-dir", "old.txt"]


def test_a_file_that_appears_during_extraction_is_not_overwritten(dest: Path) -> None:
    """The final move checks every conflict again, before it moves anything."""

    def appear(members: int, written: int) -> None:  # called once more just before the move
        (dest / "late.txt").write_text("user")

    data = build("tar", [M("a.txt", b"a"), M("late.txt", b"archive")])
    with pytest.raises(DestinationError, match=r"late\.txt"):
        extract("tar", data, dest, on_progress=appear)
    assert (dest / "late.txt").read_text() == "user"
    assert sorted(os.listdir(dest)) == ["late.txt", "old-dir", "old.txt"]


def test_directories_merge_without_overwrite(dest: Path) -> None:
    extract("tar", build("tar", [M("old-dir", kind="dir"), M("old-dir/n", b"n")]), dest)
    assert sorted(os.listdir(dest / "old-dir")) == ["kept.txt", "n"]


def test_a_file_never_replaces_a_directory(dest: Path) -> None:
    data = build("tar", [M("old-dir", b"file")])
    fails_untouched(
        dest, DestinationError, lambda: extract("tar", data, dest, overwrite=True), "directory"
    )


def test_a_symlink_in_dest_is_not_followed(tmp_path: Path, dest: Path) -> None:
    (tmp_path / "outside").mkdir()
    (dest / "sub").symlink_to(tmp_path / "outside")
    data = build("tar", [M("sub/x.txt", b"x")])
    fails_untouched(dest, DestinationError, lambda: extract("tar", data, dest), "sub")
    extract("tar", data, dest, overwrite=True)  # the link itself is replaced by a directory
    assert (dest / "sub" / "x.txt").read_bytes() == b"x"
    assert not (dest / "sub").is_symlink()
    assert os.listdir(tmp_path / "outside") == []


# -- strip_components and include ----------------------------------------------------------------

LAYOUT = [
    M("top.txt", b"top"),
    M("pkg-1.0", kind="dir"),
    M("pkg-1.0/a.txt", b"a"),
    M("pkg-1.0/sub", kind="dir"),
    M("pkg-1.0/sub/b.txt", b"b"),
    M("pkg-1.0/sub/c.dat", b"c"),
]


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_strip_components(tmp_path: Path, fmt: str) -> None:
    result = extract(fmt, build(fmt, LAYOUT), tmp_path / "out", strip_components=1)
    assert sorted(snapshot(tmp_path / "out")) == [".", "a.txt", "sub", "sub/b.txt", "sub/c.dat"]
    assert result.skipped == 2  # top.txt and pkg-1.0 itself have too few components
    extract(fmt, build(fmt, LAYOUT), tmp_path / "two", strip_components=2)
    assert sorted(snapshot(tmp_path / "two")) == [".", "b.txt", "c.dat"]


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize(
    ("include", "strip", "expected"),
    [
        (["pkg-1.0/sub"], 0, ["pkg-1.0", "pkg-1.0/sub", "pkg-1.0/sub/b.txt", "pkg-1.0/sub/c.dat"]),
        (["*.txt"], 0, ["pkg-1.0", "pkg-1.0/a.txt", "pkg-1.0/sub", "pkg-1.0/sub/b.txt", "top.txt"]),
        (
            ["pkg-1.0/sub/*.dat", "top.txt"],
            0,
            ["pkg-1.0", "pkg-1.0/sub", "pkg-1.0/sub/c.dat", "top.txt"],
        ),
        # matched before stripping, as tar does: the stripped path "sub/..." matches nothing
        (["pkg-1.0/sub"], 1, ["sub", "sub/b.txt", "sub/c.dat"]),
        (["sub/*"], 1, []),
    ],
)
def test_include_matches_before_stripping(
    tmp_path: Path, fmt: str, include: list[str], strip: int, expected: list[str]
) -> None:
    extract(fmt, build(fmt, LAYOUT), tmp_path / "out", include=include, strip_components=strip)
    assert sorted(snapshot(tmp_path / "out"))[1:] == expected


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    from segdl.errors import UsageError

    data = build("tar", LAYOUT)
    for options in ({"strip_components": -1}, {"include": "*.txt"}, {"include": ["./"]}):
        with pytest.raises(UsageError):
            extract("tar", data, tmp_path / "out", **options)
    with pytest.raises(UsageError):
        extract_stream(io.BytesIO(data), tmp_path / "out", format="rar")
    assert not (tmp_path / "out").exists()


# -- limits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL)
def test_member_count_limit(dest: Path, fmt: str) -> None:
    data = build(fmt, [M(f"f{i}", b"x") for i in range(5)])
    extract(fmt, data, dest / "ok", limits=Limits(max_members=5))
    fails_untouched(
        dest,
        ArchiveLimitError,
        lambda: extract(fmt, data, dest, limits=Limits(max_members=4)),
        "max_members",
    )


@pytest.mark.parametrize("fmt", ALL)
def test_total_size_limit(dest: Path, fmt: str) -> None:
    data = build(fmt, [M("a", b"x" * 600), M("b", b"y" * 600)])
    extract(fmt, data, dest / "ok", limits=Limits(max_size=1200))
    fails_untouched(
        dest,
        ArchiveLimitError,
        lambda: extract(fmt, data, dest, limits=Limits(max_size=1199)),
        "'b'",
        "max_size",
    )


def test_the_default_size_limit_is_the_free_space(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segdl.archive.extractor as extractor

    monkeypatch.setattr(extractor, "free_space", lambda path: 100)
    data = build("tar", [M("a", b"x" * 101)])
    fails_untouched(dest, ArchiveLimitError, lambda: extract("tar", data, dest), "free space")


# -- all or nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL)
def test_an_error_late_in_the_archive_leaves_dest_untouched(dest: Path, fmt: str) -> None:
    members = [M(f"dir{i}/file{j}", os.urandom(100)) for i in range(3) for j in range(3)]
    data = build(fmt, [*members, M("zz/../../x", b"late")])
    fails_untouched(dest, UnsafeArchiveError, lambda: extract(fmt, data, dest))


def test_a_failure_creates_no_dest(tmp_path: Path) -> None:
    data = build("tar", [M("a", b"a"), M("../x", b"x")])
    with pytest.raises(UnsafeArchiveError):
        extract("tar", data, tmp_path / "new" / "dir")
    assert not (tmp_path / "new").exists()


class _Interrupting(io.RawIOBase):
    def __init__(self, data: bytes, after: int) -> None:
        self._data = io.BytesIO(data)
        self._after = after

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._data.tell() >= self._after:
            raise KeyboardInterrupt
        return self._data.read(min(size, 4096))


def test_keyboard_interrupt_leaves_dest_untouched(dest: Path) -> None:
    data = build("tar", [M(f"f{i}", os.urandom(10_000)) for i in range(10)])
    fails_untouched(
        dest, KeyboardInterrupt, lambda: extract_stream(_Interrupting(data, 50_000), dest)
    )


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), KeyboardInterrupt()])
def test_a_failure_during_the_final_move_puts_everything_back(
    dest: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    # old.txt is moved aside and replaced, a.txt moved in, then the third rename fails.
    data = build("tar", [M("a.txt", b"a"), M("old.txt", b"new"), M("z.txt", b"z")])
    real = os.rename
    calls = []

    def rename(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) == 4:
            raise error
        real(*args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    expected = DestinationError if isinstance(error, OSError) else KeyboardInterrupt
    fails_untouched(dest, expected, lambda: extract("tar", data, dest, overwrite=True))
    assert len(calls) > 4  # the rollback renamed things back


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    data = build("tar", [M("a", b"x" * 1000), M("d", kind="dir")])
    extract("tar", data, tmp_path / "out", on_progress=lambda m, b: calls.append((m, b)))
    assert calls[-1] == (2, 1000)


def test_an_error_raised_by_the_progress_callback_aborts(dest: Path) -> None:
    class Cancel(SegdlError):
        pass

    def cancel(members: int, written: int) -> None:
        raise Cancel("cancelled")

    data = build("zip", [M("a", b"x")])
    fails_untouched(dest, Cancel, lambda: extract("zip", data, dest, on_progress=cancel))
