"""stream: `segdl URL -o - -n 16` into a pipe, on the noburst server (8 MiB/s per connection).

Four cases per size, every one run as a `bash -c 'set -o pipefail; ...'` pipeline so that they
are measured the same way (wall = the whole pipeline, from just before bash starts until it
exits, interpreter start-up included):

* `segdl URL -o - -n 16 | sha256sum`: the ordered stream into a fast consumer;
* `curl URL | sha256sum`: one connection, the usual way to stream;
* `segdl URL -o FILE -n 16`: the same download written to a file (the noburst command);
* `segdl URL -o - -n 16 | READER`: a consumer that takes at most 32 MiB/s (a small Python
  script, `stream-reader.py` in the temporary directory), so segdl's window fills up and
  backpressure holds the connections back.

Peak RSS is the first command of the pipeline only (segdl, or curl): it runs under its own
GNU `time -f %M -o FILE` inside the pipeline, whose report replaces the harness's (which
would be the largest process of the whole tree). Without GNU time it is the tree's, from
os.wait4, and the report says so.

Every run is checked: the consumer's sha256 (sha256sum's output, or the reader's) against the
source's, or the downloaded file's size and sha256. A non-zero exit of any command of the
pipeline (pipefail) fails the run.

Targets (the issue's): st1 the stream into sha256sum within 1.10 x segdl's file download
(median walls); st2 at least 10 x curl's speed; st3/st4 segdl's peak RSS under 64 MiB + the
window (segdl's default window, 64 MiB: under 128 MiB), with the throttled reader and with
sha256sum.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import checks as ck
from ..measure import verify_download
from ..records import Case, Check, RunRecord, Summary
from ..tools import TOOLS
from ..units import MiB, fmt, human_size
from .base import Scenario

if TYPE_CHECKING:
    from ..runner import Bench

FULL_SIZE = 256 * MiB
QUICK_SIZE = 16 * MiB
WINDOW = 64 * MiB  # segdl's default --window: the runs do not pass one
READER_RATE = 32 * MiB  # bytes/s the throttled consumer takes at most
TARGET_STREAM_VS_FILE = 1.10  # stream wall <= 1.10 x segdl's file download wall
TARGET_STREAM_VS_CURL = 10.0  # stream speed >= 10 x curl's
TARGET_STREAM_RSS = 64 * MiB + WINDOW  # segdl's peak RSS < 64 MiB + the window

READER = '''"""Read stdin at most RATE bytes/s (argv[1]), then print the sha256 of what was read."""
import hashlib
import sys
import time

rate = float(sys.argv[1])
digest = hashlib.sha256()
src = sys.stdin.buffer.raw
buf = bytearray(64 * 1024)
view = memoryview(buf)
total = 0
start = time.monotonic()
while True:
    n = src.readinto(buf)
    if not n:
        break
    digest.update(view[:n])
    total += n
    ahead = total / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
print(digest.hexdigest())
'''

STREAM, CURL, FILE, SLOW = "stream", "curl", "file", "slow-reader"


class Stream(Scenario):
    name = "stream"
    title = "(stream) segdl -o - into a pipe, per-connection rate limit"
    server_kind = "noburst"

    def sizes(self, bench: Bench) -> list[int]:
        override = getattr(bench.opts, "size_stream", None)  # no option yet; kept for symmetry
        if override:
            return list(override)
        return [QUICK_SIZE if bench.quick else FULL_SIZE]

    def reader_path(self, bench: Bench) -> Path:
        return bench.tmp / "stream-reader.py"

    def prepare_files(self, bench: Bench) -> None:
        self.reader_path(bench).write_text(READER)

    def labels(self, bench: Bench) -> dict[str, str]:
        n = bench.opts.conns
        return {
            STREAM: f"segdl -o - -n{n} | sha256sum",
            FILE: f"segdl -o FILE -n{n}",
            SLOW: f"segdl -o - -n{n} | reader {human_size(READER_RATE)}/s",
            CURL: "curl | sha256sum",
        }

    def kind(self, bench: Bench, case: Case) -> str:
        return next(k for k, label in self.labels(bench).items() if label == case.label)

    def cases(self, bench: Bench) -> list[Case]:
        n = bench.opts.conns
        labels = self.labels(bench)
        cases: list[Case] = []
        for size in self.sizes(bench):
            if bench.available("segdl"):
                cases += [
                    Case(self.name, labels[kind], "segdl", n, size) for kind in (STREAM, FILE, SLOW)
                ]
            if bench.available("curl"):
                cases.append(Case(self.name, labels[CURL], "curl", 1, size))
        return cases

    # -- one run ----------------------------------------------------------------------------

    def consumer(self, bench: Bench, kind: str) -> str:
        if kind == SLOW:
            return shlex.join([sys.executable, str(self.reader_path(bench)), str(READER_RATE)])
        sha256sum = shutil.which("sha256sum")
        if sha256sum:
            return shlex.quote(sha256sum)
        reader = [sys.executable, str(self.reader_path(bench)), "inf"]  # no coreutils: unthrottled
        return shlex.join(reader)

    def pipeline(
        self, bench: Bench, case: Case, kind: str, url: str, out: Path, rss: Path, digest: Path
    ) -> list[str]:
        """`bash -c` of the case: its tool under GNU time (when available), then the consumer."""
        if kind == CURL:
            tool = [bench.toolbox.path("curl"), "-q", "--silent", "--show-error", "--fail", url]
        elif kind == FILE:
            tool = bench.toolbox.argv_for(case, url, out)
        else:
            tool = [*bench.segdl_cmd, url, "-o", "-", "-n", str(case.conns), "-q"]
        if bench.time_bin:
            tool = [bench.time_bin, "-f", "%M", "-o", str(rss), "--", *tool]
        command = "set -o pipefail; " + shlex.join(tool)
        if kind != FILE:
            command += f" | {self.consumer(bench, kind)} > {shlex.quote(str(digest))}"
        return ["bash", "-c", command]

    def run_case(self, bench: Bench, case: Case, rep: int) -> RunRecord:
        kind = self.kind(bench, case)
        server = bench.servers[self.server_kind]
        src, source_digest = bench.files[case.size]
        bench.clean_download_dir()
        os.sync()  # write-back of the previous run must not land in this one
        out = bench.dl_dir / "download.bin"
        rss = bench.logs / f"stream-{bench.seq + 1:04d}.rss"
        digest = bench.dl_dir / "sha256.txt"
        argv = self.pipeline(bench, case, kind, server.url(src.name), out, rss, digest)
        ex = bench.execute(case, server, argv)
        if bench.time_bin:
            ex.m.maxrss_kib = None  # the tool's own peak, not the pipeline's largest process
            with contextlib.suppress(OSError, ValueError, IndexError):
                ex.m.maxrss_kib = int(rss.read_text().split()[-1])
        error = ex.failure()
        if error is None:
            if kind == FILE:
                error = verify_download(out, case.size, source_digest)
            else:
                error = check_digest(digest, source_digest)
        bench.clean_download_dir()
        return bench.record(case, rep, ex, error)

    # -- targets and report -----------------------------------------------------------------

    def row(self, bench: Bench, rows: list[Summary], kind: str, size: int) -> Summary | None:
        label = self.labels(bench)[kind]
        return next((r for r in rows if r.label == label and r.size == size), None)

    def checks(self, bench: Bench, rows: list[Summary]) -> list[Check]:
        size = self.sizes(bench)[0]
        n = bench.opts.conns
        stream = self.row(bench, rows, STREAM, size)
        file = self.row(bench, rows, FILE, size)
        curl = self.row(bench, rows, CURL, size)
        slow = self.row(bench, rows, SLOW, size)
        rss_limit = TARGET_STREAM_RSS / MiB
        window = human_size(WINDOW)
        return [
            ck.ratio_at_most(
                f"st1 stream {human_size(size)}: segdl -o - -n{n} into sha256sum, wall <= "
                f"{TARGET_STREAM_VS_FILE}x segdl -o FILE -n{n}",
                stream,
                file,
                lambda r: r.wall_s,
                TARGET_STREAM_VS_FILE,
                ref_name="segdl -o FILE",
            ),
            ck.at_least(
                f"st2 stream {human_size(size)}: segdl -o - -n{n} into sha256sum, >= "
                f"{TARGET_STREAM_VS_CURL:.0f}x curl's speed",
                stream,
                lambda r: curl.wall_s / r.wall_s if curl and curl.wall_s and r.wall_s else None,
                TARGET_STREAM_VS_CURL,
                "x",
                depends=[curl],
            ),
            ck.at_most(
                f"st3 stream {human_size(size)}: segdl peak RSS with a "
                f"{human_size(READER_RATE)}/s reader < 64 MiB + window {window} (max over runs)",
                slow,
                lambda r: r.maxrss_max_mib,
                rss_limit,
                "MiB",
                strict=True,
            ),
            ck.at_most(
                f"st4 stream {human_size(size)}: segdl peak RSS into sha256sum < 64 MiB + "
                f"window {window} (max over runs)",
                stream,
                lambda r: r.maxrss_max_mib,
                rss_limit,
                "MiB",
                strict=True,
            ),
        ]

    def intro(self, bench: Bench) -> str:
        o = bench.opts
        sizes = ", ".join(human_size(s) for s in self.sizes(bench))
        rss = (
            "peak RSS of the pipeline's first command only (GNU time inside the pipeline)"
            if bench.time_bin
            else "peak RSS of the whole pipeline's largest process (no GNU time)"
        )
        return (
            f"{sizes} on the noburst server ({human_size(o.rate)}/s per connection, "
            f"{human_size(o.noburst_chunk)} pieces); segdl with its default window "
            f"({human_size(WINDOW)}). Every case is a `bash -c 'set -o pipefail; ...'` "
            "pipeline, wall = the whole pipeline; the reader takes at most "
            f"{human_size(READER_RATE)}/s; {rss}; CPU is the whole pipeline's (bash, the tool "
            "and the consumer). Output checked by sha256 (the consumer's) or the file's size "
            "and sha256."
        )

    def table(self, bench: Bench, rows: list[Summary]) -> list[str]:
        cols = ["case", "size", "runs ok", "wall s (median)", "min-max s", "MiB/s"]
        cols += ["wall ÷ segdl -o FILE", "speed vs curl", "CPU s", "peak RSS MiB (max)"]
        cols += ["requests", "conns", "served MiB"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        order = {label: i for i, label in enumerate(self.labels(bench).values())}
        for r in sorted(rows, key=lambda r: (r.size, order.get(r.label, 99), TOOLS.index(r.tool))):
            failed = r.status != "ok"
            wall = (
                f"FAIL ({r.runs - r.ok_runs}/{r.runs}: {'; '.join(r.errors)})"
                if failed
                else fmt(r.wall_s)
            )
            file = self.row(bench, rows, FILE, r.size)
            curl = self.row(bench, rows, CURL, r.size)
            vs_file = r.wall_s / file.wall_s if file and file.wall_s and r.wall_s else None
            vs_curl = curl.wall_s / r.wall_s if curl and curl.wall_s and r.wall_s else None
            rss = f"{fmt(r.maxrss_mib, 1)} ({fmt(r.maxrss_max_mib, 1)})"
            cells = [
                r.label.replace("|", "\\|"),  # a pipe would end the Markdown cell
                human_size(r.size),
                f"{r.ok_runs}/{r.runs}",
                wall,
                "" if failed else f"{fmt(r.wall_min_s)}-{fmt(r.wall_max_s)}",
                fmt(r.throughput_mib_s, 1),
                fmt(vs_file, 3, "x"),
                fmt(vs_curl, 1, "x"),
                fmt(r.cpu_s),
                rss,
                fmt(r.requests, 0),
                fmt(r.connections, 0),
                fmt(r.served_mib, 1),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def meta(self, bench: Bench) -> dict[str, Any] | None:
        return {
            "window": WINDOW,
            "reader_rate": READER_RATE,
            "consumer": shutil.which("sha256sum") or "stream-reader.py (no sha256sum)",
        }


def check_digest(path: Path, expected: str) -> str | None:
    """None when the consumer printed the source's sha256."""
    try:
        text = path.read_text().split()
    except OSError:
        return "the consumer wrote no digest"
    if not text:
        return "the consumer wrote no digest"
    if text[0] != expected:
        return "sha256 of the streamed bytes does not match the source"
    return None
