"""batch-list: a very long URL list, measured while the tool starts on it.

The list has 10^6 lines (--quick: 10^5), http://127.0.0.1:PORT/i/0000000 and so on, all
distinct. The anypath server answers every path with the same one-byte file, so every URL is a
valid download. Running a million downloads is not the point; what is measured is

1. time to first request: from just before the tool's process is started to the start of the
   first request in the server's access log ($msec minus $request_time, millisecond
   resolution): interpreter start-up plus however much of the list is read before the first
   request goes out;
2. peak RSS (GNU time's %M) of the tool until it is stopped: the tool is killed (SIGKILL,
   only the tool, so that GNU time still reports it) as soon as the server has sent 20,000
   bodies (--batch-list-stop-items) or 10 s (--batch-list-stop-seconds) have passed, whichever
   comes first. A tool that finishes the list earlier is measured until it exits.

The run is a failure if the tool exits non-zero before it is stopped, or reaches the time-out.
Files are not checked (the run is cut short); the `items` column counts the bodies served.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .. import checks as ck
from ..records import Case, Check, RunRecord, Summary
from ..servers import ANY_PATH_FILE, LogTail
from ..tools import TOOLS, BatchInput
from ..units import MiB, fmt, human_count, median
from .base import Scenario
from .batch import commands_text

if TYPE_CHECKING:
    from ..runner import Bench


class StopWhen:
    """The `watch` of run_measured: stop after `items` bodies or `seconds`."""

    def __init__(self, tail: LogTail, items: int, seconds: float) -> None:
        self.tail = tail
        self.items = items
        self.seconds = seconds
        self.reason: str | None = None

    def __call__(self, elapsed: float) -> bool:
        if self.tail.poll() >= self.items:
            self.reason = f"{human_count(self.items)} items"
        elif elapsed >= self.seconds:
            self.reason = f"{self.seconds:g} s"
        return self.reason is not None


class BatchList(Scenario):
    name = "batch-list"
    title = "(batch c) a very long list: time to first request and peak RSS"
    server_kind = "anypath"
    single_file = False

    def lines(self, bench: Bench) -> int:
        return bench.opts.batch_list_lines or (10**5 if bench.quick else 10**6)

    def sizes(self, bench: Bench) -> list[int]:
        return [self.lines(bench)]  # bytes if every item were fetched: one per line

    def prepare_files(self, bench: Bench) -> None:
        (bench.www / ANY_PATH_FILE).write_bytes(b"x")

    def prepare_inputs(self, bench: Bench) -> None:
        started = time.perf_counter()
        base = bench.servers[self.server_kind].url("i/")
        folder = bench.tmp / f"input-{self.name}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "list.txt"
        with path.open("w") as out:
            step = 100_000
            for first in range(0, self.lines(bench), step):
                last = min(first + step, self.lines(bench))
                out.write("".join(f"{base}{k:07d}\n" for k in range(first, last)))
        bench.inputs[self.name] = BatchInput(path, path)  # curl is not run here
        print(
            f"  {self.name:18s} {human_count(self.lines(bench))} URLs, "
            f"{path.stat().st_size / MiB:.1f} MiB list  ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )

    def cases(self, bench: Bench) -> list[Case]:
        if not bench.available("segdl"):
            return []
        j = bench.opts.jobs
        return [Case(self.name, f"segdl -j{j}", "segdl", 1, self.sizes(bench)[0], jobs=j)]

    def timeout(self, bench: Bench, case: Case) -> float:
        return float(bench.opts.timeout or 60 + bench.opts.batch_list_stop_seconds)

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        o = bench.opts
        server = bench.servers[self.server_kind]
        bench.clean_download_dir()
        os.sync()
        argv = bench.toolbox.batch_argv(case, bench.inputs[self.name], bench.dl_dir)
        stop = StopWhen(
            LogTail(server.log_path, server.log_offset()),
            o.batch_list_stop_items,
            o.batch_list_stop_seconds,
        )
        ex = bench.execute(case, server, argv, watch=stop)
        items = stop.tail.poll()
        if ex.m.stopped:
            error = None if not ex.m.timed_out else ex.failure()
            reason = stop.reason
        else:
            error = ex.failure()
            reason = "finished"
        if error is None and ex.stats.first_start is None:
            error = "the server logged no request"
        bench.clean_download_dir()
        return bench.record(
            case,
            rep,
            ex,
            error,
            throughput=False,
            files=self.lines(bench),
            items=items,
            stopped=reason,
        )

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.files = self.lines(bench)
        row.throughput_mib_s = None  # the run is cut short: MiB/s of the list means nothing
        if not ok:
            return
        firsts = [r.first_request_s for r in ok if r.first_request_s is not None]
        row.first_request_s = median(firsts)
        row.first_request_max_s = max(firsts) if firsts else None
        row.items = median(r.items for r in ok)
        row.items_per_s = median(r.items / r.wall_s for r in ok if r.items and r.wall_s)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        seg = bench.find_tool(rows, self.name, "segdl")
        n = human_count(self.lines(bench))
        return [
            ck.at_most(
                f"bl1 batch-list: {n} URLs, first request <= {ck.TARGET_FIRST_REQUEST_S:g} s "
                "after the process starts (median)",
                seg,
                lambda r: r.first_request_s,
                ck.TARGET_FIRST_REQUEST_S,
                "s",
                digits=3,
            ),
            ck.at_most(
                f"bl2 batch-list: {n} URLs, segdl peak RSS < {ck.TARGET_LIST_RSS // MiB} MiB "
                "(max over runs)",
                seg,
                lambda r: r.maxrss_max_mib,
                ck.TARGET_LIST_RSS / MiB,
                "MiB",
                strict=True,
            ),
        ]

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        return (
            f"A list of {human_count(self.lines(bench))} distinct URLs; the server answers "
            "every path with the same one-byte file. *first request* = from just before the "
            "process starts to the start of the first request in the server's log. The tool "
            f"is stopped after {human_count(o.batch_list_stop_items)} items (bodies served) or "
            f"{o.batch_list_stop_seconds:g} s, whichever comes first; *peak RSS* is its peak "
            "until then (GNU time). Files are not checked."
            + commands_text(bench, self.cases(bench))
        )

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        cols = ["tool", "URLs", "runs ok", "first request s (median)", "max s"]
        cols += ["peak RSS MiB (median)", "max MiB", "stopped after s", "items", "items/s"]
        cols += ["CPU s", "requests", "conns"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in sorted(rows, key=lambda r: (TOOLS.index(r.tool), r.label)):
            failed = r.status != "ok"
            first = (
                f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
                if failed
                else fmt(r.first_request_s, 3)
            )
            cells = [
                r.label,
                human_count(r.files or 0),
                f"{r.ok_runs}/{r.runs}",
                first,
                fmt(r.first_request_max_s, 3),
                fmt(r.maxrss_mib, 1),
                fmt(r.maxrss_max_mib, 1),
                fmt(r.wall_s),
                fmt(r.items, 0),
                fmt(r.items_per_s, 0),
                fmt(r.cpu_s),
                fmt(r.requests, 0),
                fmt(r.connections, 0),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def meta(self, bench: Bench) -> dict[str, Any] | None:
        o = bench.opts
        return {
            "lines": self.lines(bench),
            "stop_items": o.batch_list_stop_items,
            "stop_seconds": o.batch_list_stop_seconds,
            "list": str(bench.inputs[self.name].urls) if self.name in bench.inputs else None,
        }
