"""segdl.batch.manifest: every format, bad items, usage errors, gzip, stdin and streaming.

Pure tests: inputs are bytes in memory or small files under tmp_path, never a socket.
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import io
import json
import random
import sys
import warnings
from pathlib import Path

import pytest

from segdl.batch import manifest
from segdl.batch.manifest import FORMATS, BadRecord, Record, detect_format, read_manifest
from segdl.core.verify import Checksum
from segdl.errors import UsageError

Item = Record | BadRecord


def read(data: bytes, **kwargs: str) -> list[Item]:
    return list(read_manifest(io.BytesIO(data), **kwargs))


def rec(
    index: int,
    line: int,
    *urls: str,
    out: str | None = None,
    dir: str | None = None,
    **fields: str,
) -> Record:
    """A txt-style record unless fields are given."""
    return Record(index, line, urls, fields or {"url": urls[0]}, out, dir)


def errors(items: list[Item]) -> dict[int, str]:
    return {item.index: item.error for item in items if isinstance(item, BadRecord)}


# --- detect_format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("urls.txt", "txt"),
        ("urls.list", "txt"),
        ("urls", "txt"),
        ("-", "txt"),
        ("urls.weird", "txt"),
        ("data.csv", "csv"),
        ("DATA.CSV", "csv"),
        ("data.tsv", "tsv"),
        ("data.json", "json"),
        ("data.jsonl", "jsonl"),
        ("data.ndjson", "jsonl"),
        ("data.jsonl.gz", "jsonl"),
        ("dir.csv/data.json.GZ", "json"),
        ("urls.gz", "txt"),
        ("/tmp/x.d/urls", "txt"),
    ],
)
def test_detect_format(name: str, expected: str) -> None:
    assert detect_format(name) == expected


def test_format_is_detected_from_the_path(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_bytes(b'{"url": "http://h/a"}\n')
    assert list(read_manifest(path)) == [rec(0, 1, "http://h/a")]
    # An explicit format wins over the name: read as a URL list, the line is no URL (and an
    # input whose only record is unusable is a usage error).
    with pytest.raises(UsageError, match=r"read as txt.*unsupported URL scheme"):
        read_manifest(str(path), format="txt")


# --- txt (aria2c input file) -----------------------------------------------------------

ARIA2 = b"""# a comment
  out=before-any-url.bin
   # an indented comment

http://a.example/x.iso\thttp://b.example/x.iso\t\thttps://c.example/x.iso
  out=isos/x.iso
\tdir=downloads
  split=5
  checksum=sha-256=abababababababababababababababababababababababababababababababab
  no equals sign here

https://d.example/y
  out=first.bin
  out=second.bin
