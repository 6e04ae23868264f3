"""The command line of cluster batches: `--dask ADDRESS`, `--dask-scheduler-file FILE` and
`--shard-size N`, and the run itself, with the same progress bar, failure lines, report, summary
and exit codes as a local batch (`cli.batch.run_batch_command`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from typing import IO

from ..batch.results import BatchListener, ItemResult
from ..cluster.client import check_address, require_dask
from ..errors import UsageError
from .batch import batch_options, run_batch_command
from .common import EXIT_USAGE

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
    if getattr(args, "checksums", None) is not None:
        print("segdl: error: --checksums cannot be combined with --dask yet", file=stderr)
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

    def start(items: object, listener: BatchListener) -> Iterable[ItemResult]:
        from ..cluster.api import iter_download_cluster

        return iter_download_cluster(
            items,  # type: ignore[arg-type]
            args.dir,
            dask=args.dask,
            scheduler_file=args.dask_scheduler_file,
            shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
            listener=listener,
            **batch_options(args, verify),  # type: ignore[arg-type]
        )

    return run_batch_command(args, stderr, start)
