"""Integrity checks of a finished file: a user checksum (`ALGO=HEX`) and the server's digest."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
# RFC 9530 names the algorithms with a dash; only sha-256 and sha-512 are registered as active.
_DIGEST_NAMES = {"sha-256": "sha256", "sha-512": "sha512"}
_DIGEST_ITEM = re.compile(r"\s*([A-Za-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*")


@dataclass(frozen=True)
class Checksum:
    """An expected digest of the whole file."""

    algorithm: str  # a hashlib name from ALGORITHMS
    hexdigest: str
    source: str  # "--checksum" or the header it came from, for the error message

    def mismatch(self, actual: str) -> str:
        """The one-line message for bytes whose digest is `actual` instead of this one."""
        return (
            f"{self.algorithm} mismatch (from {self.source}): expected {self.hexdigest}, "
            f"got {actual}"
        )

    @classmethod
    def parse(cls, spec: str) -> Checksum:
        """Parse `ALGO=HEX`, e.g. `sha256=9f86d0...`; raises UsageError when malformed."""
        algorithm, sep, hexdigest = spec.partition("=")
        algorithm = algorithm.strip().lower().replace("-", "")
        hexdigest = hexdigest.strip().lower()
        if not sep or algorithm not in ALGORITHMS:
            raise UsageError(f"checksum must be ALGO=HEX with ALGO one of {', '.join(ALGORITHMS)}")
        size = hashlib.new(algorithm).digest_size
        if len(hexdigest) != 2 * size or not re.fullmatch(r"[0-9a-f]+", hexdigest):
            article = "an" if algorithm == "md5" else "a"  # "an em-dee-five"
            raise UsageError(f"{article} {algorithm} checksum is {2 * size} hexadecimal digits")
        return cls(algorithm, hexdigest, "--checksum")


def server_digest(header: str | None) -> Checksum | None:
    """The strongest usable digest in a Repr-Digest/Content-Digest header, if any."""
    if not header:
        return None
    best: Checksum | None = None
    for item in header.split(","):
        match = _DIGEST_ITEM.fullmatch(item)
        if match is None:
            continue
        algorithm = _DIGEST_NAMES.get(match[1].lower())
        if algorithm is None:
            continue
        try:
            raw = base64.b64decode(match[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) != hashlib.new(algorithm).digest_size:
            continue
        if best is None or algorithm == "sha512":
            best = Checksum(algorithm, raw.hex(), "the server's digest header")
    return best


def file_digest(read_at: Callable[[int, int], bytes], size: int, algorithm: str) -> str:
    """Hash `size` bytes read through `read_at(length, offset)` in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    offset = 0
    while offset < size:
        block = read_at(min(1 << 20, size - offset), offset)
        if not block:
            break
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()
