"""The `segdl` command: argparse, listener choice, one-line errors and exit codes.

One URL is a single download (a batch of one with --report or --accept, keeping one URL's
rules); several URLs or `-i FILE` make a batch. Exit codes: 0 success
(every item ok or skipped), 1 a failed download (a batch still ran to its end), 2 usage error,
130 interrupted (resumable).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from ..batch.template import DEFAULT as DEFAULT_TEMPLATE
from ..core.http import silence_insecure_warnings
from ..stream import WINDOW_DEFAULT
from .batch import run_batch
from .common import several_items
from .parser import build_parser, check_usage, output_as_item
from .single import common_options, run_download


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same careful path as Ctrl-C: flush, save state, exit non-zero.
    raise KeyboardInterrupt


def entry() -> NoReturn:
    """The `segdl` command: `main`, then an exit without the interpreter's teardown.

    By the time `main` returns, the download is committed and synced (or its state saved) and
    every file segdl wrote is closed; the teardown would only collect objects and close pooled
    sockets one by one, which the kernel does at exit anyway, 30-40 ms later.
    """
    code = main()
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stdout
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        from .bench import main as bench_main

        return bench_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    several = several_items(args)
    if not several and not args.urls:
        parser.error("give a URL, several URLs, or -i FILE")
    check_usage(parser, args, several)
    on_cluster = args.dask is not None or args.dask_scheduler_file is not None
    # One URL with --report, --accept or --checksums runs as a batch of one: the batch writes
    # the report row (HTTP status, attempts, error), fails an unwanted type without a file,
    # and finds the file's line in the checksums file by its name.
    is_batch = several or on_cluster or bool(args.report or args.accept or args.checksums)
    if args.output and several:
        parser.error("-o names one file: with several URLs or -i, use -d DIR (and --template)")
    if args.output and on_cluster:
        parser.error("-o FILE: not with --dask (a cluster saves into -d DIR)")
    if is_batch and args.output:
        output_as_item(parser, args)
    from .extract import check_arguments as check_extract_arguments

    check_extract_arguments(parser, args, is_batch)
    # Defaults filled in only now: the checks above needed to know what was given.
    args.template = DEFAULT_TEMPLATE if args.template is None else args.template
    args.window = WINDOW_DEFAULT if args.window is None else args.window
    stderr = sys.stderr
    verify: bool | str = True
    if args.insecure:
        verify = False
        silence_insecure_warnings()
        print("segdl: warning: TLS certificate verification is off (--insecure)", file=stderr)
    elif args.ca_certificate:
        verify = args.ca_certificate
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if is_batch:
            if on_cluster or args.shard_size:
                from .cluster import run as cluster_batch

                return cluster_batch(args, verify, stderr)
            return run_batch(args, verify, stderr)
        if args.extract is not None:
            from .extract import run_single as extract_single

            return extract_single(args, common_options(args, verify), stderr)
        return run_download(args, verify, stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
