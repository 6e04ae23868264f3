"""Archive scenarios: download and extract in one step (`segdl URL --extract DIR`).

extract-tgz: a tar.gz of poorly compressible data (so decompression is not the bottleneck) and
extract-zip: a zip of many files, both on the noburst server (per-connection rate, no
first-chunk burst), against segdl's plain download of the same file (extraction should hide
behind the download), aria2c -x16 then `tar xzf` / `unzip`, curl piped into `tar xz` (curl then
`unzip` for the zip: unzip cannot read a pipe), and pooch.retrieve with Untar/Unzip when pooch
installs. extract-include: `--include` of one 5 MiB member of a 1 GiB zip, judged by the bytes
the server sent.

Every extracted tree is checked: one sha256 over every file's relative path and contents, in
path order, against the one computed when the archive was written.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shlex
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import checks as ck
from ..measure import sha256_file, verify_download
from ..records import Case, Check, RunRecord, Summary
from ..tools import ARIA2_MAX_CONNS, apt_install, which
from ..units import GiB, MiB, fmt, human_size
from .base import Scenario

if TYPE_CHECKING:
    from ..runner import Bench

_pooch_checked = False  # pooch is looked for (and installed) once per harness run
POOCHFETCH = Path(__file__).resolve().parent.parent / "poochfetch.py"
TARGET_VS_DOWNLOAD = 1.15  # segdl --extract wall <= 1.15 x segdl's plain download
TARGET_VS_ARIA2 = 0.7  # ... and <= 0.7 x aria2c then tar/unzip
TARGET_INCLUDE_SENT = 8 * MiB  # --include of one 5 MiB member: bytes the server sent
INCLUDE_MEMBER = 5 * MiB
INCLUDE_NAME = "wanted/member.bin"

# Labels (one case each); the tool decides the column, the label the command.
DOWNLOAD = "segdl download (no extraction)"
EXTRACT = "segdl --extract"
INCLUDE = f"segdl --extract --include {INCLUDE_NAME}"


@dataclass
class ArchiveFile:
    """A generated archive, its sha256, and the digest of the tree it extracts to."""

    path: Path
    size: int
    sha256: str
    tree: str  # `tree_digest` of what it extracts to (for include: the member alone)
    files: int


class _TreeHash:
    """`tree_digest` of the members as they are written."""

    def __init__(self) -> None:
        self.members: dict[str, bytes] = {}

    def digest(self) -> tuple[str, int]:
        digest = hashlib.sha256()
        for name in sorted(self.members):
            digest.update(name.encode() + b"\0" + self.members[name])
        return digest.hexdigest(), len(self.members)


def write_tgz(path: Path, size: int, member: int = 4 * MiB) -> ArchiveFile:
    """Random members (incompressible) in a gzip'd tar, gzip level 1."""
    tree = _TreeHash()
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for i in range(max(1, size // member)):
            name = f"data/part-{i:04d}.bin"
            data = os.urandom(member)
            tree.members[name] = hashlib.sha256(data).digest()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return _finish(path, tree)


def write_zip(path: Path, size: int, member: int) -> ArchiveFile:
    """Many random members, deflate level 1 (stored blocks: decompression is cheap)."""
    tree = _TreeHash()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for i in range(max(1, size // member)):
            name = f"data/{i // 256:03d}/file-{i:05d}.bin"
            data = os.urandom(member)
            tree.members[name] = hashlib.sha256(data).digest()
            archive.writestr(name, data)
    return _finish(path, tree)


def write_include_zip(path: Path, size: int, member: int = 8 * MiB) -> ArchiveFile:
    """Stored members of `member` bytes with one 5 MiB member in the middle; `tree` is the
    digest of that member alone, as extracted."""
    tree = _TreeHash()
    count = max(2, size // member)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"big/{i:04d}.bin", os.urandom(member))
            if i == count // 2:
                data = os.urandom(INCLUDE_MEMBER)
                tree.members[INCLUDE_NAME] = hashlib.sha256(data).digest()
                archive.writestr(INCLUDE_NAME, data)
    return _finish(path, tree)


def _finish(path: Path, tree: _TreeHash) -> ArchiveFile:
    digest, files = tree.digest()
    return ArchiveFile(path, path.stat().st_size, sha256_file(path), digest, files)


def tree_digest(root: Path) -> tuple[str, int]:
    """One sha256 over every regular file under `root`, in path order: its relative path, a
    NUL, the sha256 of its bytes; and the number of files. segdl's own folder (`.segdl`, where
    an extraction leaves its record) is not the archive's."""
    digest = hashlib.sha256()
    count = 0
    files = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for path in sorted(p for p in files if p.relative_to(root).parts[0] != ".segdl"):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
        count += 1
    return digest.hexdigest(), count


class ArchiveScenario(Scenario):
    """One archive per run, extracted into DIR/out (or downloaded as DIR/archive)."""

    server_kind = "noburst"
    single_file = False
    kind = "tar"  # tar or zip: which extractor the peers use
    full_size = 256 * MiB
    quick_size = 16 * MiB

    size_option = "size_extract"

    def sizes(self, bench: Bench) -> list[int]:
        override = getattr(bench.opts, self.size_option, None)
        return [override or (self.quick_size if bench.quick else self.full_size)]

    def archive_name(self) -> str:
        return f"{self.name}.{'tar.gz' if self.kind == 'tar' else 'zip'}"

    def write(self, path: Path, size: int) -> ArchiveFile:
        raise NotImplementedError

    def prepare_files(self, bench: Bench) -> None:
        started = time.perf_counter()
        archive = self.write(bench.www / self.archive_name(), self.sizes(bench)[0])
        self.archive = archive
        print(
            f"  {archive.path.name:18s} {human_size(archive.size):>9s}  {archive.files} files, "
            f"sha256 {archive.sha256[:16]}...  ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        self._setup_peers(bench)

    def _setup_peers(self, bench: Bench) -> None:
        """unzip (apt) and pooch (pip), when missing and installing is allowed."""
        if self.kind == "zip" and not which("unzip") and not bench.opts.no_install:
            apt_install(["unzip"])
        global _pooch_checked
        if _pooch_checked:
            return
        _pooch_checked = True
        if importlib.util.find_spec("pooch") is None and not bench.opts.no_install:
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "pooch"]
            print(f"  installing pooch: {shlex.join(cmd)}", flush=True)
            subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
            importlib.invalidate_caches()
        if importlib.util.find_spec("pooch") is None:
            bench.notes.append("pooch is not installed (pip install pooch failed): not run")

    def pooch_available(self) -> bool:
        return importlib.util.find_spec("pooch") is not None

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        a = min(n, ARIA2_MAX_CONNS)
        size = self.sizes(bench)[0]
        extractor = "tar xzf" if self.kind == "tar" else "unzip"
        cases: list[Case] = []
        if bench.available("segdl"):
            cases.append(Case(self.name, f"{EXTRACT} -n{n}", "segdl", n, size))
            cases.append(Case(self.name, f"{DOWNLOAD} -n{n}", "segdl", n, size))
        if bench.available("aria2c") and which(extractor.split()[0]):
            cases.append(Case(self.name, f"aria2c -x{a} then {extractor}", "aria2c", n, size))
        if bench.available("curl") and which(extractor.split()[0]):
            label = "curl | tar xz" if self.kind == "tar" else "curl then unzip"
            cases.append(Case(self.name, label, "curl", 1, size))
        if self.pooch_available():
            label = f"pooch.retrieve + {'Untar' if self.kind == 'tar' else 'Unzip'}"
            cases.append(Case(self.name, label, "pooch", 1, size))
        return cases

    def argv(self, bench: Bench, case: Case, url: str) -> list[str]:
        out = bench.dl_dir / "out"
        archive = bench.dl_dir / "archive"
        n = str(case.conns)
        seg = bench.segdl_cmd
        if case.label.startswith(DOWNLOAD):
            return [*seg, url, "-o", str(archive), "-n", n, "-q"]
        if case.label.startswith(INCLUDE):
            return [*seg, url, "--extract", str(out), "-n", n, "-q", "--include", INCLUDE_NAME]
        if case.label.startswith(EXTRACT):
            return [*seg, url, "--extract", str(out), "-n", n, "-q"]
        q = shlex.quote
        if case.tool == "pooch":
            cache = bench.dl_dir / "cache"
            return [sys.executable, str(POOCHFETCH), url, str(cache), str(out), self.kind]
        if self.kind == "tar":
            extract = f"mkdir -p {q(str(out))} && tar xzf {q(str(archive))} -C {q(str(out))}"
        else:
            extract = f"unzip -q {q(str(archive))} -d {q(str(out))}"
        if case.tool == "aria2c":
            a = min(case.conns, ARIA2_MAX_CONNS)
            aria = [
                bench.toolbox.path("aria2c"),
                "--no-conf=true",
                f"-x{a}",
                f"-s{a}",
                "-k1M",
                f"--file-allocation={bench.toolbox.aria2_alloc}",
                f"--dir={archive.parent}",
                f"--out={archive.name}",
                "--allow-overwrite=true",
                "--auto-file-renaming=false",
                "--quiet=true",
                "--summary-interval=0",
                url,
            ]
            return ["bash", "-c", f"{shlex.join(aria)} && {extract}"]
        curl = shlex.join([bench.toolbox.path("curl"), "-q", "--silent", "--show-error", "--fail"])
        if self.kind == "tar":
            pipe = f"mkdir -p {q(str(out))} && {curl} {q(url)} | tar xzf - -C {q(str(out))}"
            return ["bash", "-c", f"set -o pipefail; {pipe}"]
        return ["bash", "-c", f"{curl} -o {q(str(archive))} {q(url)} && {extract}"]

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        server = bench.servers[self.server_kind]
        bench.clean_download_dir()
        os.sync()  # write-back of the previous run must not land in this one
        argv = self.argv(bench, case, server.url(self.archive.path.name))
        ex = bench.execute(case, server, argv)
        error = ex.failure() or self.verify(bench, case)
        bench.clean_download_dir()
        return bench.record(case, rep, ex, error)

    def verify(self, bench: Bench, case: Case) -> str | None:
        if case.label.startswith(DOWNLOAD):
            return verify_download(bench.dl_dir / "archive", self.archive.size, self.archive.sha256)
        out = bench.dl_dir / "out"
        if not out.is_dir():
            return "no extracted folder"
        digest, files = tree_digest(out)
        if files != self.archive.files:
            return f"{files} files extracted, expected {self.archive.files}"
        if digest != self.archive.tree:
            return "the extracted files differ from the archive's (sha256 over the tree)"
        return None

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        size = self.sizes(bench)[0]
        seg = bench.find(rows, self.name, "segdl", n, size, f"{EXTRACT} -n{n}")
        plain = bench.find(rows, self.name, "segdl", n, size, f"{DOWNLOAD} -n{n}")
        aria = bench.find_tool(rows, self.name, "aria2c")
        extractor = "tar xzf" if self.kind == "tar" else "unzip"
        tag = self.check_tag
        return [
            ck.ratio_at_most(
                f"{tag}1 {self.name}: segdl --extract wall <= {TARGET_VS_DOWNLOAD}x segdl's plain "
                "download of the same file",
                seg,
                plain,
                lambda r: r.wall_s,
                TARGET_VS_DOWNLOAD,
                ref_name="segdl download",
            ),
            ck.ratio_at_most(
                f"{tag}2 {self.name}: segdl --extract wall <= {TARGET_VS_ARIA2}x aria2c -x16 "
                f"then {extractor}",
                seg,
                aria,
                lambda r: r.wall_s,
                TARGET_VS_ARIA2,
                ref_name="aria2c+extract",
            ),
        ]

    check_tag = "x"

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        archive = getattr(self, "archive", None)
        what = (
            f"{human_size(archive.size)}, {archive.files} files"
            if archive is not None
            else human_size(self.sizes(bench)[0])
        )
        return (
            f"{self.description} ({what}) on the noburst server ({human_size(o.rate)}/s per "
            f"connection, {human_size(o.noburst_chunk)} pieces); every tool ends with the "
            "extracted tree checked (sha256 over every path and file). The plain download is "
            "the reference for extraction hidden behind the download; aria2c's and curl's "
            "rows are one shell command (download, then extract; curl is piped into tar)."
        )

    description = ""

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        n = bench.opts.conns
        size = self.sizes(bench)[0]
        plain = bench.find(rows, self.name, "segdl", n, size, f"{DOWNLOAD} -n{n}")
        aria = bench.find_tool(rows, self.name, "aria2c")
        cols = ["tool", "size", "runs ok", "wall s (median)", "min-max s", "MiB/s"]
        cols += ["wall ÷ segdl download", "wall ÷ aria2c+extract", "CPU s", "peak RSS MiB"]
        cols += ["requests", "conns", "served MiB"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        order = {"segdl": 0, "aria2c": 1, "curl": 2, "pooch": 3}
        for r in sorted(rows, key=lambda r: (order.get(r.tool, 9), r.label)):
            failed = r.status != "ok"
            wall = (
                f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
                if failed
                else fmt(r.wall_s)
            )
            cells = [
                r.label,
                human_size(r.size),
                f"{r.ok_runs}/{r.runs}",
                wall,
                "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
                fmt(r.throughput_mib_s, 1),
                _ratio(r, plain),
                _ratio(r, aria),
                fmt(r.cpu_s),
                fmt(r.maxrss_mib, 1),
                fmt(r.requests, 0),
                fmt(r.connections, 0),
                fmt(r.served_mib, 1),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def meta(self, bench: Bench) -> dict[str, Any] | None:
        archive = getattr(self, "archive", None)
        if archive is None:
            return None
        return {
            "archive": archive.path.name,
            "bytes": archive.size,
            "files": archive.files,
            "sha256": archive.sha256,
        }


def _ratio(row: Summary, ref: Summary | None) -> str:
    if ref is None or not ref.wall_s or row.wall_s is None:
        return "-"
    return fmt(row.wall_s / ref.wall_s, 3, "x")


class ExtractTgz(ArchiveScenario):
    name = "extract-tgz"
    title = "(extract a) download and extract a tar.gz"
    kind = "tar"
    check_tag = "xt"
    description = "A tar.gz of random data in 4 MiB members, gzip level 1"

    def write(self, path: Path, size: int) -> ArchiveFile:
        return write_tgz(path, size)


class ExtractZip(ArchiveScenario):
    name = "extract-zip"
    title = "(extract b) download and extract a zip of many files"
    kind = "zip"
    check_tag = "xz"
    description = "A zip of random 128 KiB files (deflate level 1)"

    def write(self, path: Path, size: int) -> ArchiveFile:
        return write_zip(path, size, 128 << 10)


class ExtractInclude(ArchiveScenario):
    """`--include` of one 5 MiB member from a 1 GiB zip (--quick: 64 MiB): what the server
    sent must stay under 8 MiB (the head, the tail, the central directory, the member, and
    what the stream fetched past the member before it was closed)."""

    name = "extract-include"
    title = "(extract c) --include of one 5 MiB member of a 1 GiB zip"
    kind = "zip"
    full_size = 1 * GiB
    quick_size = 64 * MiB
    size_option = "size_extract_include"
    description = "A zip of stored 8 MiB random members with one 5 MiB member in the middle"

    def write(self, path: Path, size: int) -> ArchiveFile:
        return write_include_zip(path, size)

    def _setup_peers(self, bench: Bench) -> None:
        pass

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        if not bench.available("segdl"):
            return []
        return [Case(self.name, f"{INCLUDE} -n{n}", "segdl", n, self.sizes(bench)[0])]

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        record = super().run_case(bench, case, rep)
        record.throughput_mib_s = None  # the archive's size is not what was fetched
        return record

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        n = bench.opts.conns
        row = bench.find(rows, self.name, "segdl", n, self.sizes(bench)[0])
        size = human_size(self.sizes(bench)[0])
        return [
            ck.at_most(
                f"xi1 {self.name}: --include of one {human_size(INCLUDE_MEMBER)} member of a "
                f"{size} zip: the server sent < {human_size(TARGET_INCLUDE_SENT)}",
                row,
                lambda r: r.served_mib,
                TARGET_INCLUDE_SENT / MiB,
                "MiB",
                digits=2,
                strict=True,
            )
        ]

    def intro(self, bench: Bench) -> str:
        archive = getattr(self, "archive", None)
        size = human_size(archive.size if archive else self.sizes(bench)[0])
        return (
            f"{self.description} ({size}), on the noburst server: `segdl URL --extract DIR "
            f"--include {INCLUDE_NAME}` fetches the zip's tail and central directory, then "
            "that member's range only. Judged by the bytes the server sent (its access log); "
            "the extracted member is checked."
        )


__all__ = ["ExtractInclude", "ExtractTgz", "ExtractZip", "tree_digest"]
