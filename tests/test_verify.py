"""Unit tests of segdl.core.verify: user checksums, server digest headers and file hashing."""

from __future__ import annotations

import base64
import hashlib

import pytest

from segdl.core.verify import ALGORITHMS, Checksum, file_digest, server_digest
from segdl.errors import UsageError

DATA = b"hello, segdl\n"


def _b64(algorithm: str, data: bytes = DATA) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


# --- Checksum.parse ------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_parse_each_algorithm(algorithm: str) -> None:
    hexdigest = hashlib.new(algorithm, DATA).hexdigest()
    checksum = Checksum.parse(f"{algorithm}={hexdigest}")
    assert checksum == Checksum(algorithm, hexdigest, "--checksum")


def test_parse_upper_case_is_normalised() -> None:
    hexdigest = hashlib.sha256(DATA).hexdigest()
    checksum = Checksum.parse(f"SHA256={hexdigest.upper()}")
    assert checksum.algorithm == "sha256"
    assert checksum.hexdigest == hexdigest


@pytest.mark.parametrize(
    ("spelling", "algorithm"),
    [("sha-256", "sha256"), ("SHA-512", "sha512"), ("sha-1", "sha1"), ("MD5", "md5")],
)
def test_parse_dash_spelling(spelling: str, algorithm: str) -> None:
    hexdigest = hashlib.new(algorithm, DATA).hexdigest()
    assert Checksum.parse(f"{spelling}={hexdigest}").algorithm == algorithm


def test_parse_tolerates_surrounding_spaces() -> None:
    hexdigest = hashlib.md5(DATA).hexdigest()
    assert Checksum.parse(f" md5 = {hexdigest} ").hexdigest == hexdigest


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("sha256=" + "a" * 63, id="too-short"),
        pytest.param("sha256=" + "a" * 65, id="too-long"),
        pytest.param("sha256=" + "a" * 128, id="sha512-length-for-sha256"),
        pytest.param("md5=" + "a" * 64, id="sha256-length-for-md5"),
        pytest.param("sha256=" + "g" * 64, id="non-hex"),
        pytest.param("sha256=" + "a" * 62 + " a", id="inner-space"),
        pytest.param("sha256=0x" + "a" * 62, id="0x-prefix"),
        pytest.param("sha256=", id="empty-digest"),
        pytest.param("crc32=deadbeef", id="unknown-algorithm"),
        pytest.param("sha3_256=" + "a" * 64, id="unsupported-algorithm"),
        pytest.param("=" + "a" * 64, id="empty-algorithm"),
        pytest.param("a" * 64, id="no-equals"),
        pytest.param("sha256:" + "a" * 64, id="colon-instead-of-equals"),
        pytest.param("", id="empty"),
    ],
)
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(UsageError):
        Checksum.parse(spec)


# --- server_digest -------------------------------------------------------------------------


def test_server_digest_none_and_empty() -> None:
    assert server_digest(None) is None
    assert server_digest("") is None


def test_server_digest_sha256() -> None:
    checksum = server_digest(f"sha-256=:{_b64('sha256')}:")
    assert checksum is not None
    assert checksum.algorithm == "sha256"
    assert checksum.hexdigest == hashlib.sha256(DATA).hexdigest()
    assert checksum.source != "--checksum"


def test_server_digest_sha512() -> None:
    checksum = server_digest(f"sha-512=:{_b64('sha512')}:")
    assert checksum is not None
    assert checksum.algorithm == "sha512"
    assert checksum.hexdigest == hashlib.sha512(DATA).hexdigest()


def test_server_digest_algorithm_name_case_insensitive() -> None:
    checksum = server_digest(f"SHA-256=:{_b64('sha256')}:")
    assert checksum is not None
    assert checksum.algorithm == "sha256"


@pytest.mark.parametrize(
    "header",
    [
        f"sha-256=:{_b64('sha256')}:, sha-512=:{_b64('sha512')}:",
        f"sha-512=:{_b64('sha512')}:, sha-256=:{_b64('sha256')}:",
        f"sha-512=:{_b64('sha512')}:,sha-256=:{_b64('sha256')}:",
    ],
)
def test_server_digest_prefers_sha512(header: str) -> None:
    checksum = server_digest(header)
    assert checksum is not None
    assert checksum.algorithm == "sha512"
    assert checksum.hexdigest == hashlib.sha512(DATA).hexdigest()


