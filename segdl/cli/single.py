"""One URL: a download to a file, or a stream to standard output (`-o -`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import IO

from ..api import download
from ..api import open as segdl_open
from ..bars import TqdmListener
from ..core.cookies import NO_COOKIES
from ..core.events import TransferListener
from ..core.units import human_size
from ..errors import Interrupted, SegdlError, UsageError
from ..progress import ProgressReport
from .common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Warnings,
    progress_mode,
    progress_report,
    reporting,
    summary,
)


def common_options(args: argparse.Namespace, verify: bool | str) -> dict[str, object]:
    """The options a single download and a batch share."""
    return {
        "connections": args.connections,
        "min_split": args.min_split,
        "headers": args.header,
        "timeout": args.timeout,
        "connect_timeout": args.connect_timeout,
        "retries": args.retries,
        "resume": not args.no_resume,
        "checksum": args.checksum,
        "verify": verify,
        "max_redirects": args.max_redirects,
        "location_trusted": args.location_trusted,
        "allow_downgrade": args.allow_downgrade,
        "trust_env": not args.no_proxy_env,
        "transport": args.transport,
        "http_version": args.http_version,
        "streams": args.streams,
        "proxy": args.proxy,
        "noproxy": args.noproxy,
        "direct_io": not args.no_direct_io,
        # Identity (issue 19): -b strings and --load-cookies, parsed already, in one set.
        "user_agent": args.user_agent,
        "cookies": sum(args.cookie, NO_COOKIES) + (args.load_cookies or NO_COOKIES),
        "limit_rate": args.limit_rate,
        "limit_rate_per_host": args.limit_rate_per_host,
    }


def run_download(args: argparse.Namespace, verify: bool | str, stderr: IO[str]) -> int:
    listener: TransferListener
    report = progress_report(args, stderr)
    if report is not None:
        listener = report
    elif progress_mode(args, stderr) == "bar":
        listener = TqdmListener(file=stderr)
    else:
        listener = Warnings(stderr)
    if args.output == "-":
        return run_to_stdout(args, verify, stderr, listener, report)
    try:
        with reporting(report):
            result = download(
                args.urls[0],
                args.output,
                directory=args.dir,
                if_exists=args.if_exists or "error",
                listener=listener,
                **common_options(args, verify),  # type: ignore[arg-type]
            )
    except UsageError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"segdl: {exc}", file=stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("segdl: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    if not args.quiet:
        print(summary(result), file=stderr)
    return EXIT_OK


def run_to_stdout(
    args: argparse.Namespace,
    verify: bool | str,
    stderr: IO[str],
    listener: TransferListener,
    report: ProgressReport | None = None,
) -> int:
    """`-o -`: the file in order on stdout; the bar and messages stay on stderr."""
    common = common_options(args, verify)
    for key in ("resume", "direct_io"):
        common.pop(key)
    out = sys.stdout.buffer
    started = time.monotonic()
    written = 0
    try:
        with (
            reporting(report),
            segdl_open(
                args.urls[0],
                window=args.window,
                listener=listener,
                **common,  # type: ignore[arg-type]
            ) as remote,
        ):
            chunk = bytearray(1 << 20)
            view = memoryview(chunk)
            while n := remote.readinto(chunk):
                out.write(view[:n])
                written += n
            out.flush()
    except BrokenPipeError:
        # The reader went away (`| head -c 100`): stop at once, quietly. Point stdout at
        # /dev/null so that the interpreter's last flush does not complain again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"segdl: error: {exc}", file=stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        print("segdl: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        # What was written cannot be taken back: a non-zero exit tells a pipefail pipeline.
        print(f"segdl: error: {exc} (after {written} bytes on stdout)", file=stderr)
        return EXIT_FAILED
    if not args.quiet:
        elapsed = time.monotonic() - started
        rate = written / elapsed if elapsed > 0 else 0.0
        print(
            f"segdl: {human_size(written)} to stdout in {elapsed:.2f} s, {human_size(rate)}/s",
            file=stderr,
        )
    return EXIT_OK
