"""`--progress lines` and `--progress json`: the reports of `segdl.progress` against a fake
clock (no sleeping), the quick count of a manifest (`count_records`), and the command with
stderr not a terminal (a pipe), where `lines` is the default."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fakes import payload
from helpers import HANG_GUARD, cli, files_under, small_files, subprocess_env, wait_for
from rangeserver import RangeHTTPServer, serve_file, serve_files

import segdl
from segdl.api import iter_download_many
from segdl.batch.manifest import count_records, read_manifest
from segdl.batch.results import ItemResult
from segdl.core.events import StartInfo
from segdl.progress import JsonReport, LinesReport, eta_text

URL = "http://127.0.0.1:8080/f.bin"
ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    """A child's environment that imports this checkout's segdl from any folder."""
    return {**subprocess_env(), "PYTHONPATH": str(ROOT)}


T0 = 1_800_000_000.0  # the fake wall clock's start: 2027-01-15T08:00:00Z


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0 + self.now - 100.0


def objects(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (all of them must be)."""
    return [json.loads(line) for line in text.splitlines()]


def json_report() -> tuple[JsonReport, FakeClock, io.StringIO]:
    clock, out = FakeClock(), io.StringIO()
    return JsonReport(out, get_time=clock, wall=clock.wall), clock, out


# --- json: one transfer ------------------------------------------------------------------------


def test_json_reports_a_transfer_every_second_with_its_numbers() -> None:
    report, clock, out = json_report()
    report.start(StartInfo(URL, Path("f.bin"), 1000, 4, 0))
    clock.now += 0.5
    report.progress(200, 1000, 4)  # not due yet
    assert len(objects(out.getvalue())) == 1
    clock.now += 0.5
    report.progress(400, 1000, 4)
    clock.now += 1.0
    report.progress(800, 1000, 3)
    clock.now += 0.5
    report.finish(1000)
    report.close()
    report.close()  # once only
    first, second, third, final = objects(out.getvalue())
    assert first == {
        "time": "2027-01-15T08:00:00.000+00:00",
        "elapsed": 0.0,
        "bytes": 0,
        "total": 1000,
        "rate": 0,
        "eta": None,
        "items": None,
        "connections": 0,
        "protocols": {"127.0.0.1:8080": "HTTP/1.1"},
        "final": False,
    }
    assert (second["elapsed"], second["bytes"], second["rate"]) == (1.0, 400, 400)
    assert second["eta"] == 1.5
    assert second["connections"] == 4 and second["time"] == "2027-01-15T08:00:01.000+00:00"
    assert (third["bytes"], third["rate"], third["eta"], third["connections"]) == (800, 400, 0.5, 3)
    assert final["final"] is True and final["bytes"] == 1000 and final["total"] == 1000
    assert (final["rate"], final["eta"], final["connections"], final["elapsed"]) == (400, 0, 0, 2.5)


def test_the_rate_is_over_the_last_ten_seconds_and_a_resume_counts_only_new_bytes() -> None:
    report, clock, out = json_report()
    report.start(StartInfo(URL, Path("f.bin"), 100_000, 1, 5000))  # 5000 bytes resumed
    done = 5000
    for step in range(1, 301):  # 30 s: 100 B/s for 20 s, then 1000 B/s
        clock.now = 100.0 + step / 10
        done += 10 if step <= 200 else 100
        report.progress(done, 100_000, 1)
    report.close()
    *reports, final = objects(out.getvalue())
    assert [r["elapsed"] for r in reports] == [float(s) for s in range(31)]
    assert reports[10]["rate"] == 100 and reports[20]["rate"] == 100
    assert reports[30]["rate"] == 1000  # the last 10 s only
    assert reports[30]["eta"] == round((100_000 - done) / 1000, 1)
    assert final["bytes"] == done == 5000 + 2000 + 10_000
    assert final["rate"] == round(12_000 / 30)  # what was fetched, not what was resumed


def test_the_protocol_is_the_one_the_transport_reports() -> None:
    report, _, out = json_report()
    report.start(StartInfo("https://example.org/f.bin", Path("f"), None, 1, 0, protocol="HTTP/2"))
    report.close()
    (first, final) = objects(out.getvalue())
    assert first["protocols"] == final["protocols"] == {"example.org:443": "HTTP/2"}
    assert first["total"] is None and first["eta"] is None


