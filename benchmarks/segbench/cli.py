"""Command line: ``python benchmarks/run.py [options]`` (see --help and benchmarks/README.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import delayproxy, report
from .pyserver import serve_main
from .runner import Bench
from .scenarios import ALIASES, GROUPS, SCENARIOS
from .scenarios.single import FULL_SIZES, QUICK_SIZES
from .tools import TOOLS
from .units import parse_count, parse_int_list, parse_size, parse_size_list, size_token

HERE = Path(__file__).resolve().parent.parent  # benchmarks/


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run.py",
        description="Benchmark segdl against aria2c, axel and curl on loopback nginx servers.",
        epilog="Scenarios: "
        + "; ".join(f"{k} ({a})" for a, k in ALIASES.items())
        + "; "
        + ", ".join(name for name in SCENARIOS if name not in ALIASES.values())
        + " (batch = the batch-* ones). Sizes use binary units (K, M, G).",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="scenario(s) to run, comma separated or repeated: "
        "throttled/a, stragglers/b, unthrottled/c, memory/d, overhead/e, noburst, "
        "batch-small, batch-mixed, batch-list, batch (the three batch-*), extract-tgz, "
        "extract-zip, extract-include, extract (the three extract-*), req-loopback, "
        "req-hosts, req-h2, requests (the three req-*), all (default: all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test: small sizes and 1 repeat (about a minute)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per case, medians reported (default 3, 1 with --quick)",
    )
    p.add_argument(
        "--warmup", type=int, default=0, help="unrecorded warm-up rounds per scenario (default 0)"
    )
    p.add_argument(
        "--tools",
        default=",".join(TOOLS),
        help="tools to run, comma separated; missing peers are skipped "
        "(default: all of %(default)s)",
    )
    p.add_argument(
        "--server",
        choices=("auto", "nginx", "python"),
        default="auto",
        help="server implementation; auto (default) = nginx, installed with apt-get "
        "when missing, else python",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install missing nginx/aria2/axel/curl/time/wget2",
    )
    p.add_argument(
        "--rate",
        type=parse_size,
        default=parse_size("8M"),
        help="per-connection rate of the throttled servers, bytes/s (default 8M)",
    )
    p.add_argument(
        "--slow-rate",
        type=parse_size,
        default=parse_size("1M"),
        help="rate of the slow connections in stragglers (default 1M)",
    )
    p.add_argument(
        "--straggler-every",
        type=int,
        choices=(2, 5, 10),
        default=5,
        help="stragglers: every Nth connection is slow (default 5)",
    )
    p.add_argument(
        "--chunk",
        type=parse_size,
        default=parse_size("256K"),
        help="throttling granularity: nginx sendfile_max_chunk / Python token bucket "
        "(default 256K)",
    )
    p.add_argument(
        "--noburst-chunk",
        type=parse_size,
        default=parse_size("64K"),
        help="the same for the noburst server (noburst, batch-mixed; default 64K)",
    )
    p.add_argument(
        "--nginx-workers", type=int, default=1, help="nginx worker_processes (default 1)"
    )
    p.add_argument(
        "--conns",
        type=int,
        default=16,
        help="connections for stragglers, unthrottled, memory and overhead (default 16)",
    )
    p.add_argument(
        "--sweep",
        type=parse_int_list,
        default=parse_int_list("1,2,4,8,16"),
        help="segdl -n values for the throttled scenario (default 1,2,4,8,16)",
    )
    p.add_argument(
        "--peers-sweep",
        action="store_true",
        help="also run aria2c/axel at every --sweep value (default: only the largest)",
    )
    p.add_argument(
        "--split",
        type=parse_size,
        default=parse_size("1M"),
        help="minimum split size: segdl -k and aria2c -k (default 1M)",
    )
    for name in ("throttled", "stragglers", "unthrottled", "overhead", "noburst"):
        p.add_argument(
            f"--size-{name}",
            type=parse_size_list,
            default=None,
            metavar="SIZE",
            help=f"file size for {name} (default {full_default(name)}, "
            f"--quick {quick_default(name)})",
        )
    p.add_argument(
        "--size-memory",
        type=parse_size_list,
        default=None,
        metavar="SIZES",
        help=f"comma separated sizes for memory (default {full_default('memory')}, "
        f"--quick {quick_default('memory')})",
    )
    add_batch_options(p)
    add_request_options(p)
    p.add_argument(
        "--size-extract",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="archive size of extract-tgz and extract-zip (default 256M, --quick 16M)",
    )
    p.add_argument(
        "--size-extract-include",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="zip size of extract-include (default 1G, --quick 64M)",
    )
    p.add_argument(
        "--aria2-file-allocation",
        default="auto",
        choices=("auto", "none", "prealloc", "trunc", "falloc"),
        help="aria2c --file-allocation; auto = falloc if the download file system "
        "supports fallocate, else none",
    )
    p.add_argument(
        "--segdl-cmd",
        default=None,
        help="command prefix for segdl (default: sys.executable -m segdl)",
    )
    p.add_argument(
        "--rusage",
        choices=("time", "wait4"),
        default="time",
        help="peak RSS via GNU /usr/bin/time (default; accurate) or os.wait4 only",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="per-run timeout in seconds (default: from size and slowest rate)",
    )
    p.add_argument("--tmpdir", default=None, help="where the temporary directory is created")
    p.add_argument(
        "--download-dir",
        default=None,
        help="parent of the (shared, emptied between runs) download directory; "
        "default: inside the temporary directory",
    )
    p.add_argument(
        "--out",
        default=str(HERE / "results"),
        help="output directory for results.json, results.md and charts "
        "(default benchmarks/results)",
    )
    p.add_argument(
        "--results-md",
        default=None,
        help="also write the Markdown report here (e.g. benchmarks/RESULTS.md)",
    )
    p.add_argument("--keep-temp", action="store_true", help="keep the temporary directory")
    opts = p.parse_args(argv)

    chosen: list[str] = []
    for item in opts.scenario or ["all"]:
        for name in item.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name in GROUPS:
                chosen += GROUPS[name]
                continue
            name = ALIASES.get(name, name)
            if name not in SCENARIOS:
                p.error(f"unknown scenario {name!r}")
            chosen.append(name)
    opts.scenario = chosen
    tools = [t.strip() for t in opts.tools.split(",") if t.strip()]
    for tool in tools:
        if tool not in TOOLS:
            p.error(f"unknown tool {tool!r} (choose from {', '.join(TOOLS)})")
    opts.tools = tools
    opts.segdl_args = dict(opts.segdl_args or [])
    for name in opts.segdl_args:
        if name not in SCENARIOS:
            p.error(f"--segdl-args: unknown scenario {name!r}")
    if not 1 <= opts.hosts <= 254:
        p.error("--hosts must be within 1..254")
    if opts.repeat is None:
        opts.repeat = 1 if opts.quick else 3
    if opts.repeat < 1 or opts.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    if not 1 <= opts.conns <= 64 or max(opts.sweep) > 64:
        p.error("connections must be within 1..64")
    if opts.slow_rate >= opts.rate:
        p.error("--slow-rate must be below --rate")
    if opts.jobs < 1 or opts.max_connections < 1 or opts.batch_mixed_big_count < 1:
        p.error("--jobs, --max-connections and --batch-mixed-big-count must be >= 1")
    return opts


def add_batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs",
        type=int,
        default=16,
        help="batch scenarios: files in flight (segdl/aria2c -j, curl --parallel-max, "
        "wget2 --max-threads, ThreadPool size; default 16)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=32,
        help="batch-mixed: segdl --max-connections, the budget of the ideal (default 32)",
    )
    p.add_argument(
        "--batch-file-size",
        type=parse_size,
        default=parse_size("64K"),
        metavar="SIZE",
        help="size of the small files of batch-small and batch-mixed (default 64K)",
    )
    p.add_argument(
        "--batch-small-count",
        type=parse_count,
        default=None,
        metavar="N",
        help="batch-small: number of files (default 2000, --quick 200)",
    )
    p.add_argument(
        "--batch-mixed-big-count",
        type=parse_count,
        default=4,
        metavar="N",
        help="batch-mixed: number of big files (default 4)",
    )
    p.add_argument(
        "--batch-mixed-big-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="batch-mixed: size of each big file (default 64M, --quick 8M)",
    )
    p.add_argument(
        "--batch-mixed-small-count",
        type=parse_count,
        default=None,
        metavar="N",
        help="batch-mixed: number of small files (default 1000, --quick 100)",
    )
    p.add_argument(
        "--batch-list-lines",
        type=parse_count,
        default=None,
        metavar="N",
        help="batch-list: URLs in the list (default 10^6, --quick 10^5)",
    )
    p.add_argument(
        "--batch-list-stop-items",
        type=parse_count,
        default=20_000,
        metavar="N",
        help="batch-list: stop the tool once the server has sent N bodies (default 20000)",
    )
    p.add_argument(
        "--cluster-count",
        type=parse_count,
        default=None,
        metavar="N",
        help="cluster: number of files (default 20000, --quick 1000)",
    )
    p.add_argument(
        "--cluster-file-size",
        type=parse_size,
        default=parse_size("16K"),
        metavar="SIZE",
        help="cluster: size of each file (default 16K)",
    )
    p.add_argument(
        "--cluster-workers",
        type=lambda text: sorted({int(x) for x in text.split(",")}),
        default=[1, 2, 4],
        metavar="N,N",
        help="cluster: --dask local:N for each N (default 1,2,4)",
    )
    p.add_argument(
        "--cluster-shard-size",
        type=parse_count,
        default=None,
        metavar="N",
        help="cluster: segdl --shard-size (default: a twentieth of the list)",
    )
    p.add_argument(
        "--batch-list-stop-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="batch-list: ... or after S seconds, whichever comes first (default 10)",
    )


def add_request_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--req-count",
        type=parse_count,
        default=None,
        metavar="N",
        help="req-*: number of files (of --batch-file-size; default 2000, --quick 200)",
    )
    p.add_argument(
        "--rtt-ms",
        type=float,
        default=50.0,
        metavar="MS",
        help="req-hosts, req-h2: round trip added by the delaying proxy (default 50)",
    )
    p.add_argument(
        "--hosts",
        type=int,
        default=64,
        metavar="N",
        help="req-hosts: hosts 127.0.0.1-127.0.0.N (default 64)",
    )
    p.add_argument(
        "--h2-max-streams",
        type=int,
        default=128,
        metavar="N",
        help="the tls server's http2_max_concurrent_streams (default 128, nginx's default)",
    )
    p.add_argument(
        "--segdl-args",
        action="append",
        type=_scenario_args,
        default=None,
        metavar="NAME=ARGS",
        help="req-*: replace segdl's flags after -i LIST -d DIR for scenario NAME, e.g. "
        '--segdl-args "req-h2=-j 256 --per-host 2 --streams 64 -q" (repeatable; default: '
        "SEGDL_ARGS in segbench/scenarios/requests.py)",
    )


def _scenario_args(text: str) -> tuple[str, str]:
    name, sep, args = text.partition("=")
    if not sep or not name.startswith("req-"):
        raise argparse.ArgumentTypeError("expected NAME=ARGS with NAME one of req-*")
    return name.strip(), args


def full_default(name: str) -> str:
    return ",".join(size_token(s) for s in FULL_SIZES[name])


def quick_default(name: str) -> str:
    return ",".join(size_token(s) for s in QUICK_SIZES[name])


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_serve"]:
        return serve_main(args[1:])
    if args[:1] == ["_delayproxy"]:
        return delayproxy.main(args[1:])
    opts = parse_args(args)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    bench = Bench(opts)
    try:
        print(f"temporary directory {bench.tmp}, downloads in {bench.dl_dir}", flush=True)
        bench.setup_tools()
        if not any(bench.available(t) for t in opts.tools):
            print("no tool available to benchmark", file=sys.stderr)
            return 2
        bench.setup_files()
        bench.setup_servers()
        bench.prepare_inputs()
        bench.measure_startup()
        bench.run()
        rows = bench.summarize()
        checks = bench.checks(rows)
        report.write(bench, rows, checks)
        print("== targets")
        for c in checks:
            print(f"  {c.result:4s} {c.id} {c.target}: {c.measured}; margin {c.margin}")
        failed = [r for r in bench.records if not r.ok]
        if failed:
            print(f"{len(failed)} run(s) FAILED", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted, cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.close()
