"""The tqdm listener: the bar waits for tqdm's import instead of holding up the download, and
warnings reach the user whether or not the bar is up yet."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from segdl.progress import StartInfo, TqdmListener

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