http://e.example/z   \r
"""


def test_txt_aria2_input_file() -> None:
    first = rec(
        0,
        5,
        "http://a.example/x.iso",
        "http://b.example/x.iso",
        "https://c.example/x.iso",
        out="isos/x.iso",
        dir="downloads",
    )
    # checksum= is honoured (the digest its bytes must have); split= and the others are not.
    digest = Checksum("sha256", "ab" * 32, "checksum= on line 9 of the input")
    assert read(ARIA2) == [
        dataclasses.replace(first, checksum=digest),
        # The last out= wins, as in aria2.
        rec(1, 12, "https://d.example/y", out="second.bin"),
        rec(2, 15, "http://e.example/z"),
    ]


def test_txt_options_survive_blank_and_comment_lines() -> None:
    data = b"http://h/a\n\n# note\n  out=named.bin\nhttp://h/b\n"
    assert read(data) == [rec(0, 1, "http://h/a", out="named.bin"), rec(1, 5, "http://h/b")]


def test_txt_crlf_bom_and_no_final_newline() -> None:
    data = b"\xef\xbb\xbfhttp://h/a\r\n  out=a.bin\r\nhttp://h/b"
    assert read(data) == [rec(0, 1, "http://h/a", out="a.bin"), rec(1, 3, "http://h/b")]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("out=sub/dir/x.bin", "sub/dir/x.bin"),
        ("out=./a//b", "a/b"),
        ("out=a\\b.bin", "a/b.bin"),
        ("out=.hidden", "_hidden"),
        ("out=  spaced.bin  ", "spaced.bin"),
    ],
)
def test_txt_out_is_made_safe(option: str, expected: str) -> None:
    [item] = read(f"http://h/a\n  {option}\n".encode())
    assert isinstance(item, Record)
    assert item.out == expected


@pytest.mark.parametrize(
    ("option", "reason"),
    [
        ("out=/etc/passwd", "absolute path"),
        ("out=../../.bashrc", "'..'"),
        ("dir=a/../../b", "'..'"),
        ("dir=\\\\server\\share", "absolute path"),
        ("out=", "empty path"),
        ("out=a/\x00/b", "empty or a dot name"),
    ],
)
def test_txt_hostile_out_or_dir_makes_a_bad_record(option: str, reason: str) -> None:
    items = read(f"http://h/a\n  {option}\nhttp://h/b\n".encode())
    assert items[1] == rec(1, 3, "http://h/b")
    bad = items[0]
    assert isinstance(bad, BadRecord)
    assert (bad.index, bad.line) == (0, 1)
    key = option.partition("=")[0]
    assert bad.error.startswith(f"line 1: {key}= on line 2: ")
    assert reason in bad.error
    assert "\n" not in bad.error


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"ftp://h/a", "unsupported URL scheme 'ftp'"),
        (b"h.example/a", "unsupported URL scheme"),
        (b"http:///no-host", "no host"),
        (b"http://h:99999/a", "invalid URL"),
        (b"http://h/a\x01b", "control character"),
        (b"http://h/a\tjavascript:alert(1)", "unsupported URL scheme 'javascript'"),
        (b"http://h/caf\xe9", "not valid UTF-8"),
    ],
)
def test_txt_bad_url_lines(line: bytes, reason: str) -> None:
    items = read(b"http://h/ok\n" + line + b"\n  out=x\n\nhttp://h/next\n")
    assert items[0] == rec(0, 1, "http://h/ok")
    assert items[2] == rec(2, 5, "http://h/next")
    bad = items[1]
    assert isinstance(bad, BadRecord)
    assert (bad.index, bad.line) == (1, 2)
    assert bad.error.startswith("line 2: ")
    assert reason in bad.error


def test_txt_undecodable_comment_is_still_a_comment() -> None:
    assert read(b"# caf\xe9\nhttp://h/a\n") == [rec(0, 2, "http://h/a")]


def test_txt_undecodable_out_fails_its_record_but_other_options_do_not() -> None:
    items = read(b"http://h/a\n  out=caf\xe9\nhttp://h/b\n  header=caf\xe9\n")
    assert items == [
        BadRecord(0, 1, "line 1: out= on line 2 is not valid UTF-8"),
        rec(1, 3, "http://h/b"),
    ]


def test_txt_too_long_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "MAX_LINE_BYTES", 64)
    long = b"x" * 200
    data = (
        b"http://h/a\n"
        b"http://h/" + long + b"\n"  # a URL line: an item of its own, and bad
        b"#" + long + b"\n"  # a comment: skipped
        b"http://h/b\n"
        b"  out=" + long + b"\n"  # an option line: its record fails
        b"http://h/c\n"
    )
    assert read(data) == [
        rec(0, 1, "http://h/a"),
        BadRecord(1, 2, "line 2: longer than 64 bytes"),
        BadRecord(2, 4, "line 4: option line 5 is too long"),
        rec(3, 6, "http://h/c"),
    ]


def test_txt_empty_and_comment_only_inputs_are_not_errors() -> None:
    assert read(b"") == []
    assert read(b"# nothing\n\n   \n") == []


# --- csv and tsv -----------------------------------------------------------------------


def table(rows: list[list[str]], sep: str) -> bytes:
    """Rows written by hand so the quoting is what a test means (csv.writer would choose)."""
    return "".join(sep.join(row) + "\n" for row in rows).encode()


@pytest.mark.parametrize(("fmt", "sep"), [("csv", ","), ("tsv", "\t")])
def test_table_records(fmt: str, sep: str) -> None:
    data = table(
        [
            ["id", "url", "caption"],
            ["1", "http://h/1.jpg", f'"a {sep} quoted ""caption"""'],
            ["2", "http://h/2.jpg", '"spans\ntwo lines"'],
            ["3", "", "no url"],
            [],
            ["4", " http://h/4.jpg ", "stripped url"],
            ["5"],
            ["6", "http://h/6.jpg", "extra", "cells", "dropped"],
        ],
        sep,
    )
    assert read(data, format=fmt) == [
        Record(
            0,
            2,
            ("http://h/1.jpg",),
            {"id": "1", "url": "http://h/1.jpg", "caption": f'a {sep} quoted "caption"'},
        ),
        Record(
            1,
            3,
            ("http://h/2.jpg",),
            {"id": "2", "url": "http://h/2.jpg", "caption": "spans\ntwo lines"},
        ),
        BadRecord(2, 5, "line 5: empty 'url' field"),
        # The blank line 6 is skipped and takes no index.
        Record(
            3,
            7,
            ("http://h/4.jpg",),
            {"id": "4", "url": "http://h/4.jpg", "caption": "stripped url"},
        ),
        BadRecord(4, 8, "line 8: no 'url' field"),
        Record(5, 9, ("http://h/6.jpg",), {"id": "6", "url": "http://h/6.jpg", "caption": "extra"}),
    ]


def test_csv_custom_url_field_header_spaces_and_excel_bom() -> None:
    data = b'\xef\xbb\xbfname , image \r\ncat,"http://h/c.jpg"\r\n'
    assert read(data, format="csv", url_field="image") == [
        Record(0, 2, ("http://h/c.jpg",), {"name": "cat", "image": "http://h/c.jpg"})
    ]


def test_csv_mirrors_as_a_json_list_in_the_cell() -> None:
    data = (
        b'url,id\n"[""http://a/x"", ""http://b/x""]",1\n'
        b'"[""http://a/y"", 3]",2\n'
        b'"[]",3\n'
        b'"[""http://a/z""",4\n'
        b'"[""ftp://a/z""]",5\n'
    )
    items = read(data, format="csv")
    assert items[0] == Record(0, 2, ("http://a/x", "http://b/x"), {"url": "http://a/x", "id": "1"})
    bad = errors(items)
    assert sorted(bad) == [1, 2, 3, 4]
    assert bad[1] == "line 3: 'url' holds a number among its URLs"
    assert bad[2] == "line 4: 'url' is an empty list"
    assert bad[3].startswith("line 5: 'url' is not a valid JSON list: ")
    assert bad[4] == "line 6: unsupported URL scheme 'ftp' in 'ftp://a/z'"


def test_csv_undecodable_row_is_bad_and_the_rest_comes_through() -> None:
    data = b"url,name\nhttp://h/a,caf\xe9\nhttp://h/b,ok\n"
    assert read(data, format="csv") == [
        BadRecord(0, 2, "line 2: not valid UTF-8"),
        Record(1, 3, ("http://h/b",), {"url": "http://h/b", "name": "ok"}),
    ]


@pytest.mark.parametrize(
    ("data", "kwargs", "words"),
    [
        (b"id,link\n1,http://h/a\n", {}, ["--url-field", "'url'", "'id', 'link'"]),
        (b"id\turl\n", {"format": "csv"}, ["--url-field", "'id\\turl'"]),
        (b"id,url\n", {"format": "csv", "url_field": "image"}, ["'image'", "--url-field"]),
        (b"", {}, ["empty", "header"]),
        (b"\n  \n,,\n", {}, ["empty", "header"]),
        (b"url,url\n", {}, ["2 columns named 'url'"]),
        (b"ur\xefl\n", {}, ["not valid UTF-8"]),
    ],
)
def test_csv_whole_input_problems_are_usage_errors(
    data: bytes, kwargs: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(UsageError) as info:
        # No iteration: the error comes at call time.
        read_manifest(io.BytesIO(data), **{"format": "csv", **kwargs})
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_tsv_header_without_the_url_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "list.tsv"
    path.write_bytes(b"a\tb\tc\nx\ty\tz\n")
    with pytest.raises(UsageError, match=r"list\.tsv has no column 'url'.*'a', 'b', 'c'"):
        read_manifest(path)


# --- json ------------------------------------------------------------------------------


def test_json_array_and_field_conversion() -> None:
    data = json.dumps(
        [
            {
                "url": " http://h/a ",
                "id": 7,
                "score": 0.5,
                "ok": True,
                "no": False,
                "tag": "x",
                "none": None,
                "nested": {"a": 1},
                "list": [1],
            },
            ["not", "an", "object"],
            {"name": "no url"},
            {"url": None},
            {"url": 12},
            {"url": ["http://m1/a", "https://m2/a"], "id": "m"},
            {"url": []},
            {"url": ["http://m1/a", None]},
            {"url": ["http://m1/a", "file:///etc/passwd"]},
        ]
    ).encode()
    items = read(data, format="json")
    assert items[0] == Record(
        0,
        1,
        ("http://h/a",),
        {
            "url": "http://h/a",
            "id": "7",
            "score": "0.5",
            "ok": "true",
            "no": "false",
            "tag": "x",
        },
        unit="record",
    )
    assert items[5] == Record(
        5, 6, ("http://m1/a", "https://m2/a"), {"url": "http://m1/a", "id": "m"}, unit="record"
    )
    assert errors(items) == {
        1: "record 2: an array, not an object",
        2: "record 3: no 'url' field",
        3: "record 4: no 'url' field",
        4: "record 5: 'url' is a number, not a URL or a list of URLs",
        6: "record 7: 'url' is an empty list",
        7: "record 8: 'url' holds null among its URLs",
        8: "record 9: unsupported URL scheme 'file' in 'file:///etc/passwd'",
    }
    assert [item.index for item in items] == list(range(9))


@pytest.mark.parametrize(
    ("document", "records"),
    [
        ({"images": [{"u": "http://h/a"}]}, "images"),
        ({"data": {"items": [{"u": "http://h/a"}]}, "meta": 1}, "data.items"),
    ],
)
def test_json_records_path(document: object, records: str) -> None:
    data = json.dumps(document).encode()
    assert read(data, format="json", records=records, url_field="u") == [
        Record(0, 1, ("http://h/a",), {"u": "http://h/a"}, unit="record")
    ]


@pytest.mark.parametrize(
    ("data", "kwargs", "words"),
    [
        (b'{"images": []}', {}, ["--records", "an object"]),
        (b'"http://h/a"', {}, ["--records", "a string"]),
        (b'{"images": []}', {"records": "imgs"}, ["--records 'imgs'", "'imgs'"]),
        (b'{"data": {"items": 3}}', {"records": "data.items"}, ["--records", "a number"]),
        (b'{"data": [1]}', {"records": "data.items"}, ["--records", "'items'"]),
        (b"[1]", {"records": "data"}, ["--records"]),
        (b"[{]", {}, ["invalid JSON", "line 1 column 3"]),
        (b"", {}, ["invalid JSON"]),
        (b"[NaN]", {}, ["invalid JSON", "NaN"]),
        (b'{"url": "http://h/a"}\n{"url": "http://h/b"}\n', {}, ["jsonl"]),
        (b'["caf\xe9"]', {}, ["not valid UTF-8"]),
    ],
)
def test_json_whole_input_problems_are_usage_errors(
    data: bytes, kwargs: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(UsageError) as info:
        read_manifest(io.BytesIO(data), format="json", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_records_needs_json_input() -> None:
    with pytest.raises(UsageError, match="--records applies to json"):
        read_manifest(io.BytesIO(b"[]"), format="jsonl", records="x")


# --- jsonl -----------------------------------------------------------------------------


def test_jsonl_bad_lines_do_not_stop_the_others() -> None:
    data = (
        b'{"url": "http://h/1", "n": 1}\n'
        b"\n"
        b'{"url": "http://h/2", \n'
        b"[1, 2]\n"
        b'   {"url": ["http://m1/3", "http://m2/3"]}   \r\n'
        b'{"url": "caf\xe9"}\n'
        b'{"url": "mailto:x@h"}\n'
        b'{"url": "http://h/8"}'
    )
    items = read(data, format="jsonl")
    assert [item.index for item in items] == list(range(7))
    assert [item.line for item in items] == [1, 3, 4, 5, 6, 7, 8]
    assert items[0] == Record(0, 1, ("http://h/1",), {"url": "http://h/1", "n": "1"})
    assert items[3] == Record(3, 5, ("http://m1/3", "http://m2/3"), {"url": "http://m1/3"})
    assert items[6] == Record(6, 8, ("http://h/8",), {"url": "http://h/8"})
    bad = errors(items)
    assert bad[1].startswith("line 3: invalid JSON: Expecting property name")
    assert bad[2] == "line 4: an array, not an object"
    assert bad[4] == "line 6: not valid UTF-8"
    assert bad[5] == "line 7: unsupported URL scheme 'mailto' in 'mailto:x@h'"
    assert sorted(bad) == [1, 2, 4, 5]


def test_jsonl_too_long_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "MAX_LINE_BYTES", 64)
    data = b'{"url": "http://h/' + b"x" * 100 + b'"}\n{"url": "http://h/b"}\n'
    assert read(data, format="jsonl") == [
        BadRecord(0, 1, "line 1: longer than 64 bytes"),
        Record(1, 2, ("http://h/b",), {"url": "http://h/b"}),
    ]


def test_huge_reasons_are_cut_to_one_short_line() -> None:
    bad, _ = read(b"ftp://h/" + b"x" * 5000 + b"\nhttp://h/ok\n")
    assert isinstance(bad, BadRecord)
    assert len(bad.error) < 400
    assert bad.error.endswith("...")


# --- gzip ------------------------------------------------------------------------------

JSONL = b'{"url": "http://h/a"}\n{"url": "http://h/b"}\n'
JSONL_ITEMS = [rec(0, 1, "http://h/a"), rec(1, 2, "http://h/b")]


def test_gzip_by_extension(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl.gz"
    path.write_bytes(gzip.compress(JSONL))
    assert list(read_manifest(path)) == JSONL_ITEMS


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_gzip_by_magic_bytes(tmp_path: Path, fmt: str) -> None:
    data = JSONL if fmt == "jsonl" else b'[{"url": "http://h/a"}, {"url": "http://h/b"}]'
    path = tmp_path / f"list.{fmt}"  # no .gz: only the first bytes tell
    path.write_bytes(gzip.compress(data))
    unit = "record" if fmt == "json" else "line"
    expected = [dataclasses.replace(item, unit=unit) for item in JSONL_ITEMS]
    assert list(read_manifest(path)) == expected
    assert read(gzip.compress(data), format=fmt) == expected


@pytest.mark.parametrize("fmt", ["txt", "csv", "json"])
def test_corrupt_gzip_at_the_start_is_a_usage_error_at_call_time(fmt: str) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        read_manifest(io.BytesIO(b"\x1f\x8b" + b"\x00" * 40), format=fmt)


def test_gz_name_with_plain_content_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt.gz"
    path.write_bytes(b"http://h/a\n")
    with pytest.raises(UsageError, match=r"urls\.txt\.gz"):
        read_manifest(path)


def test_gzip_truncated_after_some_records_ends_with_one_bad_record() -> None:
    body = b"".join(f"http://h/{i}\n".encode() for i in range(20000))
    packed = gzip.compress(body, compresslevel=1)
    items = read(packed[: len(packed) // 2])
    good, last = items[:-1], items[-1]
    assert len(good) > 100
    assert good == [rec(i, i + 1, f"http://h/{i}") for i in range(len(good))]
    assert isinstance(last, BadRecord)
    # The last URL line read may have had options beyond the break, so it is the bad one.
    assert (last.index, last.line) == (len(good), len(good) + 1)
    assert last.error.startswith(f"line {last.line}: cannot read further: ")


def test_gzip_truncated_before_the_first_record_is_a_usage_error() -> None:
    # Enough comment lines that the break comes after the first chunk, yet before any URL.
    body = b"".join(f"# comment {i}\n".encode() for i in range(200000)) + b"http://h/a\n"
    packed = gzip.compress(body, compresslevel=1)
    # The first record is read ahead at call time, so the call says it.
    with pytest.raises(UsageError, match="cannot read"):
        read_manifest(io.BytesIO(packed[: len(packed) // 2]))


# --- sources: paths, stdin, file objects ------------------------------------------------


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"http://h/a\n")))
    assert list(read_manifest("-")) == [rec(0, 1, "http://h/a")]
    assert not sys.stdin.closed


def test_gzipped_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(JSONL))))
    assert list(read_manifest("-", format="jsonl")) == JSONL_ITEMS


@pytest.mark.parametrize("fmt", ["txt", "json"])
def test_file_objects_are_left_open(fmt: str) -> None:
    source = io.BytesIO(b"[]" if fmt == "json" else b"http://h/a\n")
    list(read_manifest(source, format=fmt))
    assert not source.closed


def test_text_file_object_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="binary"):
        read_manifest(io.StringIO("http://h/a\n"))  # type: ignore[arg-type]


def test_a_file_dropped_unread_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_bytes(b"http://h/a\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = read_manifest(path)
        del reader
        gc.collect()
        partly = read_manifest(path)
        next(partly)
        del partly
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("does-not-exist.txt", {}, r"cannot read does-not-exist\.txt: No such file"),
        (".", {}, r"cannot read \.: Is a directory"),
        ("-", {"format": "xml"}, "unknown manifest format 'xml'"),
        ("-", {"url_field": ""}, "--url-field"),
    ],
)
def test_usage_errors_are_raised_at_call_time(
    source: str, kwargs: dict[str, str], match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"http://h/a\n")))
    with pytest.raises(UsageError, match=match):
        read_manifest(source, **kwargs)


def test_formats_constant() -> None:
    assert FORMATS == ("txt", "csv", "tsv", "json", "jsonl")


# --- streaming -------------------------------------------------------------------------


class ReadTooFar(Exception):
    pass


class Guarded(io.RawIOBase):
    """A stream that fails the test if read beyond `limit` bytes."""

    def __init__(self, data: bytes, limit: int) -> None:
        super().__init__()
        self._data = data
        self._pos = 0
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._limit:
            raise ReadTooFar(f"read past byte {self._limit}")
        chunk = self._data[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def big_manifest(fmt: str, lines: int) -> bytes:
    """Lines with random tokens, so that even gzipped the input is far larger than the guard."""
    rng = random.Random(0)
    tokens = [f"{rng.getrandbits(128):032x}" for _ in range(lines)]
    if fmt == "txt":
        rows = [f"http://h/{i}\n  out={t}\n" for i, t in enumerate(tokens)]
    elif fmt == "jsonl":
        rows = [f'{{"url": "http://h/{i}", "id": "{t}"}}\n' for i, t in enumerate(tokens)]
    else:
        sep = "," if fmt == "csv" else "\t"
        rows = [f"url{sep}id\n"] + [f"http://h/{i}{sep}{t}\n" for i, t in enumerate(tokens)]
    return "".join(rows).encode()


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl"])
def test_first_record_comes_before_the_input_is_read(fmt: str, packed: bool) -> None:
    data = big_manifest(fmt, 100_000)
    if packed:
        data = gzip.compress(data, compresslevel=1)
    limit = 256 * 1024
    assert len(data) > 4 * limit
    reader = read_manifest(Guarded(data, limit), format=fmt)  # type: ignore[arg-type]
    first = next(reader)
    assert isinstance(first, Record)
    assert first.urls == ("http://h/0",)
    # The guard bites: reading on must fail, so the lines above prove the laziness.
    with pytest.raises(ReadTooFar):
        for _ in reader:
            pass


def test_two_hundred_thousand_lines_stream_through(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    lines = 200_000
    path.write_bytes(
        b"".join(f"https://h.example/files/{i:07d}.bin\n".encode() for i in range(lines))
    )
    size = path.stat().st_size
    count = 0
    with path.open("rb") as source:
        for item in read_manifest(source):
            assert isinstance(item, Record)
            count += 1
            if count == 1000:
                # Flat memory: the reader is only a buffer ahead of what it has yielded.
                assert source.tell() < size // 20
    assert count == lines


# --- the first records: the input as a whole ----------------------------------------------


def test_bad_records_before_the_first_good_one_come_back_in_order() -> None:
    data = b"".join(f"ftp://h/{i}\n".encode() for i in range(9)) + b"http://h/ok\nftp://h/x\n"
    items = read(data)
    assert [item.index for item in items] == list(range(11))
    assert all(isinstance(item, BadRecord) for item in items[:9])
    assert items[9] == rec(9, 10, "http://h/ok")
    assert isinstance(items[10], BadRecord)


@pytest.mark.parametrize("count", [1, 10])
def test_an_input_starting_with_nothing_usable_is_a_usage_error(count: int) -> None:
    data = b"".join(f"ftp://h/{i}\n".encode() for i in range(count)) + b"http://h/late\n" * (
        count == 10
    )
    with pytest.raises(UsageError) as info:
        read_manifest(io.BytesIO(data))
    message = str(info.value)
    assert message.startswith("the input, read as txt (one URL per line): ")
    assert ("its only record is" if count == 1 else "its first 10 records are") in message
    assert "line 1: unsupported URL scheme 'ftp'" in message


def test_a_binary_file_is_refused_after_its_first_records_only(tmp_path: Path) -> None:
    rng = random.Random(1)
    lines = [bytes(rng.getrandbits(8) | 0x80 for _ in range(50)) for _ in range(100_000)]
    limit = 64 * 1024
    with pytest.raises(UsageError, match="first 10 records are unusable: line 1: not valid"):
        read_manifest(Guarded(b"\n".join(lines), limit))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"url,class\nhttp://h/a,cat\n", "csv"),
        (b'{"url": "http://h/a", "class": "cat"}\n', "jsonl"),
        (b'[{"url": "http://h/a", "class": "cat"}]', "json"),
    ],
)
def test_fields_the_caller_needs_are_checked_on_the_first_record(data: bytes, fmt: str) -> None:
    assert len(read(data, format=fmt, fields=["class"])) == 1  # type: ignore[arg-type]
    where = "line 2" if fmt == "csv" else "record 1" if fmt == "json" else "line 1"
    with pytest.raises(UsageError, match=f"{where} has no field 'klass' for the template"):
        read_manifest(io.BytesIO(data), format=fmt, fields=["klass"])


