"""Resume across processes: kill segdl mid-transfer (SIGKILL, SIGINT, SIGTERM), run it again.

Asserts that the final bytes are identical to the served ones and that the second run fetched
about what was missing, never the whole file again; and that a changed remote or a damaged
control file restarts from zero instead of splicing two versions.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rangeserver import Faults, RangeHTTPServer, ServedFile, serve_file

import segdl
from segdl.core.state import State, current_boot_id, save

MIB = 1024 * 1024
SIZE = 48 * MIB
CONNECTIONS = 4
RATE = 4 * MIB  # per connection while the first run is being killed
# What a kill may cost: one save interval (0.25 s) at the full rate, plus one read buffer per
# connection, plus the bytes in flight in socket buffers when the process died.
ALLOWANCE = int(0.25 * CONNECTIONS * RATE) + CONNECTIONS * MIB + 4 * MIB


def payload(size: int, seed: int = 3) -> bytes:
    block = bytes((i * 131 + seed) % 256 for i in range(MIB))
    # Every MiB differs, so a segment written at the wrong place cannot go unnoticed.
    return b"".join(i.to_bytes(4, "big") + block[4:] for i in range(size // MIB))


def start(url: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "segdl", url, "-o", "f.bin", "-n", str(CONNECTIONS), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_bytes(served: ServedFile, at_least: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while served.bytes_sent() < at_least:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the first run did not progress"
        time.sleep(0.02)


def rerun(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segdl", url, "-o", "f.bin", "-n", str(CONNECTIONS), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def killed_midway(
    httpserver: RangeHTTPServer, tmp_path: Path, sig: int
) -> tuple[ServedFile, bytes, int, subprocess.CompletedProcess[str]]:
    data = payload(SIZE)
    served = serve_file(httpserver, "/f.bin", data, faults=Faults(rate=RATE))
    proc = start(served.url, tmp_path)
    wait_for_bytes(served, SIZE // 3, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    first = served.bytes_sent()
    assert not (tmp_path / "f.bin").exists()
    assert (tmp_path / "f.bin.part").exists() and (tmp_path / "f.bin.segdl").exists()
    served.faults.rate = None
    served.clear_log()
    return served, data, first, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_killed_download_resumes_with_only_the_missing_bytes(
    httpserver: RangeHTTPServer, tmp_path: Path, sig: int
) -> None:
    served, data, first, killed = killed_midway(httpserver, tmp_path, sig)
    if sig == signal.SIGKILL:
        assert killed.returncode == -signal.SIGKILL
    else:
        assert killed.returncode == 130
        assert "run the same command again to resume" in killed.stderr
        assert "Traceback" not in killed.stderr
    saved = json.loads((tmp_path / "f.bin.segdl").read_bytes())
    done = sum(d - s for s, d, _ in saved["segments"])
    assert done > 0

    second = rerun(served.url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]
    refetched = served.bytes_sent()
    missing = SIZE - done
    # The second run fetches what the control file says is missing, and that is close to
    # what the first run had not received.
    assert refetched <= missing + CONNECTIONS * MIB
    assert refetched <= SIZE - first + ALLOWANCE
    if sig != signal.SIGKILL:
        # A clean stop saves state after the last write: almost nothing is fetched twice.
        assert refetched <= SIZE - first + CONNECTIONS * MIB
    for record in served.gets():
        assert record.if_match == '"v1"'


def test_changed_remote_restarts_from_zero(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    served, _, _, _ = killed_midway(httpserver, tmp_path, signal.SIGKILL)
    new = payload(SIZE, seed=99)
    served.replace(new, '"v2"')
    second = rerun(served.url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "changed" in second.stderr and "starting from zero" in second.stderr
    assert (tmp_path / "f.bin").read_bytes() == new
    assert served.bytes_sent() >= SIZE


@pytest.mark.parametrize(
    "damage",
    ["zeros", "truncated", "garbage", "other-url", "other-size", "tampered", "missing"],
)
def test_untrustworthy_control_file_restarts_from_zero(
    httpserver: RangeHTTPServer, tmp_path: Path, damage: str
) -> None:
    served, data, _, _ = killed_midway(httpserver, tmp_path, signal.SIGKILL)
    control = tmp_path / "f.bin.segdl"
    raw = control.read_bytes()
    body = json.loads(raw)
    if damage == "zeros":
        control.write_bytes(b"\0" * len(raw))
    elif damage == "truncated":
        control.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        control.write_bytes(os.urandom(200))
    elif damage == "tampered":
        body["segments"][0][1] = body["segments"][0][2]  # claims bytes that never arrived
        control.write_text(json.dumps(body))
    elif damage in ("other-url", "other-size"):
        # A well-formed control file, of another download: written through the library.
        save(
            control,
            State(
                url=body["url"] + "?other" if damage == "other-url" else body["url"],
                size=body["size"] if damage == "other-url" else body["size"] + 1,
                etag=body["etag"],
                last_modified=None,
                segments=((0, 0, body["size"] + (damage == "other-size")),),
            ),
        )
    else:
        control.unlink()
    second = rerun(served.url, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "starting from zero" in second.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    assert served.bytes_sent() >= SIZE


def test_no_resume_starts_fresh(httpserver: RangeHTTPServer, tmp_path: Path) -> None:
    served, data, _, _ = killed_midway(httpserver, tmp_path, signal.SIGINT)
    second = rerun(served.url, tmp_path, "--no-resume")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "f.bin").read_bytes() == data
    assert served.bytes_sent() >= SIZE


def test_resume_of_a_complete_partial_file_fetches_nothing(
    httpserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # As if killed between the last write and the rename, in this same boot of the kernel.
    data = payload(4 * MIB)
    served = serve_file(httpserver, "/f.bin", data)
    (tmp_path / "f.bin.part").write_bytes(data)
    whole = ((0, len(data), len(data)),)
    save(
        tmp_path / "f.bin.segdl",
        State(served.url, len(data), '"v1"', None, whole, boot_id=current_boot_id()),
    )
    result = segdl.download(served.url, tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.resumed == len(data) and result.fetched == 0
    assert served.gets() == []


@pytest.mark.parametrize("rebooted", [False, True])
def test_after_a_reboot_only_synced_bytes_are_trusted(
    httpserver: RangeHTTPServer, tmp_path: Path, rebooted: bool
) -> None:
    data = payload(4 * MIB)
    served = serve_file(httpserver, "/f.bin", data)
    # The page cache held 3 MiB when the machine lost power; only 1 MiB had been synced.
    part = bytearray(data[: 3 * MIB]) + bytes(MIB)
    if rebooted:
        part[MIB : 3 * MIB] = bytes(2 * MIB)  # what a power cut may leave on disk
    (tmp_path / "f.bin.part").write_bytes(part)
    boot = current_boot_id()
    assert boot is not None
    save(
        tmp_path / "f.bin.segdl",
        State(
            served.url,
            len(data),
            '"v1"',
            None,
            segments=((0, 3 * MIB, 4 * MIB),),
            durable=((0, MIB, 4 * MIB),),
            boot_id="an earlier boot" if rebooted else boot,
        ),
    )
    result = segdl.download(served.url, tmp_path / "f.bin", connections=1)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert result.resumed == (MIB if rebooted else 3 * MIB)
    assert served.ranges_requested() == [(MIB if rebooted else 3 * MIB, 4 * MIB - 1)]
