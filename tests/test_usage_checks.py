"""Usage checks of the command line: options that cannot apply are usage errors, input
mistakes are found in the first records (one usage error, no request), `--report` and
`--accept` work for one URL, `-o` creates its folders, a URL without its scheme gets a hint,
and one URL keeps one rule for an existing file however it runs. Files are compared with the
served bytes; the server's log says that nothing was fetched when nothing should be."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from fakes import payload
from rangeserver import RangeHTTPServer, serve_file

from segdl.cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `segdl ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([*argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0], lines[0]
    return lines[0]


def stdin_bytes(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


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