def test_fields_are_not_needed_when_out_names_the_file() -> None:
    items = read(b"http://h/a\n  out=a.bin\n", fields=["klass"])  # type: ignore[arg-type]
    assert items == [rec(0, 1, "http://h/a", out="a.bin")]


def test_a_url_field_missing_only_later_is_one_bad_record() -> None:
    items = read(b'{"u": "http://h/a"}\n{"v": "http://h/b"}\n', format="jsonl", url_field="u")
    assert errors(items) == {1: "line 2: no 'u' field"}


def test_txt_refuses_a_url_field() -> None:
    with pytest.raises(UsageError, match="--url-field applies to csv"):
        read_manifest(io.BytesIO(b"http://h/a\n"), url_field="link")


@pytest.mark.parametrize(
    "data", [b"url,size\nhttp://h/a,1\n", b"[1]\n", b'{"url": "http://h/a"}\n', b"url\tid\n"]
)
def test_guessed_txt_that_looks_like_a_manifest_is_a_usage_error(data: bytes) -> None:
    with pytest.raises(UsageError, match=r"the input looks like (CSV|TSV|JSON) \(line 1: "):
        read_manifest(io.BytesIO(data))


def test_a_named_format_is_not_second_guessed(tmp_path: Path) -> None:
    data = b"url,size\nhttp://h/a\n"
    assert len(read(data, format="txt")) == 2
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    assert len(list(read_manifest(path))) == 2


def test_a_url_with_a_comma_is_still_a_url() -> None:
    assert read(b"http://h/a,b\n") == [rec(0, 1, "http://h/a,b")]
