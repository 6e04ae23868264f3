"""Unit tests of segdl.batch.journal: the SQLite journal of finished and failed batch items."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from segdl.batch import journal as journal_module
from segdl.batch.journal import SCHEMA_VERSION, Entry, Journal, journal_path
from segdl.errors import DestinationError

ROOT = Path(__file__).resolve().parents[1]
URL = "https://example.com/file.bin"


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "dir"
    path.mkdir()
    return path


def committed_keys(path: Path) -> set[str]:
    """The keys another process would see: only committed transactions."""
    with closing(sqlite3.connect(path)) as other:
        return {key for (key,) in other.execute("SELECT key FROM items")}


def raw_execute(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in statements:
            db.execute(statement)


def test_journal_path_is_inside_a_hidden_folder_of_the_directory(directory: Path) -> None:
    assert journal_path(directory) == directory / ".segdl" / "journal.sqlite3"


def test_record_ok_round_trip(directory: Path) -> None:
    with Journal(journal_path(directory), wall=lambda: 1234.5) as journal:
        assert journal.lookup("k") is None
        journal.record_ok(
            "k",
            url=URL,
            path="sub/file.bin",
            size=42,
            etag='"e1"',
            last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
            sha256="ab" * 32,
        )
        expected = Entry(
            key="k",
            url=URL,
            path="sub/file.bin",
            status="ok",
            size=42,
            etag='"e1"',
            last_modified="Wed, 21 Oct 2015 07:28:00 GMT",
            sha256="ab" * 32,
            error=None,
            updated=1234.5,
        )
        assert journal.lookup("k") == expected
        assert journal.counts() == {"ok": 1, "failed": 0}


def test_record_failed_round_trip_and_upsert(directory: Path) -> None:
    times = iter([1.0, 2.0, 3.0])
    with Journal(journal_path(directory), wall=lambda: next(times)) as journal:
        journal.record_failed("a", url=URL, path=None, error="HTTP 404 Not Found")
        journal.record_failed("b", url=URL, path="b.bin", error="timed out")
        assert journal.lookup("a") == Entry(
            "a", URL, None, "failed", None, None, None, None, "HTTP 404 Not Found", 1.0
        )
        assert journal.counts() == {"ok": 0, "failed": 2}
        # A re-run that succeeds replaces the failure, keeping one row per key.
        journal.record_ok("b", url="https://mirror.example/b", path="b.bin", size=7)
        entry = journal.lookup("b")
        assert entry is not None
        assert (entry.status, entry.url, entry.size, entry.error, entry.updated) == (
            "ok",
            "https://mirror.example/b",
            7,
            None,
            3.0,
        )
        assert journal.counts() == {"ok": 1, "failed": 1}


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.bin", "a/../../x.bin", "", ".", "a\x00b"])
def test_recording_a_path_outside_the_directory_is_a_bug(directory: Path, path: str) -> None:
    with Journal(journal_path(directory)) as journal:
        with pytest.raises(ValueError, match="relative path"):
            journal.record_ok("k", url=URL, path=path, size=1)
        with pytest.raises(ValueError, match="relative path"):
            journal.record_failed("k", url=URL, path=path, error="x")
        assert journal.counts() == {"ok": 0, "failed": 0}


def test_parent_folder_and_lock_file_are_created(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "dir"
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="f", size=1)
    assert (directory / ".segdl" / "journal.sqlite3").is_file()
    assert (directory / ".segdl" / "lock").is_file()


def test_is_done_when_the_file_is_in_place(directory: Path) -> None:
    (directory / "sub").mkdir()
    (directory / "sub" / "f.bin").write_bytes(b"12345")
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="sub/f.bin", size=5)
        entry = journal.is_done("k", directory)
        assert entry is not None
        assert entry.path == "sub/f.bin"
        assert entry.size == 5


def test_is_done_is_none_for_unknown_and_failed_items(directory: Path) -> None:
    (directory / "f.bin").write_bytes(b"12345")
    with Journal(journal_path(directory)) as journal:
        assert journal.is_done("unknown", directory) is None
        journal.record_failed("k", url=URL, path="f.bin", error="reset")
        assert journal.is_done("k", directory) is None


def test_is_done_is_none_when_the_file_is_missing(directory: Path) -> None:
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="f.bin", size=5)
        assert journal.is_done("k", directory) is None
        journal.record_ok("n", url=URL, path="missing/f.bin", size=5)
        assert journal.is_done("n", directory) is None


@pytest.mark.parametrize("size", [4, 6, 0])
def test_is_done_is_none_when_the_size_differs(directory: Path, size: int) -> None:
    (directory / "f.bin").write_bytes(b"12345")
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="f.bin", size=size)
        assert journal.is_done("k", directory) is None


def test_is_done_is_none_for_a_symbolic_link(directory: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"12345")
    (directory / "f.bin").symlink_to(target)
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="f.bin", size=5)
        assert journal.is_done("k", directory) is None


def test_is_done_is_none_for_a_directory(directory: Path) -> None:
    (directory / "f.bin").mkdir()
    with Journal(journal_path(directory)) as journal:
        journal.record_ok("k", url=URL, path="f.bin", size=(directory / "f.bin").stat().st_size)
        assert journal.is_done("k", directory) is None


@pytest.mark.parametrize("stored", ["ABSOLUTE", "../outside.bin", "sub/../../outside.bin"])
def test_is_done_refuses_a_hostile_stored_path(
    directory: Path, tmp_path: Path, stored: str
) -> None:
    # Each path names a real file of the right size, so only the path check can refuse it.
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"12345")
    (directory / "sub").mkdir()
    stored = str(outside) if stored == "ABSOLUTE" else stored
    assert (directory / stored).stat().st_size == 5
    path = journal_path(directory)
    with Journal(path) as journal:
        journal.record_ok("k", url=URL, path="f.bin", size=5)
    raw_execute(path, f"UPDATE items SET path = '{stored}' WHERE key = 'k'")
    with Journal(path) as journal:
        entry = journal.lookup("k")
        assert entry is not None
        assert entry.path == stored
        assert journal.is_done("k", directory) is None


def test_reopen_after_close_keeps_entries(directory: Path) -> None:
    path = journal_path(directory)
    journal = Journal(path)
    journal.record_ok("a", url=URL, path="a", size=1)
    journal.record_failed("b", url=URL, path="b", error="boom")
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        journal.lookup("a")
    with pytest.raises(ValueError, match="closed"):
        journal.record_ok("c", url=URL, path="c", size=1)
    with Journal(path) as again:
        assert again.counts() == {"ok": 1, "failed": 1}
        entry = again.lookup("b")
        assert entry is not None
        assert entry.error == "boom"


def test_journal_uses_wal(directory: Path) -> None:
    path = journal_path(directory)
    with Journal(path), closing(sqlite3.connect(path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_every_record_is_committed_before_it_returns(directory: Path) -> None:
    # Another process (a re-run after a crash) sees each record as soon as the call returns:
    # a finished item is never forgotten because its commit was still to come.
    path = journal_path(directory)
    with Journal(path) as journal:
        journal.record_ok("k0", url=URL, path="k0", size=1)
        assert committed_keys(path) == {"k0"}
        journal.record_failed("k1", url=URL, path="k1", error="x")
        assert committed_keys(path) == {"k0", "k1"}
        journal.record_ok("k1", url=URL, path="k1", size=1)
        assert committed_keys(path) == {"k0", "k1"}
        assert journal.counts() == {"ok": 2, "failed": 0}


KILLED_RUN = """
import os, sys
from pathlib import Path
from segdl.batch.journal import Journal

