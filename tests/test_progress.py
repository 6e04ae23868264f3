"""The tqdm listener: the bar waits for tqdm's import instead of holding up the download, and
warnings reach the user whether or not the bar is up yet."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rangeserver import RangeHTTPServer, serve_file

import segdl
from segdl.api import Listener
from segdl.bars import TqdmBatchListener, TqdmListener, binary_fields
from segdl.batch.results import ItemResult
from segdl.cli.batch import run_batch_command
from segdl.cli.common import summary
from segdl.cli.parser import build_parser
from segdl.core.events import StartInfo
from segdl.core.verify import Checksum

INFO = StartInfo("http://127.0.0.1/f.bin", Path("f.bin"), 1000, 4, 0)


def slow_loader(listener: TqdmListener, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Replace the listener's tqdm import with one that ends when the event is set (or 5 s
    pass: code that waits for the import then fails the test instead of hanging)."""
    release = threading.Event()
    listener._loader.join()
    loader = threading.Thread(target=release.wait, args=(5,), daemon=True)
    loader.start()
    monkeypatch.setattr(listener, "_loader", loader)
    return release


def test_bar_appears_once_tqdm_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    release = slow_loader(listener, monkeypatch)
    listener.start(INFO)  # must not wait for the import
    listener.progress(100, 1000, 4)
    assert out.getvalue() == ""
    release.set()
    listener._loader.join()
    listener.progress(500, 1000, 4)
    listener.finish(1000)
    text = out.getvalue()
    assert "f.bin" in text and "4 conn" in text and "100%" in text


def test_download_over_before_tqdm_loads_draws_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    release = slow_loader(listener, monkeypatch)
    listener.start(INFO)
    listener.finish(1000)
    release.set()
    listener._loader.join()
    listener.progress(1000, 1000, 0)  # nothing after finish opens a bar
    assert out.getvalue() == ""


@pytest.mark.parametrize("bar_up", [False, True])
def test_warnings_are_shown_with_or_without_the_bar(bar_up: bool) -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    listener._loader.join()
    if bar_up:
        listener.start(INFO)
    listener.warning("cannot resume: the partial file is missing; starting from zero")
    listener.finish(0)
    assert "segdl: warning: cannot resume: the partial file is missing" in out.getvalue()


# -- binary units, the verifying state, the bar closed before a message (issue 18, item 8) -------

MiB = 1 << 20


def test_the_bar_shows_binary_units_throughout() -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    listener._loader.join()
    total = 96 * MiB + MiB // 2
    listener.start(StartInfo("http://127.0.0.1/f.bin", Path("f.bin"), total, 4, 0))
    listener.progress(36 * MiB, total, 4)
    line = str(listener._bar)  # what the bar draws now (it redraws at most every 0.2 s)
    listener.finish(total)
    text = out.getvalue() + line
    assert "36.0/96.5 MiB" in line and "96.5/96.5 MiB" in text
    assert " MiB/s" in text or "? B/s" in text
    assert not re.search(r"\d(k|M|G)(B|/|\b)", text), text  # no SI-labelled sizes or rates


def test_the_extraction_bar_fits_in_80_columns() -> None:
    """tqdm cuts a line longer than the terminal: the postfix must survive on 80 columns."""
    from segdl.cli.extract import ExtractBar

    out = io.StringIO()
    bar = ExtractBar(Path("out"), file=out)
    bar._loader.join()
    bar.start(StartInfo("http://127.0.0.1/a.tgz", Path("a.tgz"), 300 * 1024 + 700, 2, 0))
    bar.progress(135 * 1024 + 300, 300 * 1024 + 700, 2)
    bar.extracting(13, 548 * 1024)
    assert bar._bar is not None
    bar._bar.ncols = 80  # as on a terminal of 80 columns
    line = str(bar._bar)
    bar.close()
    assert len(line) <= 80 and line.endswith("2 conn, 13 extracted]"), line
    assert "135.3/300.7 KiB" in line


def test_binary_fields_write_the_rate_as_human_size_does() -> None:
    fields = {"n": 36 * MiB, "total": None, "elapsed": 1.0, "rate": 37.5 * MiB, "initial": 0}
    fields["bar_format"] = None
    done = binary_fields(fields)
    assert (done["n_fmt"], done["total_fmt"], done["rate_fmt"]) == ("36.0 MiB", "?", "37.5 MiB/s")
    assert done["unit_scale"] is False
    fields = {"n": 3 * MiB, "total": 4 * MiB, "elapsed": 2.0, "rate": None, "initial": MiB}
    fields["bar_format"] = None
    assert binary_fields(fields)["rate_fmt"] == "1.0 MiB/s"  # tqdm's own fallback, in MiB


class Events(Listener):
    def __init__(self) -> None:
        self.events: list[str] = []

    def verifying(self, check: Checksum) -> None:
        self.events.append(f"verifying {check.algorithm} from {check.source}")

    def finish(self, done: int) -> None:
        self.events.append("finish")


def test_the_checksum_is_announced_before_finish_and_reported(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = os.urandom(3 * MiB)
    served = serve_file(rangeserver, "/f.bin", data)
    listener = Events()
    good = "sha256=" + hashlib.sha256(data).hexdigest()
    result = segdl.download(served.url, tmp_path / "f.bin", checksum=good, listener=listener)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert listener.events == ["verifying sha256 from --checksum", "finish"]
    assert [(c.algorithm, c.source) for c in result.verified] == [("sha256", "--checksum")]
    assert summary(result).endswith(", sha256 matches --checksum")
    plain = segdl.download(served.url, tmp_path / "g.bin")
    assert plain.verified == () and "matches" not in summary(plain)


def test_the_bar_shows_the_verifying_state() -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    listener._loader.join()
    listener.start(INFO)
    listener.progress(1000, 1000, 4)
    listener.verifying(Checksum("sha256", "0" * 64, "--checksum"))
    listener.finish(1000)
    assert "100%" in out.getvalue() and "verifying sha256" in out.getvalue()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def after_the_last_bar(text: str, line: str) -> None:
    """`line` ends the output on a line of its own, the bar closed before it (not redrawn)."""
    assert text.endswith(f"\n{line}\n"), repr(text[-300:])


def test_ctrl_c_during_extract_closes_the_bar_before_the_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from segdl.cli import extract as command

    def interrupted_extract(url: str, dest: Path, *, listener: Listener, **_: object) -> None:
        listener._loader.join()  # type: ignore[attr-defined]
        listener.start(StartInfo(url, dest, 10 * MiB, 2, 0))
        listener.progress(4 * MiB, 10 * MiB, 2)
        listener.extracting(3, MiB)
        raise KeyboardInterrupt

    monkeypatch.setattr(command, "extract", interrupted_extract)
    args = build_parser().parse_args(["http://127.0.0.1/a.zip", "--extract", str(tmp_path)])
    err = FakeTerminal()
    assert command.run_single(args, {}, err) == 130
    assert "4.0/10.0 MiB" in err.getvalue()
    after_the_last_bar(err.getvalue(), f"segdl: interrupted; {tmp_path} is as it was")


def test_ctrl_c_in_a_batch_closes_the_bar_before_the_message() -> None:
    def interrupted(items: object, listener: Listener) -> Iterator[ItemResult]:
        listener._loader.join()  # type: ignore[attr-defined]
        listener.batch_progress(1, 3, MiB, 0, 2)
        listener.batch_progress(2, 3, 2 * MiB, 0, 2)
        raise KeyboardInterrupt
        yield  # a generator

    args = build_parser().parse_args(["http://127.0.0.1/a", "http://127.0.0.1/b"])
    err = FakeTerminal()
    assert run_batch_command(args, err, interrupted) == 130
    assert "2/3" in err.getvalue()
    after_the_last_bar(err.getvalue(), "segdl: interrupted; run the same command again to resume")


def test_the_bar_says_when_the_answer_came_over_http2() -> None:
    out = io.StringIO()
    listener = TqdmListener(file=out)
    listener._loader.join()
    listener.start(dataclasses.replace(INFO, protocol="HTTP/2"))
    listener.progress(500, 1000, 1)
    listener.finish(1000)
    assert "1 conn, HTTP/2" in out.getvalue()


def test_the_batch_bar_counts_the_hosts_that_spoke_http2() -> None:
    out = io.StringIO()
    listener = TqdmBatchListener(file=out)
    listener._loader.join()
    for i, (host, protocol) in enumerate(
        [("a", "HTTP/2"), ("a", "HTTP/2"), ("b", "HTTP/2"), ("c", "HTTP/1.1")]
    ):
        url = f"https://{host}.example/{i}"
        listener.item_done(ItemResult(i, url, None, "ok", 200, 10, protocol=protocol))
    listener.batch_progress(4, 4, 40, 0, 2)
    listener.close()
    assert "HTTP/2: 2 hosts" in out.getvalue()
