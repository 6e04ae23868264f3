"""Request-heavy scenarios (issue 17): many small files, where a request costs more than its
bytes. The same --req-count files of --batch-file-size (2,000 x 64 KiB; --quick 200) serve all
three, written once and checked after every run like every batch (sizes, then one sha256 over
all files in list order):

* req-loopback (a): plain HTTP from the unthrottled nginx on 127.0.0.1, keep-alive, 16 files in
  flight (--jobs): segdl against curl `-Z --parallel-max 16` and aria2c `-j16`. A start-up row
  runs segdl on an empty list, so that CPU per file can leave the interpreter's start-up out.
* req-hosts (b): HTTPS with HTTP/2 from nginx (the tls server) through the delaying proxy
  (delayproxy.py, --rtt-ms 50 round trip), the files spread over --hosts 64 "hosts"
  127.0.0.1-127.0.0.64 (file i on host i mod 64 + 1), 256 files in flight: curl
  `-Z --parallel-max 256`, aria2c `-j256`.
* req-h2 (c): the same, every file on one host (127.0.0.1), politeness: at most 2 connections
  to the host for segdl (`--per-host 2`) and aria2c (`-j2`, HTTP/1.1 only); curl
  `-Z --parallel-max 256` multiplexes HTTP/2 streams on one connection (up to nginx's
  http2_max_concurrent_streams, --h2-max-streams 128).

(d), the Dask batch of 20,000 x 16 KiB, is the cluster scenario (cluster.py).

segdl's flags are in SEGDL_ARGS below, one line per scenario (or pass
`--segdl-args NAME='ARGS'` to run.py).
The TLS scenarios add `--ca-certificate CA` (curl `--cacert`, aria2c `--ca-certificate`).
Every row also says which protocol nginx logged for its requests.
"""

from __future__ import annotations

import os
import shlex
import time
from typing import TYPE_CHECKING

from .. import checks as ck
from ..records import Case, Check, RunRecord, Summary
from ..servers import DelayProxy, NginxServer, protocol_counts
from ..tools import TOOLS, BatchInput
from ..units import approx_size, fmt, human_count, human_size
from .batch import BatchScenario, BatchSet, make_batch, verify_batch, write_input

if TYPE_CHECKING:
    from ..runner import Bench

# segdl's command line of each scenario after `-i LIST -d DIR` (and `--ca-certificate CA`).
# Issue 17's flags, once they exist: (c) `--streams 64` (and maybe `--http2`).
SEGDL_ARGS: dict[str, list[str]] = {
    "req-loopback": ["-j", "16", "--per-host", "16", "-q"],
    "req-hosts": ["-j", "256", "--per-host", "8", "-q"],
    "req-h2": ["-j", "256", "--per-host", "2", "--streams", "64", "-q"],
}
# The targets.
TARGET_A_WALL = (1.3, 0.2)  # (a) segdl wall <= 1.3 x curl's + 0.2 s (interpreter start-up)
TARGET_A_CPU_MS = 0.25  # (a) segdl CPU per file beyond start-up, ms
TARGET_B_WALL = 1.2  # (b) segdl wall <= 1.2 x curl -Z --parallel-max 256
TARGET_C_WALL = 1.3  # (c) segdl wall <= 1.3 x curl -Z --parallel-max 256 (HTTP/2)

_FILES = "requests"  # bench.batches key of the shared files
_STARTUP = "segdl start-up (empty list)"
_PROXY = "delay-tls"  # bench.servers key of the delaying proxy


def segdl_args(bench: Bench, name: str) -> list[str]:
    override: dict[str, str] = bench.opts.segdl_args or {}
    return shlex.split(override[name]) if name in override else list(SEGDL_ARGS[name])


