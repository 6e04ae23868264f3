"""The batch command line (`segdl URL URL ...`, `segdl -i LIST`) end to end against the
loopback range server: every input format, reports, exit codes, re-runs after failures and
after SIGKILL. Files are compared with the served bytes; the server's log says what was
fetched; nothing depends on timing."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import payload
from helpers import (
    cli,
    files_under,
    gets_of,
    journal_ok_urls,
    one_line_error,
    signal_when,
    small_files,
    start_batch,
    subprocess_env,
)
from rangeserver import Faults, RangeHTTPServer, ServedFile, pattern_bytes, serve_file, serve_files

MiB = 1 << 20
THROTTLE = 64 * 1024  # bytes/s per response


# --- helpers --------------------------------------------------------------------------------


def expected(files: dict[str, bytes]) -> dict[str, bytes]:
    return {path.rsplit("/", 1)[-1]: data for path, data in files.items()}


def report_rows(path: Path) -> dict[int, dict[str, str]]:
    """The report's rows by item index (values as text), one row per item."""
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_index = {
        int(row["index"]): {k: "" if v is None else str(v) for k, v in row.items()} for row in rows
    }
    assert len(by_index) == len(rows), rows
    return by_index


def refused_url(path: str) -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# --- input formats --------------------------------------------------------------------------


def test_several_urls_on_the_command_line(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(3)
    served = serve_files(rangeserver, files)
    code, out, err = cli(capsys, *(s.url for s in served.values()), "-d", str(tmp_path / "d"))
    assert code == 0, err
    assert files_under(tmp_path / "d") == expected(files)
    assert out == ""
    summary = err.strip().splitlines()[-1]
    assert "3 ok" in summary and "0 failed" in summary
    assert sorted(gets_of(rangeserver)) == sorted(files)


def test_txt_with_comments_and_aria2_options(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(5)
    served = list(serve_files(rangeserver, files).values())
    data = list(files.values())
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# a comment, then a blank line\n"
        "\n"
        f"{served[0].url}\n"
        f"{served[1].url}\n"
        "  out=renamed.dat\n"
        "# a comment between option lines does not end them\n"
        "\tdir=sub/folder\n"
        f"{served[2].url}\n"
        "  dir=other\n"
        "   # an indented comment\n"
        f"{served[3].url}\n"
        "  split=4\n"  # an aria2 option segdl does not use
        "  out=../../escape.bin\n"  # made relative and safe, or the item fails
        f"{served[4].url}\n"
    )
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "-q")
    got = files_under(dest)
    assert got["f000.bin"] == data[0]
    assert got["sub/folder/renamed.dat"] == data[1]
    assert got["other/f002.bin"] == data[2]
    assert got["f004.bin"] == data[4]
    escaped = [p for p in tmp_path.rglob("*") if p.name == "escape.bin" and dest not in p.parents]
    assert escaped == []
    item3 = {k: v for k, v in got.items() if v == data[3]}
    if code == 0:
        assert len(item3) == 1 and ".." not in next(iter(item3)).split("/")
    else:
        assert code == 1 and item3 == {} and "#3" in err
    assert "Traceback" not in err


def test_csv_with_template(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(4)
    served = list(serve_files(rangeserver, files).values())
    listing = tmp_path / "list.csv"
    with listing.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "link", "label"])
        for i, s in enumerate(served):
            writer.writerow([f"item{i}", s.url, "a, quoted label"])
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys,
        "-i",
        str(listing),
        "-d",
        str(dest),
        "--url-field",
        "link",
        "--template",
        "csv/{id}{ext}",
        "-q",
    )
    assert code == 0, err
    assert files_under(dest) == {f"csv/item{i}.bin": d for i, d in enumerate(files.values())}


def test_tsv(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    listing = tmp_path / "list.tsv"
    listing.write_text("url\tname2\n" + "".join(f"{s.url}\tn{i}\n" for i, s in enumerate(served)))
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "--template", "{name2}.x", "-q")
    assert code == 0, err
    assert files_under(dest) == {f"n{i}.x": d for i, d in enumerate(files.values())}


