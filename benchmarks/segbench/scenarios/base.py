"""What every scenario provides to the runner. A scenario owns its cases, how one case is run,
its targets, and its part of the report; the runner owns the servers, the files, the loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..records import Case, Check, RunRecord, Summary
from ..units import MiB

if TYPE_CHECKING:
    from ..runner import Bench


class Scenario:
    name = ""
    title = ""  # the report's section heading
    alias = ""  # one-letter alias for --scenario, if any
    server_kind = "unthrottled"  # see servers.py
    extra_tools: tuple[str, ...] = ()  # tools outside CORE_TOOLS that this scenario runs
    single_file = True  # downloads one generated file-<size>.bin per case

    def sizes(self, bench: Bench) -> list[int]:
        """The case sizes (for batches: the bytes of the whole list)."""
        raise NotImplementedError

    def cases(self, bench: Bench) -> list[Case]:
        raise NotImplementedError

    def prepare_files(self, bench: Bench) -> None:
        """Generate this scenario's own files in bench.www (before the servers start)."""

    def prepare_inputs(self, bench: Bench) -> None:
        """Write inputs that need the servers' URLs, such as URL lists."""

    def timeout(self, bench: Bench, case: Case) -> float:
        if bench.opts.timeout:
            return float(bench.opts.timeout)
        server = bench.servers[self.server_kind]
        worst = server.slow_rate or server.rate or 20 * MiB  # everything over the slowest link
        return 60 + 3 * case.size / worst

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        raise NotImplementedError

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        """Fill the scenario's own fields of `row` (ok: its runs, all successful, or [])."""

    def finish_rows(self, bench: Bench, rows: list[Summary]) -> None:
        """Fields that compare rows of this scenario (after the ratios to aria2c)."""

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        return []

    def intro(self, bench: Bench) -> str:
        raise NotImplementedError

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        raise NotImplementedError

    def meta(self, bench: Bench) -> dict[str, Any] | None:
        """Extra facts for results.json's meta (files, lists, ideal), or None."""
        return None
