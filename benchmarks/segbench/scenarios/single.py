"""Single-file scenarios: every run downloads one generated file-<size>.bin as download.bin.

throttled (a), stragglers (b), unthrottled (c), memory (d) and overhead (e) are the issue's
scenarios; noburst is throttled without nginx's per-response burst.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .. import checks as ck
from ..records import Case, Check, RunRecord, Summary
from ..tools import TOOLS
from ..units import GiB, MiB, fmt, human_size
from .base import Scenario

if TYPE_CHECKING:
    from ..runner import Bench

# Sizes: full run / --quick.
FULL_SIZES: dict[str, list[int]] = {
    "throttled": [256 * MiB],
    "stragglers": [256 * MiB],
    "unthrottled": [1 * GiB],
    "memory": [256 * MiB, 2 * GiB],
    "overhead": [1 * GiB],
    "noburst": [256 * MiB],
}
QUICK_SIZES: dict[str, list[int]] = {
    "throttled": [16 * MiB],
    "stragglers": [32 * MiB],
    "unthrottled": [64 * MiB],
    "memory": [32 * MiB, 128 * MiB],
    "overhead": [64 * MiB],
    "noburst": [16 * MiB],
}


class SingleFile(Scenario):
    def sizes(self, bench: Bench) -> list[int]:
        override = getattr(bench.opts, f"size_{self.name}")
        if override:
            return list(override)
        return (QUICK_SIZES if bench.quick else FULL_SIZES)[self.name]

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        return bench.run_single(case, rep)

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        return single_table(self.name, rows)


def peer_cases(bench: Bench, scenario: str, size: int, conns: Iterable[int]) -> list[Case]:
    cases = []
    for n in conns:
        if bench.available("aria2c"):
            cases.append(Case(scenario, f"aria2c -x{min(n, 16)}", "aria2c", n, size))
        if bench.available("axel"):
            cases.append(Case(scenario, f"axel -n{n}", "axel", n, size))
    return cases


class Throttled(SingleFile):
    name = "throttled"
    title = "(a) per-connection rate limit, segdl -n sweep"
    alias = "a"
    server_kind = "throttled"

    def cases(self, bench: Bench) -> list[Case]:
        cases: list[Case] = []
        for size in self.sizes(bench):
            sweep = bench.opts.sweep
            if bench.available("segdl"):
                cases += [Case(self.name, f"segdl -n{k}", "segdl", k, size) for k in sweep]
            peer_ns = sweep if bench.opts.peers_sweep else [max(sweep)]
            cases += peer_cases(bench, self.name, size, peer_ns)
            if bench.available("curl"):
                cases.append(Case(self.name, "curl", "curl", 1, size))
        return cases

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.ideal_mib_s = row.conns * bench.servers[self.server_kind].rate / MiB

    def finish_rows(self, bench: Bench, rows: list[Summary]) -> None:
        for row in rows:
            if row.scenario != self.name or row.wall_s is None:
                continue
            base = bench.find(rows, self.name, "segdl", 1, row.size)
            if base is not None and base.wall_s:
                row.speedup_vs_n1 = base.wall_s / row.wall_s
            if base is not None and base.server_window_s and row.server_window_s:
                row.server_speedup_vs_n1 = base.server_window_s / row.server_window_s

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        top = max(bench.opts.sweep)
        size = self.sizes(bench)[0]
        seg = bench.find(rows, self.name, "segdl", top, size)
        aria = bench.aria2_reference(rows, seg) if seg else None
        rate = bench.servers[self.server_kind].rate
        ideal = top * rate / MiB
        return [
            ck.at_least(
                f"a1 throttled: segdl -n{top} throughput >= "
                f"{ck.TARGET_IDEAL_FRACTION:.0%} of ideal {top} x {human_size(rate)}/s",
                seg,
                lambda r: r.throughput_mib_s,
                ck.TARGET_IDEAL_FRACTION * ideal,
                "MiB/s",
                extra=lambda v: f" ({v / ideal:.1%} of ideal {ideal:.0f} MiB/s)",
            ),
            ck.ratio_at_most(
                f"a2 throttled: segdl -n{top} wall <= aria2c wall",
                seg,
                aria,
                lambda r: r.wall_s,
                1.0,
            ),
            ck.at_least(
                f"a3 throttled: speed-up -n{top} vs -n1 >= {ck.TARGET_SPEEDUP:.0f}x",
                seg,
                lambda r: r.speedup_vs_n1,
                ck.TARGET_SPEEDUP,
                "x",
                depends=[bench.find(rows, self.name, "segdl", 1, size)],
            ),
        ]

    def intro(self, bench: Bench) -> str:
        rate = human_size(bench.opts.rate)
        return f"{sizes_text(self, bench)}, {rate}/s per connection; ideal = n x {rate}/s."


class Stragglers(SingleFile):
    name = "stragglers"
    title = "(b) one connection in N much slower than the others"
    alias = "b"
    server_kind = "stragglers"

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        cases: list[Case] = []
        for size in self.sizes(bench):
            if bench.available("segdl"):
                cases.append(Case(self.name, f"segdl -n{n}", "segdl", n, size))
            cases += peer_cases(bench, self.name, size, [n])
        return cases

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        seg = bench.find(rows, self.name, "segdl", n, self.sizes(bench)[0])
        aria = bench.aria2_reference(rows, seg) if seg else None
        return [
            ck.ratio_at_most(
                f"b1 stragglers: segdl -n{n} wall <= {ck.TARGET_STRAGGLERS_RATIO}x aria2c",
                seg,
                aria,
                lambda r: r.wall_s,
                ck.TARGET_STRAGGLERS_RATIO,
            )
        ]

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        rate, slow = human_size(o.rate), human_size(o.slow_rate)
        return (
            f"{sizes_text(self, bench)}, {o.conns} connections; every {o.straggler_every}th "
            f"connection at {slow}/s, the others at {rate}/s."
        )


class Unthrottled(SingleFile):
    name = "unthrottled"
    title = "(c) unthrottled loopback"
    alias = "c"

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        cases: list[Case] = []
        for size in self.sizes(bench):
            if bench.available("segdl"):
                cases.append(Case(self.name, f"segdl -n{n}", "segdl", n, size))
            cases += peer_cases(bench, self.name, size, [n])
            if bench.available("curl"):
                cases.append(Case(self.name, "curl", "curl", 1, size))
        return cases

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        size = self.sizes(bench)[0]
        seg = bench.find(rows, self.name, "segdl", bench.opts.conns, size)
        aria = bench.aria2_reference(rows, seg) if seg else None
        limit = ck.TARGET_UNTHROTTLED_RATIO
        return [
            ck.ratio_at_most(
                f"c{i} unthrottled {human_size(size)}: segdl {what} <= {limit}x aria2c",
                seg,
                aria,
                get,
                limit,
            )
            for i, what, get in (
                (1, "wall", lambda r: r.wall_s),
                (2, "CPU", lambda r: r.cpu_s),
            )
        ]

    def intro(self, bench: Bench) -> str:
        return f"{sizes_text(self, bench)} over loopback, no rate limit."


class Memory(Unthrottled):
    name = "memory"
    title = "(d) peak RSS, unthrottled"
    alias = "d"

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        return [
            ck.at_most(
                f"d{i} memory {human_size(size)}: segdl -n{n} peak RSS <= "
                f"{human_size(ck.TARGET_RSS)} (max over runs)",
                bench.find(rows, self.name, "segdl", n, size),
                lambda r: r.maxrss_max_mib,
                ck.TARGET_RSS / MiB,
                "MiB",
            )
            for i, size in enumerate(self.sizes(bench), 1)
        ]

    def intro(self, bench: Bench) -> str:
        return (
            f"{sizes_text(self, bench)}, unthrottled, {bench.opts.conns} connections; "
            "peak RSS of each tool's process."
        )


class Overhead(SingleFile):
    name = "overhead"
    title = "(e) progress bar cost (with vs. without -q, under a pty)"
    alias = "e"

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        if not bench.available("segdl"):
            return []
        cases: list[Case] = []
        for size in self.sizes(bench):
            cases.append(Case(self.name, f"segdl -n{n} (bar)", "segdl", n, size, True, False))
            cases.append(Case(self.name, f"segdl -n{n} -q", "segdl", n, size, True, True))
        return cases

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        size = self.sizes(bench)[0]
        bar = bench.find(rows, self.name, "segdl", n, size, f"segdl -n{n} (bar)")
        quiet = bench.find(rows, self.name, "segdl", n, size, f"segdl -n{n} -q")
        return [ck.bar_cost_check(bar, quiet)]

    def intro(self, bench: Bench) -> str:
        return (
            f"{sizes_text(self, bench)}, unthrottled; both variants run on a pseudo-terminal so "
            "the bar really draws (`tty bytes` = what the tool wrote to the terminal)."
        )


class NoBurst(SingleFile):
    """Per-connection throttle without the big first chunk.

    nginx sends a response in pieces of at most sendfile_max_chunk and sleeps piece/rate after
    each, so every response's first piece is free. The throttled scenario's 256k pieces give a
    tool that makes many small range requests 1/32 s per request; here the pieces are 64k
    (`--noburst-chunk`) and limit_rate_after is not set. Ideal = size / (n x rate), the time
    n connections at exactly the rate need: 256 MiB / (16 x 8 MiB/s) = 2 s.
    """

    name = "noburst"
    title = "(noburst) per-connection rate limit without the big first-chunk burst"
    server_kind = "noburst"

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        cases: list[Case] = []
        for size in self.sizes(bench):
            if bench.available("segdl"):
                cases.append(Case(self.name, f"segdl -n{n}", "segdl", n, size))
            if bench.available("aria2c"):
                cases.append(Case(self.name, f"aria2c -x{min(n, 16)}", "aria2c", n, size))
        return cases

    def ideal_s(self, bench: Bench, size: int) -> float:
        return size / float(bench.opts.conns * bench.servers[self.server_kind].rate)

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.ideal_s = self.ideal_s(bench, row.size)
        if row.wall_s is not None:
            row.wall_vs_ideal = row.wall_s / row.ideal_s

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        size = self.sizes(bench)[0]
        seg = bench.find(rows, self.name, "segdl", n, size)
        aria = bench.aria2_reference(rows, seg) if seg else None
        rate = human_size(bench.servers[self.server_kind].rate)
        ideal = self.ideal_s(bench, size)
        limit = ck.TARGET_NOBURST_VS_IDEAL
        return [
            ck.wall_vs_ideal(
                f"nb1 noburst: segdl -n{n} wall <= {limit}x ideal "
                f"({human_size(size)} / ({n} x {rate}/s) = {ideal:.3f} s)",
                seg,
                limit,
            ),
            ck.ratio_at_most(
                f"nb2 noburst: segdl -n{n} wall < aria2c wall",
                seg,
                aria,
                lambda r: r.wall_s,
                1.0,
                strict=True,
            ),
        ]

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        rate = human_size(o.rate)
        return (
            f"{sizes_text(self, bench)}, {rate}/s per connection, sent in pieces of "
            f"{human_size(o.noburst_chunk)} (so each response's free first piece is small), "
            f"{o.conns} connections; ideal = size / ({o.conns} x {rate}/s), whole process."
        )


def sizes_text(sc: SingleFile, bench: Bench) -> str:
    return ", ".join(human_size(s) for s in sc.sizes(bench))


def single_table(scenario: str, rows: list[Summary]) -> list[str]:
    cols = ["tool", "size", "runs ok", "wall s (median)", "min-max s", "MiB/s"]
    if scenario == "throttled":
        cols += ["ideal MiB/s", "speed-up vs segdl -n1"]
        cols += ["server window s", "server MiB/s", "server speed-up"]
    if scenario == "noburst":
        cols += ["ideal s", "wall ÷ ideal", "server window s"]
    cols += ["wall ÷ aria2c", "CPU s", "CPU ÷ aria2c", "peak RSS MiB"]
    cols += ["requests", "conns", "served MiB"]
    if scenario == "overhead":
        cols += ["tty bytes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r.size, TOOLS.index(r.tool), r.conns, r.label)):
        failed = r.status != "ok"
        wall = (
            f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
            if failed
            else fmt(r.wall_s)
        )
        cells = [
            r.label,
            human_size(r.size),
            f"{r.ok_runs}/{r.runs}",
            wall,
            "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
            fmt(r.throughput_mib_s, 1),
        ]
        if scenario == "throttled":
            cells += [fmt(r.ideal_mib_s, 0), fmt(r.speedup_vs_n1, 2, "x")]
            window = r.server_window_s
            cells += [
                fmt(window),
                fmt(r.size / MiB / window if window else None, 1),
                fmt(r.server_speedup_vs_n1, 2, "x"),
            ]
        if scenario == "noburst":
            cells += [fmt(r.ideal_s, 3), fmt(r.wall_vs_ideal, 3, "x"), fmt(r.server_window_s, 3)]
        cells += [
            fmt(r.wall_vs_aria2c),
            fmt(r.cpu_s),
            fmt(r.cpu_vs_aria2c),
            fmt(r.maxrss_mib, 1),
            fmt(r.requests, 0),
            fmt(r.connections, 0),
            fmt(r.served_mib, 1),
        ]
        if scenario == "overhead":
            cells.append(fmt(r.tty_bytes, 0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines
