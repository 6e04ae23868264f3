"""The command's side of `--extract`: its options, the progress bar, the summary line and the exit
codes of `segdl URL --extract DIR`, and the extraction of each archive of a batch
(`segdl -i LIST --extract DIR`). `segdl.cli` calls in here, and imports this module only then.

Batches: the batch downloads the archives as it downloads any file (one scheduler for every
connection, per-host caps, mirrors, `--accept`, the journal, the report), into `-d DIR` when
given (the archives are kept, and a re-run skips their downloads) or else into a temporary
folder inside the extraction folder, removed at the end. Each archive is extracted, from the
caller's thread, as soon as the batch hands it over, while the other items keep downloading:
extraction overlaps the downloads across items rather than within one archive. Streaming each
archive through its own `segdl.extract` would have bypassed that scheduler (its caps, its
fairness across hosts, its keep-alive connections) for little gain: the archives of a batch
are usually many and small to medium, where the time is in the number of files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ..archive.remote import ExtractListener, RemoteExtractResult, extract, extract_file
from ..archive.safety import Limits
from ..bars import TqdmListener
from ..batch.results import ItemResult
from ..core.destination import taken
from ..core.events import StartInfo
from ..core.options import parse_size
from ..core.sink import destination_error
from ..core.units import human_size, plural
from ..core.verify import Checksum
from ..errors import ArchiveLimitError, DestinationError, Interrupted, SegdlError, UsageError
from .common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Warnings,
    after_bar,
    arg_count,
    matched,
    progress_mode,
    progress_report,
    reporting,
)

# The longest first: ".tar.gz" before ".gz".
ARCHIVE_SUFFIXES = (
    ".tar.gz",
    ".tar.bz2",
    ".tar.xz",
    ".tar.zst",
    ".tgz",
    ".tbz2",
    ".tbz",
    ".txz",
    ".tzst",
    ".tar",
    ".zip",
)
_EXTRACT_ONLY = (
    "strip_components",
    "include",
    "keep_archive",
    "max_extract_size",
    "max_members",
    "max_ratio",
)
# The options that set the bomb limits, by the `segdl.extract` keyword errors name them with.
LIMIT_OPTIONS = {
    "max_size": "--max-extract-size",
    "max_members": "--max-members",
    "max_ratio": "--max-ratio",
}


def _members(text: str) -> int:
    value = arg_count(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 1:  # NaN too
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def arg_size(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `--extract` options, as one group of the command's parser."""
    group = parser.add_argument_group("archives (--extract)")
    group.add_argument(
        "--extract",
        metavar="DIR",
        help="unpack the archive (zip, tar, tar.gz/bz2/xz/zst, known by its first bytes) into "
        "DIR, created if needed, while it downloads; with -i, each archive into its own "
        "folder in DIR named by --template without the archive's extension",
    )
    group.add_argument(
        "--strip-components",
        type=arg_count,
        default=0,
        metavar="N",
        help="drop the first N components of every member's path, as tar does",
    )
    group.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="extract only the members matching GLOB (repeatable; '*' also matches '/'; a "
        "directory brings what is under it); from a zip, only those members are fetched",
    )
    group.add_argument(
        "--keep-archive",
        metavar="FILE",
        help="also keep the archive as FILE (with -i: use -d DIR to keep the archives)",
    )
    group.add_argument(
        "--max-extract-size",
        type=arg_size,
        metavar="SIZE",
        help="refuse an archive that would write more than SIZE (default: the free space)",
    )
    group.add_argument(
        "--max-members",
        type=_members,
        metavar="N",
        help="refuse an archive of more than N members (default 1000000)",
    )
    group.add_argument(
        "--max-ratio",
        type=_ratio,
        metavar="N",
        help="refuse a member, or an archive, that expands more than N times beyond its "
        "first MiB (default 200)",
    )


def check_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, is_batch: bool
) -> None:
    """Usage errors of the `--extract` options (exit code 2, through `parser.error`)."""
    if args.extract is None:
        given = [
            "--" + name.replace("_", "-")
            for name in _EXTRACT_ONLY
            if getattr(args, name) not in (None, 0)
        ]
        if given:
            parser.error(f"{', '.join(given)}: only with --extract DIR")
        return
    if getattr(args, "dask", None) is not None or getattr(args, "dask_scheduler_file", None):
        parser.error("--extract does not run on a Dask cluster (yet): leave out --dask")
    if args.output:
        parser.error(
            "--extract DIR and -o FILE: give one destination (--keep-archive FILE "
            "keeps the archive too)"
        )
    if args.if_exists == "rename":
        parser.error("--if-exists rename does not apply to --extract (use --overwrite)")
    if is_batch:
        if args.keep_archive:
            parser.error(
                "--keep-archive names one file: with several URLs or -i, -d DIR keeps the archives"
            )
        return
    if args.dir:
        parser.error(
            "with one URL, --extract DIR is where the files go (--keep-archive FILE "
            "keeps the archive)"
        )


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        max_size=args.max_extract_size,
        max_members=args.max_members if args.max_members is not None else 1_000_000,
        max_ratio=args.max_ratio if args.max_ratio is not None else 200.0,
    )


def message(exc: SegdlError) -> str:
    """The error's message as the command shows it: a bomb limit names the option that sets
    it (`--max-ratio`), not the library's keyword."""
    text = str(exc)
    rule = getattr(exc, "rule", None)
    if isinstance(exc, ArchiveLimitError) and rule in LIMIT_OPTIONS:
        tail = f"({rule})"
        if text.endswith(tail):
            text = f"{text[: -len(tail)]}({LIMIT_OPTIONS[rule]})"
    return text


# -- one URL -------------------------------------------------------------------------------------


class ExtractBar(TqdmListener, ExtractListener):
    """One bar for the download, named after DIR, with the extraction's progress after it. It
    stays open until `close()`: extraction can go on after the transfer ended."""

    def __init__(self, dest: Path, file: IO[str] | None = None) -> None:
        super().__init__(file=file)
        self._dest = dest
        self._lock = threading.Lock()
        self._connections = 0
        self._members = 0

    def postfix(self, connections: int) -> str:
        # Short: the line must fit in 80 columns (tqdm cuts what does not); the bytes written
        # are in the summary line.
        return f"{connections} conn, {self._members} extracted"

    def start(self, info: StartInfo) -> None:
        with self._lock:
            super().start(replace(info, path=self._dest))

    def progress(self, done: int, total: int | None, connections: int) -> None:
        with self._lock:
            self._connections = connections
            super().progress(done, total, connections)

    def extracting(self, members: int, written: int) -> None:
        with self._lock:
            self._members = members
            self._open()
            if self._bar is not None:
                self._bar.set_postfix_str(self.postfix(self._connections))

    def verifying(self, check: Checksum) -> None:
        with self._lock:
            super().verifying(check)

    def finish(self, done: int) -> None:
        with self._lock:
            self._connections = 0
            if self._bar is not None:
                self._bar.update(done - self._bar.n)

    def close(self) -> None:
        with self._lock:
            done = self._bar.n if self._bar is not None else 0
            super().finish(done)


def summary(result: RemoteExtractResult) -> str:
    """The one line printed after an extraction."""
    if result.already_extracted:
        return f"{result.dest}: already extracted ({result.members} members from {result.url})"
    parts = [
        f"{result.dest}: {plural(result.members, 'member')}, "
        f"{human_size(result.bytes_written)} written",
        f"({result.format}, {human_size(result.fetched)} fetched) in {result.elapsed:.2f} s",
    ]
    if result.skipped:
        parts[-1] += f", {result.skipped} left out"
    if result.archive is not None:
        parts[-1] += f", archive kept as {result.archive}"
    return " ".join(parts) + matched(result.verified)


