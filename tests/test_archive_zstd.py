"""tar.zst: with the optional zstandard module (needed to run these tests), and without it."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import zstandard
from test_archive_rules import dest, fails_untouched, make_tree, snapshot, tar_of

from segdl.archive import detect_format, extract_stream
from segdl.archive.decode import ZstdFrames
from segdl.errors import CorruptArchiveError, MissingExtraError

__all__ = ["dest"]  # the fixture, imported for these tests


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    src = make_tree(tmp_path_factory.mktemp("src"))
    return src, tar_of(src, "tar")


def test_tar_zst_extracts_byte_exact(tmp_path: Path, source: tuple[Path, bytes]) -> None:
    src, tar = source
    data = zstandard.ZstdCompressor(write_checksum=True).compress(tar)
    assert detect_format(data[:512]) == "tar.zst"
    result = extract_stream(io.BytesIO(data), tmp_path / "out")
    assert result.format == "tar.zst"
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(src)


def test_several_frames_and_a_skippable_frame(tmp_path: Path, source: tuple[Path, bytes]) -> None:
    src, tar = source
    compressor = zstandard.ZstdCompressor(level=3)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"meta"
    half = len(tar) // 3
    data = skippable + compressor.compress(tar[:half]) + compressor.compress(tar[half:])
    extract_stream(io.BytesIO(data), tmp_path / "out")
    assert snapshot(tmp_path / "out" / "pkg") == snapshot(src)


@pytest.mark.parametrize("cut", ["half", "checksum", "last block"])
def test_truncated_tar_zst(dest: Path, source: tuple[Path, bytes], cut: str) -> None:
    data = zstandard.ZstdCompressor(write_checksum=True).compress(source[1])
    data = {"half": data[: len(data) // 2], "checksum": data[:-3], "last block": data[:-6]}[cut]
    fails_untouched(dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


def test_garbage_after_the_frames(dest: Path, source: tuple[Path, bytes]) -> None:
    data = zstandard.ZstdCompressor().compress(source[1]) + b"garbage"
    fails_untouched(dest, CorruptArchiveError, lambda: extract_stream(io.BytesIO(data), dest))


def test_without_zstandard_the_extra_is_named(
    tmp_path: Path, source: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = zstandard.ZstdCompressor().compress(source[1])
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now fails
    with pytest.raises(MissingExtraError) as caught:
        extract_stream(io.BytesIO(data), tmp_path / "out")
    assert caught.value.extra == "zstd"
    assert "segdl[zstd]" in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert detect_format(data) == "tar.zst"  # detection needs no module


def test_zstd_frames_follows_the_structure_byte_by_byte() -> None:
    data = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(
        b"abc" * 100_000
    )
    frames = ZstdFrames()
    for i in range(len(data)):
        assert not frames.complete
        frames.feed(data[i : i + 1])
    assert frames.complete and frames.frames == 1
    frames.feed(data[:5])
    assert not frames.complete
    bad = ZstdFrames()
    bad.feed(b"not zstd")
    assert bad.invalid and not bad.complete