def test_json_records_with_nested_template(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = ["cat", "dog", "cat", "bird", "dog"]
    files = {f"/img/{i}": payload(2000 + i, seed=i) for i in range(5)}
    served = list(serve_files(rangeserver, files, Faults(content_type="image/jpeg")).values())
    doc = {
        "meta": {"count": 5},
        "images": [
            {"url": s.url, "class": c, "id": 100 + i, "nested": {"ignored": True}}
            for i, (s, c) in enumerate(zip(served, classes, strict=True))
        ],
    }
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(doc))
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys,
        "-i",
        str(listing),
        "-d",
        str(dest),
        "--records",
        "images",
        "--template",
        "{class}/{id}.jpg",
        "--accept",
        "image/*",
        "-q",
    )
    assert code == 0, err
    data = list(files.values())
    assert files_under(dest) == {f"{c}/{100 + i}.jpg": data[i] for i, c in enumerate(classes)}
    assert (dest / "cat").is_dir() and (dest / "dog").is_dir() and (dest / "bird").is_dir()


def test_jsonl_and_input_format_override(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(4)
    served = list(serve_files(rangeserver, files).values())
    listing = tmp_path / "list.data"  # the extension says nothing: --input-format decides
    listing.write_text(
        "".join(json.dumps({"url": s.url, "n": i}) + "\n" for i, s in enumerate(served))
    )
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys,
        "-i",
        str(listing),
        "--input-format",
        "jsonl",
        "-d",
        str(dest),
        "--template",
        "{n}-{stem}{ext}",
        "-q",
    )
    assert code == 0, err
    assert files_under(dest) == {f"{i}-f{i:03d}.bin": d for i, d in enumerate(files.values())}