def run_single(args: argparse.Namespace, common: dict[str, Any], stderr: IO[str]) -> int:
    """`segdl URL --extract DIR`."""
    dest = Path(args.extract)
    bar: ExtractBar | None = None
    listener: ExtractListener
    report = progress_report(args, stderr)
    if report is not None:
        listener = report
    elif progress_mode(args, stderr) == "bar":
        listener = bar = ExtractBar(dest, file=stderr)
    else:
        listener = Warnings(stderr)
    options = {k: v for k, v in common.items() if k not in ("resume", "direct_io")}
    limits = _limits(args)
    try:
        with reporting(report):
            result = extract(
                args.urls[0],
                dest,
                include=args.include,
                strip_components=args.strip_components,
                keep_archive=args.keep_archive,
                overwrite=args.if_exists == "overwrite",
                max_size=limits.max_size,
                max_members=limits.max_members,
                max_ratio=limits.max_ratio,
                window=args.window,
                listener=listener,
                **options,
            )
    except UsageError as exc:
        after_bar(bar, f"segdl: error: {exc}", stderr)
        return EXIT_USAGE
    except (Interrupted, KeyboardInterrupt):
        after_bar(bar, f"segdl: interrupted; {dest} is as it was", stderr)
        return EXIT_INTERRUPTED
    except SegdlError as exc:
        after_bar(bar, f"segdl: error: {message(exc)}", stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(summary(result), file=stderr)
    return EXIT_OK


# -- batches -------------------------------------------------------------------------------------


def folder_name(relative: PurePosixPath) -> PurePosixPath:
    """The folder an archive saved as `relative` is extracted into: its name without the
    archive's extension (`data.tar.gz` -> `data`), else its name as it is (`set-0`)."""
    name = relative.name
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return relative.with_name(name[: -len(suffix)])
    return relative


class BatchExtraction:
    """`-i LIST --extract DIR`: see the module docstring. `results` wraps the batch's results,
    extracting each archive as it comes; `close` removes the temporary folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = Path(args.extract)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise destination_error(exc, self.root, "create directory") from exc
        if not self.root.is_dir():
            raise DestinationError(f"{self.root} exists and is not a directory")
        self.keep = args.dir is not None
        if args.dir is not None:
            self.folder = Path(args.dir)
        else:
            try:
                self.folder = Path(tempfile.mkdtemp(prefix=".segdl-batch-", dir=self.root))
            except OSError as exc:
                raise destination_error(exc, self.root, "make a temporary folder in") from exc
        self.overwrite = args.if_exists == "overwrite"
        self.skip_existing = args.if_exists in (None, "skip")
        self.include = args.include
        self.strip_components = args.strip_components
        self.limits = _limits(args)
        self.claimed: dict[Path, int] = {}  # folder -> the item extracted into it

    @property
    def download_dir(self) -> str:
        return str(self.folder)

    def results(self, results: Iterable[ItemResult]) -> Iterator[ItemResult]:
        for item in results:
            if item.status == "failed" or item.path is None:
                yield item
            else:
                yield self._extract(item, item.path)

    def _extract(self, item: ItemResult, archive: Path) -> ItemResult:
        try:
            relative = PurePosixPath(archive.relative_to(self.folder).as_posix())
        except ValueError:
            relative = PurePosixPath(archive.name)
        target = self.root.joinpath(*folder_name(relative).parts)
        try:
            other = self.claimed.setdefault(target, item.index)
            if other != item.index:
                error = f"its folder {target} is taken by #{other} (give a --template)"
                return replace(item, status="failed", path=target, error=error)
            collision = self._collision(target, archive)
            if collision is not None:
                return replace(item, status="failed", path=target, error=collision)
            if self.skip_existing and taken(target):
                return replace(item, status="skipped", path=target)
            extract_file(
                archive,
                target,
                include=self.include,
                strip_components=self.strip_components,
                overwrite=self.overwrite,
                limits=self.limits,
            )
        except SegdlError as exc:
            return replace(item, status="failed", path=target, error=message(exc))
        finally:
            if not self.keep:
                with contextlib.suppress(OSError):
                    archive.unlink()
        return replace(item, path=target)

    def _collision(self, target: Path, archive: Path) -> str | None:
        """Why `target` cannot be the folder of `archive`: it is a path the run itself writes
        (the archive, when -d is --extract's folder and the name has no archive extension; or
        the folder of the downloads), or None."""
        where, folder = Path(os.path.abspath(target)), Path(os.path.abspath(self.folder))
        if where == Path(os.path.abspath(archive)):
            return (
                f"its folder {target} would be the archive itself (with -d and --extract the "
                "same folder, end --template with the archive's extension, e.g. '.zip')"
            )
        if where == folder or where in folder.parents:
            return f"its folder {target} holds the downloaded archives (-d {self.folder})"
        return None

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)


__all__ = [
    "BatchExtraction",
    "ExtractBar",
    "add_arguments",
    "check_arguments",
    "folder_name",
    "message",
    "run_single",
    "summary",
]
