"""Batch scenarios: one URL list per run, every file saved in the download directory under the
URL's last path segment, and every file checked afterwards (sizes, then one sha256 over all
files in list order).

batch-small: many small files on the unthrottled server (keep-alive, keepalive_requests
1000000), compared with aria2c, curl -Z, wget2 and a ThreadPool + requests script.
batch-mixed: four big files and many small ones on the noburst server, against the
throttle-bound ideal (see BatchMixed).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import checks as ck
from ..records import Case, Check, RunRecord, Summary
from ..tools import TOOLS, BatchInput
from ..units import MiB, approx_size, fmt, human_count, human_size
from .base import Scenario

if TYPE_CHECKING:
    from ..runner import Bench


@dataclass
class BatchSet:
    """The files of one batch, in list order, and one sha256 over all their contents."""

    names: list[str]
    sizes: list[int]
    digest: str

    @property
    def total(self) -> int:
        return sum(self.sizes)


def make_batch(www: Path, entries: list[tuple[str, int]]) -> BatchSet:
    """Write random files (distinct contents, so a mix-up shows) and hash them in order."""
    digest = hashlib.sha256()
    for name, size in entries:
        with (www / name).open("wb") as out:
            left = size
            while left:
                block = os.urandom(min(left, MiB))
                digest.update(block)
                out.write(block)
                left -= len(block)
    return BatchSet([n for n, _ in entries], [s for _, s in entries], digest.hexdigest())


def verify_batch(directory: Path, batch: BatchSet) -> str | None:
    """None when `directory` holds every file of `batch` with the right contents."""
    missing: list[str] = []
    wrong: list[str] = []
    for name, size in zip(batch.names, batch.sizes, strict=True):
        try:
            actual = (directory / name).stat().st_size
        except OSError:
            missing.append(name)
            continue
        if actual != size:
            wrong.append(f"{name} ({actual} B, expected {size})")
    n = len(batch.names)
    if missing:
        return f"{len(missing)} of {n} files missing (first: {missing[0]})"
    if wrong:
        return f"{len(wrong)} of {n} files of the wrong size (first: {wrong[0]})"
    digest = hashlib.sha256()
    buf = bytearray(MiB)
    view = memoryview(buf)
    for name in batch.names:
        with (directory / name).open("rb", buffering=0) as src:
            while k := src.readinto(buf):
                digest.update(view[:k])
    if digest.hexdigest() != batch.digest:
        return "sizes right, but the sha256 over all files does not match"
    return None


def commands_text(bench: Bench, cases: list[Case]) -> str:
    """The exact command of every case, with LIST, CURL_CONFIG and DIR for the paths."""
    placeholders = BatchInput(Path("LIST"), Path("CURL_CONFIG"))
    lines = [
        f"`{shlex.join(bench.toolbox.batch_argv(case, placeholders, Path('DIR')))}`"
        for case in cases
    ]
    return "\n\n" + "\n".join(f"- {line}" for line in lines) if lines else ""


def write_input(folder: Path, urls: list[str]) -> BatchInput:
    """The URL list, one per line, and the same URLs as a curl config (`url = "..."`)."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = BatchInput(folder / "list.txt", folder / "curl.cfg")
    batch.urls.write_text("".join(f"{u}\n" for u in urls))
    batch.curl_config.write_text("".join(f'url = "{u}"\n' for u in urls))
    return batch


