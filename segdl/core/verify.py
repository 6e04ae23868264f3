"""Integrity checks of a finished file: a user checksum (`ALGO=HEX`), a manifest's digest of
one item (`sha256:HEX`, bare hex), a `sha256sum`-format file, and the server's digest."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import os

ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
# RFC 9530 names the algorithms with a dash; only sha-256 and sha-512 are registered as active.
_DIGEST_NAMES = {"sha-256": "sha256", "sha-512": "sha512"}
_DIGEST_ITEM = re.compile(r"\s*([A-Za-z0-9-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*")
_HEX = re.compile(r"[0-9a-f]+")
# A bare hex digest names its algorithm by its length (as sha256sum, md5sum... files do).
_BY_LENGTH = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}
# `<hex>  <name>` (text mode) or `<hex> *<name>` (binary mode), as GNU coreutils write them;
# a leading backslash says the name has `\\` and `\n` escapes.
_SUMS_LINE = re.compile(r"(\\?)([0-9A-Fa-f]+) [ *](.+)")


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

    @property
    def spec(self) -> str:
        """`ALGO=HEX`, as `parse` reads it (and as a batch's journal records it)."""
        return f"{self.algorithm}={self.hexdigest}"

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


def parse_digest(value: str, source: str) -> Checksum:
    """A digest as manifests write it: `sha256:HEX`, `ALGO=HEX` (`sha-256=HEX` too, as aria2c
    writes it), or bare HEX whose length names the algorithm (md5, sha1, sha256, sha512).
    `source` says where it came from in a mismatch message. Raises UsageError."""
    text = value.strip()
    algorithm, sep, hexdigest = text.replace(":", "=", 1).partition("=")
    if not sep:
        hexdigest = text.lower()
        found = _BY_LENGTH.get(len(hexdigest))
        if found is None or not _HEX.fullmatch(hexdigest):
            raise UsageError(
                f"{_quote(value)} is not a digest (hexadecimal: 32 digits for md5, 40 for "
                "sha1, 64 for sha256, 128 for sha512; or ALGO:HEX)"
            )
        return Checksum(found, hexdigest, source)
    checksum = Checksum.parse(f"{algorithm}={hexdigest}")
    return Checksum(checksum.algorithm, checksum.hexdigest, source)


def read_checksums(path: str | os.PathLike[str]) -> dict[str, Checksum]:
    """The digests of a `sha256sum`/`md5sum`-format file (any of md5, sha1, sha256, sha512,
    told by each digest's length) by name, in POSIX form without a leading `./`. Blank
    lines and `#` comments are skipped. Raises UsageError for a file that cannot be read or
    holds no valid line."""
    name = str(path)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None
    found: dict[str, Checksum] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUMS_LINE.fullmatch(line)
        if match is None:
            continue  # another tool's line (a BSD-style tag): not ours to guess
        escaped, hexdigest, file_name = match.groups()
        if escaped:
            file_name = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], file_name)
        try:
            checksum = parse_digest(hexdigest, f"{name} line {number}")
        except UsageError:
            continue
        while file_name.startswith("./"):
            file_name = file_name[2:]
        found[file_name] = checksum
    if not found:
        raise UsageError(
            f"{name} has no checksum line ('<hex>  <name>', as sha256sum or md5sum write them)"
        )
    return found


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


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
