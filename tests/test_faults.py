"""Faults during a run: dropped and stalled connections, 503/429, connection caps, a file
replaced mid-run, checksums and full disks. Sleeps are injected: no test waits for a backoff.
"""

from __future__ import annotations

import base64
import hashlib
import os
import resource
import subprocess
import sys
from email.utils import formatdate
from pathlib import Path

import pytest
from fakes import NOW, fast_clock, payload
from rangeserver import Faults, RangeHTTPServer, serve_file

import segdl

KIB = 1024
MIB = 1024 * 1024


def test_connection_dropping_every_few_hundred_kib_still_finishes(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # Every answer breaks off after 256 KiB; each retry makes progress, so a budget of
    # 2 consecutive failures is never exhausted.
    data = payload(3 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(drop_after=256 * KIB))
    fake, sleeps = fast_clock()
    result = segdl.download(served.url, tmp_path / "f", connections=2, retries=2, clock=fake)
    assert (tmp_path / "f").read_bytes() == data
    gets = served.gets()
    assert len(gets) >= 12  # 3 MiB in 256 KiB pieces
    # Each retry continued from the last byte written, so almost nothing was fetched twice.
    assert served.bytes_sent() == len(data)
    assert result.fetched == len(data)
    assert sleeps.delays


def test_consecutive_failures_without_progress_exhaust_the_budget(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(drop_after=0))
    fake, sleeps = fast_clock()
    with pytest.raises(segdl.TruncatedError):
        segdl.download(served.url, tmp_path / "f", connections=1, retries=3, clock=fake)
    assert len(served.gets()) == 1 + 3
    assert sleeps.delays == [0.5, 1.0, 2.0]  # exponential backoff, jitter centred by rand=0.5
    assert not (tmp_path / "f").exists()


def test_stalled_connection_is_detected_and_retried(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(2 * MIB)
    served = serve_file(
        httpserver, "/f", data, faults=Faults(stall_after_headers=5, stall_first_k=1)
    )
    fake, _ = fast_clock()
    segdl.download(served.url, tmp_path / "f", connections=2, timeout=0.3, clock=fake)
    assert (tmp_path / "f").read_bytes() == data
    assert len(served.gets()) == 3  # one stalled answer, retried once


def test_slow_but_steady_trickle_is_not_a_timeout(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # 256 KiB at 512 KiB/s in small slices: a read never waits anywhere near the 0.3 s timeout.
    data = payload(256 * KIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(rate=512 * KIB))
    segdl.download(served.url, tmp_path / "f", connections=1, timeout=0.3)
    assert (tmp_path / "f").read_bytes() == data
    assert len(served.gets()) == 1


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (503, "7", 7.0),
        (429, "2", 2.0),
        (503, formatdate(NOW + 12, usegmt=True), 12.0),
        (503, None, 0.5),  # no Retry-After: backoff
    ],
)
def test_retry_after_is_honoured(
    httpserver: RangeHTTPServer,
    tmp_path: Path,
    status: int,
    retry_after: str | None,
    expected: float,
) -> None:
    data = payload(MIB)
    served = serve_file(
        httpserver,
        "/f",
        data,
        faults=Faults(fail_first=2, fail_status=status, retry_after=retry_after),
    )
    fake, sleeps = fast_clock()
    segdl.download(served.url, tmp_path / "f", connections=1, clock=fake)
    assert (tmp_path / "f").read_bytes() == data
    # The probe (HEAD) is not failed; the first two GETs are, each waited out.
    assert sleeps.delays[0] == pytest.approx(expected)
    assert len(sleeps.delays) == 2
    assert [r.status for r in served.gets()] == [status, status, 206]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_other_4xx_are_not_retried(
    httpserver: RangeHTTPServer, tmp_path: Path, status: int
) -> None:
    data = payload(MIB)
    served = serve_file(httpserver, "/f", data, faults=Faults(fail_first=1, fail_status=status))
    fake, sleeps = fast_clock()
    with pytest.raises(segdl.HTTPStatusError, match=str(status)):
        segdl.download(served.url, tmp_path / "f", connections=1, clock=fake)
    assert sleeps.delays == []
    assert len(served.gets()) == 1
    assert not (tmp_path / "f").exists()


def test_server_capping_connections_gets_fewer_connections(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(8 * MIB)
    served = serve_file(
        httpserver, "/f", data, faults=Faults(max_connections=2, rate=8 * MIB, retry_after="0")
    )
    fake, _ = fast_clock()
    result = segdl.download(served.url, tmp_path / "f", connections=8, retries=2, clock=fake)
    assert (tmp_path / "f").read_bytes() == data
    assert served.max_in_flight <= 2
    assert any("fewer" in w for w in result.warnings)
    assert any(r.status == 503 for r in served.gets())


def test_file_replaced_mid_run_restarts_from_zero(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    data = payload(4 * MIB)
    new = payload(4 * MIB, seed=77)
    served = serve_file(
        httpserver,
        "/f",
        data,
        # Answers break off every 256 KiB, so requests keep coming after the change.
        faults=Faults(change_after_bytes=MIB, new_data=new, drop_after=256 * KIB),
    )
    fake, _ = fast_clock()
    result = segdl.download(
        served.url, tmp_path / "f", connections=4, min_split=256 * KIB, clock=fake
    )
    assert (tmp_path / "f").read_bytes() == new  # never a splice of the two versions
    assert any("changed" in w for w in result.warnings)
    assert any(r.status == 412 for r in served.gets())


def test_checksum_verified_before_the_rename(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data)
    good = "sha256=" + hashlib.sha256(data).hexdigest()
    segdl.download(served.url, tmp_path / "ok", checksum=good)
    assert (tmp_path / "ok").read_bytes() == data

    bad = "md5=" + "0" * 32
    with pytest.raises(segdl.IntegrityError) as info:
        segdl.download(served.url, tmp_path / "bad", checksum=bad)
    message = str(info.value)
    assert "0" * 32 in message and hashlib.md5(data).hexdigest() in message
    assert sorted(os.listdir(tmp_path)) == ["ok"]  # no file under the final name, no litter


def test_not_enough_free_space_fails_up_front(
    httpserver: RangeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data)
    monkeypatch.setattr("segdl.file.free_space", lambda directory: MIB)
    with pytest.raises(segdl.DiskFullError, match="free space"):
        segdl.download(served.url, tmp_path / "f")
    assert os.listdir(tmp_path) == []
    assert served.gets() == []  # nothing fetched


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (MIB, MIB))


def test_file_size_limit_reports_a_one_line_error(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # RLIMIT_FSIZE makes writes past 1 MiB fail with EFBIG, as a full disk fails with ENOSPC.
    data = payload(2 * MIB)
    served = serve_file(httpserver, "/f", data)
    proc = subprocess.run(
        [sys.executable, "-m", "segdl", served.url, "-o", "f"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_file_size,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "too large" in lines[0].lower(), proc.stderr
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("header", ["Repr-Digest", "Content-Digest"])
def test_server_digest_is_verified(
    httpserver: RangeHTTPServer, tmp_path: Path, header: str
) -> None:
    data = payload(300_000)
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    # A plain handler: no range support, so this also goes through the single-stream path.
    httpserver.expect_request("/good").respond_with_data(
        data, headers={header: f"sha-256=:{good}:"}
    )
    httpserver.expect_request("/bad").respond_with_data(data, headers={header: f"sha-256=:{bad}:"})
    segdl.download(httpserver.url_for("/good"), tmp_path / "good")
    assert (tmp_path / "good").read_bytes() == data
    with pytest.raises(segdl.IntegrityError, match="digest header"):
        segdl.download(httpserver.url_for("/bad"), tmp_path / "bad")
    assert sorted(os.listdir(tmp_path)) == ["good"]


def test_disk_full_mid_download_keeps_state_and_resumes(
    httpserver: RangeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import segdl.core.sink

    data = payload(4 * MIB)
    served = serve_file(httpserver, "/f", data)
    real_pwrite = os.pwrite
    written = [0]

    def filling_pwrite(fd: int, view: memoryview, offset: int) -> int:
        if written[0] >= 2 * MIB:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_pwrite(fd, view, offset)
        written[0] += n
        return n

    monkeypatch.setattr(segdl.core.sink.os, "pwrite", filling_pwrite)
    with pytest.raises(segdl.DiskFullError, match="No space left"):
        segdl.download(served.url, tmp_path / "f", connections=2, min_split=256 * KIB)
    assert not (tmp_path / "f").exists()
    assert (tmp_path / "f.part").exists() and (tmp_path / "f.segdl").exists()

    monkeypatch.setattr(segdl.core.sink.os, "pwrite", real_pwrite)  # space was freed
    served.clear_log()
    result = segdl.download(served.url, tmp_path / "f", connections=2, min_split=256 * KIB)
    assert (tmp_path / "f").read_bytes() == data
    assert result.resumed >= 2 * MIB - 2 * MIB // 2  # most of what was written is kept
    assert served.bytes_sent() <= len(data) - result.resumed + 2 * MIB
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_permission_denied_is_a_destination_error(
    httpserver: RangeHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import segdl.core.sink

    # Root ignores file modes, so the refusal is injected where the .part file is created.
    served = serve_file(httpserver, "/f", payload(1000))
    real_open = os.open

    def denying_open(path: str, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".part"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(segdl.core.sink.os, "open", denying_open)
    with pytest.raises(segdl.DestinationError, match="Permission denied") as info:
        segdl.download(served.url, tmp_path / "f")
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []
