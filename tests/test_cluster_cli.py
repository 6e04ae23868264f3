"""The command line of cluster batches: usage errors (also without Dask installed), a driver
(`segdl --dask local:2`) killed mid-run and run again, and a real `dask scheduler` with two
`dask worker` processes reached through `--dask-scheduler-file`. Each test runs its own
processes; waits poll a condition with a deadline, never a sleep for timing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import payload
from helpers import cli, files_under, subprocess_env, wait_for
from rangeserver import Faults, RangeHTTPServer, serve_files

distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")  # a dependency of distributed

DEADLINE = 60.0  # seconds: a hang guard, never a timing assertion


def two_hosts(
    server1: RangeHTTPServer, server2: RangeHTTPServer, count: int, faults: Faults | None = None
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, server in enumerate((server1, server2)):
        files = {f"/h{k}-{i:03d}.bin": payload(5000 + i, seed=i + 50 * k) for i in range(count)}
        for path, served in serve_files(server, files, faults).items():
            out[served.url] = files[path]
    return out


def by_name(files: dict[str, bytes]) -> dict[str, bytes]:
    return {url.rsplit("/", 1)[1]: data for url, data in files.items()}


def gets(*servers: RangeHTTPServer) -> set[str]:
    return {
        f"http://{s.host}:{s.port}{r.path}"
        for s in servers
        for r in s.requests
        if r.method == "GET"
    }


def journaled(dest: Path) -> set[str]:
    """URLs the shards' journals hold as done."""
    done: set[str] = set()
    for path in (dest / ".segdl" / "shards").glob("*/journal.sqlite3"):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
            try:
                done |= {r[0] for r in db.execute("SELECT url FROM items WHERE status = 'ok'")}
            finally:
                db.close()
        except sqlite3.Error:
            pass
    return done


def marked(dest: Path) -> set[str]:
    """URLs of the shards whose marker (done.jsonl) is written."""
    urls: set[str] = set()
    for marker in (dest / ".segdl" / "shards").glob("*/done.jsonl"):
        for line in (marker.parent / "items.jsonl").read_text().splitlines():
            urls.add(json.loads(line)["u"][0])
    return urls


# --- usage ----------------------------------------------------------------------------------


def test_without_dask_the_option_is_a_usage_error_naming_the_extra(
    rangeserver: RangeHTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = serve_files(rangeserver, {"/a.bin": b"a" * 10})
    listing = tmp_path / "list.txt"
    listing.write_text(served["/a.bin"].url + "\n")
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(tmp_path / "out"), "--dask", "local:2")
    assert code == 2
    assert err.strip().splitlines() == [
        "segdl: error: --dask: running on a Dask cluster needs Dask distributed: "
        "pip install 'segdl[dask]'"
    ]
    assert not (tmp_path / "out").exists()
    assert not rangeserver.requests


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dask", "local:0"], "local:N takes 1 to"),
        (["--dask", "local:x"], "not a Dask scheduler address"),
        (["--dask", "local:1", "--dask-scheduler-file", "f.json"], "not allowed with"),
        (["--shard-size", "0", "--dask", "local:1"], "must be between 1 and"),
        (["--shard-size", "5"], "--shard-size needs --dask"),
    ],
)
def test_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("http://127.0.0.1:9/a.bin\n")
    code, _, err = cli(capsys, "-i", str(listing), "-d", str(tmp_path / "out"), *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


# --- processes ------------------------------------------------------------------------------


def segdl(listing: Path, dest: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segdl", "-i", str(listing), "-d", str(dest), "-q", *extra]


def test_driver_killed_then_run_again_does_only_unfinished_shards(
    rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    # 5 KB at 25 KB/s: 0.2 s a file, so the run lasts a few seconds and is cut mid-way.
    files = two_hosts(rangeserver, rangeserver2, 12, Faults(rate=25_000))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{url}\n" for url in files))
    dest = tmp_path / "out"
    argv = segdl(listing, dest, "--dask", "local:2", "--shard-size", "3", "-j", "2")
    proc = subprocess.Popen(
        argv, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    children: list[psutil.Process] = []
    try:
        wait_for(lambda: bool(marked(dest)) or proc.poll() is not None, "a finished shard")
        assert proc.poll() is None, proc.communicate()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # The LocalCluster's processes do not outlive the driver.
    _, alive = psutil.wait_procs(children, timeout=15)
    for orphan in alive:
        orphan.kill()
    assert not alive, "worker processes outlived the killed driver"
    done_before = marked(dest) | journaled(dest)
    assert done_before and len(marked(dest)) < len(files)

    rangeserver.reset_stats()
    rangeserver2.reset_stats()
    for server in (rangeserver, rangeserver2):
        for served in server.files:
            served.faults.rate = None
    again = subprocess.run(
        argv, env=subprocess_env(), capture_output=True, text=True, timeout=DEADLINE
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert files_under(dest) == by_name(files)
    assert gets(rangeserver, rangeserver2) & done_before == set()
    assert gets(rangeserver, rangeserver2)  # the unfinished ones were fetched


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[Path]:
    """`dask scheduler --scheduler-file F` and two `dask worker --scheduler-file F`, one thread
    each; yields F once both workers have joined."""
    scheduler_file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    common = ["--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--no-dashboard"]

    def start(*argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*dask, *argv, *common],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=subprocess_env(),
        )

    procs = [start("scheduler", "--port", "0")]
    try:
        wait_for(scheduler_file.exists, "the scheduler file")
        procs += [start("worker", "--nthreads", "1") for _ in range(2)]
        client = distributed.Client(scheduler_file=str(scheduler_file), timeout="30s")
        try:
            client.wait_for_workers(2, timeout=DEADLINE)
            yield scheduler_file
        finally:
            client.shutdown()  # the scheduler and its workers, at once
            client.close()
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_scheduler_file_and_two_dask_workers(
    dask_cluster: Path, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    files = two_hosts(rangeserver, rangeserver2, 10, Faults(rate=200_000))
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{url}\n" for url in files) + "ftp://nope/x\n")
    dest = tmp_path / "out"
    report = tmp_path / "report.jsonl"
    argv = segdl(listing, dest, "--dask-scheduler-file", str(dask_cluster), "--shard-size", "3")
    proc = subprocess.run(
        [*argv, "--report", str(report), "--per-host", "2"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    # The bad line is a failed item, as in a local batch: exit 1, one line for it.
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "segdl: failed: #20 line 21: unsupported URL scheme 'ftp' in 'ftp://nope/x'"
    ]
    assert files_under(dest) == by_name(files)
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(21))
    assert sorted(r["status"] for r in rows).count("ok") == 20
    assert {r["path"] for r in rows if r["status"] == "ok"} == set(by_name(files))
    assert rangeserver.max_concurrent <= 2 and rangeserver2.max_concurrent <= 2
    markers = (dest / ".segdl" / "shards").glob("*/done.jsonl")
    workers = {json.loads(m.read_text().splitlines()[0])["worker"] for m in markers}
    assert len(workers) == 2  # both worker processes ran shards