# --- json: a batch -----------------------------------------------------------------------------


def item(index: int, status: str, url: str = URL, **kw: Any) -> ItemResult:
    http = None if status == "skipped" else 200
    return ItemResult(index, url, Path(f"f{index}"), status, http_status=http, **kw)


def test_json_reports_a_batch_items_of_the_total_and_an_eta_by_items() -> None:
    report, clock, out = json_report()
    report.batch_progress(0, 10, 0, 0, 0)
    clock.now += 1.0
    report.item_done(item(0, "ok"))
    report.item_done(item(1, "skipped", "http://other.example/x"))  # no request: no protocol
    report.item_done(item(2, "failed", "http://h2.example:8443/y", protocol="HTTP/2"))
    report.item_done(item(3, "ok"))
    report.batch_progress(4, 10, 3000, 1, 5)
    clock.now += 1.0
    report.close()
    first, second, final = objects(out.getvalue())
    assert first["items"] == {"ok": 0, "skipped": 0, "failed": 0, "total": 10}
    assert first["total"] is None and first["eta"] is None
    assert second["items"] == {"ok": 2, "skipped": 1, "failed": 1, "total": 10}
    assert (second["bytes"], second["rate"], second["connections"]) == (3000, 3000, 5)
    assert second["eta"] == 1.5  # 6 items left at 4 items a second
    assert second["protocols"] == {"127.0.0.1:8080": "HTTP/1.1", "h2.example:8443": "HTTP/2"}
    assert final["final"] and final["items"] == second["items"] and final["rate"] == 1500


# --- lines -------------------------------------------------------------------------------------


def test_lines_come_every_ten_seconds_and_at_the_end() -> None:
    clock, out = FakeClock(), io.StringIO()
    report = LinesReport(out, get_time=clock, wall=clock.wall)
    report.start(StartInfo(URL, Path("f.bin"), 100 * 1024 * 1024, 8, 0))
    done = 0
    for step in range(1, 251):  # 25 s at 1 MiB/s, sampled every 0.1 s
        clock.now = 100.0 + step / 10
        done += 104_858
        report.progress(min(done, 100 * 1024 * 1024), 100 * 1024 * 1024, 8)
    report.warning("something odd")
    report.finish(100 * 1024 * 1024)
    report.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        f"segdl: progress: 10.0 MiB of 100.0 MiB (10%) ({104_858 * 100} bytes), 1.0 MiB/s, "
        "ETA 1:30, 8 connections",
        f"segdl: progress: 20.0 MiB of 100.0 MiB (20%) ({104_858 * 200} bytes), 1.0 MiB/s, "
        "ETA 1:20, 8 connections",
        "segdl: warning: something odd",
        f"segdl: end: 100.0 MiB of 100.0 MiB (100%) ({100 * 1024 * 1024} bytes), 4.0 MiB/s",
    ]


def test_lines_of_a_batch_and_an_extraction() -> None:
    clock, out = FakeClock(), io.StringIO()
    report = LinesReport(out, get_time=clock, wall=clock.wall)
    report.batch_progress(0, None, 0, 0, 0)
    report.item_done(item(0, "ok"))
    clock.now += 10
    report.batch_progress(1, None, 2048, 0, 3)
    report.extracting(7, 4096)
    report.close()
    assert out.getvalue().splitlines() == [
        "segdl: progress: 1 of ? items (1 ok, 0 skipped, 0 failed), 2.0 KiB (2048 bytes), "
        "205 B/s, ETA ?, 3 connections",
        "segdl: end: 1 of ? items (1 ok, 0 skipped, 0 failed), 2.0 KiB (2048 bytes), 205 B/s, "
        "7 members extracted",
    ]


def test_a_report_that_saw_nothing_writes_nothing() -> None:
    out = io.StringIO()
    LinesReport(out).close()
    JsonReport(out).close()
    assert out.getvalue() == ""


def test_eta_text() -> None:
    texts = [eta_text(s) for s in (None, 0, 59.6, 61, 3723)]
    assert texts == ["?", "0:00", "1:00", "1:01", "1:02:03"]


# --- the quick count of a manifest -------------------------------------------------------------


def exact_count(path: Path, **kw: Any) -> int:
    return sum(1 for _ in read_manifest(path, **kw))


