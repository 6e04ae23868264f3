"""Usage checks of the command line: options that cannot apply are usage errors, input
mistakes are found in the first records (one usage error, no request), `--report` and
`--accept` work for one URL, `-o` creates its folders, a URL without its scheme gets a hint,
and one URL keeps one rule for an existing file however it runs. Files are compared with the
served bytes; the server's log says that nothing was fetched when nothing should be."""

from __future__ import annotations

import io
import json
import os
import random
import sys
from pathlib import Path

import pytest
from fakes import payload
from helpers import cli, one_line_error
from rangeserver import Faults, RangeHTTPServer, serve_file, serve_files

from segdl.cli import main
from segdl.cli.batch import batch_options
from segdl.cli.parser import build_parser


def stdin_bytes(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- item 3: options that cannot apply ------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "option", "needs"),
    [
        (["--template", "{stem}-x{ext}"], "--template", "several URLs or -i"),
        (["--records", "foo"], "--records", "-i FILE"),
        (["--url-field", "link"], "--url-field", "-i FILE"),
        (["--input-format", "csv"], "--input-format", "-i FILE"),
        (["--window", "16M"], "--window", "-o -"),
        (["-o", "-", "--report", "r.csv"], "--report", "not with -o -"),
        (["-o", "-", "--accept", "image/*"], "--accept", "not with -o -"),
        (["-o", ".hidden", "--report", "r.csv"], "-o .hidden", "would save it as '_hidden'"),
    ],
)
def test_options_that_cannot_apply_to_one_url_are_usage_errors(
    extra: list[str],
    option: str,
    needs: str,
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = serve_file(rangeserver, "/big.bin", payload(3000))
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, served.url, *extra)
    assert code == 2, err
    line = one_line_error(err)
    assert option in line and needs in line
    assert out == ""
    assert rangeserver.requests == []
    assert list(tmp_path.iterdir()) == []


def test_window_with_a_stream_is_still_accepted(
    rangeserver: RangeHTTPServer, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    data = payload(5000)
    served = serve_file(rangeserver, "/s.bin", data)
    assert main([served.url, "-o", "-", "--window", "16M", "-q"]) == 0
    assert capsysbinary.readouterr().out == data


def test_report_and_accept_work_for_one_url(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: it used to save the octet-stream file, exit 0 and write no report."""
    served = serve_file(rangeserver, "/big.bin", payload(3000))
    dest = tmp_path / "out"
    report = tmp_path / "r.csv"
    code, _, err = cli(
        capsys, served.url, "-d", str(dest), "--report", str(report), "--accept", "image/*"
    )
    assert code == 1, err
    assert "application/octet-stream" in err
    assert not dest.exists() or list(dest.iterdir()) == []  # no file, no journal
    [row] = report.read_text().splitlines()[1:]
    assert row.startswith(f"0,{served.url},") and ",failed," in row


def test_report_for_one_url_with_o_creating_its_folders(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(5000, seed=3)
    served = serve_file(rangeserver, "/f.bin", data, Faults(content_type="image/png"))
    target = tmp_path / "new" / "sub" / "f.bin"
    report = tmp_path / "r.jsonl"
    args = ["-o", str(target), "--report", str(report), "--accept", "image/*", "-q"]
    code, _, err = cli(capsys, served.url, *args)
    assert code == 0, err
    assert target.read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # no .segdl journal
    [row] = [json.loads(line) for line in report.read_text().splitlines()]
    assert (row["status"], row["path"], row["bytes"], row["http_status"]) == (
        "ok",
        "f.bin",
        5000,
        206,
    )
    # Run again: the file exists, and for one URL that is an error (exit 1), as without
    # --report; the file is left alone.
    rangeserver.reset_stats()
    code, _, err = cli(capsys, served.url, *args)
    assert code == 1, err
    assert "already exists" in err
    assert target.read_bytes() == data
    assert json.loads(report.read_text())["status"] == "failed"


# --- item 4: input mistakes found in the first records -------------------------------------


def test_binary_input_is_one_usage_error_before_any_request(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_files(rangeserver, {"/a.bin": payload(10)})
    rng = random.Random(5)
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(rng.getrandbits(8) for _ in range(1 << 20)))
    code, _, err = cli(capsys, "-i", str(big), "-d", str(tmp_path / "out"))
    assert code == 2, err
    line = one_line_error(err)
    assert "big.bin, read as txt (one URL per line)" in line
    assert "first 10 records are unusable" in line and "--input-format" in line
    assert rangeserver.requests == []


@pytest.mark.parametrize(
    ("data", "found", "fix"),
    [
        (b"url,size,class\nhttp://h/0.jpg,1000,cat\n", "looks like CSV", "--input-format csv"),
        (b"url\tsize\nhttp://h/0.jpg\t1000\n", "looks like TSV", "--input-format tsv"),
        (b'[{"url": "http://h/0.jpg"}]\n', "looks like JSON", "--input-format json"),
        (b'{"url": "http://h/0.jpg"}\n', "looks like JSON", "jsonl"),
    ],
)
def test_stdin_that_looks_like_a_manifest_needs_its_format(
    data: bytes,
    found: str,
    fix: str,
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin_bytes(monkeypatch, data)
    code, _, err = cli(capsys, "-i", "-", "-d", str(tmp_path / "out"))
    assert code == 2, err
    line = one_line_error(err)
    assert "standard input" in line and found in line and fix in line and "line 1" in line
    assert rangeserver.requests == []


def test_stdin_with_its_format_named_is_read(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = payload(2000, seed=9)
    served = serve_file(rangeserver, "/0.jpg", data)
    stdin_bytes(monkeypatch, f"url,size,class\n{served.url},2000,cat\n".encode())
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys, "-i", "-", "--input-format", "csv", "-d", str(dest), "--template", "{class}/{name}"
    )
    assert code == 0, err
    assert (dest / "cat" / "0.jpg").read_bytes() == data


@pytest.mark.parametrize(
    ("name", "content", "argv", "words"),
    [
        (
            "m.jsonl",
            '{"url": "http://h/0.jpg", "id": 0}\n',
            ["--url-field", "link"],
            ["line 1 has no field 'link'", "--url-field", "'url', 'id'"],
        ),
        (
            "m.json",
            '[{"url": "http://h/0.jpg", "id": 0}, {"url": "http://h/1.jpg", "id": 1}]',
            ["--url-field", "link"],
            ["record 1 has no field 'link'", "'url', 'id'"],
        ),
        (
            "m.json",
            '[{"url": "http://h/0.jpg", "id": 0, "class": "cat"}]',
            ["--template", "{klass}/{id}.jpg"],
            ["record 1 has no field 'klass'", "'class'"],
        ),
        (
            "m.csv",
            "url,id\nhttp://h/0.jpg,0\n",
            ["--template", "{klass}/{name}"],
            ["line 2 has no field 'klass'", "'url', 'id'"],
        ),
        ("m.txt", "http://h/0.jpg\n", ["--url-field", "link"], ["--url-field", "read as txt"]),
    ],
)
def test_fields_missing_from_the_first_record_are_usage_errors(
    name: str,
    content: str,
    argv: list[str],
    words: list[str],
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = tmp_path / name
    manifest.write_text(content)
    code, _, err = cli(capsys, "-i", str(manifest), "-d", str(tmp_path / "out"), *argv)
    assert code == 2, err
    line = one_line_error(err)
    for word in words:
        assert word in line, line
    assert rangeserver.requests == []


def test_json_items_are_numbered_as_records_in_every_message(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template error used to say "line 2" for the second record of a one-line JSON file,
    and a missing URL "record 2"."""
    data = payload(1500)
    served = serve_file(rangeserver, "/0.jpg", data)
    manifest = tmp_path / "m.json"
    records = [
        {"url": served.url, "id": 0, "klass": "cat"},
        {"url": served.url + "?1", "id": 1},
        {"link": served.url, "id": 2, "klass": "cat"},
    ]
    manifest.write_text(json.dumps(records))  # one line
    dest = tmp_path / "out"
    report = tmp_path / "r.jsonl"
    code, _, err = cli(
        capsys,
        "-i",
        str(manifest),
        "-d",
        str(dest),
        "--template",
        "{klass}/{id}.jpg",
        "--report",
        str(report),
    )
    assert code == 1, err
    assert (dest / "cat" / "0.jpg").read_bytes() == data
    rows = {row["index"]: row for row in map(json.loads, report.read_text().splitlines())}
    assert rows[1]["error"] == "record 2: the record has no field 'klass'"
    assert rows[2]["error"] == "record 3: no 'url' field"


# --- item 9: small surprises -----------------------------------------------------------------


def test_url_without_scheme_gets_a_hint(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve_file(rangeserver, "/big.bin", payload(10))
    bare = served.url.removeprefix("http://")
    code, _, err = cli(capsys, bare, "-d", str(tmp_path))
    assert code == 2, err
    assert one_line_error(err).endswith(f"; did you mean http://{bare}?")
    assert rangeserver.requests == []


def test_o_creates_missing_folders(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(3000, seed=1)
    served = serve_file(rangeserver, "/big.bin", data)
    target = tmp_path / "newdir" / "sub" / "f.bin"
    code, _, err = cli(capsys, served.url, "-o", str(target), "-q")
    assert code == 0, err
    assert target.read_bytes() == data


def test_o_does_not_create_folders_through_a_dangling_link(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = serve_file(rangeserver, "/big.bin", payload(3000))
    elsewhere = tmp_path / "elsewhere"
    os.symlink(elsewhere, tmp_path / "link")
    code, _, err = cli(capsys, served.url, "-o", str(tmp_path / "link" / "sub" / "f.bin"))
    assert code == 1, err
    assert "link exists and is not a directory" in one_line_error(err)
    assert not elsewhere.exists()
    assert rangeserver.requests == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["http://h/a"], "error"),
        (["http://h/a", "--dask", "local:2"], "error"),
        (["http://h/a", "--report", "r.csv"], "error"),
        (["http://h/a", "http://h/b", "--dask", "local:2"], "skip"),
        (["-i", "list.txt", "--dask", "local:2"], "skip"),
        (["http://h/a", "--dask", "local:2", "--if-exists", "skip"], "skip"),
    ],
)
def test_one_url_keeps_one_existing_file_rule_however_it_runs(
    argv: list[str], expected: str
) -> None:
    """`--dask local:2` with one URL whose file exists exited 0 ("1 skipped") while the same
    without --dask exits 1. Local and cluster batches take their options from batch_options."""
    args = build_parser().parse_args(argv)
    assert batch_options(args, True)["if_exists"] == expected
