"""Checksums from the manifest (issue 19): a digest per item from a manifest field
(`--checksum-field`), a `sha256sum`-format file (`--checksums`) or an aria2 `checksum=` line;
a mismatch is a failed item with both digests and no file; the journal trusts a finished item
only when it was verified against the digest asked for now. Downloads are compared with the
served bytes; the server's log says what was fetched."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
from helpers import cli, files_under, gets_of, one_line_error, small_files
from rangeserver import RangeHTTPServer, serve_files

import segdl
from segdl.batch.journal import SCHEMA_VERSION, Journal, journal_path
from segdl.batch.manifest import BadRecord, Record, read_manifest
from segdl.core.verify import Checksum, parse_digest, read_checksums
from segdl.errors import UsageError


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def name_of(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def report_errors(path: Path) -> dict[str, str | None]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["url"]: row["error"] for row in rows}


# --- parsing: pure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "algorithm"),
    [
        ("sha256:" + "AB" * 32, "sha256"),
        ("sha256=" + "ab" * 32, "sha256"),
        ("sha-256=" + "ab" * 32, "sha256"),
        ("md5:" + "ab" * 16, "md5"),
        ("ab" * 16, "md5"),
        ("ab" * 20, "sha1"),
        (" " + "ab" * 32 + " ", "sha256"),
        ("ab" * 64, "sha512"),
    ],
)
def test_parse_digest_forms(value: str, algorithm: str) -> None:
    checksum = parse_digest(value, "here")
    assert (checksum.algorithm, checksum.source) == (algorithm, "here")
    assert checksum.hexdigest == value.strip().split(":")[-1].split("=")[-1].lower()


@pytest.mark.parametrize(
    "value", ["", "xyz", "ab" * 31, "zz" * 32, "sha256:" + "ab" * 16, "crc32:abcd1234"]
)
def test_parse_digest_refuses(value: str) -> None:
    with pytest.raises(UsageError):
        parse_digest(value, "here")


def test_read_checksums_gnu_formats(tmp_path: Path) -> None:
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        "# made by sha256sum\n\n"
        f"{'a' * 64}  plain.bin\n"
        f"{'b' * 64} *./sub/binary mode.bin\n"
        f"\\{'c' * 64}  back\\\\slash\\nline.bin\n"
        f"{'d' * 32}  old.md5\n"
        "SHA256 (tagged.bin) = " + "e" * 64 + "\n"
    )
    found = read_checksums(sums)
    assert {k: v.spec for k, v in found.items()} == {
        "plain.bin": "sha256=" + "a" * 64,
        "sub/binary mode.bin": "sha256=" + "b" * 64,
        "back\\slash\nline.bin": "sha256=" + "c" * 64,
        "old.md5": "md5=" + "d" * 32,
    }
    assert found["plain.bin"].source == f"{sums} line 3"


def test_read_checksums_refuses_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        read_checksums(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\nnot a checksum line\n")
    with pytest.raises(UsageError, match="no checksum line"):
        read_checksums(empty)


def test_manifest_checksum_field() -> None:
    data = (
        "url,sha256\n"
        f"http://h/a,sha256:{'ab' * 32}\n"
        "http://h/b,not-hex\n"
        "http://h/c,\n"
        f"http://h/d,{'cd' * 16}\n"
    ).encode()
    items = list(read_manifest(io.BytesIO(data), format="csv", checksum_field="sha256"))
    assert isinstance(items[0], Record) and isinstance(items[3], Record)
    assert items[0].checksum is not None and items[0].checksum.spec == "sha256=" + "ab" * 32
    assert items[3].checksum is not None and items[3].checksum.algorithm == "md5"
    assert isinstance(items[1], BadRecord) and "line 3: field 'sha256'" in items[1].error
    assert isinstance(items[2], BadRecord) and "no checksum in field 'sha256'" in items[2].error


@pytest.mark.parametrize("first", ["http://h/a,nothex", "http://h/a,", "http://h/a," + "ab" * 31])
def test_manifest_first_record_bad_digest_is_usage_error(first: str) -> None:
    data = f"url,sha256\n{first}\nhttp://h/b,{'ab' * 32}\n".encode()
    with pytest.raises(UsageError, match=r"line 2.*--checksum-field sha256"):
        read_manifest(io.BytesIO(data), format="csv", checksum_field="sha256")


def test_manifest_checksum_field_jsonl_and_wrong_name() -> None:
    data = json.dumps({"url": "http://h/a", "md5": "ab" * 16}).encode() + b"\n"
    [item] = read_manifest(io.BytesIO(data), format="jsonl", checksum_field="md5")
    assert isinstance(item, Record) and item.checksum == Checksum(
        "md5", "ab" * 16, "field 'md5' of line 1 of the input"
    )
    with pytest.raises(UsageError, match="its fields are: 'url', 'md5'"):
        read_manifest(io.BytesIO(data), format="jsonl", checksum_field="sha256")


def test_manifest_checksum_field_refused_for_txt() -> None:
    with pytest.raises(UsageError, match="--checksum-field applies to csv"):
        read_manifest(io.BytesIO(b"http://h/a\n"), format="txt", checksum_field="sha256")


def test_aria2_checksum_line() -> None:
    data = (
        f"http://h/a\n  checksum=sha-256={'ab' * 32}\n"
        "http://h/b\n  checksum=sha-256=abc\n"
        f"http://h/c\n  checksum=md5={'ab' * 16}\n"
    ).encode()
    a, b, c = read_manifest(io.BytesIO(data))
    assert isinstance(a, Record) and a.checksum is not None
    assert a.checksum.spec == "sha256=" + "ab" * 32
    assert isinstance(b, BadRecord) and "checksum= on line 4" in b.error
    assert isinstance(c, Record) and c.checksum is not None and c.checksum.algorithm == "md5"
    # The first record's bad digest says the input is wrong: a usage error before any fetch.
    with pytest.raises(UsageError, match="checksum= on line 2"):
        read_manifest(io.BytesIO(b"http://h/a\n  checksum=sha-256=xyz\n"))


# --- the journal ------------------------------------------------------------------------------


def test_journal_records_digest_and_migrates_version_1(tmp_path: Path) -> None:
    path = journal_path(tmp_path)
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE items (key TEXT PRIMARY KEY NOT NULL, url TEXT NOT NULL, path TEXT, "
        "status TEXT NOT NULL CHECK (status IN ('ok', 'failed')), size INTEGER, etag TEXT, "
        "last_modified TEXT, sha256 TEXT, error TEXT, updated REAL NOT NULL)"
    )
    old.execute(
        "INSERT INTO items VALUES ('k', 'http://h/a', 'a', 'ok', 1, NULL, NULL, NULL, NULL, 0)"
    )
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    wanted = Checksum("sha256", "ab" * 32, "test")
    with Journal(path) as journal:
        entry = journal.lookup("k")
        assert entry is not None and entry.digest is None
        assert entry.vouches_for(None) and not entry.vouches_for(wanted)
        journal.record_ok("k2", url="http://h/b", path="b", size=2, digest=wanted.spec)
        entry2 = journal.lookup("k2")
        assert entry2 is not None and entry2.vouches_for(wanted)
        assert not entry2.vouches_for(Checksum("sha256", "cd" * 32, "test"))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


# --- end to end -------------------------------------------------------------------------------


def test_checksum_field_ok_and_mismatch(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(3)
    served = serve_files(rangeserver, files)
    paths = list(files)
    wrong = sha256(b"something else")
    rows = [
        {"url": served[p].url, "sha256": f"sha256:{sha256(files[p])}" if p != paths[1] else wrong}
        for p in paths
    ]
    manifest = write_csv(tmp_path / "m.csv", rows)
    dest, report = tmp_path / "d", tmp_path / "r.jsonl"
    argv = ["-i", str(manifest), "--checksum-field", "sha256", "-d", str(dest), "-q"]
    code, _, err = cli(capsys, *argv, "--report", str(report))
    assert code == 1, err
    good = {name_of(p): files[p] for p in paths if p != paths[1]}
    assert files_under(dest) == good  # nothing under the bad item's name, no .part either
    error = report_errors(report)[served[paths[1]].url]
    assert error is not None and wrong in error and sha256(files[paths[1]]) in error
    assert "sha256 mismatch" in error
    # A re-run refetches the failed item only (the others: the journal, no request).
    rangeserver.reset_stats()
    code, _, err = cli(capsys, *argv)
    assert code == 1
    assert gets_of(rangeserver) == [paths[1]]
    # With the right digest it is fetched once more and kept.
    rows[1]["sha256"] = sha256(files[paths[1]])
    write_csv(manifest, rows)
    rangeserver.reset_stats()
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    assert gets_of(rangeserver) == [paths[1]]
    assert files_under(dest) == {name_of(p): files[p] for p in paths}


def test_checksums_file_matched_by_path(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(3)
    served = serve_files(rangeserver, files)
    a, b, c = list(files)
    # The files go to DIR/<name>; the sums name them as sha256sum does, binary mode too.
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(
        f"{sha256(files[a])}  {name_of(a)}\n"
        f"{sha256(b'not this')} *./{name_of(b)}\n"
        f"{sha256(files[c])}  elsewhere/{name_of(c)}\n"
    )
    dest, report = tmp_path / "d", tmp_path / "r.jsonl"
    code, _, err = cli(
        capsys,
        *(s.url for s in served.values()),
        "--checksums",
        str(sums),
        "-d",
        str(dest),
        "--report",
        str(report),
    )
    assert code == 1, err
    # c has no line under its path: fetched, not verified; b's line does not match.
    assert files_under(dest) == {name_of(a): files[a], name_of(c): files[c]}
    errors = report_errors(report)
    assert errors[served[a].url] is None and errors[served[c].url] is None
    message = errors[served[b].url]
    assert message is not None and sha256(files[b]) in message and sha256(b"not this") in message
    assert str(sums) in message


def test_aria2_checksum_line_end_to_end(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(2)
    served = serve_files(rangeserver, files)
    a, b = list(files)
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"{served[a].url}\n  checksum=sha-256={sha256(files[a])}\n"
        f"{served[b].url}\n  checksum=sha-256={sha256(b'x')}\n"
    )
    dest = tmp_path / "d"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest))
    assert code == 1
    assert files_under(dest) == {name_of(a): files[a]}
    assert sha256(b"x") in err and sha256(files[b]) in err


def test_journal_trusts_only_the_digest_asked_for_now(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(2)
    served = serve_files(rangeserver, files)
    urls = [s.url for s in served.values()]
    dest = tmp_path / "d"
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{sha256(d)}  {name_of(p)}\n" for p, d in files.items()))
    # Fetched without a digest: the journal vouches for none.
    assert cli(capsys, *urls, "-d", str(dest))[0] == 0
    # Asked for digests now: the files in place are fetched again, verified.
    rangeserver.reset_stats()
    assert cli(capsys, *urls, "-d", str(dest), "--checksums", str(sums))[0] == 0
    assert sorted(gets_of(rangeserver)) == sorted(files)
    # The same digests again: trusted, no request.
    rangeserver.reset_stats()
    assert cli(capsys, *urls, "-d", str(dest), "--checksums", str(sums))[0] == 0
    assert gets_of(rangeserver) == []
    # Another digest for one of them: that one is fetched (and fails), the other trusted.
    first = next(iter(files))
    other = tmp_path / "OTHER"
    other.write_text(f"{sha256(b'other')}  {name_of(first)}\n")
    rangeserver.reset_stats()
    code, _, _ = cli(capsys, *urls, "-d", str(dest), "--checksums", str(other))
    assert code == 1
    assert gets_of(rangeserver) == [first]
    # Without a digest, what the journal has is enough.
    rangeserver.reset_stats()
    assert cli(capsys, urls[1], urls[1], "-d", str(dest))[0] == 0
    assert gets_of(rangeserver) == []
    for path, data in files.items():
        if path != first:
            assert (dest / name_of(path)).read_bytes() == data


def test_library_checksums_mapping(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    files = small_files(2)
    served = serve_files(rangeserver, files)
    a, b = list(files)
    results = segdl.download_many(
        [served[a].url, served[b].url],
        tmp_path,
        checksums={
            name_of(a): Checksum("sha256", sha256(files[a]), "mine"),
            name_of(b): Checksum("md5", hashlib.md5(b"no").hexdigest(), "mine"),
        },
    )
    by_url = {r.url: r for r in results}
    assert by_url[served[a].url].status == "ok"
    assert by_url[served[b].url].status == "failed"
    assert "md5 mismatch (from mine)" in (by_url[served[b].url].error or "")
    assert files_under(tmp_path) == {name_of(a): files[a]}


# --- usage errors: before any request ---------------------------------------------------------


def test_usage_errors(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(1)
    served = serve_files(rangeserver, files)
    url = next(iter(served.values())).url
    dest = str(tmp_path / "d")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{url}\n")
    not_hex = write_csv(tmp_path / "m.csv", [{"url": url, "sha256": "zz" * 32}])
    no_line = tmp_path / "SUMS"
    no_line.write_text("nothing here\n")
    cases = [
        (["-i", str(listing), "--checksum-field", "sha256"], "--checksum-field applies to csv"),
        ([url, url, "--checksum-field", "sha256"], "--checksum-field: only with -i FILE"),
        (["-i", str(not_hex), "--checksum-field", "sha256"], "line 2: field 'sha256'"),
        ([url, "--checksums", str(tmp_path / "missing")], "cannot read"),
        ([url, "--checksums", str(no_line)], "has no checksum line"),
    ]
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha256(b'x')}  f000.bin\n")
    code, _, err = cli(capsys, url, "-o", "-", "--checksums", str(sums))
    assert code == 2 and "--checksums: with one URL, not with -o -" in one_line_error(err)
    for argv, message in cases:
        code, _, err = cli(capsys, *argv, "-d", dest)
        assert code == 2, (argv, err)
        assert message in one_line_error(err, prefix="segdl: error:"), argv
    assert rangeserver.requests == []
    assert not (tmp_path / "d").exists() or files_under(tmp_path / "d") == {}


def test_a_cluster_shard_keeps_the_records_digest() -> None:
    from segdl.cluster.shards import decode_record, encode_record

    checksum = Checksum("sha256", "ab" * 32, "field 'sha256' of line 2 of m.csv")
    record = Record(3, 4, ("http://h/a",), {"url": "http://h/a"}, checksum=checksum)
    assert decode_record(encode_record(record)) == record
    plain = Record(0, 1, ("http://h/b",), {"url": "http://h/b"})
    assert decode_record(encode_record(plain)) == plain


def test_one_url_with_checksums_runs_as_a_batch_of_one(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(1)
    [data] = files.values()
    [served] = serve_files(rangeserver, files).values()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{sha256(data)}  kept.bin\n{sha256(b'no')}  refused.bin\n")
    code, _, err = cli(
        capsys, served.url, "-o", str(tmp_path / "kept.bin"), "--checksums", str(sums)
    )
    assert code == 0, err
    assert (tmp_path / "kept.bin").read_bytes() == data
    code, _, err = cli(
        capsys, served.url, "-o", str(tmp_path / "refused.bin"), "--checksums", str(sums)
    )
    assert code == 1 and sha256(data) in err and sha256(b"no") in err
    assert not (tmp_path / "refused.bin").exists()
    assert not (tmp_path / "refused.bin.part").exists()