class BatchScenario(Scenario):
    single_file = False

    def entries(self, bench: Bench) -> list[tuple[str, int]]:
        """(name, size) of every file, in list order."""
        raise NotImplementedError

    def sizes(self, bench: Bench) -> list[int]:
        return [sum(size for _, size in self.entries(bench))]

    def prepare_files(self, bench: Bench) -> None:
        started = time.perf_counter()
        batch = make_batch(bench.www, self.entries(bench))
        bench.batches[self.name] = batch
        print(
            f"  {self.name:18s} {len(batch.names)} files, {approx_size(batch.total)}, "
            f"sha256 over all {batch.digest[:16]}...  ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )

    def prepare_inputs(self, bench: Bench) -> None:
        server = bench.servers[self.server_kind]
        urls = [server.url(name) for name in bench.batches[self.name].names]
        bench.inputs[self.name] = write_input(bench.tmp / f"input-{self.name}", urls)

    def timeout(self, bench: Bench, case: Case) -> float:
        if bench.opts.timeout:
            return float(bench.opts.timeout)
        rate = bench.servers[self.server_kind].rate or 20 * MiB
        return 60 + 3 * case.size / rate + 0.05 * len(self.entries(bench))

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        server = bench.servers[self.server_kind]
        batch = bench.batches[self.name]
        bench.clean_download_dir()
        os.sync()  # write-back of the previous run must not land in this one
        argv = bench.toolbox.batch_argv(case, bench.inputs[self.name], bench.dl_dir)
        ex = bench.execute(case, server, argv)
        error = ex.failure() or verify_batch(bench.dl_dir, batch)
        bench.clean_download_dir()
        return bench.record(case, rep, ex, error, files=len(batch.names))

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.files = len(self.entries(bench))

    def meta(self, bench: Bench) -> dict[str, Any] | None:
        batch = bench.batches.get(self.name)
        if batch is None:
            return None
        return {
            "files": len(batch.names),
            "bytes": batch.total,
            "sha256_all": batch.digest,
            "list": str(bench.inputs[self.name].urls) if self.name in bench.inputs else None,
        }

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        cols = ["tool", "files", "total", "runs ok", "wall s (median)", "min-max s"]
        cols += ["files/s", "MiB/s", "wall ÷ aria2c", "CPU s", "peak RSS MiB"]
        cols += ["requests", "conns", "served MiB"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in sorted(rows, key=lambda r: (TOOLS.index(r.tool), r.label)):
            failed = r.status != "ok"
            wall = (
                f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
                if failed
                else fmt(r.wall_s)
            )
            files_per_s = r.files / r.wall_s if r.files and r.wall_s else None
            cells = [
                r.label,
                human_count(r.files or 0),
                approx_size(r.size),
                f"{r.ok_runs}/{r.runs}",
                wall,
                "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
                fmt(files_per_s, 0),
                fmt(r.throughput_mib_s, 1),
                fmt(r.wall_vs_aria2c),
                fmt(r.cpu_s),
                fmt(r.maxrss_mib, 1),
                fmt(r.requests, 0),
                fmt(r.connections, 0),
                fmt(r.served_mib, 1),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines


class BatchSmall(BatchScenario):
    name = "batch-small"
    title = "(batch a) many small files over keep-alive, no limit"
    extra_tools = ("wget2", "requests")

    def count(self, bench: Bench) -> int:
        return bench.opts.batch_small_count or (200 if bench.quick else 2000)

    def entries(self, bench: Bench) -> list[tuple[str, int]]:
        size = bench.opts.batch_file_size
        return [(f"bs-{i:05d}.bin", size) for i in range(self.count(bench))]

    def cases(self, bench: Bench) -> list[Case]:
        j = bench.opts.jobs
        size = self.sizes(bench)[0]
        labels = {
            "segdl": f"segdl -j{j}",
            "aria2c": f"aria2c -j{j}",
            "curl": f"curl -Z --parallel-max {j}",
            "wget2": f"wget2 --max-threads={j}",
            "requests": f"ThreadPool({j}) + requests",
        }
        return [
            Case(self.name, label, tool, 1, size, jobs=j)
            for tool, label in labels.items()
            if bench.available(tool)
        ]

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        seg = bench.find_tool(rows, self.name, "segdl")
        j = bench.opts.jobs
        return [
            ck.ratio_at_most(
                f"bs1 batch-small: segdl wall <= {ck.TARGET_BATCH_SMALL_VS_ARIA2}x aria2c",
                seg,
                bench.find_tool(rows, self.name, "aria2c"),
                lambda r: r.wall_s,
                ck.TARGET_BATCH_SMALL_VS_ARIA2,
            ),
            ck.ratio_at_most(
                f"bs2 batch-small: segdl wall <= {ck.TARGET_BATCH_SMALL_VS_PYTHON}x "
                f"ThreadPool({j}) + requests",
                seg,
                bench.find_tool(rows, self.name, "requests"),
                lambda r: r.wall_s,
                ck.TARGET_BATCH_SMALL_VS_PYTHON,
                ref_name="ThreadPool",
            ),
        ]

    def intro(self, bench: Bench) -> str:
        n, size = self.count(bench), bench.opts.batch_file_size
        return (
            f"{human_count(n)} files of {human_size(size)} in one list, no rate limit; nginx "
            f"keeps connections open (keepalive_requests 1000000). {bench.opts.jobs} files in "
            "flight for every tool; aria2c -x1 -s1 (one connection per file). Every file is "
            "checked: sizes, then one sha256 over all files."
            + commands_text(bench, self.cases(bench))
        )


class BatchMixed(BatchScenario):
    """Four big files and many small ones in one list, on the noburst server.

    The server paces each connection at `rate` (8 MiB/s) in pieces of --noburst-chunk (64k),
    but the first piece of every response goes out at once. A 64 KiB small file is one piece,
    so nginx never delays it: measured while this was written, 100 of them over one keep-alive
    connection took 15 ms, against 0.78 s at the rate. What the rate bounds is therefore the
    big files, and with C = --max-connections (32) connections the list needs at least

        ideal = 4 x big / (C x rate)
              = 256 MiB / (32 x 8 MiB/s) = 1.0 s     (full run)
              = 32 MiB / (32 x 8 MiB/s)  = 0.125 s   (--quick)

    It is reached only if all C connections stay busy on the big files until the end while
    the small files slip in between: -n 16 lets the four big files ask for 64 connections,
    more than the budget, and -j 16 keeps small files in flight. The big files come first in
    the list so that any tool can have all four in flight from the start: spread through the
    list, the last one would wait for the small files before it (with -j 16, a tool reaches
    the 750th line only after about 735 files are done), and the ideal would depend on how
    fast a tool gets through them, not on the connection budget. The Python server (--server
    python) paces every byte, the small files' too, so there the ideal counts all bytes:
    (256 + 62.5) MiB / (32 x 8 MiB/s) = 1.24 s. aria2c (no target) gets the same per-file
    flags; it has no total cap, so its `conns` column shows what it used.
    """

    name = "batch-mixed"
    title = "(batch b) four big files and many small ones, per-connection rate limit"
    server_kind = "noburst"

    def big_size(self, bench: Bench) -> int:
        return bench.opts.batch_mixed_big_size or (8 * MiB if bench.quick else 64 * MiB)

    def small_count(self, bench: Bench) -> int:
        return bench.opts.batch_mixed_small_count or (100 if bench.quick else 1000)

    def entries(self, bench: Bench) -> list[tuple[str, int]]:
        """The big files first, then the small ones."""
        big = [(f"bm-big-{k}.bin", self.big_size(bench)) for k in range(self.big_count(bench))]
        size = bench.opts.batch_file_size
        return big + [(f"bm-{i:05d}.bin", size) for i in range(self.small_count(bench))]

    def big_count(self, bench: Bench) -> int:
        return int(bench.opts.batch_mixed_big_count)

    def paced_bytes(self, bench: Bench) -> int:
        """The bytes the server holds to its rate: on nginx, not the responses that fit in
        the one undelayed first piece (the small files)."""
        server = bench.servers.get(self.server_kind)
        free = server.chunk if server is not None and server.impl == "nginx" else 0
        return sum(size for _, size in self.entries(bench) if size > free)

    def ideal_s(self, bench: Bench) -> float:
        return self.paced_bytes(bench) / float(bench.opts.max_connections * bench.opts.rate)

    def cases(self, bench: Bench) -> list[Case]:
        o = bench.opts
        j, n, m = o.jobs, o.conns, o.max_connections
        size = self.sizes(bench)[0]
        cases = []
        if bench.available("segdl"):
            label = f"segdl -j{j} -n{n} --max-connections {m}"
            cases.append(Case(self.name, label, "segdl", n, size, jobs=j, max_conns=m))
        if bench.available("aria2c"):
            a = min(n, 16)
            label = f"aria2c -j{j} -x{a} -s{a}"
            cases.append(Case(self.name, label, "aria2c", n, size, jobs=j))
        return cases

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        super().summarize_row(bench, row, ok)
        row.ideal_s = self.ideal_s(bench)
        if row.wall_s is not None:
            row.wall_vs_ideal = row.wall_s / row.ideal_s

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        limit = ck.TARGET_BATCH_MIXED_VS_IDEAL
        return [
            ck.wall_vs_ideal(
                f"bm1 batch-mixed: segdl wall <= {limit}x ideal ({self.ideal_text(bench)})",
                bench.find_tool(rows, self.name, "segdl"),
                limit,
            )
        ]

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        big, small = self.big_size(bench), self.small_count(bench)
        return (
            f"{o.batch_mixed_big_count} files of {human_size(big)}, then "
            f"{human_count(small)} files of {human_size(o.batch_file_size)}, one list, on the "
            f"noburst server ({human_size(o.rate)}/s per connection, "
            f"{human_size(o.noburst_chunk)} pieces). Ideal, whole process: "
            f"{self.ideal_text(bench)}; the server paces only responses larger than one piece "
            "(see the scenario's docstring)." + commands_text(bench, self.cases(bench))
        )

    def ideal_text(self, bench: Bench) -> str:
        o = bench.opts
        return (
            f"{approx_size(self.paced_bytes(bench))} paced / ({o.max_connections} connections x "
            f"{human_size(o.rate)}/s) = {self.ideal_s(bench):.3f} s"
        )

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        lines = super().table(bench, rows)
        lines[0] = lines[0][:-2] + " | ideal s | wall ÷ ideal |"
        lines[1] += "---|---|"
        order = sorted(rows, key=lambda r: (TOOLS.index(r.tool), r.label))
        for i, r in enumerate(order, 2):
            lines[i] += f" {fmt(r.ideal_s, 3)} | {fmt(r.wall_vs_ideal, 3, 'x')} |"
        return lines
