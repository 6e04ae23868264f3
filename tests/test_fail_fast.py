"""A host that never answered fails fast; messages name the URL or host:port, never internals.

A name that does not resolve is not retried; a refused connection is retried once, quickly,
then fails, unless the host answered earlier in the same run (then the usual budget). Sleeps
are injected and recorded: "fails at once" means no backoff was asked for, never a duration.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.connection
from fakes import fast_clock, payload
from rangeserver import Faults, RangeHTTPServer, serve_file

import segdl
from segdl.archive.remote import RemoteExtractResult
from segdl.archive.safety import Budget, Limits
from segdl.cli import main
from segdl.cli.common import summary
from segdl.cli.extract import summary as extract_summary
from segdl.core.http import uses_curl
from segdl.core.http.curl import CurlLoop
from segdl.core.http.transport import RequestsTransport
from segdl.core.options import Options
from segdl.core.retry import RetryPolicy
from segdl.core.urls import origin
from segdl.core.verify import Checksum
from segdl.errors import ArchiveLimitError, ConnectError, TimeoutError_, UsageError
from segdl.file import Result

UNRESOLVABLE = "http://no-such-host.invalid/x.bin"  # .invalid never resolves (RFC 6761)
KIB = 1024
MIB = 1024 * 1024


def refused_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection attempt, by both HTTP layers (requests' urllib3 and the lean one)."""
    seen: list[tuple[str, int]] = []

    def counting(original: Callable[..., socket.socket]) -> Callable[..., socket.socket]:
        def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            seen.append(address)
            return original(address, *args, **kwargs)

        return connect

    monkeypatch.setattr(
        urllib3.util.connection,
        "create_connection",
        counting(urllib3.util.connection.create_connection),
    )
    monkeypatch.setattr(socket, "create_connection", counting(socket.create_connection))
    if uses_curl(Options()):
        # libcurl connects in C: count the transfers it starts (one connection attempt each
        # to a host that never answers).
        start = CurlLoop._start

        def counted(loop: CurlLoop, body: Any, method: str, url: str, *args: Any) -> None:
            _, host, port = origin(url)
            seen.append((host, port))
            start(loop, body, method, url, *args)

        monkeypatch.setattr(CurlLoop, "_start", counted)
    return seen


# --- the policy -----------------------------------------------------------------------------


def test_an_unresolved_name_of_a_new_host_is_not_retried() -> None:
    with pytest.raises(segdl.NameResolutionError):
        RetryPolicy(total=5).increment(segdl.NameResolutionError("no such host"))


def test_a_refused_connection_to_a_new_host_is_retried_once_quickly() -> None:
    error = segdl.RefusedError("refused")
    policy = RetryPolicy(total=5).increment(error)
    assert policy.delay(error, now=0.0, rand=lambda: 0.99) <= 0.1
    with pytest.raises(segdl.RefusedError):
        policy.increment(error)
    with pytest.raises(segdl.RefusedError):  # --retries 0 means none, also here
        RetryPolicy(total=0).increment(error)


@pytest.mark.parametrize(
    "kind", [segdl.NameResolutionError, segdl.RefusedError, ConnectError, TimeoutError_]
)
def test_a_host_that_answered_before_gets_the_whole_budget(kind: type[Exception]) -> None:
    error = kind("lost it")
    if isinstance(error, ConnectError):
        error.answered_before = True
    policy = RetryPolicy(total=5, jitter=0.0)
    delays = []
    for _ in range(5):
        policy = policy.increment(error)
        delays.append(policy.delay(error, now=0.0, rand=lambda: 0.5))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    with pytest.raises(kind):
        policy.increment(error)


# --- single file, stream, batch: how fast and what they say ---------------------------------


