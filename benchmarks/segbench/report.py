"""results.json and the Markdown report (results.md, and --results-md)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .charts import draw_charts, has_matplotlib
from .records import Check, Summary, to_json
from .units import GiB, KiB, human_size

if TYPE_CHECKING:
    from .runner import Bench


def fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            cols = line.split()
            if len(cols) < 3:
                continue
            mnt = cols[1]
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, f"{cols[2]} ({cols[0]} on {mnt})"
    return kind


def machine(bench: Bench) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * KiB
    distro = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip('"')
    return {
        "cpu_model": cpu or platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "ram_bytes": mem,
        "ram": f"{mem / GiB:.1f} GiB" if mem else "unknown",
        "kernel": f"{platform.system()} {platform.release()}",
        "os": distro,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "download_fs": fs_type(bench.dl_dir),
    }


def meta(bench: Bench) -> dict[str, Any]:
    hwm = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    o = bench.opts
    doc: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "started": bench.started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bench.quick,
        "repeat": o.repeat,
        "warmup": o.warmup,
        "scenarios": bench.scenario_names(),
        "sizes": {s: bench.sizes(s) for s in bench.scenario_names()},
        "rate_bytes_s": o.rate,
        "slow_rate_bytes_s": o.slow_rate,
        "straggler_every": o.straggler_every,
        "conns": o.conns,
        "sweep": o.sweep,
        "split_bytes": o.split,
        "aria2c_file_allocation": bench.toolbox.aria2_alloc,
        "rusage": "GNU time (%M) + os.wait4" if bench.time_bin else "os.wait4",
        "parent_rss_hwm_kib": hwm,
        "machine": machine(bench),
        "tools": {k: asdict(v) for k, v in bench.tools.items()},
        "servers": {
            k: {"impl": s.impl, "describe": s.describe(), "url": s.url("")}
            for k, s in bench.servers.items()
        },
        "startup_s": bench.startup,
        "files": {str(size): {"name": p.name, "sha256": d} for size, (p, d) in bench.files.items()},
        "notes": bench.notes,
    }
    extra = {sc.name: sc.meta(bench) for sc in bench.scenarios()}
    extra = {k: v for k, v in extra.items() if v is not None}
    if extra:  # only the newer scenarios have any
        doc["scenario_meta"] = {"jobs": o.jobs, **extra}
    return doc


def write(bench: Bench, rows: list[Summary], checks: list[Check]) -> None:
    out_dir = Path(bench.opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = meta(bench)
    doc = {
        "meta": info,
        "checks": [asdict(c) for c in checks],
        "summary": [to_json(r) for r in rows],
        "runs": [to_json(r) for r in bench.records],
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    names = bench.scenario_names()
    charts = draw_charts(out_dir, rows, bench.servers, bench.sizes, names)
    md_paths = [out_dir / "results.md"]
    if bench.opts.results_md:
        md_paths.append(Path(bench.opts.results_md))
    for md in md_paths:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(markdown(bench, info, rows, checks, charts, md))
    print(f"== wrote {', '.join(str(p) for p in [out_dir / 'results.json', *md_paths])}")
    if charts:
        print(f"   charts: {', '.join(str(c) for c in charts)}")
    elif not has_matplotlib():
        print("   (no charts: matplotlib is not importable)")


def markdown(
    bench: Bench,
    info: dict[str, Any],
    rows: list[Summary],
    checks: list[Check],
    charts: list[Path],
    md_path: Path,
) -> str:
    m = info["machine"]
    lines = ["# segdl benchmark results", ""]
    if bench.quick:
        lines += [
            "> **DRAFT - SMOKE RUN (`--quick`)**: reduced sizes and a single repeat. These",
            "> figures only show that the harness works; they are not representative results",
            "> and must be replaced by a full run (`python benchmarks/run.py`).",
            "",
        ]
    lines += [
        f"Generated {info['finished']} by `{info['command']}`",
        f"({info['repeat']} repeat(s) per case, medians; tools alternate run by run).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']} ({m['cpu_count']} logical, {m['cpu_affinity']} usable) |",
        f"| RAM | {m['ram']} |",
        f"| OS / kernel | {m['os']} / {m['kernel']} |",
        f"| Python | {m['python']} (`{m['python_executable']}`) |",
        f"| Download file system | {m['download_fs']} |",
        "",
        "## Tools and servers",
        "",
        "| tool | version | command (URL and output vary) |",
        "|---|---|---|",
    ]
    examples = bench.toolbox.example_argvs()
    for name, tool in bench.tools.items():
        version = tool.version if tool.path else f"not run: {tool.note}"
        lines.append(f"| {name} | {version} | `{examples.get(name, '')}` |")
    lines += ["", "| server | implementation |", "|---|---|"]
    for kind, server in bench.servers.items():
        lines.append(f"| {kind} | {server.describe()} |")
    lines += [
        "",
        "## Targets",
        "",
        "| id | target | measured | result | margin |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        lines.append(f"| {c.id} | {c.target} | {c.measured} | **{c.result}** | {c.margin} |")
    if bench.quick:
        lines += ["", "_Smoke-run sizes are far too small for these targets to mean anything._"]
    for sc in bench.scenarios():
        srows = [r for r in rows if r.scenario == sc.name]
        lines += ["", f"## {sc.title}", ""]
        lines += [sc.intro(bench), ""]
        lines += sc.table(bench, srows)
        for chart in charts:
            if chart.stem == sc.name:
                rel = os.path.relpath(chart, md_path.parent)
                lines += ["", f"![{sc.name}]({rel})"]
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in auto_notes(bench, info)]
    return "\n".join(lines) + "\n"


def auto_notes(bench: Bench, info: dict[str, Any]) -> list[str]:
    notes = list(bench.notes)
    records = bench.records
    loads = [r.loadavg_before for r in records] + [r.loadavg_after for r in records]
    if loads:
        notes.append(
            f"1-minute load average during the runs: {min(loads):.2f}-{max(loads):.2f} "
            f"on {info['machine']['cpu_count']} CPUs (other work on the machine adds noise)."
        )
    startup = bench.startup
    if startup.get("segdl --help") is not None:
        notes.append(
            f"segdl runs as `{shlex.join(bench.segdl_cmd)}`; its wall times include interpreter "
            f"start-up and imports: `segdl --help` takes {startup['segdl --help']:.3f} s, "
            f"`python -c pass` {startup.get('python -c pass') or 0:.3f} s (medians)."
        )
    if bench.time_bin:
        notes.append(
            "CPU = user+sys from os.wait4 on each tool's own process tree; peak RSS from GNU "
            "time's report of the tool (a child's ru_maxrss would start at the exec'ing "
            "process's high-water mark)."
        )
    else:
        notes.append(
            "CPU and peak RSS from os.wait4; RSS values cannot be below the parent "
            f"harness's high-water mark ({info['parent_rss_hwm_kib']} KiB)."
        )
    if "aria2c" in bench.tools:
        notes.append(
            f"aria2c uses --file-allocation={bench.toolbox.aria2_alloc}: its default (prealloc) "
            "may write the whole file before downloading; falloc (when the file system supports "
            "it) or none are its cheapest modes, so it is not handicapped. aria2c caps -x at "
            "16 and -k at >= 1M."
        )
    nginx_kinds = {s.kind for s in bench.servers.values() if s.impl == "nginx"}
    if nginx_kinds & {"throttled", "stragglers"}:
        notes.append(
            "nginx's limit_rate applies per request: each response's first "
            f"sendfile_max_chunk ({human_size(bench.opts.chunk)}) goes out unthrottled, so a "
            "tool issuing many small range requests gains a little over the ideal n x rate."
        )
    if "noburst" in nginx_kinds:
        notes.append(NOBURST_NOTE.format(chunk=human_size(bench.opts.noburst_chunk)))
    if "stragglers" in bench.servers:
        notes.append(
            "The stragglers server is restarted before every run so connection numbers (and "
            "therefore which connections are slow) start over for each tool."
        )
    notes.append(
        "Every run's output was compared with the source by size and sha256; a run "
        "that fails or produces a wrong file is shown as FAIL without a time."
    )
    if any(sc.name.startswith("batch-") for sc in bench.scenarios()):
        notes.append(
            "Batch runs save every file of the list in an emptied directory under its URL's "
            "last path segment; batch-small and batch-mixed check every file (sizes, then one "
            "sha256 over all files in list order). batch-list stops the tool early and checks "
            "no file."
        )
    if any(kind.startswith("delay-") for kind in bench.servers):
        notes.append(
            "req-hosts and req-h2 go through the delaying proxy (delayproxy.py): every chunk "
            f"waits {bench.opts.rtt_ms / 2:g} ms in each direction, so a request costs a "
            f"{bench.opts.rtt_ms:g} ms round trip and a TLS handshake one or two; a new "
            "connection's TCP handshake is NOT delayed (the proxy accepts at once), so a new "
            "connection costs one round trip less than over a real link. The proxy is one "
            "Python process (asyncio) whose CPU is not in any tool's figures but shares the "
            "machine's cores."
        )
    if any(sc.name.startswith("req-") for sc in bench.scenarios()):
        notes.append(
            "req-*: the protocol column is what nginx logged ($server_protocol) for the "
            "tool's requests. curl 7.88 (libcurl's default CURLMOPT_MAX_CONCURRENT_STREAMS of "
            "100) puts at most 100 streams on one HTTP/2 connection and, with -Z, opens a new "
            "connection for each transfer beyond those: its conns column shows it."
        )
    notes.append("Throughput is in MiB/s (2^20 bytes per second), like the rates.")
    return notes


NOBURST_NOTE = (
    "noburst and batch-mixed: nginx sends each response in pieces of at most "
    "sendfile_max_chunk ({chunk}) and, after each, waits piece x 1000 / rate milliseconds, "
    "truncated to whole milliseconds; it also lets a response get ahead by up to one second "
    "of the rate. The ideal uses the nominal rate; the per-connection rate nginx really "
    "delivers can be a little higher (see benchmarks/README.md)."
)
