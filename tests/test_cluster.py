"""Batches on a Dask cluster (`segdl.cluster`) against the loopback range servers on two hosts
(127.0.0.1 and 127.0.0.2): the same files as a local batch, the per-host cap held across
workers at the server, a worker killed mid-run, a shard that keeps killing its workers, re-runs
that skip finished shards, and a worker that cannot see the directory.

One LocalCluster of two one-thread worker processes serves the module; the tests that need
their own processes (the command line, a driver killed, `dask scheduler` + `dask worker`) are
in test_cluster_cli.py. Nothing here sleeps to make a timing assertion: waits poll a condition
with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import payload
from helpers import files_under, wait_for
from rangeserver import Faults, RangeHTTPServer, pattern_bytes, serve_files

from segdl.api import Listener, download_many
from segdl.batch.manifest import Record, read_manifest
from segdl.batch.results import ItemResult
from segdl.cluster import ClusterError, DirectoryNotShared, host_group, iter_download_cluster
from segdl.cluster.driver import Driver
from segdl.cluster.shards import GROUPS, ShardWriter, decode_row, encode_row, read_shard
from segdl.cluster.task import to_row

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

MiB = 1 << 20
DEADLINE = 60.0  # seconds: a hang guard, never a timing assertion


# --- helpers --------------------------------------------------------------------------------


def by_index(results: list[ItemResult]) -> dict[int, ItemResult]:
    indexed = {r.index: r for r in results}
    assert len(indexed) == len(results), "two results for one item"
    return indexed


def gets(*servers: RangeHTTPServer) -> Counter[str]:
    """GETs per URL over the servers."""
    count: Counter[str] = Counter()
    for server in servers:
        for record in server.requests:
            if record.method == "GET":
                count[f"http://{server.host}:{server.port}{record.path}"] += 1
    return count


def shard_of(directory: Path) -> dict[str, str]:
    """URL -> the shard it was put in, from the shard files."""
    out: dict[str, str] = {}
    for items in (directory / ".segdl" / "shards").glob("*/items.jsonl"):
        for line in items.read_text().splitlines():
            out[json.loads(line)["u"][0]] = items.parent.name
    return out


class Background:
    """A cluster batch running in a thread; `results()` waits for its end."""

    def __init__(self, **kwargs: Any) -> None:
        self.out: list[ItemResult] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.out.extend(iter_download_cluster(**kwargs))
        except BaseException as exc:
            self.error = exc

    def alive(self) -> bool:
        return self._thread.is_alive()

    def results(self) -> list[ItemResult]:
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the cluster batch did not end"
        if self.error is not None:
            raise self.error
        return self.out


def processing(client: Any, needle: str) -> str | None:
    """The address of a worker running a task whose key contains `needle`."""
    for address, keys in client.processing().items():
        if any(needle in str(key) for key in keys):
            return str(address)
    return None


def kill_worker(client: Any, address: str) -> None:
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two one-thread worker processes; a shard whose workers die twice fails (instead of
    Dask's three times), which keeps the test of such a shard short."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def ready(client: Any) -> Any:
    """The module's client, with both workers up (a test before may have killed one)."""
    client.wait_for_workers(2, timeout=DEADLINE)
    return client


def two_hosts(
    server1: RangeHTTPServer,
    server2: RangeHTTPServer,
    count: int,
    faults: Faults | None = None,
    size: int = 3000,
) -> dict[str, bytes]:
    """`count` files on each host; URL -> bytes."""
    out: dict[str, bytes] = {}
    for k, server in enumerate((server1, server2)):
        files = {f"/h{k}-{i:03d}.bin": payload(size + i, seed=i + 100 * k) for i in range(count)}
        for path, served in serve_files(server, files, faults).items():
            out[served.url] = files[path]
    return out


# --- pure parts -----------------------------------------------------------------------------


def test_host_group_is_stable_and_ignores_the_path() -> None:
    a = host_group("http://Example.org/a.jpg")
    assert a == host_group("http://example.org:80/b/c.png?x=1")
    assert 0 <= a < GROUPS
    # BLAKE2b of "http://example.org:80": the same on every machine, unlike hash().
    assert a == 10
    groups = {host_group(f"https://h{i}.example/x") for i in range(200)}
    assert len(groups) == GROUPS  # hosts spread over every group


def test_shard_writer_cuts_groups_in_input_order(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, shard_size=3)
    closed = []
    records = [Record(i, i + 1, (f"http://h/{i}",), {"k": "v"}, out=None) for i in range(8)]
    for record in records:
        shard = writer.add(record.index % 2, record)
        if shard is not None:
            closed.append(shard)
    closed += writer.finish()
    assert [(s.id, s.items) for s in closed] == [
        ("g00-000000", 3),
        ("g01-000000", 3),
        ("g00-000001", 1),
        ("g01-000001", 1),
    ]
    back = read_shard(tmp_path, "g00-000000", closed[0].digest)
    assert back == [records[0], records[2], records[4]]
    assert read_shard(tmp_path, "g00-000000", "0" * 32) is None  # another run's shard


def test_rows_round_trip(tmp_path: Path) -> None:
    result = ItemResult(
        3, "http://h/x", tmp_path / "d" / "x", "failed", 503, 12, 0.5, 2, "HTTP 503 \udcff"
    )
    row = to_row(result, tmp_path)
    assert row.path == "d/x"
    assert decode_row(encode_row(row)) == row


# --- on the cluster -------------------------------------------------------------------------


class Recorder(Listener):
    def __init__(self) -> None:
        self.progress: list[tuple[int, int | None, int, int]] = []
        self.items = 0

    def item_done(self, result: ItemResult) -> None:
        self.items += 1

    def batch_progress(
        self, items: int, total: int | None, done: int, failed: int, connections: int
    ) -> None:
        self.progress.append((items, total, done, failed))


def test_same_files_and_results_as_a_local_batch(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    files = two_hosts(rangeserver, rangeserver2, 12)
    big = serve_files(rangeserver, {"/big.bin": pattern_bytes(3 * MiB, seed=7)})["/big.bin"]
    urls = list(files)
    # Classes interleave the hosts; a duplicate line and a bad one as in any manifest.
    lines = ["url,class"] + [f"{u},c{i % 3}" for i, u in enumerate(urls)]
    lines += [f"{big.url},big", f"{urls[0]},c0", "not a url,c1"]
    manifest = tmp_path / "list.csv"
    manifest.write_text("\n".join(lines) + "\n")
    options = {"template": "{class}/{name}", "min_split": 256 * 1024, "connections": 4}

    local = download_many(read_manifest(manifest), tmp_path / "local", **options)
    listener = Recorder()
    remote = list(
        iter_download_cluster(
            read_manifest(manifest),
            tmp_path / "cluster",
            client=ready,
            shard_size=5,
            listener=listener,
            **options,
        )
    )

    assert files_under(tmp_path / "cluster") == files_under(tmp_path / "local")
    assert files_under(tmp_path / "cluster")["big/big.bin"] == big.data
    for url, data in files.items():
        assert data in files_under(tmp_path / "cluster").values(), url

    def summary(results: list[ItemResult], root: Path) -> dict[int, tuple[Any, ...]]:
        return {
            r.index: (
                r.status,
                r.url,
                None if r.path is None else r.path.relative_to(root).as_posix(),
                r.size,
                r.error,
            )
            for r in results
        }

    mine, theirs = summary(remote, tmp_path / "cluster"), summary(local, tmp_path / "local")
    # The duplicate line is skipped by both; a local batch names it from its journal when the
    # first copy happened to finish before the line was read, which is a matter of timing.
    duplicate = len(lines) - 3
    assert mine.pop(duplicate)[:2] == theirs.pop(duplicate)[:2] == ("skipped", urls[0])
    assert mine == theirs
    fetched = [r for r in remote if r.status == "ok"]
    assert all(r.result is not None and r.result.fetched == r.size for r in fetched)
    assert listener.items == len(remote)
    items, total, done, failed = listener.progress[-1]
    assert (items, total, failed) == (len(lines) - 1, len(lines) - 1, 1)
    assert done == sum(r.size for r in fetched)


def test_per_host_cap_holds_across_workers(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    # 4000 bytes at 40 KB/s: a request lasts about 0.1 s. Host 1 has six shards, so both
    # workers run its shards at once for most of the run; host 2 has one.
    slow = Faults(rate=40_000)
    one = serve_files(
        rangeserver, {f"/a{i:02d}.bin": payload(4000, seed=i) for i in range(24)}, slow
    )
    two = serve_files(
        rangeserver2, {f"/b{i:02d}.bin": payload(4000, seed=i) for i in range(4)}, slow
    )
    urls = [s.url for s in one.values()] + [s.url for s in two.values()]
    results = list(
        iter_download_cluster(
            urls, tmp_path / "out", client=ready, shard_size=4, per_host=2, jobs=4
        )
    )
    assert {r.status for r in results} == {"ok"}
    # Each shard may use 1 of the 2 connections: host 1 saw its two shards' connections at
    # once, never more, from two worker processes.
    assert rangeserver.max_concurrent == 2
    assert rangeserver2.max_concurrent <= 2
    markers = (tmp_path / "out" / ".segdl" / "shards").glob("*/done.jsonl")
    workers = {json.loads(m.read_text().splitlines()[0])["worker"] for m in markers}
    assert len(workers) == 2


def test_a_worker_killed_mid_run_changes_nothing(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    files = two_hosts(rangeserver, rangeserver2, 16, Faults(rate=60_000), size=6000)
    dest = tmp_path / "out"
    run = Background(items=list(files), directory=dest, client=ready, shard_size=4, jobs=2)
    wait_for(lambda: len(gets(rangeserver, rangeserver2)) >= 4, "a few requests")
    victim: list[str] = []

    def running() -> bool:
        address = processing(ready, "segdl-g")
        if address is None:
            return False
        keys = ready.processing()[address]
        victim.extend(str(k) for k in keys)
        kill_worker(ready, address)
        return True

    wait_for(running, "a shard running")
    results = run.results()
    # An item whose file was renamed into place just before the kill, but not yet journaled,
    # is found on disk by the new attempt: skipped, as after a local kill -9.
    assert {r.status for r in results} <= {"ok", "skipped"}, [r.error for r in results]
    assert files_under(dest) == {url.rsplit("/", 1)[1]: data for url, data in files.items()}
    # Only items of the shard that was running on the dead worker were fetched again.
    shards = shard_of(dest)
    in_flight = {key.split("-", 1)[1].rsplit("-", 1)[0] for key in victim}
    again = {url for url, n in gets(rangeserver, rangeserver2).items() if n > 1}
    assert {shards[url] for url in again} <= in_flight
    assert not [name for name in files_under(dest) if name.endswith(".part")]


def test_a_shard_that_keeps_killing_workers_fails_alone(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    good = {f"/ok{i:02d}.bin": payload(2000 + i, seed=i) for i in range(8)}
    served = serve_files(rangeserver, good)
    # The poison shard: host 2 alone, slow enough to be caught while it runs.
    poison = serve_files(rangeserver2, {f"/p{i}.bin": payload(5000) for i in range(4)})
    for s in poison.values():
        s.faults.rate = 1000
    urls = [s.url for s in served.values()] + [s.url for s in poison.values()]
    dest = tmp_path / "out"
    # Host 1's items first, in whole shards: the poison shard holds only host 2's items
    # whether or not the two hosts share a group.
    run = Background(items=urls, directory=dest, client=ready, shard_size=4, jobs=4)
    kills = 0

    def kill_poison() -> bool:
        nonlocal kills
        if not run.alive():
            return True
        shards = shard_of(dest)
        target = {shards.get(s.url) for s in poison.values()} - {None}
        for shard in target:
            address = processing(ready, f"segdl-{shard}-")
            if address is not None:
                kill_worker(ready, address)
                kills += 1
                wait_for(lambda a=address: a not in ready.scheduler_info()["workers"], "death")
        return False

    wait_for(kill_poison, "the poison shard to fail")
    results = by_index(run.results())
    assert kills == 2  # allowed-failures=1: the second death fails the shard
    for index in range(len(urls)):
        if index < len(good):
            # (skipped: done by an attempt that shared a killed worker, not yet journaled)
            assert results[index].status in ("ok", "skipped"), results[index].error
        else:
            assert results[index].status == "failed"
            assert "the workers running it died" in (results[index].error or "")
    # As after a local kill -9, the dead attempts may leave `.part` files, never a final name.
    done = {name: data for name, data in files_under(dest).items() if not name.endswith(".part")}
    assert done == {p[1:]: data for p, data in good.items()}
    # The same command again, the poison gone: only that shard runs, and it completes.
    for s in poison.values():
        s.faults.rate = None
    rangeserver.reset_stats()
    again = list(iter_download_cluster(urls, dest, client=ready, shard_size=4, jobs=4))
    assert {r.status for r in again} == {"ok", "skipped"}
    assert not gets(rangeserver)
    assert files_under(dest) == {p[1:]: s.data for p, s in {**served, **poison}.items()}


def test_rerun_skips_finished_shards_and_refetches_only_what_is_missing(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    files = two_hosts(rangeserver, rangeserver2, 6)
    dest = tmp_path / "out"
    first = list(iter_download_cluster(list(files), dest, client=ready, shard_size=4))
    assert {r.status for r in first} == {"ok"}
    rangeserver.reset_stats()
    rangeserver2.reset_stats()
    again = list(iter_download_cluster(list(files), dest, client=ready, shard_size=4))
    assert {r.status for r in again} == {"skipped"}
    assert {r.index: r.size for r in again} == {r.index: r.size for r in first}
    assert not gets(rangeserver, rangeserver2)  # finished shards: not even submitted
    lost = next(iter(files))
    (dest / lost.rsplit("/", 1)[1]).unlink()
    third = by_index(list(iter_download_cluster(list(files), dest, client=ready, shard_size=4)))
    assert gets(rangeserver, rangeserver2) == Counter({lost: 1})  # the journal skips the rest
    assert third[0].status == "ok"
    assert files_under(dest) == {url.rsplit("/", 1)[1]: data for url, data in files.items()}


def test_two_hosts_one_destination_across_shards(
    ready: Any, rangeserver: RangeHTTPServer, rangeserver2: RangeHTTPServer, tmp_path: Path
) -> None:
    """Named by the answer, items of two shards (two hosts) can meet at one path: one wins,
    the other fails as in a local batch, and the file is never a mix of the two."""
    one = serve_files(rangeserver, {"/same.bin": payload(300_000, seed=1)})["/same.bin"]
    two = serve_files(rangeserver2, {"/same.bin": payload(300_000, seed=2)})["/same.bin"]
    for s in (one, two):
        s.faults.rate = 3_000_000
    results = by_index(
        list(iter_download_cluster([one.url, two.url], tmp_path / "out", client=ready))
    )
    statuses = sorted(r.status for r in results.values())
    assert statuses == ["failed", "ok"]
    winner = next(r for r in results.values() if r.status == "ok")
    loser = next(r for r in results.values() if r.status == "failed")
    assert "already the destination of item" in (loser.error or "")
    expected = one.data if winner.url == one.url else two.data
    assert (tmp_path / "out" / "same.bin").read_bytes() == expected


def test_run_wide_claims_only_when_an_answer_can_name_a_file(
    ready: Any,
    rangeserver: RangeHTTPServer,
    rangeserver2: RangeHTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paths settled by the driver need no run-wide claim; the first item named by its answer
    (txt `dir=` without `out=`) turns them on, with the settled paths claimed first."""
    one = serve_files(rangeserver, {"/a.bin": payload(1000, seed=1)})["/a.bin"]
    two = serve_files(rangeserver2, {"/a.bin": payload(2000, seed=2)})["/a.bin"]
    three = serve_files(rangeserver2, {"/c.bin": payload(3000, seed=3)})["/c.bin"]
    dest = tmp_path / "out"
    claims = dest / ".segdl" / "cluster" / "claims"
    monkeypatch.setattr(Driver, "_discard", lambda self, folder: None)  # keep them

    def links() -> dict[str, int]:
        return {run.name: sum(p.is_symlink() for p in run.rglob("*")) for run in claims.iterdir()}

    named = tmp_path / "named.txt"
    named.write_text(f"{one.url}\n  out=x/a.bin\n{three.url}\n  out=x/c.bin\n")
    results = list(iter_download_cluster(read_manifest(named), dest, client=ready))
    assert {r.status for r in results} == {"ok"}
    assert list(links().values()) == [0]  # every path was settled by the driver

    mixed = tmp_path / "mixed.txt"
    mixed.write_text(
        f"{one.url}\n  dir=sub\n  out=a.bin\n{three.url}\n  out=c.bin\n{two.url}\n  dir=sub\n"
    )
    before = set(links())
    results = by_index(list(iter_download_cluster(read_manifest(mixed), dest, client=ready)))
    assert [results[i].status for i in range(3)] == ["ok", "ok", "failed"]
    assert "sub/a.bin is already the destination of item 0" in (results[2].error or "")
    assert (dest / "sub" / "a.bin").read_bytes() == one.data
    [run] = set(links()) - before
    assert links()[run] >= 2  # sub/a.bin and c.bin, claimed before item 2 went out


def test_a_worker_that_cannot_see_the_directory_fails_the_run(
    ready: Any, rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    served = serve_files(rangeserver, {"/a.bin": b"a" * 100})

    def hide() -> None:  # in each worker: the run file reads as missing, as on another disk
        import segdl.cluster.task as task

        task.read_text = lambda path: None  # type: ignore[assignment]

    def show() -> None:
        import segdl.cluster.shards as shards
        import segdl.cluster.task as task

        task.read_text = shards.read_text

    ready.run(hide)
    try:
        with pytest.raises(DirectoryNotShared, match=r"worker tcp://\S+ on \S+ cannot see the"):
            list(iter_download_cluster([served["/a.bin"].url], tmp_path / "out", client=ready))
    finally:
        ready.run(show)
    assert not gets(rangeserver)
    assert files_under(tmp_path / "out") == {}
    assert issubclass(DirectoryNotShared, ClusterError)