def test_download_from_a_refused_port_tries_twice(
    tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    port = refused_port()
    fake, sleeps = fast_clock()
    with pytest.raises(segdl.RefusedError) as info:
        segdl.download(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x", clock=fake)
    assert str(info.value) == f"connection failed: 127.0.0.1:{port}: Connection refused"
    assert not info.value.answered_before
    assert len(sleeps.delays) == 1 and sleeps.delays[0] <= 0.1
    assert connects == [("127.0.0.1", port)] * 2  # no GET after a refused HEAD either
    assert list(tmp_path.iterdir()) == []


def test_download_from_an_unresolved_name_fails_at_once(
    tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    fake, sleeps = fast_clock()
    with pytest.raises(segdl.NameResolutionError) as info:
        segdl.download(UNRESOLVABLE, tmp_path / "x", clock=fake)
    assert str(info.value).startswith("connection failed: no-such-host.invalid:80: ")
    assert sleeps.delays == []
    assert connects == [("no-such-host.invalid", 80)]


def test_stream_from_a_refused_port_tries_twice(connects: list[tuple[str, int]]) -> None:
    port = refused_port()
    fake, sleeps = fast_clock()
    with pytest.raises(segdl.RefusedError, match=rf"^connection failed: 127\.0\.0\.1:{port}: "):
        segdl.open(f"http://127.0.0.1:{port}/x.bin", clock=fake)
    assert len(sleeps.delays) == 1 and sleeps.delays[0] <= 0.1
    assert len(connects) == 2


def test_batch_item_from_a_refused_port_and_an_unresolved_name(
    tmp_path: Path, connects: list[tuple[str, int]]
) -> None:
    port = refused_port()
    refused = f"http://127.0.0.1:{port}/x.bin"
    fake, sleeps = fast_clock()
    results = {r.url: r for r in segdl.download_many([refused, UNRESOLVABLE], tmp_path, clock=fake)}
    assert results[refused].status == "failed"
    assert results[refused].error == f"connection failed: 127.0.0.1:{port}: Connection refused"
    assert results[refused].attempts == 2
    assert results[UNRESOLVABLE].error is not None
    assert results[UNRESOLVABLE].error.startswith("connection failed: no-such-host.invalid:80: ")
    assert results[UNRESOLVABLE].attempts == 1
    assert len(sleeps.delays) == 1 and sleeps.delays[0] <= 0.1
    assert sorted(connects) == sorted([("127.0.0.1", port)] * 2 + [("no-such-host.invalid", 80)])


def test_a_host_that_answered_earlier_in_the_run_gets_the_usual_budget(
    rangeserver: RangeHTTPServer, tmp_path: Path
) -> None:
    # The answer breaks off mid-body; while the engine backs off, the server goes away, so
    # every later try is refused: a server restarting mid-download deserves patience.
    data = payload(2 * MIB)
    served = serve_file(rangeserver, "/f", data, Faults(drop_after=256 * KIB))
    fake, _ = fast_clock()
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if rangeserver.is_running():
            rangeserver.stop()

    fake.sleep = sleep
    with pytest.raises(segdl.RefusedError) as info:
        segdl.download(served.url, tmp_path / "f", connections=1, retries=4, clock=fake)
    assert info.value.answered_before
    assert delays == [0.5, 1.0, 2.0, 4.0]  # the drop, then three refusals: the whole budget
    assert served.bytes_sent() == 256 * KIB
    assert not (tmp_path / "f").exists()


def test_the_transport_remembers_which_hosts_answered(rangeserver: RangeHTTPServer) -> None:
    served = serve_file(rangeserver, "/f", b"abc")
    transport = RequestsTransport(served.url)
    try:
        response, _ = transport.request("GET", served.url)
        assert response.content == b"abc"
        rangeserver.stop()
        with pytest.raises(segdl.RefusedError) as again:
            transport.request("GET", served.url)
        assert again.value.answered_before
        other = f"http://127.0.0.1:{refused_port()}/f"
        with pytest.raises(segdl.RefusedError) as new:
            transport.request("GET", other)
        assert not new.value.answered_before
    finally:
        transport.close()


# --- messages -------------------------------------------------------------------------------


@pytest.fixture
def missing(rangeserver: RangeHTTPServer) -> Iterator[str]:
    served = serve_file(
        rangeserver, "/missing.bin", b"", Faults(head_status=404, status_sequence=[404] * 9)
    )
    yield served.url


def test_a_404_names_the_url_and_the_status_on_every_path(missing: str, tmp_path: Path) -> None:
    with pytest.raises(segdl.HTTPStatusError) as single:
        segdl.download(missing, tmp_path / "x")
    with pytest.raises(segdl.HTTPStatusError) as stream:
        segdl.open(missing)
    [item] = segdl.download_many([missing], tmp_path)
    assert str(single.value) == str(stream.value) == f"{missing}: 404 Not Found"
    assert item.error == "404 Not Found"  # the item's line names the URL


def test_cli_lines_name_each_url_once(
    missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = refused_port()
    dead = [f"http://127.0.0.1:{port}/dead{i}.bin" for i in range(3)]
    refused = f"connection failed: 127.0.0.1:{port}: Connection refused"

    assert main([dead[0], "-o", str(tmp_path / "x"), "-q"]) == 1
    assert capsys.readouterr().err == f"segdl: error: {refused}\n"
    assert main([missing, "-o", str(tmp_path / "x"), "-q"]) == 1
    assert capsys.readouterr().err == f"segdl: error: {missing}: 404 Not Found\n"

    # One job: the first dead URL fails after its quick retry, the others as a dead host.
    assert main([*dead, missing, "-d", str(tmp_path / "d"), "-j", "1", "-q"]) == 1
    lines = sorted(capsys.readouterr().err.splitlines())
    assert lines[:4] == sorted(
        [f"segdl: failed: #{i} {url}: {refused}" for i, url in enumerate(dead)]
        + [f"segdl: failed: #3 {missing}: 404 Not Found"]
    )


def test_mirror_errors_name_each_mirror_once(
    missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{refused_port()}/x.bin"
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(f'{{"url": ["{dead}", "{missing}"]}}\n')
    [item] = segdl.download_many([{"url": [dead, missing]}], tmp_path / "d")
    assert item.error is not None
    assert item.error.count(dead) == 1 and item.error.count(missing) == 1
    assert main(["-i", str(manifest), "-d", str(tmp_path / "e"), "-q"]) == 1
    [line, *_] = capsys.readouterr().err.splitlines()
    assert line.count(dead) == 1 and line.count(missing) == 1


def test_counts_and_articles_are_grammatical(tmp_path: Path) -> None:
    one = Result(tmp_path / "f", "u", "u", 1, 1.0, 1, 1, 0, True)
    assert "1 connection," in summary(one) + "," and "connections" not in summary(one)
    extracted = RemoteExtractResult("zip", tmp_path, 1, 1, 0)
    assert ": 1 member, " in extract_summary(extracted)
    with pytest.raises(ArchiveLimitError, match=r"more than 1 member \(max_members\)"):
        budget = Budget(Limits(max_members=1), 1 << 20)
        budget.see("a")
        budget.see("b")
    with pytest.raises(UsageError, match=r"^an md5 checksum is 32 hexadecimal digits$"):
        Checksum.parse("md5=abc")
    with pytest.raises(UsageError, match=r"^a sha1 checksum is 40 hexadecimal digits$"):
        Checksum.parse("sha1=abc")


def test_help_says_what_retries_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "an unknown host name is not retried and a refused connection once" in text
