"""An archive's format from its first bytes, never from a file name."""

from __future__ import annotations

import struct

from ..errors import UnsupportedArchiveError
from .decode import is_zstd_skippable

DETECT_SIZE = 512  # bytes `detect_format` needs (fewer only when the archive is shorter)
FORMATS = ("zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst")
TAR_FORMATS = FORMATS[1:]

_ZIP = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08PK\x03\x04")  # member, empty, spanned marker
_SIGNED = struct.Struct("148b8x356b")


def detect_format(head: bytes) -> str:
    """One of `FORMATS` for an archive that begins with `head` (at least `DETECT_SIZE` bytes of
    it); an `UnsupportedArchiveError` for anything else.

    Compressed data is taken for a compressed tar; the tar header inside is checked once
    decompressed.
    """
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"BZh") and len(head) > 3 and 0x31 <= head[3] <= 0x39:
        return "tar.bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith(b"\x28\xb5\x2f\xfd") or is_zstd_skippable(head[:4]):
        return "tar.zst"
    if is_tar_header(head[:512]):
        return "tar"
    what = "it is empty" if not head else f"it begins with {head[:8]!r}"
    raise UnsupportedArchiveError(
        f"not an archive (zip, tar, tar.gz, tar.bz2, tar.xz or tar.zst): {what}"
    )


def is_tar_header(block: bytes) -> bool:
    """Whether `block` is a tar header (its checksum holds, ustar or old-style, as tar checks
    it), or the zero block that ends an (empty) archive."""
    if len(block) < 512:
        return False
    block = block[:512]
    if block == bytes(512):
        return True
    field = block[148:156].split(b"\x00", 1)[0].strip(b" ")
    try:
        stored = int(field, 8)
    except ValueError:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    signed = 256 + sum(_SIGNED.unpack(block))
    return stored in (unsigned, signed)
