"""Unit tests of segdl.batch.report: the per-item report as JSON Lines, CSV or TSV."""

from __future__ import annotations

import csv
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segdl.batch.report import COLUMNS, ReportRow, ReportWriter, read_report
from segdl.errors import DestinationError, UsageError

EXTENSIONS = [".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".CSV"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def row(index: int, **changes: object) -> ReportRow:
    fields: dict[str, object] = {
        "index": index,
        "url": f"https://example.com/{index}.bin",
        "path": f"files/{index}.bin",
        "status": "ok",
        "http_status": 200,
        "bytes": 1000 + index,
        "seconds": 0.25,
        "attempts": 1,
        "error": None,
    }
    fields.update(changes)
    return ReportRow(**fields)  # type: ignore[arg-type]


ROWS = [
    row(0),
    row(1, status="skipped", http_status=None, seconds=0.0, attempts=0),
    row(
        2,
        path=None,
        status="failed",
        http_status=404,
        bytes=0,
        seconds=1.5,
        attempts=3,
        error="HTTP 404: Not Found",
    ),
    row(3, url='https://example.com/a,b?q="x"&t=\t', path='dir/été, "quoted"\ttab.bin'),
    row(4, path="line\nbreak\rname.bin", status="failed", error="reset, retried", bytes=17),
    row(5, path="carriage\rreturn.bin"),
]


def write_all(path: Path, rows: list[ReportRow]) -> None:
    with ReportWriter(path) as writer:
        for item in rows:
            writer.write(item)


def test_a_report_without_the_protocol_column_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(",".join(COLUMNS[:-1]) + "\n0,https://e.com/0,0,ok,200,5,0.5,1,\n")
    [read] = read_report(path)
    assert read.status == "ok" and read.protocol is None


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_round_trip(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"report{extension}"
    write_all(path, ROWS)
    assert list(read_report(path)) == ROWS


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_an_empty_report_reads_back_empty(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"report{extension}"
    ReportWriter(path).close()
    assert list(read_report(path)) == []


def test_json_lines_are_compact_objects_in_column_order(tmp_path: Path) -> None:
    path = tmp_path / "report.jsonl"
    write_all(path, [row(0, seconds=1.23456), ROWS[2]])
    assert path.read_text(encoding="utf-8").splitlines() == [
        '{"index":0,"url":"https://example.com/0.bin","path":"files/0.bin","status":"ok",'
        '"http_status":200,"bytes":1000,"seconds":1.235,"attempts":1,"error":null,'
        '"protocol":null}',
        '{"index":2,"url":"https://example.com/2.bin","path":null,"status":"failed",'
        '"http_status":404,"bytes":0,"seconds":1.5,"attempts":3,"error":"HTTP 404: Not Found",'
        '"protocol":null}',
    ]


def test_csv_has_a_header_and_writes_none_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    write_all(path, [row(0, seconds=0.0004), ROWS[2]])
    assert path.read_bytes().decode().splitlines() == [
        ",".join(COLUMNS),
        "0,https://example.com/0.bin,files/0.bin,ok,200,1000,0.0,1,,",
        "2,https://example.com/2.bin,,failed,404,0,1.5,3,HTTP 404: Not Found,",
    ]


def test_tsv_is_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "report.tsv"
    write_all(path, [row(0)])
    assert path.read_bytes().decode().splitlines() == [
        "\t".join(COLUMNS),
        "0\thttps://example.com/0.bin\tfiles/0.bin\tok\t200\t1000\t0.25\t1\t\t",
    ]


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_seconds_are_rounded_to_milliseconds(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"report{extension}"
    write_all(path, [row(0, seconds=2.71828), row(1, seconds=0.0004)])
    assert [item.seconds for item in read_report(path)] == [2.718, 0.0]


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_an_error_is_written_on_one_line(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"report{extension}"
    error = "connection reset\nby peer\r\nafter 3 tries\rgiving up"
    write_all(path, [row(0, status="failed", error=error), row(1)])
    header = 1 if extension.lower() in (".csv", ".tsv") else 0
    assert len(path.read_bytes().splitlines()) == header + 2
    first = next(read_report(path))
    assert first.error == "connection reset by peer after 3 tries giving up"


@pytest.mark.parametrize("name", ["report.txt", "report", "report.jsonl.gz", "report.xlsx"])
def test_an_unknown_extension_is_a_usage_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(UsageError, match=r"\.jsonl, \.ndjson, \.json, \.csv, \.tsv"):
        ReportWriter(path)
    assert not path.exists()
    with pytest.raises(UsageError, match="report format"):
        list(read_report(path))


def test_a_missing_parent_is_a_destination_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "report.csv"
    with pytest.raises(DestinationError, match="cannot create the report") as info:
        ReportWriter(path)
    assert str(path) in str(info.value)


def test_an_invalid_row_is_refused(tmp_path: Path) -> None:
    with ReportWriter(tmp_path / "report.jsonl") as writer:
        with pytest.raises(ValueError, match="status"):
            writer.write(row(0, status="done"))
        with pytest.raises(ValueError, match="finite"):
            writer.write(row(0, seconds=float("nan")))
    assert list(read_report(tmp_path / "report.jsonl")) == []


@pytest.mark.parametrize("extension", [".jsonl", ".csv"])
def test_a_killed_run_leaves_the_flushed_prefix(tmp_path: Path, extension: str) -> None:
    # What is on disk while the writer is open is exactly what a SIGKILL would leave.
    path = tmp_path / f"report{extension}"
    clock = FakeClock()
    writer = ReportWriter(path, flush_every=100, flush_interval=1.0, clock=clock)
    rows = [row(i) for i in range(250)]
    for item in rows[:150]:
        writer.write(item)
    assert list(read_report(path)) == rows[:100]
    for item in rows[150:220]:
        writer.write(item)
    assert list(read_report(path)) == rows[:200]
    # A slow batch still reaches the disk: the next row after flush_interval flushes.
    clock.now = 1.0
    writer.write(rows[220])
    assert list(read_report(path)) == rows[:221]
    writer.write(rows[221])
    writer.flush()
    assert list(read_report(path)) == rows[:222]
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.write(rows[222])
    assert list(read_report(path)) == rows[:222]


def test_the_prefix_is_readable_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "report.jsonl"
    writer = ReportWriter(path, flush_every=10, clock=FakeClock())
    for i in range(25):
        writer.write(row(i, error="x" * 5000))
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert [json.loads(line)["index"] for line in text.splitlines()] == list(range(20))
    writer.close()


@pytest.mark.parametrize("extension", [".jsonl", ".csv", ".tsv"])
def test_a_row_cut_by_a_crash_is_ignored(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"report{extension}"
    write_all(path, [row(0), row(1, path="a\nb.bin"), row(2, path="é.bin")])
    data = path.read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1
    for cut in range(last + 1, len(data)):  # every cut inside the last row, even mid-character
        path.write_bytes(data[:cut])
        assert list(read_report(path)) == [row(0), row(1, path="a\nb.bin")]


@pytest.mark.parametrize("extension", [".csv", ".tsv"])
def test_a_cut_after_a_line_break_inside_a_field_drops_the_row(
    tmp_path: Path, extension: str
) -> None:
    # The file then ends with a line break, yet its last record is incomplete.
    path = tmp_path / f"report{extension}"
    write_all(path, [row(0), row(1, path="a\nb.bin"), row(2)])
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"a\nb.bin") + 2])
    assert list(read_report(path)) == [row(0)]


def test_a_name_that_is_not_utf8_survives(tmp_path: Path) -> None:
    name = b"caf\xe9.bin".decode("utf-8", "surrogateescape")
    jsonl, csv_path = tmp_path / "report.jsonl", tmp_path / "report.csv"
    write_all(jsonl, [row(0, path=name)])
    write_all(csv_path, [row(0, path=name)])
    jsonl.read_bytes().decode("utf-8")  # both files stay valid UTF-8
    csv_path.read_bytes().decode("utf-8")
    assert list(read_report(jsonl)) == [row(0, path=name)]
    assert [item.path for item in read_report(csv_path)] == ["caf\\udce9.bin"]


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("bad.jsonl", '{"index": 0}\n', 1),
        ("bad.jsonl", "\n[1, 2]\n", 2),
        ("bad.jsonl", "not json\n", 1),
        (
            "bad.json",
            json.dumps(
                dict(zip(COLUMNS, [0, "u", None, "done", None, 1, 0, 1, None, None], strict=True))
            ),
            1,
        ),
        (
            "bad.ndjson",
            json.dumps(
                dict(zip(COLUMNS, [True, "u", None, "ok", None, 1, 0, 1, None, None], strict=True))
            ),
            1,
        ),
        ("bad.csv", "index,url\n0,u\n", 1),
        ("bad.csv", ",".join(COLUMNS) + "\n0,u,,ok,,1,0.5,1\n", 2),
        ("bad.csv", ",".join(COLUMNS) + "\nzero,u,,ok,,1,0.5,1,\n", 2),
        ("bad.tsv", "\t".join(COLUMNS) + "\n0\tu\t\tok\t\t1\tslow\t1\t\n", 2),
    ],
)
def test_a_file_that_is_not_a_report_is_a_usage_error(
    tmp_path: Path, name: str, content: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(content + ("\n" if not content.endswith("\n") else ""), encoding="utf-8")
    with pytest.raises(UsageError, match="is not a segdl report") as info:
        list(read_report(path))
    assert str(info.value).startswith(f"{path}:{line} ")


def test_a_missing_report_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the report"):
        list(read_report(tmp_path / "missing.jsonl"))


def test_a_report_with_extra_columns_reads(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    write_all(path, [row(0)])
    with path.open(newline="", encoding="utf-8") as source:
        records = list(csv.reader(source))
    with path.open("w", newline="", encoding="utf-8") as target:
        csv.writer(target).writerows(
            [["note", *reversed(records[0])], ["x", *reversed(records[1])]]
        )
    assert list(read_report(path)) == [row(0)]


@pytest.mark.parametrize("extension", [".jsonl", ".csv"])
def test_many_threads_writing_at_once(tmp_path: Path, extension: str) -> None:
    # Switching threads every microsecond makes a missing lock show up as lost or torn rows.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _write_from_threads(tmp_path / f"report{extension}")
    finally:
        sys.setswitchinterval(interval)


def _write_from_threads(path: Path) -> None:
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            index = worker * per_thread + i
            writer.write(row(index, error=f"worker {worker} " + "e" * (index % 50)))

    with ReportWriter(path, flush_every=7) as writer, ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, worker) for worker in range(threads)]:
            future.result()
    rows = sorted(read_report(path), key=lambda item: item.index)
    assert [item.index for item in rows] == list(range(threads * per_thread))
    assert all(
        item.error == f"worker {item.index // per_thread} " + "e" * (item.index % 50)
        for item in rows
    )
