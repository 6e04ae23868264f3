"""cluster: a batch of many small files, one segdl process against `--dask local:N`.

20,000 files of 16 KiB (--quick: 1,000) from the unthrottled nginx (keep-alive), checked like
every batch. The list is a CSV manifest with a `file` column and `--template '{file}'`, as a
dataset builder names files by key: every path is then settled by the driver before any
request and the cluster claims nothing run-wide. One more case, `{name}`, reads the plain URL
list with the default template: destinations then come from the answers, and every file also
costs one run-wide claim (a symbolic link on the shared directory); the difference between
the two `local:1` rows is that cost on this disk.

Cases, at equal totals: one process `-j J --per-host J`, and `--dask local:N` for N in
--cluster-workers (1, 2, 4) with `-j J/N` per shard and the same `--per-host J` for the whole
cluster (each of the N shards in flight gets J/N connections), in shards of
--cluster-shard-size (a twentieth of the list).

Start-up is shown apart: each configuration is also run on an empty list, and the cluster's
start-up is the empty run's wall minus the one-process empty run's (Dask's imports, the
LocalCluster's N worker processes, its shutdown). `files/s net` leaves it out. Targets: cl1,
`--dask local:1` (net) within 10% of one process (Dask's overhead only); cl2, the best
`local:N` (net) at 1,350 files/s or more on this machine.

Projection to M machines (what the table allows, not a measurement): with R files/s per
machine (net), M machines that see one shared directory would do about M x R files/s while
(a) the shared file system takes M x R creates and renames a second (two or three metadata
operations per file, one more with `{name}`), (b) the links carry M x R x size (16 KiB files:
1,000 files/s is 16 MiB/s, 134 Mbit/s), (c) DNS answers the hosts' lookups (a resolver cache
on every machine), and (d) no host's cap binds: one host serves at most --per-host
connections for the whole cluster, so a dataset on a few hosts is bound by per-host x (files
per connection per second), whatever M is.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from .. import checks as ck
from ..records import Case, Check, RunRecord, Summary
from ..units import fmt, human_count, human_size
from .batch import BatchScenario, verify_batch

if TYPE_CHECKING:
    from ..runner import Bench

TARGET_OVERHEAD = 0.9  # cl1: local:1 files/s (net) >= 0.9 x one process
TARGET_FILES_PER_S = 1350.0  # cl2: files/s per machine (img2dataset's figure)
_LOCAL = re.compile(r"--dask local:(\d+)")
_EMPTY = "start-up: "
_NAMED = ", {name}"  # the URL list and the default template (run-wide claims)


class Cluster(BatchScenario):
    name = "cluster"
    title = "(batch d) many small files: one process against --dask local:N"

    def count(self, bench: Bench) -> int:
        return bench.opts.cluster_count or (1000 if bench.quick else 20_000)

    def entries(self, bench: Bench) -> list[tuple[str, int]]:
        size = bench.opts.cluster_file_size
        return [(f"cl-{i:05d}.bin", size) for i in range(self.count(bench))]

    def shard_size(self, bench: Bench) -> int:
        return bench.opts.cluster_shard_size or max(1, self.count(bench) // 20)

    def cases(self, bench: Bench) -> list[Case]:
        if not bench.available("segdl"):
            return []
        j = bench.opts.jobs
        size = self.sizes(bench)[0]
        cases = [Case(self.name, f"segdl -j{j}", "segdl", 1, size, jobs=j)]
        for n in bench.opts.cluster_workers:
            per = max(1, j // n)
            label = f"segdl --dask local:{n} -j{per}"
            cases.append(Case(self.name, label, "segdl", 1, size, jobs=per))
        if 1 in bench.opts.cluster_workers:
            label = f"segdl --dask local:1 -j{j}{_NAMED}"
            cases.append(Case(self.name, label, "segdl", 1, size, jobs=j))
        # The same command lines on an empty list: what starting (and stopping) costs.
        cases += [
            Case(self.name, _EMPTY + c.label, "segdl", 1, 0, jobs=c.jobs) for c in list(cases)
        ]
        return cases

    def prepare_inputs(self, bench: Bench) -> None:
        super().prepare_inputs(bench)
        folder = bench.tmp / f"input-{self.name}"
        server = bench.servers[self.server_kind]
        with (folder / "manifest.csv").open("w") as out:
            out.write("url,file\n")
            for name in bench.batches[self.name].names:
                out.write(f"{server.url(name)},{name}\n")
        (folder / "empty.csv").write_text("url,file\n")
        (folder / "empty.txt").write_text("")

    def argv(self, bench: Bench, case: Case) -> list[str]:
        folder = bench.tmp / f"input-{self.name}"
        named = case.label.endswith(_NAMED)
        if named:
            listing = folder / "empty.txt" if case.size == 0 else bench.inputs[self.name].urls
        else:
            listing = folder / ("empty.csv" if case.size == 0 else "manifest.csv")
        argv = [*bench.segdl_cmd, "-i", str(listing), "-d", str(bench.dl_dir)]
        argv += ["-j", str(case.jobs), "--per-host", str(bench.opts.jobs), "-q"]
        if not named:
            argv += ["--template", "{file}"]
        match = _LOCAL.search(case.label)
        if match is not None:
            argv += ["--dask", f"local:{match[1]}", "--shard-size", str(self.shard_size(bench))]
        return argv

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        server = bench.servers[self.server_kind]
        batch = bench.batches[self.name]
        bench.clean_download_dir()  # .segdl too: every run starts afresh
        os.sync()
        ex = bench.execute(case, server, self.argv(bench, case))
        if case.size == 0:
            error = ex.failure()
            files = 0
        else:
            error = ex.failure() or verify_batch(bench.dl_dir, batch)
            files = len(batch.names)
        bench.clean_download_dir()
        return bench.record(case, rep, ex, error, throughput=case.size > 0, files=files)

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.files = self.count(bench) if row.size else 0
        if row.files and row.wall_s:
            row.items_per_s = row.files / row.wall_s

    # -- start-up apart -----------------------------------------------------------------

    @staticmethod
    def _row(rows: list[Summary], label: str) -> Summary | None:
        return next((r for r in rows if r.scenario == "cluster" and r.label == label), None)

    def startup(self, rows: list[Summary], row: Summary) -> float | None:
        """The cluster's own start-up: its empty run's wall minus one process's empty run."""
        if _LOCAL.search(row.label) is None:
            return 0.0
        empty = self._row(rows, _EMPTY + row.label)
        plain = next((r for r in rows if r.label.startswith(_EMPTY + "segdl -j")), None)
        if empty is None or plain is None or empty.wall_s is None or plain.wall_s is None:
            return None
        return max(0.0, empty.wall_s - plain.wall_s)

    def net_rate(self, rows: list[Summary], row: Summary | None) -> float | None:
        if row is None or row.wall_s is None or not row.files:
            return None
        startup = self.startup(rows, row)
        if startup is None or row.wall_s <= startup:
            return None
        return row.files / (row.wall_s - startup)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        j = bench.opts.jobs
        one = self._row(rows, f"segdl -j{j}")
        local1 = next(
            (
                r
                for r in rows
                if r.label.startswith("segdl --dask local:1 ") and not r.label.endswith(_NAMED)
            ),
            None,
        )
        target = (
            f"cl1 cluster: --dask local:1 files/s (start-up excluded) >= {TARGET_OVERHEAD} x "
            "one process"
        )
        out = [self._ratio_check(target, rows, local1, one)]
        dask_rows = [
            r for r in rows if r.files and _LOCAL.search(r.label) and not r.label.endswith(_NAMED)
        ]
        best = max(dask_rows, key=lambda r: self.net_rate(rows, r) or 0.0, default=None)
        target = (
            f"cl2 cluster: best --dask local:N >= {TARGET_FILES_PER_S:.0f} files/s "
            "(start-up excluded)"
        )
        bad = ck.unusable(target, [best, *dask_rows])
        rate = self.net_rate(rows, best)
        if bad is not None or rate is None or best is None:
            out.append(bad or ck.make_check(target, "no data", "SKIP", "-"))
        else:
            margin = (rate - TARGET_FILES_PER_S) / TARGET_FILES_PER_S
            out.append(
                ck.make_check(
                    target,
                    f"{rate:.0f} files/s ({best.label})",
                    "PASS" if rate >= TARGET_FILES_PER_S else "MISS",
                    f"{margin:+.1%} vs {TARGET_FILES_PER_S:.0f} files/s",
                    margin,
                )
            )
        return out

    def _ratio_check(
        self, target: str, rows: list[Summary], row: Summary | None, ref: Summary | None
    ) -> Check:
        bad = ck.unusable(target, [row, ref])
        rate, base = self.net_rate(rows, row), self.net_rate(rows, ref)
        if bad is not None or rate is None or base is None:
            return bad or ck.make_check(target, "no data", "SKIP", "-")
        ratio = rate / base
        margin = (ratio - TARGET_OVERHEAD) / TARGET_OVERHEAD
        return ck.make_check(
            target,
            f"{rate:.0f} vs {base:.0f} files/s = {ratio:.3f}",
            "PASS" if ratio >= TARGET_OVERHEAD else "MISS",
            f"{margin:+.1%} vs {TARGET_OVERHEAD}",
            margin,
        )

    # -- report ---------------------------------------------------------------------------

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        n, size = self.count(bench), o.cluster_file_size
        workers = ", ".join(f"local:{w}" for w in o.cluster_workers)
        return (
            f"{human_count(n)} files of {human_size(size)} in one CSV manifest named by its "
            "`file` column (`--template '{file}'`), unthrottled nginx (keep-alive); the "
            "`{name}` row reads the URL list with the default template instead, which adds "
            "one run-wide claim (a symbolic link) per file. "
            f"One segdl process with -j{o.jobs} --per-host {o.jobs}, against "
            f"--dask {workers}: -j{o.jobs}/N per shard, the same --per-host {o.jobs} for the "
            f"whole cluster, shards of {self.shard_size(bench)} items. Each configuration also "
            "runs on an empty list: the cluster's start-up (Dask's imports, N worker "
            "processes, their shutdown) is that wall minus one process's, and `files/s net` "
            "leaves it out. Peak RSS is the largest process of the tree (GNU time). For M "
            "machines on one shared directory, expect about M x the best net rate while the "
            "file system, the links, DNS and per-host caps keep up (see the docstring of "
            "`segbench/scenarios/cluster.py`)."
        )

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        cols = ["case", "files", "runs ok", "wall s (median)", "min-max s", "files/s"]
        cols += ["start-up s", "files/s net", "CPU s", "peak RSS MiB", "requests", "conns"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            failed = r.status != "ok"
            wall = (
                f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
                if failed
                else fmt(r.wall_s)
            )
            startup = self.startup(rows, r) if r.files else None
            cells = [
                r.label,
                human_count(r.files or 0),
                f"{r.ok_runs}/{r.runs}",
                wall,
                "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
                fmt(r.items_per_s, 0),
                fmt(startup),
                fmt(self.net_rate(rows, r), 0),
                fmt(r.cpu_s),
                fmt(r.maxrss_mib, 1),
                fmt(r.requests, 0),
                fmt(r.connections, 0),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines
