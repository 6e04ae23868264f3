"""The command line of cluster batches: `--dask ADDRESS`, `--dask-scheduler-file FILE` and
`--shard-size N`, and the run itself, with the same progress bar, failure lines, report, summary
and exit codes as a local batch (`segdl.cli._batch`)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import IO

from ..batch.manifest import read_manifest
from ..batch.report import ReportWriter
from ..cli import (
    _MAX_LISTED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    _common,
    _human,
    _row,
    _Warnings,
)
from ..errors import Interrupted, SegdlError, UsageError
from ..progress import Listener, TqdmBatchListener
from .client import check_address, require_dask

DEFAULT_SHARD_SIZE = 10_000


def _address(text: str) -> str:
    try:
        return check_address(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _shard_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 10**9:
        raise argparse.ArgumentTypeError("must be between 1 and 10^9")
    return value


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """The cluster options, in `group` of segdl's parser."""
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--dask",
        type=_address,
        metavar="ADDRESS",
        help="run the batch on the Dask scheduler at ADDRESS (tcp://host:8786), or on "
        "local:N worker processes started here; -d must be a path every worker sees",
    )
    where.add_argument(
        "--dask-scheduler-file",
        metavar="FILE",
        help="run the batch on the Dask scheduler that wrote FILE (dask scheduler "
        "--scheduler-file FILE)",
    )
    group.add_argument(
        "--shard-size",
        type=_shard_size,
        metavar="N",
        help=f"items per shard, one Dask task each (default {DEFAULT_SHARD_SIZE})",
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a cluster batch."""
    return args.dask is not None or args.dask_scheduler_file is not None


def run(args: argparse.Namespace, verify: bool | str, stderr: IO[str]) -> int:
    """A batch on a Dask cluster, from the parsed command line; the exit code."""
    if not wanted(args):
        print("segdl: error: --shard-size needs --dask or --dask-scheduler-file", file=stderr)
        return EXIT_USAGE
    if getattr(args, "extract", None) is not None:
        print("segdl: error: --extract cannot be combined with --dask yet", file=stderr)
        return EXIT_USAGE
    # Dask's own log lines (a worker restarted, a task cancelled on Ctrl-C) are not for the
    # user of a command whose errors are one line each: quiet here and in the worker
    # processes started from here, unless the environment says otherwise.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    try:
        require_dask()
    except UsageError as exc:
        option = "--dask" if args.dask is not None else "--dask-scheduler-file"
        print(f"segdl: error: {option}: {exc}", file=stderr)
        return EXIT_USAGE
    listener: Listener
    bar: TqdmBatchListener | None = None
    if not args.quiet and stderr.isatty():
        listener = bar = TqdmBatchListener(file=stderr)
    else:
        listener = _Warnings(stderr)
    report: ReportWriter | None = None
    started = time.monotonic()
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    fetched = 0
    listed = 0
    directory = Path(args.dir or ".")
    try:
        if args.input_file is not None:
            items: object = read_manifest(
                args.input_file,
                format=args.input_format,
                url_field=args.url_field,
                records=args.records,
            )
        else:
            items = args.urls
        if args.report:
            report = ReportWriter(Path(args.report))
        from .api import iter_download_cluster

        results = iter_download_cluster(
            items,  # type: ignore[arg-type]
            args.dir,
            dask=args.dask,
            scheduler_file=args.dask_scheduler_file,
            shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
            jobs=args.jobs,
            max_connections=args.max_connections,
            per_host=args.per_host,
            template=args.template,
            accept=args.accept,
            if_exists=args.if_exists or "skip",
            journal=not args.no_journal,
            listener=listener,
            **_common(args, verify),  # type: ignore[arg-type]
        )
        for result in results:
            counts[result.status] += 1
            if result.result is not None:
                fetched += result.result.fetched
            if report is not None:
                report.write(_row(result, directory))
            if result.status == "failed":
                listed += 1
                if listed <= _MAX_LISTED:
                    line = f"segdl: failed: #{result.index} {result.url}: {result.error}"
                    if bar is not None:
                        bar.warning_line(line)
                    else:
                        print(line, file=stderr)
    except UsageError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        print("segdl: interrupted; run the same command again to resume", file=stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
        if report is not None:
            report.close()
    if listed > _MAX_LISTED:
        print(f"segdl: ... and {listed - _MAX_LISTED} more failed items", file=stderr)
    if not args.quiet:
        elapsed = time.monotonic() - started
        rate = fetched / elapsed if elapsed > 0 else 0.0
        print(
            f"segdl: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed; "
            f"{_human(fetched)} in {elapsed:.2f} s, {_human(rate)}/s",
            file=stderr,
        )
    return EXIT_FAILED if counts["failed"] else EXIT_OK
