"""Zip through a random-access reader: structure checks, overlap, bombs, ZIP64, ranges."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from test_archive_rules import M, build, dest, fails_untouched, make_tree, snapshot, zip_of

from segdl.archive import (
    Limits,
    cd_tail_range,
    extract_zip,
    member_ranges,
    read_central_directory,
    select_members,
)
from segdl.archive.zipread import TAIL, ZipMember
from segdl.errors import (
    ArchiveLimitError,
    CorruptArchiveError,
    UnsafeArchiveError,
    UnsupportedArchiveError,
)

__all__ = ["dest"]  # the fixture, imported for these tests

MiB = 1 << 20
Reads = list[tuple[int, int]]


def reader_of(data: bytes, reads: Reads | None = None) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append((offset, length))
        return data[offset : offset + length]

    return read


def unzip(data: bytes, dest: Path, **options: object) -> object:
    return extract_zip(reader_of(data), len(data), dest, **options)  # type: ignore[arg-type]


# -- taking a zip apart by hand ------------------------------------------------------------------


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory entries (archives without a comment)."""
    count, _, cd_offset = struct.unpack_from("<HLL", data, len(data) - 22 + 10)
    offsets, pos = [], cd_offset
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        offsets.append(pos)
        n, e, c = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + e + c
    return offsets


def local_header(data: bytes, entry: int) -> int:
    return int(struct.unpack_from("<L", data, entry + 42)[0])


def patched(data: bytes, *changes: tuple[int, str, int]) -> bytes:
    out = bytearray(data)
    for offset, fmt, value in changes:
        struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# -- structure -----------------------------------------------------------------------------------


def test_zip64_from_force_zip64(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("a.txt", "b.bin"):
            with archive.open(name, "w", force_zip64=True) as member:
                member.write(name.encode() * 1000)
    data = buf.getvalue()
    assert b"\x01\x00\x10\x00" in data  # the local headers carry a ZIP64 extra field
    unzip(data, tmp_path / "out")
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"b.bin" * 1000


def test_zip64_records_and_extra_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # zipfile writes the ZIP64 end records and central extra fields past these limits
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    src = make_tree(tmp_path / "src")
    data = zip_of(src, zipfile.ZIP_DEFLATED)
    monkeypatch.undo()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    entries = central_entries_zip64(data)  # offsets and sizes moved to the extra fields
    assert struct.unpack_from("<L", data, entries[-1] + 42)[0] == 0xFFFFFFFF
    assert any(struct.unpack_from("<L", data, e + 24)[0] == 0xFFFFFFFF for e in entries)
    unzip(data, tmp_path / "out")
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(src)


def central_entries_zip64(data: bytes) -> list[int]:
    record = data.rindex(b"PK\x06\x06")
    count, _, cd_offset = struct.unpack_from("<3Q", data, record + 32)
    offsets, pos = [], cd_offset
    for _ in range(count):
        offsets.append(pos)
        n, e, c = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + e + c
    return offsets


def test_an_empty_zip(tmp_path: Path) -> None:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    assert buf.getvalue().startswith(b"PK\x05\x06")
    assert unzip(buf.getvalue(), tmp_path / "out").members == 0  # type: ignore[attr-defined]


def test_a_comment_and_a_prefix(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("a.txt", b"a")
        archive.comment = b"PK\x05\x06 a comment that looks like a record" * 100
    data = b"MZ self-extractor stub " * 50 + buf.getvalue()
    unzip(data, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"a"


def test_read_central_directory_reads_the_tail_then_the_directory() -> None:
    data = build("zip", [M(f"member-with-a-long-name-{i:04}.txt", b"x") for i in range(900)])
    reads: Reads = []
    directory = read_central_directory(reader_of(data, reads), len(data))
    assert len(directory.members) == 900
    start, stop = cd_tail_range(len(data))
    assert reads[0] == (start, stop - start)
    assert len(reads) == 2  # the directory is larger than the tail
    assert reads[1] == (directory.cd_start, directory.cd_stop - directory.cd_start)
    small = build("zip", [M("a", b"a")])
    reads.clear()
    read_central_directory(reader_of(small, reads), len(small))
    assert reads == [(0, len(small))]


def test_cd_tail_range() -> None:
    assert cd_tail_range(100) == (0, 100)
    assert cd_tail_range(10 * MiB) == (10 * MiB - TAIL, 10 * MiB)
    assert TAIL >= 0xFFFF + 22 + 20 + 56


@pytest.mark.parametrize("cut", [1, 22, 1000])
def test_a_truncated_zip(dest: Path, cut: int) -> None:
    data = build("zip", [M("a", os.urandom(3000))])[:-cut]
    fails_untouched(dest, CorruptArchiveError, lambda: unzip(data, dest))


def test_a_short_reader_is_truncation(dest: Path) -> None:
    data = build("zip", [M("a", os.urandom(3000))])
    cd = central_entries(data)[0]
    fails_untouched(
        dest,
        CorruptArchiveError,
        lambda: extract_zip(lambda o, n: data[o : min(o + n, cd - 10)], len(data), dest),
        "truncated",
    )


def test_a_crc_mismatch(dest: Path) -> None:
    data = build("zip", [M("a", b"hello" * 100)], compression=zipfile.ZIP_STORED)
    crc_at = central_entries(data)[0] + 16
    bad = patched(data, (crc_at, "<L", struct.unpack_from("<L", data, crc_at)[0] ^ 1))
    fails_untouched(dest, CorruptArchiveError, lambda: unzip(bad, dest), "'a'", "CRC-32")


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_wrong_uncompressed_size(dest: Path, delta: int) -> None:
    data = build("zip", [M("a", b"hello" * 100)])
    entry = central_entries(data)[0]
    bad = patched(data, (entry + 24, "<L", 500 + delta))
    fails_untouched(dest, CorruptArchiveError, lambda: unzip(bad, dest), "'a'")


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        view = memoryview(b)  # type: ignore[arg-type]
        self.data += view
        return len(view)


@pytest.mark.parametrize(("delta", "problem"), [(-1, "truncated"), (1, "ends before")])
def test_a_compressed_size_that_does_not_match_the_stream(
    dest: Path, delta: int, problem: str
) -> None:
    out = _Unseekable()  # zipfile writes data descriptors: room after the data
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a", b"hello" * 100)
        archive.writestr("b", b"b")
    data = bytes(out.data)
    first, _ = central_entries(data)
    csize = struct.unpack_from("<L", data, first + 20)[0]
    bad = patched(data, (first + 20, "<L", csize + delta))
    fails_untouched(dest, CorruptArchiveError, lambda: unzip(bad, dest), "'a'", problem)


def test_a_local_header_naming_another_member(dest: Path) -> None:
    data = build("zip", [M("a", b"1"), M("b", b"2")])
    header = local_header(data, central_entries(data)[1])
    bad = patched(data, (header + 30, "<B", ord("z")))
    fails_untouched(dest, CorruptArchiveError, lambda: unzip(bad, dest), "'b'")


def test_encrypted_and_unknown_methods_are_unsupported(dest: Path) -> None:
    data = build("zip", [M("a", b"1")])
    entry = central_entries(data)[0]
    header = local_header(data, entry)
    encrypted = patched(data, (entry + 8, "<H", 1), (header + 6, "<H", 1))
    fails_untouched(dest, UnsupportedArchiveError, lambda: unzip(encrypted, dest), "encrypted")
    deflate64 = patched(data, (entry + 10, "<H", 9), (header + 8, "<H", 9))
    fails_untouched(dest, UnsupportedArchiveError, lambda: unzip(deflate64, dest), "deflate64")


def test_duplicate_names_are_refused(dest: Path) -> None:
    data = build("zip", [M("a/b", b"1"), M("a\\b", b"2")])
    fails_untouched(dest, UnsafeArchiveError, lambda: unzip(data, dest), "same path")


def test_a_symlink_member_of_a_huge_size_is_refused(dest: Path) -> None:
    data = build("zip", [M("l", kind="symlink", link="x" * 5000)])
    fails_untouched(dest, UnsafeArchiveError, lambda: unzip(data, dest), "'l'")


# -- overlapping entries -------------------------------------------------------------------------


def _refused_from_the_directory_alone(dest: Path, data: bytes, *names: str) -> None:
    reads: Reads = []
    call = lambda: extract_zip(reader_of(data, reads), len(data), dest)  # noqa: E731
    fails_untouched(dest, UnsafeArchiveError, call, "overlap", *names)
    assert len(reads) == 1  # the tail only: no local header was read


def test_two_entries_on_one_local_header_are_refused(dest: Path) -> None:
    data = build("zip", [M("a", b"1" * 100), M("b", b"2" * 100)])
    first, second = central_entries(data)
    bad = patched(data, (second + 42, "<L", local_header(data, first)))
    _refused_from_the_directory_alone(dest, bad)


def test_data_running_into_the_next_header_is_refused(dest: Path) -> None:
    data = build("zip", [M("a", b"1" * 100), M("b", b"2" * 100)], compression=zipfile.ZIP_STORED)
    first, _ = central_entries(data)
    bad = patched(data, (first + 20, "<L", 140), (first + 24, "<L", 140))
    _refused_from_the_directory_alone(dest, bad, "'a'")


def test_a_local_extra_field_that_overlaps_is_refused(dest: Path) -> None:
    # The central directory looks fine; only the local header shows the overlap.
    data = build("zip", [M("a", b"1" * 100), M("b", b"2" * 100)], compression=zipfile.ZIP_STORED)
    header = local_header(data, central_entries(data)[0])
    bad = patched(data, (header + 28, "<H", 40))
    fails_untouched(dest, UnsafeArchiveError, lambda: unzip(bad, dest), "'a'", "overlap")


def test_data_running_into_the_central_directory_is_refused(dest: Path) -> None:
    data = build("zip", [M("a", b"1" * 100)], compression=zipfile.ZIP_STORED)
    entry = central_entries(data)[0]
    bad = patched(data, (entry + 20, "<L", 200), (entry + 24, "<L", 200))
    _refused_from_the_directory_alone(dest, bad, "central directory")


# -- bombs ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """A ~100 KB zip (deflate) of one 100 MiB member of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros", "w") as member:
            for _ in range(100):
                member.write(bytes(MiB))
        archive.writestr("small.txt", b"small")
    return buf.getvalue()


def test_a_zip_bomb_is_refused_before_its_data_is_read(dest: Path, zip_bomb: bytes) -> None:
    assert len(zip_bomb) < 200_000
    reads: Reads = []
    call = lambda: extract_zip(reader_of(zip_bomb, reads), len(zip_bomb), dest)  # noqa: E731
    fails_untouched(dest, ArchiveLimitError, call, "'zeros'", "max_ratio")
    directory = read_central_directory(reader_of(zip_bomb), len(zip_bomb))
    assert all(
        offset >= directory.cd_start or offset >= cd_tail_range(len(zip_bomb))[0]
        for offset, _ in reads
    )


def test_a_zip_bomb_that_lies_about_its_size_is_stopped_on_actual_bytes(
    dest: Path, zip_bomb: bytes
) -> None:
    # It declares 2 MiB (10 times its compressed size, so it passes the declared check) and
    # produces 100 MiB: the ratio of the bytes actually produced stops it.
    entry = central_entries(zip_bomb)[0]
    header = local_header(zip_bomb, entry)
    lying = patched(zip_bomb, (entry + 24, "<L", 2 * MiB), (header + 22, "<L", 2 * MiB))
    fails_untouched(dest, ArchiveLimitError, lambda: unzip(lying, dest), "'zeros'", "max_ratio")


def test_the_overall_declared_ratio(dest: Path) -> None:
    data = build("zip", [M(f"z{i}", bytes(600_000)) for i in range(5)])
    fails_untouched(dest, ArchiveLimitError, lambda: unzip(data, dest), "overall")
    unzip(data, dest / "ok", limits=Limits(max_ratio=10_000))


# -- member ranges -------------------------------------------------------------------------------


def _member(offset: int, limit: int, size: int = 10) -> ZipMember:
    return ZipMember(
        name="m",
        raw_name=b"m",
        header_offset=offset,
        compress_size=size,
        file_size=size,
        crc=0,
        method=0,
        flags=0,
        mode=None,
        is_dir=False,
        mtime=None,
        limit=limit,
    )


def test_member_ranges_merge_close_neighbours() -> None:
    members = [_member(5000, 5100), _member(0, 100), _member(100, 200), _member(300, 400)]
    assert member_ranges(members, merge_gap=0) == [(0, 200), (300, 400), (5000, 5100)]
    assert member_ranges(members, merge_gap=100) == [(0, 400), (5000, 5100)]
    assert member_ranges(members) == [(0, 5100)]
    assert member_ranges([]) == []
    # the span stops at the next header, or after the largest possible local extra field
    assert _member(0, 1 << 30, size=10).span == (0, 30 + 1 + 0xFFFF + 10)


def test_the_chosen_members_extract_from_their_ranges_alone(tmp_path: Path) -> None:
    members = [M(f"d{i}/f{j}.bin", os.urandom(20_000)) for i in range(4) for j in range(3)]
    data = build("zip", members, compression=zipfile.ZIP_STORED)
    directory = read_central_directory(reader_of(data), len(data))
    chosen = select_members(directory, include=["d1", "d3/f2.bin"], strip_components=0)
    assert [m.name for m in chosen] == ["d1/f0.bin", "d1/f1.bin", "d1/f2.bin", "d3/f2.bin"]
    ranges = member_ranges(chosen, merge_gap=0)
    assert len(ranges) == 2

    def read(offset: int, length: int) -> bytes:
        assert any(start <= offset and offset + length <= stop for start, stop in ranges)
        return data[offset : offset + length]

    extract_zip(
        read,
        len(data),
        tmp_path / "out",
        directory=directory,
        include=["d1", "d3/f2.bin"],
    )
    names = [".", "d1", "d1/f0.bin", "d1/f1.bin", "d1/f2.bin", "d3", "d3/f2.bin"]
    assert sorted(snapshot(tmp_path / "out")) == names
    assert (tmp_path / "out" / "d3" / "f2.bin").read_bytes() == members[-1].data


def test_paths_that_collide_after_stripping_are_refused(dest: Path) -> None:
    data = build("zip", [M("x/a", b"1"), M("y/a", b"2")])
    fails_untouched(
        dest, UnsafeArchiveError, lambda: unzip(data, dest, strip_components=1), "same path"
    )


def test_select_members_refuses_unsafe_names() -> None:
    data = build("zip", [M("a", b"a"), M("../b", b"b")])
    with pytest.raises(UnsafeArchiveError):
        select_members(read_central_directory(reader_of(data), len(data)))