MANIFESTS = {
    "list.txt": "\ufeffhttp://h/a\n  out=x.bin\n\n# a comment\n  # indented\nhttp://h/b\thttp://m/b\n"
    "not a url\n   dir=d\nhttp://h/c",
    "table.csv": '\n\nid,url,caption\n1,http://h/a,"two\nlines"\n\n2,http://h/b,plain\n3,,none\n',
    "table.tsv": "url\tid\nhttp://h/a\t1\nhttp://h/b\t2\n",
    "records.jsonl": '{"url": "http://h/a"}\n\n{"url": "http://h/b"}\n[1]\n{"url": 3}\n',
    "records.json": '{"data": {"items": [{"url": "http://h/a"}, {"url": "http://h/b"}, 7]}}',
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_the_quick_count_is_what_the_reader_yields(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(MANIFESTS[name])
    kw = {"records": "data.items"} if name.endswith(".json") else {}
    expected = {"list.txt": 4, "table.csv": 3, "table.tsv": 2, "records.jsonl": 4}
    assert count_records(path, **kw) == exact_count(path, **kw) == expected.get(name, 3)
    zipped = tmp_path / f"{name}.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert count_records(zipped, **kw) == exact_count(zipped, **kw)


def test_the_quick_count_keeps_one_line_in_memory_and_stops_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    with path.open("w") as f:
        for i in range(200_000):
            f.write(f"http://127.0.0.1/{i:08d}/a-long-enough-path-to-weigh.bin\n  out={i}.bin\n")
    tracemalloc.start()
    try:
        assert count_records(path) == 200_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 10 * 1024 * 1024 and peak < 1024 * 1024
    stop = threading.Event()
    stop.set()
    assert count_records(path, stop=stop) is None
    assert count_records("-") is None and count_records(tmp_path / "missing.txt") is None


# --- the command, stderr a pipe ----------------------------------------------------------------


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segdl", *argv],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env(),
        cwd=cwd,
        timeout=HANG_GUARD,
        check=False,
    )


def test_lines_is_the_default_when_stderr_is_not_a_terminal(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(3 * 1024 * 1024 + 11)
    served = serve_file(rangeserver, "/f.bin", data)
    proc = run(served.url, "-o", "f.bin", "-n", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    *_, end, summary = proc.stderr.splitlines()
    assert end.startswith("segdl: end: 3.0 MiB of 3.0 MiB (100%) ") and end.count(",") == 1
    assert f"({len(data)} bytes)" in end
    assert summary.startswith("f.bin: 3.0 MiB in ")
    assert "Traceback" not in proc.stderr and "{" not in proc.stderr


def test_a_batch_ends_with_its_item_counts_and_bytes(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(5)
    serve_files(rangeserver, files)
    (tmp_path / "list.txt").write_text(
        "".join(rangeserver.url_for(p) + "\n" for p in files) + "http://127.0.0.1:9/refused\n"
    )
    proc = run("-i", "list.txt", "-d", "out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # the missing one failed
    assert files_under(tmp_path / "out") == {p.lstrip("/"): d for p, d in files.items()}
    size = sum(len(d) for d in files.values())
    end = next(line for line in proc.stderr.splitlines() if line.startswith("segdl: end: "))
    assert end.startswith("segdl: end: 6 of 6 items (5 ok, 0 skipped, 1 failed), ")
    assert f"({size} bytes)" in end
    assert proc.stderr.splitlines()[-1].startswith("segdl: 5 ok, 0 skipped, 1 failed; ")


def test_a_stream_reports_on_stderr_and_writes_only_bytes_on_stdout(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * 1024 * 1024 + 5, seed=3)
    served = serve_file(rangeserver, "/s.bin", data)
    proc = subprocess.run(
        [sys.executable, "-m", "segdl", served.url, "-o", "-", "--progress", "json"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env(),
        timeout=HANG_GUARD,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    *reports, summary = proc.stderr.decode().splitlines()
    final = objects("\n".join(reports))[-1]
    assert final["final"] and final["bytes"] == final["total"] == len(data)
    assert final["protocols"] == {f"127.0.0.1:{rangeserver.port}": "HTTP/1.1"}
    assert summary.startswith("segdl: 2.0 MiB to stdout in ")


def test_quiet_and_none_write_no_report(rangeserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(100_000)
    served = serve_file(rangeserver, "/f.bin", data)
    quiet = run(served.url, "-o", "a.bin", "-q", cwd=tmp_path)
    none = run(served.url, "-o", "b.bin", "--progress", "none", cwd=tmp_path)
    assert quiet.returncode == none.returncode == 0
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes() == data
    assert quiet.stderr == ""
    assert none.stderr.startswith("b.bin: ") and len(none.stderr.splitlines()) == 1


def test_an_extraction_reports_its_members(
    rangeserver: RangeHTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = {"a.txt": payload(5000, seed=1), "dir/b.bin": payload(70_000, seed=2)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    served = serve_file(rangeserver, "/a.zip", buffer.getvalue())
    code, _, err = cli(capsys, served.url, "--extract", str(tmp_path / "x"), "--progress", "json")
    assert code == 0, err
    assert files_under(tmp_path / "x") == members
    *reports, summary = err.splitlines()
    final = objects("\n".join(reports))[-1]
    assert final["final"] and final["extracted"] == {"members": 2, "bytes": 75_000}
    assert 75_000 < final["bytes"] <= len(buffer.getvalue())  # members' ranges, or all of it
    assert "2 members" in summary


def test_a_bad_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "http://127.0.0.1:9/f", "--progress", "foo")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("segdl: error: argument --progress: invalid choice: 'foo'"), line


def test_json_shows_the_total_of_a_manifest_before_the_batch_has_read_it(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    """300 items, more than the batch reads ahead (256), while the server holds every
    request: only the quick count can know the total."""
    data = payload(1000, seed=5)
    served = serve_file(rangeserver, "/f.bin", data)
    release = threading.Event()

    def hold(record: object) -> None:
        release.wait(HANG_GUARD)

    served.request_hook = hold
    count = 300
    (tmp_path / "list.txt").write_text(
        "".join(f"{served.url}?{i}\n  out=f{i:03d}.bin\n" for i in range(count))
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segdl",
            *("-i", "list.txt", "-d", "out", "-j", "2", "--progress"),
            "json",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env(),
        text=True,
    )
    assert proc.stderr is not None
    seen: list[dict[str, Any]] = []
    try:
        # Read until a report shows the total; the requests are held meanwhile.
        def total_known() -> bool:
            line = proc.stderr.readline() if proc.stderr else ""
            if line:
                seen.append(json.loads(line))
            assert line or proc.poll() is None, "segdl ended"
            return bool(seen) and seen[-1]["items"]["total"] == count

        wait_for(total_known, "the total in a report")
        assert sum(seen[-1]["items"][k] for k in ("ok", "skipped", "failed")) == 0
    finally:
        release.set()
    _, rest = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, rest
    *reports, summary = rest.splitlines()
    final = objects("\n".join(reports))[-1]
    assert final["final"] and final["items"] == {"ok": 300, "skipped": 0, "failed": 0, "total": 300}
    assert final["bytes"] == count * len(data)
    assert summary.startswith("segdl: 300 ok, 0 skipped, 0 failed; ")
    assert files_under(tmp_path / "out") == {f"f{i:03d}.bin": data for i in range(count)}


# --- the count in the batch --------------------------------------------------------------------


class Totals(JsonReport):
    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.totals: list[int | None] = []

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        self.totals.append(total)


def test_a_count_gives_the_total_until_the_feeder_has_its_own(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    files = small_files(3)
    served = serve_files(rangeserver, files)
    asked: list[threading.Event] = []

    def count(stop: threading.Event) -> int:
        asked.append(stop)
        return 1000  # wrong on purpose: the feeder's count replaces it at the end

    listener = Totals()
    results = iter_download_many(
        [s.url for s in served.values()], tmp_path, listener=listener, count=count
    )
    assert sorted(r.status for r in results) == ["ok"] * 3
    assert files_under(tmp_path) == {p.lstrip("/"): d for p, d in files.items()}
    assert len(asked) == 1 and asked[0].is_set()  # the run told the count to stop at its end
    assert listener.totals[-1] == 3
    assert not [t for t in threading.enumerate() if t.name == "segdl-counter"]


def test_a_count_that_breaks_stops_the_batch_with_its_error(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_file(rangeserver, "/f.bin", payload(1000))

    def count(stop: threading.Event) -> int:
        raise RuntimeError("a bug in the count")

    with pytest.raises(RuntimeError, match="a bug in the count"):
        segdl.download_many([served.url], tmp_path, count=count)