journal = Journal(Path(sys.argv[1]))
n = int(sys.argv[2])
for i in range(n):
    journal.record_ok(f"k{i}", url=f"https://example.com/{i}", path=f"f{i}.bin", size=i)
os.kill(os.getpid(), 9)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL")
def test_a_killed_run_keeps_every_entry_recorded_before_the_kill(directory: Path) -> None:
    path = journal_path(directory)
    n = 300
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(path), str(n)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # The lock died with the process, and the journal opens again.
    with Journal(path) as journal:
        assert journal.counts() == {"ok": n, "failed": 0}
        for i in range(n):
            entry = journal.lookup(f"k{i}")
            assert entry is not None
            assert (entry.url, entry.path, entry.size) == (
                f"https://example.com/{i}",
                f"f{i}.bin",
                i,
            )
        assert journal.lookup(f"k{n}") is None


def test_a_second_journal_on_the_same_directory_is_refused(directory: Path) -> None:
    path = journal_path(directory)
    with Journal(path) as journal:
        journal.record_ok("k", url=URL, path="k", size=1)
        with pytest.raises(DestinationError, match="another segdl run is using") as info:
            Journal(path)
        assert str(info.value) == f"another segdl run is using {directory}"
        assert journal.counts() == {"ok": 1, "failed": 0}
    with Journal(path) as again:
        assert again.counts() == {"ok": 1, "failed": 0}