def test_server_digest_skips_unknown_algorithms() -> None:
    header = f"md5=:{_b64('md5')}:, sha=:{_b64('sha1')}:, sha-256=:{_b64('sha256')}:"
    checksum = server_digest(header)
    assert checksum is not None
    assert checksum.algorithm == "sha256"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"md5=:{_b64('md5')}:", id="md5-not-registered"),
        pytest.param(f"sha-1=:{_b64('sha1')}:", id="sha1-not-registered"),
        pytest.param(f"unixsum=:{_b64('sha256')}:", id="unknown"),
        pytest.param("sha-256=:not*base64!:", id="bad-characters"),
        pytest.param("sha-256=:YWJj=YWJj:", id="bad-padding"),
        pytest.param("sha-256=:abc:", id="bad-length-base64"),
        pytest.param(f"sha-256=:{_b64('md5')}:", id="wrong-digest-length"),
        pytest.param(f"sha-512=:{_b64('sha256')}:", id="sha256-bytes-as-sha512"),
        pytest.param(f"sha-256={hashlib.sha256(DATA).hexdigest()}", id="hex-not-byte-sequence"),
        pytest.param(f"sha-256=:{_b64('sha256')}", id="unterminated"),
        pytest.param("sha-256=::", id="empty-bytes"),
        pytest.param("garbage", id="garbage"),
        pytest.param(" , ,", id="only-commas"),
    ],
)
def test_server_digest_ignores_unusable_entries(header: str) -> None:
    assert server_digest(header) is None


def test_server_digest_bad_entry_does_not_hide_good_one() -> None:
    header = f"sha-512=:{_b64('sha256')}:, sha-256=:{_b64('sha256')}:"
    checksum = server_digest(header)
    assert checksum is not None
    assert checksum.algorithm == "sha256"


# --- file_digest ---------------------------------------------------------------------------


class FakeFile:
    """`read_at(length, offset)` over bytes, recording calls; may return short reads."""

    def __init__(self, data: bytes, short: int | None = None) -> None:
        self.data = data
        self.short = short
        self.calls: list[tuple[int, int]] = []

    def read_at(self, length: int, offset: int) -> bytes:
        self.calls.append((length, offset))
        if self.short is not None:
            length = min(length, self.short)
        return self.data[offset : offset + length]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_file_digest_each_algorithm(algorithm: str) -> None:
    fake = FakeFile(DATA)
    assert (
        file_digest(fake.read_at, len(DATA), algorithm) == hashlib.new(algorithm, DATA).hexdigest()
    )


def test_file_digest_empty() -> None:
    fake = FakeFile(b"")
    assert file_digest(fake.read_at, 0, "sha256") == hashlib.sha256(b"").hexdigest()
    assert fake.calls == []


def test_file_digest_reads_in_1_mib_blocks() -> None:
    data = bytes(range(256)) * ((3 << 20) // 256) + b"tail"
    fake = FakeFile(data)
    assert file_digest(fake.read_at, len(data), "sha256") == hashlib.sha256(data).hexdigest()
    assert fake.calls == [(1 << 20, 0), (1 << 20, 1 << 20), (1 << 20, 2 << 20), (4, 3 << 20)]


def test_file_digest_handles_short_reads() -> None:
    data = bytes(range(256)) * 40
    fake = FakeFile(data, short=1000)
    assert file_digest(fake.read_at, len(data), "md5") == hashlib.md5(data).hexdigest()
    assert [offset for _, offset in fake.calls] == list(range(0, len(data), 1000))


def test_file_digest_hashes_only_size_bytes() -> None:
    data = b"abcdefghij"
    fake = FakeFile(data)
    assert file_digest(fake.read_at, 4, "sha1") == hashlib.sha1(b"abcd").hexdigest()


def test_file_digest_stops_at_premature_end() -> None:
    # A file shorter than `size` ends the loop (no endless spin) and hashes what there was,
    # which then cannot match the expected digest of the full size.
    fake = FakeFile(b"abc")
    digest = file_digest(fake.read_at, 10, "sha256")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert len(fake.calls) == 2
