"""The runner core: temporary directory, tools, servers, test files, the round-robin loop, one
measured run, and the medians per case. What a scenario runs and checks is in scenarios/."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .measure import Measurement, _live_children, kill_group, make_random_file, run_measured
from .measure import verify_download as verify_download
from .records import Case, Check, RunRecord, Summary
from .scenarios import SCENARIOS, Scenario
from .scenarios.batch import BatchSet
from .servers import (
    TLS_KINDS,
    LogStats,
    ManagedServer,
    NginxServer,
    PythonServer,
    nginx_version,
    read_log_stats,
)
from .tools import BatchInput, Toolbox, ToolInfo, child_env, which
from .units import KiB, MiB, approx_size, human_count, human_size, median, size_token


@dataclass
class Execution:
    """One measured run as the runner saw it, before the scenario judges it."""

    argv: list[str]
    m: Measurement
    stats: LogStats
    seq: int
    started_at: str
    load_before: float
    load_after: float
    timeout_s: float

    def failure(self) -> str | None:
        """The error of a run that timed out or exited non-zero, else None."""
        if self.m.timed_out:
            return f"timed out after {self.timeout_s:.0f} s"
        if self.m.exit_code != 0:
            last = self.m.output_tail.strip().splitlines()[-1:] or [""]
            return f"exit code {self.m.exit_code}: {last[0][:200]}"
        return None


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.quick: bool = opts.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="segdl-benchrun-", dir=opts.tmpdir))
        self.www = self.tmp / "www"
        self.www.mkdir()
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        base = Path(opts.download_dir) if opts.download_dir else self.tmp
        self.dl_dir = Path(tempfile.mkdtemp(prefix="segdl-benchrun-dl-", dir=base))
        self.env = child_env()
        self.toolbox = Toolbox(opts, self.env, self.dl_dir)
        self.notes = self.toolbox.notes  # one list: setup notes first, as before
        self.servers: dict[str, ManagedServer] = {}
        self.files: dict[int, tuple[Path, str]] = {}  # single-file scenarios: size -> file
        self.batches: dict[str, BatchSet] = {}  # batch scenarios: their files
        self.inputs: dict[str, BatchInput] = {}  # batch scenarios: their URL lists
        self.records: list[RunRecord] = []
        self.startup: dict[str, float | None] = {}
        self.started = dt.datetime.now(dt.timezone.utc)
        self.seq = 0

    # -- shortcuts into the toolbox -------------------------------------------------------

    @property
    def tools(self) -> dict[str, ToolInfo]:
        return self.toolbox.tools

    @property
    def time_bin(self) -> str | None:
        return self.toolbox.time_bin

    @property
    def segdl_cmd(self) -> list[str]:
        return self.toolbox.segdl_cmd

    def available(self, tool: str) -> bool:
        return self.toolbox.available(tool)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        for pid in list(_live_children):
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                os.wait4(pid, 0)
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                server.stop()
        if self.opts.keep_temp:
            print(f"kept temporary directory {self.tmp}", flush=True)
            return
        shutil.rmtree(self.dl_dir, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- setup ----------------------------------------------------------------------------

    def scenarios(self) -> list[Scenario]:
        return [sc for name, sc in SCENARIOS.items() if name in self.opts.scenario]

    def scenario_names(self) -> list[str]:
        return [sc.name for sc in self.scenarios()]

    def sizes(self, scenario: str) -> list[int]:
        return SCENARIOS[scenario].sizes(self)

    def setup_tools(self) -> None:
        extra = {tool for sc in self.scenarios() for tool in sc.extra_tools}
        self.toolbox.setup(extra)

    def setup_servers(self) -> None:
        print("== servers", flush=True)
        kinds = sorted({sc.server_kind for sc in self.scenarios()})
        binary = which("nginx")
        impl = self.opts.server
        if impl == "auto":
            impl = "nginx" if binary else "python"
        if impl == "nginx" and not binary:
            raise SystemExit("nginx not found (use --server python)")
        version = nginx_version(binary) if impl == "nginx" and binary else (0,)
        for kind in kinds:
            workdir = self.tmp / f"server-{kind}"
            if kind in TLS_KINDS and not (impl == "nginx" and binary):
                note = f"the {kind} server needs nginx (HTTPS, HTTP/2): its scenarios are not run"
                print(f"  {kind:11s} {note}", flush=True)
                self.notes.append(note)
                continue
            if impl == "nginx" and binary:
                server: ManagedServer = NginxServer(
                    kind, self.www, workdir, self.opts, binary, version
                )
            else:
                server = PythonServer(kind, self.www, workdir, self.opts)
            server.start()
            self.servers[kind] = server
            print(f"  {kind:11s} {server.url('')}  {server.describe()}", flush=True)

    def setup_files(self) -> None:
        print("== test files", flush=True)
        single = [sc for sc in self.scenarios() if sc.single_file]
        for size in sorted({s for sc in single for s in sc.sizes(self)}):
            path = self.www / f"file-{size_token(size)}.bin"
            started = time.perf_counter()
            self.files[size] = (path, make_random_file(path, size))
            took = time.perf_counter() - started
            print(
                f"  {path.name:18s} {human_size(size):>9s}  sha256 {self.files[size][1][:16]}..."
                f"  ({took:.1f} s)",
                flush=True,
            )
        for sc in self.scenarios():
            sc.prepare_files(self)

    def prepare_inputs(self) -> None:
        for sc in self.scenarios():
            sc.prepare_inputs(self)

    def measure_startup(self) -> None:
        """Interpreter startup, included in every segdl wall time."""
        if not self.available("segdl"):
            return
        probes = {
            "python -c pass": [self.segdl_cmd[0], "-c", "pass"],
            "segdl --help": [*self.segdl_cmd, "--help"],
        }
        for name, argv in probes.items():
            walls = []
            for i in range(max(3, self.opts.repeat)):
                m = run_measured(
                    argv,
                    cwd=self.dl_dir,
                    env=self.env,
                    timeout_s=60,
                    log_path=self.logs / f"startup-{i}.log",
                    use_pty=False,
                    time_bin=None,
                )
                if m.exit_code == 0:
                    walls.append(m.wall_s)
            self.startup[name] = median(walls)

    # -- running --------------------------------------------------------------------------

    def run(self) -> None:
        for sc in self.scenarios():
            cases = sc.cases(self)
            print(f"== {sc.name}: {sc.title}", flush=True)
            if not cases:
                print("  nothing to run (tools missing)", flush=True)
                continue
            total = len(cases) * self.opts.repeat
            done = 0
            for rep in range(-self.opts.warmup, self.opts.repeat):
                shift = rep % len(cases)  # rotate the start so no tool always goes first
                for case in cases[shift:] + cases[:shift]:
                    record = sc.run_case(self, case, rep)
                    if rep < 0:
                        print(f"  warm-up {case.label}: {'ok' if record.ok else 'FAIL'}")
                        continue
                    done += 1
                    self.records.append(record)
                    self.print_record(record, done, total)

    def clean_download_dir(self) -> None:
        for entry in self.dl_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def run_single(self, case: Case, rep: int) -> RunRecord:
        """One file: download file-<size>.bin as download.bin and compare it with the source."""
        sc = SCENARIOS[case.scenario]
        server = self.servers[sc.server_kind]
        src, digest = self.files[case.size]
        self.clean_download_dir()
        os.sync()  # write-back of the previous run must not land in this one
        if server.kind == "stragglers":
            server.restart()
        out = self.dl_dir / "download.bin"
        argv = self.toolbox.argv_for(case, server.url(src.name), out)
        ex = self.execute(case, server, argv)
        error = ex.failure() or verify_download(out, case.size, digest)
        self.clean_download_dir()
        return self.record(case, rep, ex, error)

    def execute(
        self,
        case: Case,
        server: ManagedServer,
        argv: list[str],
        watch: Callable[[float], bool] | None = None,
    ) -> Execution:
        """Run `argv` measured, then read what the server logged meanwhile."""
        offset = server.log_offset()
        self.seq += 1
        load_before = os.getloadavg()[0]
        started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        timeout = SCENARIOS[case.scenario].timeout(self, case)
        m = run_measured(
            argv,
            cwd=self.dl_dir,
            env=self.env,
            timeout_s=timeout,
            log_path=self.logs / f"run-{self.seq:04d}.log",
            use_pty=case.use_pty,
            time_bin=self.time_bin,
            watch=watch,
        )
        load_after = os.getloadavg()[0]
        time.sleep(0.05)  # let the server finish logging aborted requests
        stats = read_log_stats(server.log_path, offset)
        return Execution(argv, m, stats, self.seq, started_at, load_before, load_after, timeout)

    def record(
        self,
        case: Case,
        rep: int,
        ex: Execution,
        error: str | None,
        *,
        throughput: bool = True,
        files: int | None = None,
        items: int | None = None,
        stopped: str | None = None,
    ) -> RunRecord:
        m, stats = ex.m, ex.stats
        ok = error is None
        first = stats.first_start - m.started_epoch if stats.first_start is not None else None
        return RunRecord(
            scenario=case.scenario,
            label=case.label,
            tool=case.tool,
            conns=case.conns,
            size=case.size,
            repeat=rep,
            seq=ex.seq,
            started_at=ex.started_at,
            argv=ex.argv,
            ok=ok,
            error=error,
            exit_code=m.exit_code,
            wall_s=m.wall_s,
            user_s=m.user_s,
            sys_s=m.sys_s,
            cpu_s=m.user_s + m.sys_s,
            maxrss_kib=m.maxrss_kib,
            throughput_mib_s=(
                case.size / MiB / m.wall_s if ok and throughput and m.wall_s > 0 else None
            ),
            requests=stats.requests,
            connections=stats.connections,
            served_bytes=stats.served_bytes,
            server_window_s=stats.window_s,
            tty_bytes=m.tty_bytes,
            loadavg_before=ex.load_before,
            loadavg_after=ex.load_after,
            output_tail="" if ok else m.output_tail[-1000:],
            files=files,
            first_request_s=first if files is not None else None,
            items=items,
            stopped=stopped,
        )

    def print_record(self, r: RunRecord, done: int, total: int) -> None:
        size = approx_size(r.size)
        speed = f"{r.throughput_mib_s or 0:8.1f} MiB/s"
        if r.items is not None:  # batch-list: the run is cut short, count items instead
            size = f"{human_count(r.files or 0)} URLs"
            speed = f"{r.items / r.wall_s if r.wall_s else 0:8.0f} it/s "
        head = f"  [{done}/{total}] {r.label:18s} {size:>8s}"
        if not r.ok:
            print(f"{head}  FAIL: {r.error}", flush=True)
            return
        rss = f"{r.maxrss_kib / KiB:.0f} MiB" if r.maxrss_kib is not None else "?"
        extra = f"  tty {r.tty_bytes} B" if r.tty_bytes is not None else ""
        if r.first_request_s is not None:
            extra += f"  first req {r.first_request_s:.3f} s"
        if r.items is not None:
            extra += f"  items {r.items} ({r.stopped})"
        print(
            f"{head}  {r.wall_s:7.2f} s {speed}"
            f"  cpu {r.cpu_s:6.2f} s  rss {rss:>8s}  req {r.requests} conn {r.connections}"
            f"{extra}  ok",
            flush=True,
        )

    # -- summary --------------------------------------------------------------------------

    def summarize(self) -> list[Summary]:
        groups: dict[tuple[str, str, int], list[RunRecord]] = {}
        for r in self.records:
            groups.setdefault((r.scenario, r.label, r.size), []).append(r)
        rows: list[Summary] = []
        for (scenario, label, size), runs in groups.items():
            ok = [r for r in runs if r.ok]
            failed = [r for r in runs if not r.ok]
            row = Summary(
                scenario=scenario,
                label=label,
                tool=runs[0].tool,
                conns=runs[0].conns,
                size=size,
                runs=len(runs),
                ok_runs=len(ok),
                status="ok" if not failed else "FAIL",
                errors=sorted({r.error or "" for r in failed}),
            )
            if ok and not failed:  # a failure is reported as FAIL, never as a time
                walls = [r.wall_s for r in ok]
                row.wall_s = median(walls)
                row.wall_min_s, row.wall_max_s = min(walls), max(walls)
                row.throughput_mib_s = size / MiB / row.wall_s if row.wall_s else None
                row.cpu_s = median(r.cpu_s for r in ok)
                row.user_s = median(r.user_s for r in ok)
                row.sys_s = median(r.sys_s for r in ok)
                rss = [r.maxrss_kib / KiB for r in ok if r.maxrss_kib is not None]
                row.maxrss_mib = median(rss)
                row.maxrss_max_mib = max(rss) if rss else None
                row.requests = median(r.requests for r in ok)
                row.connections = median(r.connections for r in ok)
                served = [r.served_bytes / MiB for r in ok if r.served_bytes is not None]
                row.served_mib = median(served)
                row.server_window_s = median(r.server_window_s for r in ok)
                row.tty_bytes = median(r.tty_bytes for r in ok)
            SCENARIOS[scenario].summarize_row(self, row, ok if not failed else [])
            rows.append(row)
        for row in rows:
            ref = self.aria2_reference(rows, row)
            if ref is not None and ref.wall_s and row.wall_s is not None:
                row.wall_vs_aria2c = row.wall_s / ref.wall_s
                if ref.cpu_s and row.cpu_s is not None:
                    row.cpu_vs_aria2c = row.cpu_s / ref.cpu_s
        for sc in self.scenarios():
            sc.finish_rows(self, rows)
        return rows

    @staticmethod
    def find(
        rows: list[Summary],
        scenario: str,
        tool: str,
        conns: int,
        size: int,
        label: str | None = None,
    ) -> Summary | None:
        for row in rows:
            if (row.scenario, row.tool, row.conns, row.size) == (scenario, tool, conns, size) and (
                label is None or row.label == label
            ):
                return row
        return None

    @staticmethod
    def find_tool(rows: list[Summary], scenario: str, tool: str) -> Summary | None:
        """The first row of `tool` in `scenario` (batch scenarios have one per tool)."""
        return next((r for r in rows if r.scenario == scenario and r.tool == tool), None)

    def aria2_reference(self, rows: list[Summary], row: Summary) -> Summary | None:
        same = [
            r
            for r in rows
            if r.scenario == row.scenario and r.size == row.size and r.tool == "aria2c"
        ]
        for r in same:
            if r.conns == row.conns:
                return r
        return max(same, key=lambda r: r.conns) if same else None

    def checks(self, rows: list[Summary]) -> list[Check]:
        return [check for sc in self.scenarios() for check in sc.checks(self, rows)]
