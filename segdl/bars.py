"""Progress bars on a terminal: tqdm bars for one transfer and for a batch.

This is the only module that imports tqdm (on first use, in a thread of its own: importing it
takes tens of milliseconds). A bar is a listener like any other: the jobs never see it.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import IO, Any

from .batch.results import BatchListener, ItemResult
from .core.events import StartInfo, TransferListener
from .core.units import human_size, plural
from .core.urls import Origin, origin
from .core.verify import Checksum


class TqdmListener(TransferListener):
    """A tqdm bar: bytes, rate, ETA and the number of active connections."""

    def __init__(self, file: IO[str] | None = None, **tqdm_args: Any) -> None:
        self._file = file
        self._args = tqdm_args
        self._bar: Any = None
        self._info: StartInfo | None = None
        # Importing tqdm takes tens of milliseconds: it runs beside the probe and the transfer,
        # and the bar appears at the first progress report after it is done. A download over
        # before then has no bar, only the summary line (a fixed cost, not 3% of a short run).
        self._loader = threading.Thread(
            target=importlib.import_module, args=("tqdm",), name="segdl-tqdm", daemon=True
        )
        self._loader.start()

    def start(self, info: StartInfo) -> None:
        self._info = info
        self._open()

    def _open(self) -> None:
        info = self._info
        if self._bar is not None or info is None or self._loader.is_alive():
            return
        self._bar = _binary_bar()(
            total=info.total,
            initial=info.resumed,
            unit="B",
            desc=info.path.name[:30],
            file=self._file,
            miniters=1,
            mininterval=0.2,
            **self._width(),
            **self._args,
        )

    def _width(self) -> dict[str, Any]:
        # A terminal that reports no size (a bare pty) would get a bar of zero columns, which
        # tqdm then hides as if it were below the bottom of the screen.
        try:
            size = os.get_terminal_size(self._file.fileno() if self._file else 2)
        except (OSError, ValueError, AttributeError):
            size = os.terminal_size((0, 0))
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
        return {"ncols": 80, "nrows": 24}

    def progress(self, done: int, total: int | None, connections: int) -> None:
        self._open()
        bar = self._bar
        if bar is None:
            return
        if total != bar.total:
            bar.total = total
        bar.set_postfix_str(self.postfix(connections), refresh=False)
        bar.update(done - bar.n)

    def postfix(self, connections: int) -> str:
        """What the bar shows after the rate (a subclass may show more): the connections,
        and the HTTP version when it is not HTTP/1.1."""
        info = self._info
        if info is not None and info.protocol not in (None, "HTTP/1.1"):
            return f"{connections} conn, {info.protocol}"
        return f"{connections} conn"

    def warning(self, message: str) -> None:
        line = f"segdl: warning: {message}"
        if self._bar is not None:
            self._bar.write(line, file=self._file)
        else:
            print(line, file=self._file or sys.stderr, flush=True)

    def verifying(self, check: Checksum) -> None:
        self._open()
        if self._bar is not None:
            self._bar.set_postfix_str(f"verifying {check.algorithm}")

    def finish(self, done: int) -> None:
        self._info = None  # a bar not open yet stays closed
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            self._bar.close()
            self._bar = None


_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_NO_TOTAL = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def binary_fields(fields: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """tqdm's `format_dict` with the sizes and the rate written by `human_size`: tqdm's own
    scaling divides sizes by `unit_divisor` but labels them with SI prefixes ("36.0M"), and
    divides the rate by 1000 ("37.5MB/s"). Our fields take the place of its own."""
    n, total, elapsed, rate = fields["n"], fields["total"], fields["elapsed"], fields["rate"]
    if rate is None and elapsed:
        rate = (n - fields["initial"]) / elapsed  # as tqdm's own fallback
    n_fmt, total_fmt = human_size(n), human_size(total) if total is not None else "?"
    number, _, unit = n_fmt.partition(" ")
    if total_fmt.endswith(f" {unit}"):
        n_fmt = number  # "36.0/96.5 MiB": a bar and its postfix must fit in 80 columns
    fields.update(
        unit_scale=False,
        n_fmt=n_fmt,
        total_fmt=total_fmt,
        rate_fmt=f"{human_size(rate)}/s" if rate is not None else "? B/s",
        bar_format=fields["bar_format"] or (_BAR if total else _NO_TOTAL),
    )
    return fields


@functools.cache
def _binary_bar() -> Any:
    """The tqdm class of byte bars (tqdm is imported on first use: see TqdmListener)."""
    from tqdm import tqdm

    class BinaryBar(tqdm):  # type: ignore[type-arg]
        @property
        def format_dict(self) -> MutableMapping[str, Any]:
            return binary_fields(super().format_dict)

    return BinaryBar


class TqdmBatchListener(BatchListener):
    """One tqdm bar for a batch: items done of the total (once known), bytes, failures."""

    def __init__(self, file: IO[str] | None = None, **tqdm_args: Any) -> None:
        self._file = file
        self._args = tqdm_args
        self._bar: Any = None
        self._multiplexed: set[Origin] = set()  # hosts whose answers came over HTTP/2
        self._loader = threading.Thread(
            target=importlib.import_module, args=("tqdm",), name="segdl-tqdm", daemon=True
        )
        self._loader.start()

    def item_done(self, result: ItemResult) -> None:
        if result.protocol == "HTTP/2" and len(self._multiplexed) < 10_000:
            self._multiplexed.add(origin(result.url))

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        if self._bar is None:
            if self._loader.is_alive():
                return
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit="file",
                desc="segdl",
                file=self._file,
                mininterval=0.2,
                dynamic_ncols=True,
                **self._args,
            )
        bar = self._bar
        if total != bar.total:
            bar.total = total
        postfix = f"{human_size(done)}, {failed} failed, {connections} active"
        if self._multiplexed:
            postfix += f", HTTP/2: {plural(len(self._multiplexed), 'host')}"
        bar.set_postfix_str(postfix, refresh=False)
        bar.update(items - bar.n)

    def warning(self, message: str) -> None:
        self.warning_line(f"segdl: warning: {message}")

    def warning_line(self, line: str) -> None:
        """Print `line` above the bar (or alone while there is none)."""
        if self._bar is not None:
            self._bar.write(line, file=self._file)
        else:
            print(line, file=self._file or sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