class RequestScenario(BatchScenario):
    tls = False

    def count(self, bench: Bench) -> int:
        return bench.opts.req_count or (200 if bench.quick else 2000)

    def entries(self, bench: Bench) -> list[tuple[str, int]]:
        size = bench.opts.batch_file_size
        return [(f"rq-{i:05d}.bin", size) for i in range(self.count(bench))]

    def peers(self, bench: Bench) -> list[tuple[str, str, int]]:
        """(tool, label, files in flight) of every peer."""
        raise NotImplementedError

    def runnable(self, bench: Bench) -> bool:
        return not self.tls or "tls" in bench.servers

    def cases(self, bench: Bench) -> list[Case]:
        if not self.runnable(bench):
            return []
        size = self.sizes(bench)[0]
        cases = []
        if bench.available("segdl"):
            label = shlex.join(["segdl", *segdl_args(bench, self.name)])
            cases.append(Case(self.name, label, "segdl", 1, size, jobs=0))
        cases += [
            Case(self.name, label, tool, 1, size, jobs=jobs)
            for tool, label, jobs in self.peers(bench)
            if bench.available(tool)
        ]
        return cases

    # -- files and inputs -----------------------------------------------------------------

    def prepare_files(self, bench: Bench) -> None:
        if _FILES not in bench.batches:
            started = time.perf_counter()
            bench.batches[_FILES] = make_batch(bench.www, self.entries(bench))
            batch = bench.batches[_FILES]
            print(
                f"  {'req-*':18s} {len(batch.names)} files, {approx_size(batch.total)}, "
                f"sha256 over all {batch.digest[:16]}...  ({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
        bench.batches[self.name] = bench.batches[_FILES]

    def url(self, bench: Bench, index: int, name: str) -> str:
        raise NotImplementedError

    def prepare_inputs(self, bench: Bench) -> None:
        if not self.runnable(bench):
            return
        if self.tls and _PROXY not in bench.servers:
            target = bench.servers["tls"]
            proxy = DelayProxy(target, bench.tmp / "server-delay-tls", bench.opts, rtt_half(bench))
            proxy.start()
            bench.servers[_PROXY] = proxy
            print(f"  {_PROXY:11s} {proxy.url('')}  {proxy.describe()}", flush=True)
        names = bench.batches[self.name].names
        urls = [self.url(bench, i, name) for i, name in enumerate(names)]
        bench.inputs[self.name] = write_input(bench.tmp / f"input-{self.name}", urls)

    # -- one run --------------------------------------------------------------------------

    def ca_path(self, bench: Bench) -> str:
        server = bench.servers[self.server_kind]
        assert isinstance(server, NginxServer)
        return str(server.ca_path)

    def argv(self, bench: Bench, case: Case, batch: BatchInput) -> list[str]:
        ca = self.ca_path(bench) if self.tls else ""
        if case.tool == "segdl":
            argv = [*bench.segdl_cmd, "-i", str(batch.urls), "-d", str(bench.dl_dir)]
            if self.tls:
                argv += ["--ca-certificate", ca]
            return argv + segdl_args(bench, self.name)
        argv = bench.toolbox.batch_argv(case, batch, bench.dl_dir)
        if self.tls and case.tool == "curl":
            argv += ["--http2", "--cacert", ca]
        elif self.tls and case.tool == "aria2c":
            argv += [f"--ca-certificate={ca}"]
        return argv

    def timeout(self, bench: Bench, case: Case) -> float:
        if bench.opts.timeout:
            return float(bench.opts.timeout)
        n = self.count(bench)
        return 60 + 0.05 * n + n * bench.opts.rtt_ms / 1000 * (1.5 if self.tls else 0)

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        server = bench.servers[self.server_kind]
        batch: BatchSet = bench.batches[self.name]
        bench.clean_download_dir()
        os.sync()
        empty = case.label == _STARTUP
        listing = bench.inputs[self.name]
        if empty:
            folder = bench.tmp / f"input-{self.name}"
            (folder / "empty.txt").write_text("")
            listing = BatchInput(folder / "empty.txt", folder / "empty.cfg")
        proto_log = server.proto_log if isinstance(server, NginxServer) else None
        proto_offset = _size(proto_log) if proto_log is not None else 0
        ex = bench.execute(case, server, self.argv(bench, case, listing))
        if empty:
            error, files = ex.failure(), 0
        else:
            error, files = ex.failure() or verify_batch(bench.dl_dir, batch), len(batch.names)
        bench.clean_download_dir()
        record = bench.record(case, rep, ex, error, throughput=not empty, files=files)
        if self.tls and proto_log is not None:
            record.protocols = protocol_counts(proto_log, proto_offset)
        elif ex.stats.requests:
            record.protocols = {"HTTP/1.1 (plain)": ex.stats.requests}
        return record

    def summarize_row(self, bench: Bench, row: Summary, ok: list[RunRecord]) -> None:
        row.files = 0 if row.label == _STARTUP else self.count(bench)
        if row.files and row.wall_s:
            row.items_per_s = row.files / row.wall_s
        seen = sorted({p for r in ok for p in (r.protocols or {})})
        row.protocols = ", ".join(seen) if seen else None

    # -- report ---------------------------------------------------------------------------

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        lines = super().table(bench, rows)
        lines[0] = lines[0][:-2] + " | CPU ms/file | protocol |"
        lines[1] += "---|---|"
        order = sorted(rows, key=lambda r: (TOOLS.index(r.tool), r.label))
        for i, r in enumerate(order, 2):
            per_file = 1000 * r.cpu_s / r.files if r.cpu_s and r.files else None
            lines[i] += f" {fmt(per_file, 3)} | {r.protocols or ''} |"
        return lines

    def intro_common(self, bench: Bench) -> str:
        n, size = self.count(bench), bench.opts.batch_file_size
        text = f"{human_count(n)} files of {human_size(size)} in one list"
        if self.tls:
            text += (
                f", HTTPS from nginx (HTTP/2 offered) through the delaying proxy, "
                f"{bench.opts.rtt_ms:g} ms round trip (a new connection's TCP handshake is not "
                "delayed, its TLS handshake is)"
            )
        return text

    def commands(self, bench: Bench) -> str:
        placeholders = BatchInput(bench.tmp / "LIST", bench.tmp / "CURL_CONFIG")
        lines = []
        for case in self.cases(bench):
            argv = self.argv(bench, case, placeholders)
            text = shlex.join(argv).replace(str(bench.dl_dir), "DIR")
            if self.tls:
                text = text.replace(self.ca_path(bench), "CA")
            text = text.replace(str(bench.tmp) + "/", "")
            lines.append(f"- `{text}`")
        return "\n\n" + "\n".join(lines) if lines else ""


def rtt_half(bench: Bench) -> float:
    return float(bench.opts.rtt_ms) / 2


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _wall_plus(target: str, seg: Summary | None, ref: Summary | None) -> Check:
    """segdl wall <= factor x curl's + extra seconds."""
    factor, extra = TARGET_A_WALL
    bad = ck.unusable(target, [seg, ref])
    if bad or seg is None or ref is None or seg.wall_s is None or ref.wall_s is None:
        return bad or ck.make_check(target, "no data", "SKIP", "-")
    limit = factor * ref.wall_s + extra
    margin = (limit - seg.wall_s) / limit
    measured = f"segdl {seg.wall_s:.2f} s vs curl {ref.wall_s:.2f} s (limit {limit:.2f} s)"
    result = "PASS" if seg.wall_s <= limit else "MISS"
    return ck.make_check(target, measured, result, f"{margin:+.1%} headroom", margin)


def _cpu_per_file(target: str, seg: Summary | None, empty: Summary | None) -> Check:
    bad = ck.unusable(target, [seg, empty])
    if bad or seg is None or empty is None or seg.cpu_s is None or not seg.files:
        return bad or ck.make_check(target, "no data", "SKIP", "-")
    per_file = 1000 * (seg.cpu_s - (empty.cpu_s or 0.0)) / seg.files
    margin = (TARGET_A_CPU_MS - per_file) / TARGET_A_CPU_MS
    measured = (
        f"({seg.cpu_s:.2f} - {empty.cpu_s or 0:.2f} s start-up) / {seg.files} files "
        f"= {per_file:.3f} ms"
    )
    result = "PASS" if per_file <= TARGET_A_CPU_MS else "MISS"
    return ck.make_check(target, measured, result, f"{margin:+.1%} headroom", margin)


def _row(rows: list[Summary], scenario: str, tool: str, label: str | None = None) -> Summary | None:
    return next(
        (
            r
            for r in rows
            if r.scenario == scenario
            and r.tool == tool
            and (label is None or r.label == label)
            and r.label != _STARTUP
        ),
        None,
    )


class ReqLoopback(RequestScenario):
    name = "req-loopback"
    title = "(requests a) many small files from nginx on loopback, keep-alive, plain HTTP"

    def peers(self, bench: Bench) -> list[tuple[str, str, int]]:
        j = bench.opts.jobs
        return [("curl", f"curl -Z --parallel-max {j}", j), ("aria2c", f"aria2c -j{j}", j)]

    def cases(self, bench: Bench) -> list[Case]:
        cases = super().cases(bench)
        if bench.available("segdl"):
            cases.append(Case(self.name, _STARTUP, "segdl", 1, 0, jobs=0))
        return cases

    def url(self, bench: Bench, index: int, name: str) -> str:
        return bench.servers[self.server_kind].url(name)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        seg = _row(rows, self.name, "segdl")
        empty = next((r for r in rows if r.scenario == self.name and r.label == _STARTUP), None)
        factor, extra = TARGET_A_WALL
        return [
            _wall_plus(
                f"rq-a1 req-loopback: segdl wall <= {factor} x curl -Z + {extra} s",
                seg,
                _row(rows, self.name, "curl"),
            ),
            _cpu_per_file(
                f"rq-a2 req-loopback: segdl CPU per file beyond start-up <= {TARGET_A_CPU_MS} ms",
                seg,
                empty,
            ),
        ]

    def intro(self, bench: Bench) -> str:
        return (
            self.intro_common(bench)
            + f", plain HTTP from the unthrottled nginx (keep-alive), {bench.opts.jobs} files in "
            f"flight. `{_STARTUP}` is segdl's command on an empty list: the start-up that CPU "
            "per file leaves out (rq-a2)." + self.commands(bench)
        )


class ReqHosts(RequestScenario):
    name = "req-hosts"
    title = "(requests b) many small files over 64 HTTPS hosts, 50 ms round trip"
    server_kind = "tls"
    tls = True

    def peers(self, bench: Bench) -> list[tuple[str, str, int]]:
        return [
            ("curl", "curl -Z --parallel-max 256", 256),
            ("aria2c", "aria2c -j256", 256),
        ]

    def url(self, bench: Bench, index: int, name: str) -> str:
        proxy = bench.servers[_PROXY]
        assert isinstance(proxy, DelayProxy)
        return proxy.host_url(index % bench.opts.hosts + 1, name)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        return [
            ck.ratio_at_most(
                f"rq-b1 req-hosts: segdl wall <= {TARGET_B_WALL} x curl -Z --parallel-max 256",
                _row(rows, self.name, "segdl"),
                _row(rows, self.name, "curl"),
                lambda r: r.wall_s,
                TARGET_B_WALL,
                ref_name="curl",
            )
        ]

    def intro(self, bench: Bench) -> str:
        return (
            self.intro_common(bench)
            + f"; file i is on host 127.0.0.(i mod {bench.opts.hosts} + 1), 256 files in flight."
            + self.commands(bench)
        )


class ReqH2(RequestScenario):
    name = "req-h2"
    title = "(requests c) many small files from one HTTPS host with HTTP/2, 50 ms round trip"
    server_kind = "tls"
    tls = True

    def peers(self, bench: Bench) -> list[tuple[str, str, int]]:
        return [
            ("curl", "curl -Z --parallel-max 256 (HTTP/2)", 256),
            ("aria2c", "aria2c -j2", 2),
        ]

    def url(self, bench: Bench, index: int, name: str) -> str:
        proxy = bench.servers[_PROXY]
        assert isinstance(proxy, DelayProxy)
        return proxy.host_url(1, name)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        return [
            ck.ratio_at_most(
                f"rq-c1 req-h2: segdl wall <= {TARGET_C_WALL} x curl -Z --parallel-max 256",
                _row(rows, self.name, "segdl"),
                _row(rows, self.name, "curl"),
                lambda r: r.wall_s,
                TARGET_C_WALL,
                ref_name="curl",
            )
        ]

    def intro(self, bench: Bench) -> str:
        return (
            self.intro_common(bench)
            + "; every file on one host (127.0.0.1), at most 2 connections to it for segdl "
            "and aria2c; curl multiplexes HTTP/2 streams on one connection (nginx's "
            f"http2_max_concurrent_streams {bench.opts.h2_max_streams})." + self.commands(bench)
        )