@pytest.mark.parametrize("name", ["list.txt.gz", "list.jsonl.gz"])
def test_gzipped_list(
    name: str,
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = small_files(4)
    served = list(serve_files(rangeserver, files).values())
    if name.startswith("list.txt"):
        text = "# gz\n" + "".join(f"{s.url}\n" for s in served)
    else:
        text = "".join(json.dumps({"url": s.url}) + "\n" for s in served)
    (tmp_path / name).write_bytes(gzip.compress(text.encode()))
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", str(tmp_path / name), "-d", str(dest), "-q")
    assert code == 0, err
    assert files_under(dest) == expected(files)


def test_list_from_stdin(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    text = "".join(f"{s.url}\n" for s in served)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", "-", "-d", str(dest), "-q")
    assert code == 0, err
    assert files_under(dest) == expected(files)


def test_gzipped_list_from_stdin_in_subprocess(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    text = "".join(json.dumps({"url": s.url}) + "\n" for s in served)
    dest = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "segdl",
            "-i",
            "-",
            "--input-format",
            "jsonl",
            "-d",
            str(dest),
            "-q",
        ],
        input=gzip.compress(text.encode()),  # gzip recognised by its magic bytes
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b""
    assert files_under(dest) == expected(files)


# --- mirrors and reports --------------------------------------------------------------------


def test_mirrors_and_report_names_mirror_used(
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_a, data_b = payload(4000, seed=30), payload(5000, seed=31)
    missing = serve_file(rangeserver, "/a.bin", b"", Faults(status_sequence=[404] * 20))
    mirror_a = serve_file(rangeserver2, "/a.bin", data_a)
    mirror_b = serve_file(rangeserver2, "/b.bin", data_b)
    listing = tmp_path / "list.txt"
    # aria2 convention: the mirrors of one file on one line, separated by TAB.
    listing.write_text(f"{missing.url}\t{mirror_a.url}\n{refused_url('/b.bin')}\t{mirror_b.url}\n")
    dest = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    code, _, err = cli(
        capsys,
        "-i",
        str(listing),
        "-d",
        str(dest),
        "--report",
        str(report),
        "--retries",
        "1",
        "-q",
    )
    assert code == 0, err
    assert files_under(dest) == {"a.bin": data_a, "b.bin": data_b}
    rows = report_rows(report)
    assert rows[0]["status"] == rows[1]["status"] == "ok"
    assert rows[0]["url"] == mirror_a.url
    assert rows[1]["url"] == mirror_b.url
    assert rows[0]["path"] == "a.bin" and rows[1]["path"] == "b.bin"
    assert [r.status for r in missing.gets()] == [404]


def test_report_paths_are_relative_to_the_directory(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = small_files(2)
    served = list(serve_files(rangeserver, files).values())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cases = [
        (["-d", "rel"], work / "rel"),
        (["-d", str(tmp_path / "abs")], tmp_path / "abs"),
        ([], work),  # no -d: the current directory
    ]
    for number, (args, where) in enumerate(cases):
        report = tmp_path / f"r{number}.jsonl"
        code, _, err = cli(capsys, *(s.url for s in served), *args, "--report", str(report), "-q")
        assert code == 0, err
        for name, data in expected(files).items():
            assert (where / name).read_bytes() == data
        rows = report_rows(report)
        assert [rows[i]["path"] for i in range(2)] == ["f000.bin", "f001.bin"], (args, rows)


def test_failures_exit_1_and_report_every_item(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(6)
    served = list(serve_files(rangeserver, files).values())
    for index in (1, 4):
        served[index].faults.status_sequence = [404] * 20
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.url}\n" for s in served))
    dest = tmp_path / "out"
    for report in (tmp_path / "r.jsonl", tmp_path / "r.csv"):
        code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "--report", str(report))
        assert code == 1
        assert "Traceback" not in err
        failed_lines = [line for line in err.splitlines() if "failed:" in line]
        assert len(failed_lines) == 2
        assert any(served[1].url in line for line in failed_lines)
        assert any(served[4].url in line for line in failed_lines)
        assert "4 ok" in err.splitlines()[-1] or "4 skipped" in err.splitlines()[-1]
        rows = report_rows(report)
        assert sorted(rows) == list(range(6))
        for i, s in enumerate(served):
            assert rows[i]["url"] == s.url
            if i in (1, 4):
                assert rows[i]["status"] == "failed"
                assert rows[i]["http_status"] == "404"
                assert rows[i]["error"]
            else:
                assert rows[i]["status"] in ("ok", "skipped")
                assert rows[i]["path"] == f"f{i:03d}.bin"
                assert int(rows[i]["bytes"]) == len(files[f"/f{i:03d}.bin"])
        ok = {k: v for k, v in expected(files).items() if k not in ("f001.bin", "f004.bin")}
        assert files_under(dest) == ok
        # No temporary files of the failed items either.
        assert sorted(p.name for p in dest.iterdir() if p.name != ".segdl") == sorted(ok)
    # The first run fetched, the second skipped (journal).
    assert report_rows(tmp_path / "r.jsonl")[0]["status"] == "ok"
    assert report_rows(tmp_path / "r.csv")[0]["status"] == "skipped"


def test_failed_item_fetched_on_rerun_once_fixed(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(4)
    served = list(serve_files(rangeserver, files).values())
    served[2].faults.status_sequence = [404] * 20
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.url}\n" for s in served))
    dest = tmp_path / "out"
    code, _, _ = cli(capsys, "-i", str(listing), "-d", str(dest), "-q")
    assert code == 1
    served[2].faults.status_sequence = None
    rangeserver.reset_stats()
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "-q")
    assert code == 0, err
    assert gets_of(rangeserver) == ["/f002.bin"]
    assert files_under(dest) == expected(files)


def test_rerun_after_success_makes_no_request(
    keepalive_server: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(8)
    served = list(serve_files(keepalive_server, files).values())
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.url}\n" for s in served))
    dest = tmp_path / "out"
    assert cli(capsys, "-i", str(listing), "-d", str(dest), "-q")[0] == 0
    keepalive_server.wait_idle()
    keepalive_server.reset_stats()
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest))
    assert code == 0, err
    assert "8 skipped" in err.splitlines()[-1]
    assert keepalive_server.requests == []
    assert keepalive_server.connections_opened == 0
    assert files_under(dest) == expected(files)


def test_failed_items_listed_one_line_each_with_a_cap(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = serve_files(
        rangeserver,
        {f"/missing{i:02d}.bin": b"" for i in range(30)},
        Faults(status_sequence=[404] * 5),
    )
    good = serve_file(rangeserver, "/good.bin", payload(1000, seed=50))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.url}\n" for s in missing.values()) + good.url + "\n")
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest))
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    listed = [line for line in lines if "failed:" in line]
    assert 1 <= len(listed) < 30
    assert all("404" in line or "Not Found" in line for line in listed), listed
    more = [line for line in lines if "more" in line and "failed" in line and line not in listed]
    assert len(more) == 1
    counts = [int(word) for word in more[0].replace(",", " ").split() if word.isdigit()]
    assert len(listed) + counts[0] == 30
    assert "1 ok" in lines[-1] and "30 failed" in lines[-1]
    assert files_under(dest) == {"good.bin": payload(1000, seed=50)}


def test_if_exists_policies_in_a_batch(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(3000, seed=51)
    served = serve_file(rangeserver, "/x.bin", data)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "x.bin").write_bytes(b"old")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{served.url}\n  out=x.bin\n")
    base = ["-i", str(listing), "-d", str(dest), "--no-journal", "-q"]
    # Default in a batch: skip, without a request (the name is known from out=).
    assert cli(capsys, *base)[0] == 0
    assert (dest / "x.bin").read_bytes() == b"old"
    assert served.gets() == []
    code, _, err = cli(capsys, *base, "--if-exists", "error")
    assert code == 1 and "x.bin" in err and "Traceback" not in err
    assert (dest / "x.bin").read_bytes() == b"old"
    assert cli(capsys, *base, "--if-exists", "rename")[0] == 0
    assert (dest / "x.bin").read_bytes() == b"old"
    renamed = {k: v for k, v in files_under(dest).items() if k != "x.bin"}
    assert list(renamed.values()) == [data]
    assert cli(capsys, *base, "--if-exists", "overwrite")[0] == 0
    assert (dest / "x.bin").read_bytes() == data


# --- hostile values, duplicates, content types ----------------------------------------------


def test_hostile_fields_stay_inside_dir(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(4)
    served = list(serve_files(rangeserver, files).values())
    data = list(files.values())
    records = [
        {"url": served[0].url, "id": "../../x", "class": "cats"},
        {"url": served[1].url, "id": "y", "class": "/etc"},
        {"url": served[2].url, "id": "..", "class": "../.."},
        {"url": served[3].url, "id": "fine", "class": "dogs"},
    ]
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps(r) + "\n" for r in records))
    dest = tmp_path / "a" / "b" / "out"
    before = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    code, _, err = cli(
        capsys,
        "-i",
        str(listing),
        "-d",
        str(dest),
        "--template",
        "{class}/{id}.jpg",
        "--report",
        str(tmp_path / "r.jsonl"),
        "-q",
    )
    assert code in (0, 1) and "Traceback" not in err
    after = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    new = after - before - {"a", "a/b", "r.jsonl"}
    assert {p for p in new if not p.startswith("a/b/out")} == set()
    got = files_under(dest)
    assert got["dogs/fine.jpg"] == data[3]
    rows = report_rows(tmp_path / "r.jsonl")
    for i in range(4):
        if rows[i]["status"] == "ok":
            rel = rows[i]["path"]
            assert ".." not in rel.split("/") and not rel.startswith("/")
            assert got[rel] == data[i]
        else:
            assert rows[i]["status"] == "failed" and rows[i]["error"]
    assert len(got) == sum(r["status"] == "ok" for r in rows.values())


def test_same_url_twice_fetched_once(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(3000, seed=40)
    served = serve_file(rangeserver, "/twice.bin", data)
    dest = tmp_path / "out"
    code, _, err = cli(capsys, served.url, served.url, "-d", str(dest), "-q")
    assert code == 0, err
    assert files_under(dest) == {"twice.bin": data}
    assert len(served.gets()) == 1


def test_two_urls_to_one_path_later_fails(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = payload(3000, seed=41), payload(3000, seed=42)
    a = serve_file(rangeserver, "/a/same.bin", first)
    b = serve_file(rangeserver, "/b/same.bin", second)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{a.url}\n  out=one.bin\n{b.url}\n  out=one.bin\n")
    dest = tmp_path / "out"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "-q")
    assert code == 1
    [line] = [line for line in err.splitlines() if "failed:" in line]
    assert "#1" in line and b.url in line and "one.bin" in line
    assert files_under(dest) == {"one.bin": first}
    assert b.gets() == []


def test_accept_refuses_html_at_image_url(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + payload(2000, seed=43)
    good = serve_file(rangeserver, "/ok.png", png, Faults(content_type="image/png"))
    bad = serve_file(
        rangeserver, "/login.png", b"<html>log in</html>" * 50, Faults(content_type="text/html")
    )
    dest = tmp_path / "out"
    code, _, err = cli(capsys, good.url, bad.url, "-d", str(dest), "--accept", "image/*", "-q")
    assert code == 1
    [line] = [line for line in err.splitlines() if "failed:" in line]
    assert bad.url in line and "text/html" in line
    assert files_under(dest) == {"ok.png": png}
    assert sorted(p.name for p in dest.iterdir() if p.name != ".segdl") == ["ok.png"]


# --- caps through the command line ----------------------------------------------------------


def test_per_host_and_jobs_options_cap_connections(
    keepalive_server: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(16, size=3000)
    served = serve_files(keepalive_server, files, Faults(rate=THROTTLE))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{s.url}\n" for s in served.values()))
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys, "-i", str(listing), "-d", str(dest), "-j", "6", "--per-host", "2", "-q"
    )
    assert code == 0, err
    assert files_under(dest) == expected(files)
    assert keepalive_server.max_concurrent <= 2
    assert keepalive_server.connections_opened <= 6  # one kept-alive connection per job at most


def test_mixed_batch_splits_the_big_file(
    rangeserver: RangeHTTPServer,
    keepalive_server2: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    big = pattern_bytes(8 * MiB, seed=7)
    big_served = serve_file(rangeserver, "/big.bin", big, Faults(rate=3 * MiB))
    files = small_files(100, size=1200)
    served = serve_files(keepalive_server2, files)
    listing = tmp_path / "list.txt"
    listing.write_text(big_served.url + "\n" + "".join(f"{s.url}\n" for s in served.values()))
    dest = tmp_path / "out"
    code, _, err = cli(
        capsys, "-i", str(listing), "-d", str(dest), "-n", "4", "-k", "1M", "-j", "8", "-q"
    )
    assert code == 0, err
    assert files_under(dest) == {"big.bin": big, **expected(files)}
    assert big_served.gets()[0].range_header == "bytes=0-"
    assert len(big_served.ranges_requested()) > 1
    assert len(gets_of(keepalive_server2)) == 100


# --- bad input ------------------------------------------------------------------------------


def test_malformed_jsonl_line_is_a_failed_item(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = small_files(3)
    served = list(serve_files(rangeserver, files).values())
    listing = tmp_path / "list.jsonl"
    listing.write_text(
        json.dumps({"url": served[0].url})
        + "\n"
        + json.dumps({"url": served[1].url})
        + "\n"
        + '{"url": "http://127.0.0.1:1/x", oops\n'
        + json.dumps({"url": served[2].url})
        + "\n"
    )
    dest = tmp_path / "out"
    report = tmp_path / "r.csv"
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "--report", str(report))
    assert code == 1
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "failed:" in line]
    assert "line 3" in line
    assert files_under(dest) == expected(files)
    rows = report_rows(report)
    assert [rows[i]["status"] for i in range(4)] == ["ok", "ok", "failed", "ok"]
    assert "line 3" in rows[2]["error"]


@pytest.mark.parametrize("content", ["", "# nothing but comments\n\n   \n"])
def test_empty_list_exits_0(
    content: str,
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_files(rangeserver, small_files(1))
    listing = tmp_path / "list.txt"
    listing.write_text(content)
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(tmp_path / "out"))
    assert code == 0, err
    assert "Traceback" not in err
    assert rangeserver.requests == []
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == {}


def test_usage_errors_exit_2_with_one_line(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = list(serve_files(rangeserver, small_files(2)).values())
    listing = tmp_path / "list.txt"
    listing.write_text(served[0].url + "\n")
    cases = [
        ["-i", str(tmp_path / "missing.txt"), "-d", str(tmp_path / "d1")],
        ["-i", str(listing), "-d", str(tmp_path / "d2"), "--template", "../x"],
        ["-i", str(listing), "-d", str(tmp_path / "d3"), "--template", "{id"],
        [served[0].url, served[1].url, "-o", str(tmp_path / "one.bin")],
        ["-i", str(listing), "-o", str(tmp_path / "one.bin")],
        ["-i", str(listing), "-d", str(tmp_path / "d4"), "--report", str(tmp_path / "r.xml")],
        ["-i", str(listing), "-d", str(tmp_path / "d5"), "--records", "images"],
    ]
    for argv in cases:
        code, out, err = cli(capsys, *argv)
        assert code == 2, (argv, err)
        one_line_error(err)
        assert out == ""
    assert rangeserver.requests == []
    assert not (tmp_path / "one.bin").exists()
    assert "missing.txt" in cli(capsys, *cases[0])[2]


def test_missing_input_file_in_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segdl", "-i", "nope.txt", "-d", "out"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=subprocess_env(),
    )
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "nope.txt" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- interruption ---------------------------------------------------------------------------


def _throttled_batch(
    server: RangeHTTPServer, tmp_path: Path
) -> tuple[dict[str, bytes], dict[str, ServedFile], Path]:
    files = small_files(12, size=6000)
    big = {"/big.bin": pattern_bytes(6 * MiB, seed=99)}
    served = serve_files(server, files, Faults(rate=THROTTLE))
    # Two ranges at 1 MiB/s each: at least three seconds, so it is mid-way when killed.
    served.update(serve_files(server, big, Faults(rate=MiB)))
    listing = tmp_path / "list.txt"
    listing.write_text(served["/big.bin"].url + "\n" + "".join(f"{served[p].url}\n" for p in files))
    return {**files, **big}, served, listing


def test_rerun_after_sigkill_completes_without_refetching_finished_items(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    all_files, served, listing = _throttled_batch(rangeserver, tmp_path)
    dest = tmp_path / "out"
    proc = start_batch(listing, dest, tmp_path, "-n", "2")
    signal_when(
        proc, lambda: len(journal_ok_urls(dest)) >= 3, "3 items in the journal", signal.SIGKILL
    )
    assert proc.returncode == -signal.SIGKILL
    assert not (dest / "big.bin").exists()  # the throttle makes it last seconds: cut mid-way
    finished = journal_ok_urls(dest)
    assert served["/big.bin"].url not in finished
    rangeserver.reset_stats()  # the killed run's requests stay out of the re-run's log
    for s in served.values():
        s.faults.rate = None
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "-j", "4", "-n", "2", "-q")
    assert code == 0, err
    assert files_under(dest) == expected(all_files)
    refetched = {r.path for r in rangeserver.requests if r.method == "GET"}
    assert {s.url for s in served.values() if s.path in refetched} & finished == set()
    assert "/big.bin" in refetched


def test_rerun_after_sigkill_refetches_only_items_that_were_mid_transfer(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every finished item is in the journal as its file appears, not at the next commit: a
    # kill right after the 30th file lands costs no refetch of any of the 30 (with the
    # remote's name, a file on disk cannot be matched to its item without a request).
    done = small_files(30)
    stalled = small_files(10, prefix="s")
    served = serve_files(rangeserver, done)
    served.update(serve_files(rangeserver, stalled, Faults(stall_after_headers=60)))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{served[p].url}\n" for p in [*done, *stalled]))
    dest = tmp_path / "out"
    names = {p.lstrip("/"): data for p, data in done.items()}

    def in_place() -> bool:
        return all(
            (dest / name).is_file() and (dest / name).stat().st_size == len(data)
            for name, data in names.items()
        )

    # Room for the stalled items and the others: none of the 30 waits behind a stalled one.
    proc = start_batch(listing, dest, tmp_path, "-j", "16", "--per-host", "16")
    # The kill comes a moment after: past the microseconds between a rename and its record.
    signal_when(proc, in_place, "30 files in place", signal.SIGKILL, settle=0.005)
    assert proc.returncode == -signal.SIGKILL
    rangeserver.reset_stats()  # the killed run's requests stay out of the re-run's log
    for s in served.values():
        s.faults.stall_after_headers = 0
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(dest), "-j", "16", "-q")
    assert code == 0, err
    assert files_under(dest) == expected({**done, **stalled})
    assert set(gets_of(rangeserver)) <= set(stalled)


def test_sigterm_mid_batch_exits_130_and_rerun_completes(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    all_files, served, listing = _throttled_batch(rangeserver, tmp_path)
    dest = tmp_path / "out"
    report = tmp_path / "r.jsonl"
    proc = start_batch(listing, dest, tmp_path, "-n", "2", "--report", str(report))
    # Two items in the journal: the first one's result has surely reached the report's
    # writer (a finished request alone says nothing of the item's result yet).
    err = signal_when(
        proc, lambda: len(journal_ok_urls(dest)) >= 2, "two items in the journal", signal.SIGTERM
    )
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    assert b"interrupted" in err
    finished = journal_ok_urls(dest)
    assert finished, "the journal was flushed on the way out"
    # The report holds whole rows, and an ok row means the file is in place.
    rows = report_rows(report)
    assert rows
    for row in rows.values():
        if row["status"] == "ok":
            assert (dest / row["path"]).read_bytes() == all_files["/" + row["path"]]
    assert {row["url"] for row in rows.values() if row["status"] == "ok"} <= finished
    rangeserver.reset_stats()  # the killed run's requests stay out of the re-run's log
    for s in served.values():
        s.faults.rate = None
    code, _, err2 = cli(capsys, "-i", str(listing), "-d", str(dest), "-j", "4", "-n", "2", "-q")
    assert code == 0, err2
    assert files_under(dest) == expected(all_files)
    refetched = {r.path for r in rangeserver.requests if r.method == "GET"}
    assert {s.url for s in served.values() if s.path in refetched} & finished == set()