def test_a_database_locked_by_another_writer_is_refused(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_BUSY_TIMEOUT", 0.0)
    path = journal_path(directory)
    path.parent.mkdir()
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DestinationError, match="another segdl run is using"):
            Journal(path)
        other.execute("ROLLBACK")
    with Journal(path) as journal:  # the failed attempt left nothing held
        assert journal.counts() == {"ok": 0, "failed": 0}


def test_a_garbage_journal_is_refused_untouched(directory: Path) -> None:
    path = journal_path(directory)
    path.parent.mkdir()
    garbage = b"this is not a database\n" * 100
    path.write_bytes(garbage)
    with pytest.raises(DestinationError) as info:
        Journal(path)
    message = str(info.value)
    assert str(path) in message
    assert "delete it" in message
    assert "\n" not in message
    assert path.read_bytes() == garbage
    # The lock was released with the failure.
    path.unlink()
    with Journal(path) as journal:
        assert journal.counts() == {"ok": 0, "failed": 0}


def test_a_journal_of_an_unknown_version_is_refused(directory: Path) -> None:
    path = journal_path(directory)
    with Journal(path) as journal:
        journal.record_ok("k", url=URL, path="k", size=1)
    raw_execute(path, f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(DestinationError, match="another version of segdl") as info:
        Journal(path)
    assert str(path) in str(info.value)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (1,)


def test_a_foreign_sqlite_database_is_refused(directory: Path) -> None:
    path = journal_path(directory)
    path.parent.mkdir()
    raw_execute(path, "CREATE TABLE photos (name TEXT)")
    with pytest.raises(DestinationError, match="not a segdl journal"):
        Journal(path)
    with closing(sqlite3.connect(path)) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert names == {"photos"}


def test_an_empty_file_becomes_a_journal(directory: Path) -> None:
    # SQLite leaves an empty file when a run dies while creating the journal.
    path = journal_path(directory)
    path.parent.mkdir()
    path.write_bytes(b"")
    with Journal(path) as journal:
        journal.record_ok("k", url=URL, path="k", size=1)
        assert journal.counts() == {"ok": 1, "failed": 0}


def test_a_journal_that_is_a_symbolic_link_is_refused(directory: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite3"
    path = journal_path(directory)
    path.parent.mkdir()
    path.symlink_to(elsewhere)
    with pytest.raises(DestinationError, match="symbolic link"):
        Journal(path)
    assert not elsewhere.exists()


def test_many_threads_recording_at_once(directory: Path) -> None:
    threads, per_thread = 8, 250
    barrier = threading.Barrier(threads)
    path = journal_path(directory)

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            key = f"{worker}-{i}"
            if i % 2:
                journal.record_failed(key, url=URL, path=key, error="boom")
            else:
                journal.record_ok(key, url=URL, path=key, size=i)
            assert journal.lookup(key) is not None

    with Journal(path) as journal, ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(work, worker) for worker in range(threads)]:
            future.result()
        half = threads * per_thread // 2
        assert journal.counts() == {"ok": half, "failed": half}
    assert len(committed_keys(path)) == threads * per_thread
