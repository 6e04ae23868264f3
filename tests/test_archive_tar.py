"""Tar streams: bombs, truncated and corrupted archives, compression framing, tar's own quirks."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import pytest
from test_archive_rules import M, build, dest, fails_untouched, make_tree, snapshot, tar_of

from segdl.archive import Limits, extract_stream
from segdl.errors import (
    ArchiveError,
    ArchiveLimitError,
    CorruptArchiveError,
    IntegrityError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
)

__all__ = ["dest"]  # the fixture, imported for these tests

MiB = 1 << 20


class Zeros(io.RawIOBase):
    """`size` zero bytes, never held in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


class Counting(io.RawIOBase):
    """A source that counts what was read and whether its end was reached."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.read_bytes = 0
        self.ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.read_bytes += len(chunk)
        self.ended = self.ended or not chunk
        return chunk


def zero_members(mode: str, sizes: list[int]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as archive:
        for i, size in enumerate(sizes):
            info = tarfile.TarInfo(f"zeros{i}")
            info.size = size
            archive.addfile(info, Zeros(size))
    return buf.getvalue()


@pytest.fixture(scope="module")
def tgz_bomb() -> bytes:
    """A ~100 KB tar.gz of one 100 MiB member of zeros."""
    return zero_members("w:gz", [100 * MiB])


# -- bombs ---------------------------------------------------------------------------------------


def test_a_tar_gz_bomb_is_stopped_early(dest: Path, tgz_bomb: bytes) -> None:
    assert len(tgz_bomb) < 200_000
    source = Counting(tgz_bomb)
    fails_untouched(
        dest, ArchiveLimitError, lambda: extract_stream(source, dest), "'zeros0'", "max_ratio"
    )
    assert source.read_bytes < len(tgz_bomb)  # stopped within the first chunks


def test_a_member_bomb_after_incompressible_data(dest: Path) -> None:
    # The archive as a whole stays far below the ratio; the member alone does not.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        noise = tarfile.TarInfo("noise")
        noise.size = 2 * MiB
        archive.addfile(noise, io.BytesIO(os.urandom(noise.size)))
        zeros = tarfile.TarInfo("zeros")
        zeros.size = 100 * MiB
        archive.addfile(zeros, Zeros(zeros.size))
    data = buf.getvalue()
    message = fails_untouched(
        dest, ArchiveLimitError, lambda: extract_stream(io.BytesIO(data), dest), "'zeros'"
    )
    assert "overall" not in message


@pytest.mark.parametrize(("mode", "ratio"), [("w", 2), ("w:gz", 200)])  # the .gz is 138:1
def test_many_small_members_are_no_bomb(tmp_path: Path, mode: str, ratio: int) -> None:
    # each member is far smaller than the source's read-ahead: its own share of the compressed
    # bytes cannot be told, the archive's can
    data = zero_members(mode, [100] * 1000)
    limits = Limits(max_ratio=ratio, ratio_grace=50_000)
    result = extract_stream(io.BytesIO(data), tmp_path / "out", limits=limits)
    assert result.members == 1000


def test_a_bomb_left_out_by_include_is_still_stopped(dest: Path, tgz_bomb: bytes) -> None:
    fails_untouched(
        dest,
        ArchiveLimitError,
        lambda: extract_stream(io.BytesIO(tgz_bomb), dest, include=["nothing"]),
        "overall",
    )


def test_a_bomb_after_the_end_of_the_archive_is_stopped(dest: Path) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = compressor.compress(build("tar", [M("a", b"a")]))
    for _ in range(100):
        data += compressor.compress(bytes(MiB))
    data += compressor.flush()
    fails_untouched(
        dest, ArchiveLimitError, lambda: extract_stream(io.BytesIO(data), dest), "overall"
    )


def test_the_bomb_passes_with_a_higher_ratio_but_not_a_small_size(
    dest: Path, tgz_bomb: bytes
) -> None:
    limits = Limits(max_ratio=10_000, max_size=10 * MiB)
    fails_untouched(
        dest,
        ArchiveLimitError,
        lambda: extract_stream(io.BytesIO(tgz_bomb), dest, limits=limits),
        "max_size",
    )


def test_the_overall_ratio_stops_many_small_bombs(dest: Path) -> None:
    data = zero_members("w:gz", [512 << 10] * 20)  # each member under the 1 MiB grace
    fails_untouched(
        dest, ArchiveLimitError, lambda: extract_stream(io.BytesIO(data), dest), "overall"
    )
    extract_stream(io.BytesIO(data), dest / "ok", limits=Limits(max_ratio=5000))
    assert (dest / "ok" / "zeros19").stat().st_size == 512 << 10


def test_the_ratio_counts_actual_bytes_in_a_plain_tar(dest: Path) -> None:
    # a plain tar does not expand: zeros are no bomb there (up to the read-ahead of a chunk)
    data = zero_members("w", [3 * MiB])
    extract_stream(io.BytesIO(data), dest / "ok", limits=Limits(max_ratio=1.1))
    assert (dest / "ok" / "zeros0").stat().st_size == 3 * MiB


def test_a_huge_extended_header_is_refused(dest: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "x" * (2 * MiB)}
        archive.addfile(info, io.BytesIO())
    data = buf.getvalue()
    fails_untouched(
        dest, ArchiveLimitError, lambda: extract_stream(io.BytesIO(data), dest), "extended header"
    )


# -- truncated and corrupted ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_tar(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tar_of(make_tree(tmp_path_factory.mktemp("src")), "tar")


def _without_end_marker(data: bytes) -> bytes:
    end = len(data.rstrip(b"\x00"))
    return data[: (end + 511) // 512 * 512]


def test_a_tar_without_its_end_marker_is_truncated(dest: Path, plain_tar: bytes) -> None:
    data = _without_end_marker(plain_tar)
    fails_untouched(
        dest,
        CorruptArchiveError,
        lambda: extract_stream(io.BytesIO(data), dest),
        "end-of-archive marker",
    )


def test_a_tar_cut_inside_a_member_is_truncated(dest: Path, plain_tar: bytes) -> None:
    data = _without_end_marker(plain_tar)[:-700]
    fails_untouched(dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


def test_a_bad_header_in_the_middle_is_an_error_not_the_end(dest: Path) -> None:
    data = bytearray(build("tar", [M("a", b"a" * 100), M("b", b"b"), M("c", b"c")]))
    second = data.index(b"b\x00")  # the second header begins with its name
    data[second + 1] = ord("X")  # its checksum no longer matches
    fails_untouched(
        dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(bytes(data)), dest), "header"
    )


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2", "tar.xz"])
@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_compressed_tars(dest: Path, plain_tar: bytes, fmt: str, cut: str) -> None:
    compress = {"tar.gz": gzip.compress, "tar.bz2": bz2.compress, "tar.xz": lzma.compress}[fmt]
    data = compress(plain_tar)
    data = data[: len(data) // 2] if cut == "half" else data[:-4]
    fails_untouched(dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.bz2", "tar.xz"])
def test_corrupted_compressed_tars(dest: Path, plain_tar: bytes, fmt: str) -> None:
    compress = {"tar.gz": gzip.compress, "tar.bz2": bz2.compress, "tar.xz": lzma.compress}[fmt]
    data = bytearray(compress(plain_tar))
    data[len(data) // 2] ^= 0x55
    # bzip2 checks a block's CRC only at its end: the garbage before may not look like tar
    error = ArchiveError if fmt == "tar.bz2" else CorruptArchiveError
    fails_untouched(dest, error, lambda: extract_stream(io.BytesIO(bytes(data)), dest))


def test_garbage_after_the_gzip_stream_is_an_error(dest: Path, plain_tar: bytes) -> None:
    data = gzip.compress(plain_tar) + b"garbage!"
    fails_untouched(dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_concatenated_streams_and_zero_padding(
    tmp_path: Path, plain_tar: bytes, compress: object
) -> None:
    assert callable(compress)
    half = len(plain_tar) // 2 + 3
    data = compress(plain_tar[:half]) + compress(plain_tar[half:]) + bytes(1000)
    extract_stream(io.BytesIO(data), tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "sub" / "deeper" / "note.txt").read_text() == "deep\n" * 100


# -- stream shape --------------------------------------------------------------------------------


def test_the_source_is_read_to_its_end(tmp_path: Path, plain_tar: bytes) -> None:
    source = Counting(gzip.compress(plain_tar))
    extract_stream(source, tmp_path / "out")
    assert source.ended


def test_a_source_that_fails_at_its_end_aborts(dest: Path, plain_tar: bytes) -> None:
    """How the wiring checks a checksum: its reader raises on the last read."""

    class Checked(Counting):
        def read(self, size: int = -1) -> bytes:
            chunk = super().read(size)
            if not chunk:
                raise IntegrityError("sha256 mismatch")
            return chunk

    data = gzip.compress(plain_tar)
    fails_untouched(dest, IntegrityError, lambda: extract_stream(Checked(data), dest))


def test_not_a_tar_inside_gzip(dest: Path) -> None:
    data = gzip.compress(os.urandom(2000))
    fails_untouched(
        dest, UnsupportedArchiveError, lambda: extract_stream(io.BytesIO(data), dest), "gzip"
    )


@pytest.mark.parametrize("data", [b"", b"hello world" * 100, b"PK\x03\x04" + bytes(600)])
def test_not_a_tar_stream(dest: Path, data: bytes) -> None:
    fails_untouched(dest, UnsupportedArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


def test_a_forced_format_is_checked(dest: Path, plain_tar: bytes) -> None:
    fails_untouched(
        dest,
        CorruptArchiveError,
        lambda: extract_stream(io.BytesIO(plain_tar), dest, format="tar.gz"),
    )


def test_an_empty_tar(tmp_path: Path) -> None:
    result = extract_stream(io.BytesIO(bytes(10240)), tmp_path / "out")
    assert (result.members, snapshot(tmp_path / "out")) == (0, {".": ("dir", 0o755)})


def test_long_names_in_gnu_and_pax_formats(tmp_path: Path) -> None:
    name = "/".join(["d" * 60] * 3) + "/" + "f" * 120
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as archive:
            info = tarfile.TarInfo(name)
            info.size = 2
            archive.addfile(info, io.BytesIO(b"ok"))
            link = tarfile.TarInfo("l")
            link.type, link.linkname = tarfile.SYMTYPE, name
            archive.addfile(link)
        extract_stream(io.BytesIO(buf.getvalue()), tmp_path / str(fmt))
        assert (tmp_path / str(fmt) / "l").read_bytes() == b"ok"


def test_a_later_member_replaces_an_earlier_one(tmp_path: Path) -> None:
    members = [
        M("a", b"first"),
        M("h", kind="hardlink", link="a"),
        M("a", b"second"),
        M("s", kind="symlink", link="a"),
        M("s", b"now a file"),
    ]
    extract_stream(io.BytesIO(build("tar", members)), tmp_path / "out")
    assert (tmp_path / "out" / "a").read_bytes() == b"second"
    assert (tmp_path / "out" / "h").read_bytes() == b"first"  # the link kept the old file
    assert not (tmp_path / "out" / "s").is_symlink()


@pytest.mark.parametrize(
    "members",
    [
        [M("d", kind="dir"), M("d/x", b"x"), M("d", b"a file over a directory")],
        [M("f", b"file"), M("f", kind="dir")],
        [M("f", b"file"), M("f/x", b"under a file")],
    ],
)
def test_a_member_cannot_replace_or_go_through_another_kind(dest: Path, members: list[M]) -> None:
    data = build("tar", members)
    fails_untouched(dest, UnsafeArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


def test_unknown_member_types_are_refused(dest: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("odd")
        info.type = b"Q"
        archive.addfile(info)
    data = buf.getvalue()
    fails_untouched(
        dest, UnsafeArchiveError, lambda: extract_stream(io.BytesIO(data), dest), "'odd'"
    )
