"""A dead endpoint fails fast (issue 24, item 3).

A name that does not resolve, a TLS handshake that fails, or a port that refuses every
attempt is not transient: before the endpoint has answered once, the run stops within
seconds with the error named (status ``endpoint_down``, exit 1), and the rows it did
not get to are pending, not failed, so a rerun sends them once it is fixed. A refusal
while other requests are answered (a server restarting) is retried as before.

Unit tests script the failures over ``httpx.MockTransport`` with the exception chains
httpx-aiohttp and httpx really raise, and count attempts and fake-clock seconds;
integration tests use a closed loopback port, an unresolvable ``.invalid`` name and a
loopback TLS server with a self-signed certificate.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey
from click.testing import CliRunner

from batchrun._batch.client import BatchClient, CreateUnknown
from batchrun._batch.driver import BatchDriver
from batchrun._batch.protocol import metadata_for
from batchrun._cli import cli
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED
from batchrun._pacing.retry import REFUSALS_TO_STOP, Reachability, ends_the_run
from batchrun._settings import Settings
from batchrun._transport.connect import unreachable
from batchrun.errors import BatchApiError, EndpointUnreachable
from tests.conftest import FakeTime, body, completion, read_lines

HOST = "api.example.invalid"


# -- the exception chains the HTTP stacks raise ------------------------------------------


def _key(port: int = 443) -> ConnectionKey:
    return ConnectionKey(HOST, port, True, True, None, None, None, None)


def _chained(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner
    return outer


def aiohttp_dns() -> Exception:
    """What httpx-aiohttp raises for a name that does not resolve (a ConnectTimeout!)."""
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    dns = _chained(aiohttp.ClientConnectorDNSError(_key(), gai), gai)
    return _chained(httpx.ConnectTimeout("Cannot connect to host"), dns)


def aiohttp_refused(port: int = 443) -> Exception:
    refused = ConnectionRefusedError(111, "Connect call failed")
    inner = _chained(aiohttp.ClientConnectorError(_key(port), refused), refused)
    return _chained(httpx.ConnectTimeout("Cannot connect to host"), inner)


def aiohttp_certificate() -> Exception:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "self-signed certificate"
    cert.reason = "CERTIFICATE_VERIFY_FAILED"
    inner = _chained(aiohttp.ClientConnectorCertificateError(_key(), cert), cert)
    return _chained(httpx.ConnectTimeout("Cannot connect to host"), inner)


def httpx_refused() -> Exception:
    """httpx's own transport: ConnectError over ConnectionRefusedError."""
    return _chained(httpx.ConnectError("All connection attempts failed"), ConnectionRefusedError())


# -- the mapping (one place) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kind", "message"),
    [
        (aiohttp_dns, "dns", f"cannot resolve {HOST} (Name or service not known)"),
        (aiohttp_refused, "refused", f"connection refused by {HOST}:443"),
        (
            aiohttp_certificate,
            "tls",
            f"TLS: certificate verify failed for {HOST} (self-signed certificate)",
        ),
        (httpx_refused, "refused", f"connection refused by {HOST}:443"),
        (
            lambda: _chained(httpx.ConnectError("x"), socket.gaierror(-3, "Temporary failure")),
            "dns",
            f"cannot resolve {HOST} (Temporary failure)",
        ),
        (
            lambda: _chained(httpx.ConnectError("x"), OSError(101, "Network is unreachable")),
            "network",
            f"no route to {HOST}:443 (Network is unreachable)",
        ),
    ],
)
def test_connect_failures_are_named(make: Callable[[], Exception], kind: str, message: str) -> None:
    down = unreachable(make(), HOST, 443)
    assert down is not None
    assert (down.kind, down.message, down.host, down.port) == (kind, message, HOST, 443)
    assert down.retryable  # a transport error; the run-level rule decides the stop


@pytest.mark.parametrize(
    "make",
    [
        lambda: httpx.ConnectError("connection refused"),  # no chain: nothing to go on
        lambda: _chained(httpx.ConnectTimeout("slow"), TimeoutError()),  # a real timeout
        # sent already: a TLS or reset error while reading is not "never connected"
        lambda: _chained(httpx.ReadError("tls"), ssl.SSLError(1, "decryption failed")),
        lambda: _chained(httpx.ReadError("reset"), ConnectionRefusedError()),
        lambda: _chained(  # a server that dropped the connection (also a ConnectTimeout)
            httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError()
        ),
    ],
)
def test_other_transport_failures_are_not_mapped(make: Callable[[], Exception]) -> None:
    assert unreachable(make(), HOST, 443) is None


# -- the rule ------------------------------------------------------------------------------


def _down(kind: Any) -> EndpointUnreachable:
    return EndpointUnreachable("x", kind=kind, host="h", port=1)


def test_the_rule_stops_on_dns_and_tls_at_once_and_on_refusals_after_a_few() -> None:
    for kind in ("dns", "tls"):
        assert ends_the_run(_down(kind), reached=False, refusals=1, max_attempts=10)
    for kind in ("refused", "network"):
        verdicts = [
            ends_the_run(_down(kind), reached=False, refusals=n, max_attempts=10)
            for n in range(1, 6)
        ]
        assert verdicts == [n >= REFUSALS_TO_STOP for n in range(1, 6)]
        # fewer attempts than that: the last one decides (the row is never failed)
        assert ends_the_run(_down(kind), reached=False, refusals=1, max_attempts=1)
        # an older request still on the wire may be answered: wait for it
        assert not ends_the_run(
            _down(kind), reached=False, refusals=9, max_attempts=10, older_in_flight=True
        )
    # once the endpoint answered, nothing here stops the run (the breaker may)
    for kind in ("dns", "tls", "refused", "network"):
        assert not ends_the_run(_down(kind), reached=True, refusals=10, max_attempts=10)


def test_reachability_counts_only_older_attempts_and_forgets_after_an_answer() -> None:
    reach = Reachability()
    first, second, third = reach.sending(), reach.sending(), reach.sending()
    refused = _down("refused")
    assert not reach.stops(refused, second, refusals=3, max_attempts=10)  # first on the wire
    reach.landed(first, answered=False)  # first was refused too
    assert reach.stops(refused, second, refusals=3, max_attempts=10)  # third is younger
    reach.landed(third, answered=True)  # an HTTP answer (any status)
    assert reach.reached and not reach.stops(_down("dns"), second, refusals=1, max_attempts=1)


# -- a run over a mock transport, counted on a fake clock -------------------------------------


def rows_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "".join(json.dumps({**body(f"r{i}"), "custom_id": str(i)}) + "\n" for i in range(n))
    )
    return path


def settings(tmp_path: Path, path: Path, **kw: Any) -> Settings:
    return Settings(
        input=str(path),
        out_dir=str(tmp_path / "run"),
        base_url=f"https://{HOST}/v1",
        summary_interval=3600.0,
        **{"concurrency": 4, **kw},
    )


def run_mock(cfg: Settings, handler: Any, fake: FakeTime) -> Any:
    runner = Runner(cfg, transport=httpx.MockTransport(handler), clock=fake.clock, sleep=fake.sleep)
    return anyio.run(runner.run)


def assert_stopped_pending(result: Any, tmp_path: Path, rows: int, text: str) -> None:
    assert result.status == "endpoint_down" and result.exit_code == EXIT_ERROR
    assert result.summary["requests"] == {
        "total": rows,
        "succeeded": 0,
        "failed": 0,
        "pending": rows,
        "invalid": 0,
    }
    assert read_lines(tmp_path / "run" / "errors.jsonl") == []  # pending, not failed
    assert any(text in note for note in result.notes), result.notes
    assert text in result.summary["stop_note"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["status"] == "endpoint_down" and text in on_disk["stop_note"]


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (aiohttp_dns, f"cannot resolve {HOST}"),
        (aiohttp_certificate, f"TLS: certificate verify failed for {HOST}"),
    ],
)
def test_a_name_that_does_not_resolve_or_a_bad_certificate_stops_at_once(
    tmp_path: Path, make: Callable[[], Exception], text: str
) -> None:
    rows = 200
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise make()

    fake = FakeTime()
    result = run_mock(settings(tmp_path, rows_file(tmp_path, rows)), handler, fake)
    assert_stopped_pending(result, tmp_path, rows, text)
    # not retried at all: at most the first request of each of the 4 workers went out
    assert 1 <= len(attempts) <= 4
    assert fake.sleeps == [] and fake.now - 1000.0 < 1.0


def test_a_port_refusing_every_attempt_stops_after_a_few_quick_retries(tmp_path: Path) -> None:
    rows = 200
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise aiohttp_refused()

    fake = FakeTime()
    result = run_mock(settings(tmp_path, rows_file(tmp_path, rows)), handler, fake)
    assert_stopped_pending(result, tmp_path, rows, f"connection refused by {HOST}:443")
    # each of the 4 workers' requests at most REFUSALS_TO_STOP times, never 10 per row
    assert REFUSALS_TO_STOP <= len(attempts) <= 4 * REFUSALS_TO_STOP
    # back-offs of 0.25-0.5 s then 0.5-1 s; the fake clock adds up even concurrent
    # sleeps, so it bounds the time from above
    assert len(fake.sleeps) <= 4 * (REFUSALS_TO_STOP - 1) and max(fake.sleeps) <= 1.0
    assert fake.now - 1000.0 < 4 * 1.5, fake.sleeps


def test_a_rerun_once_the_endpoint_is_back_sends_every_row(tmp_path: Path) -> None:
    path = rows_file(tmp_path, 30)
    cfg = settings(tmp_path, path)

    def dead(request: httpx.Request) -> httpx.Response:
        raise aiohttp_dns()

    assert run_mock(cfg, dead, FakeTime()).status == "endpoint_down"
    sent: list[int] = []

    def back(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(200, json=completion())

    again = run_mock(cfg, back, FakeTime())  # no --retry-failed needed: nothing failed
    assert again.status == "complete" and again.exit_code == EXIT_OK
    assert len(sent) == 30 and len(read_lines(tmp_path / "run" / "results.jsonl")) == 30


def test_refusals_while_other_requests_are_answered_do_not_stop_the_run(
    tmp_path: Path,
) -> None:
    """A server restarting behind a name that also reaches a live one: the refused
    attempts are retried and every row is answered."""
    refused_left = {str(i): 4 for i in range(0, 40, 2)}  # even rows: refused 4 times

    def handler(request: httpx.Request) -> httpx.Response:
        row = json.loads(request.content)["messages"][0]["content"][1:]
        if refused_left.get(row, 0) > 0:
            refused_left[row] -= 1
            raise aiohttp_refused()
        return httpx.Response(200, json=completion())

    result = run_mock(settings(tmp_path, rows_file(tmp_path, 40)), handler, FakeTime())
    assert result.status == "complete" and result.exit_code == EXIT_OK
    lines = {r["custom_id"]: r for r in read_lines(tmp_path / "run" / "results.jsonl")}
    assert len(lines) == 40
    assert lines["0"]["batchrun"]["statuses"] == [None, None, None, None, 200]


def test_refusals_while_an_older_request_awaits_its_answer_do_not_stop_the_run(
    tmp_path: Path,
) -> None:
    """Nothing answered yet, but the first request is on the wire (connected, the model
    thinking): the second's refusals must wait for it rather than stop the run."""
    path = tmp_path / "requests.jsonl"
    path.write_text(
        json.dumps({**body("slow"), "custom_id": "slow"})
        + "\n"
        + json.dumps({**body("flaky"), "custom_id": "flaky"})
        + "\n"
    )
    answer = anyio.Event()
    refusals = [0]

    async def handler(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][0]["content"]
        if text == "slow":
            await answer.wait()
            return httpx.Response(200, json=completion())
        refusals[0] += 1
        if refusals[0] <= REFUSALS_TO_STOP + 2:
            if refusals[0] == REFUSALS_TO_STOP + 2:
                answer.set()  # the slow one answers only after the third refusal
            raise aiohttp_refused()
        return httpx.Response(200, json=completion())

    result = run_mock(settings(tmp_path, path, concurrency=2), handler, FakeTime())
    assert result.status == "complete" and result.exit_code == EXIT_OK, result.notes
    assert refusals[0] == REFUSALS_TO_STOP + 3
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 2


def test_refusals_after_the_endpoint_answered_fail_the_row_as_before(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "".join(json.dumps({**body(t), "custom_id": t}) + "\n" for t in ("fine", "gone"))
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["messages"][0]["content"] == "gone":
            raise aiohttp_refused()
        return httpx.Response(200, json=completion())

    cfg = settings(tmp_path, path, concurrency=1, max_attempts=5)
    result = run_mock(cfg, handler, FakeTime())
    assert result.status == "complete" and result.exit_code == EXIT_SOME_FAILED
    (err,) = read_lines(tmp_path / "run" / "errors.jsonl")
    assert err["error"]["code"] == "connection_refused"
    assert len(err["error"]["attempts"]) == 5
    assert err["error"]["message"] == f"connection refused by {HOST}:443"


# -- the Batch API client and driver: the same mapping ------------------------------------


def batch_client(handler: Any, slept: list[float]) -> BatchClient:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return BatchClient(
        base_url=f"https://{HOST}/v1",
        transport=httpx.MockTransport(handler),
        sleep=sleep,
        max_attempts=8,
    )


def test_the_batch_client_does_not_retry_a_name_that_does_not_resolve(tmp_path: Path) -> None:
    calls: list[str] = []
    slept: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise aiohttp_dns()

    async def main() -> tuple[BatchApiError, BatchApiError]:
        client = batch_client(handler, slept)
        with pytest.raises(BatchApiError) as listed:
            await client.list_batches()
        # a create that never connected was never sent: not CreateUnknown
        with pytest.raises(BatchApiError) as created:
            await client.create("file-1", metadata_for("r", 1, 1))
        await client.aclose()
        return listed.value, created.value

    listed, created = anyio.run(main)
    assert calls == ["/v1/batches", "/v1/batches"] and slept == []
    assert not isinstance(created, CreateUnknown)
    for exc in (listed, created):
        assert exc.unreachable is not None and exc.code == "dns_error"
        assert f"cannot resolve {HOST}" in exc.message


def test_the_batch_client_retries_refusals_a_few_times_then_only_once_answered() -> None:
    slept: list[float] = []
    script: list[Any] = [aiohttp_refused()] * 10

    def handler(request: httpx.Request) -> httpx.Response:
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    async def main() -> tuple[BatchApiError, BatchApiError]:
        client = batch_client(handler, slept)
        with pytest.raises(BatchApiError) as first:
            await client.retrieve("b1")
        assert len(slept) == REFUSALS_TO_STOP - 1  # a few quick tries, then it gives up
        # once it has answered (a 503 here), refusals are retried to the end
        script[:] = [httpx.Response(503, json={"error": {"message": "busy"}})] + [
            aiohttp_refused()
        ] * 8
        with pytest.raises(BatchApiError) as later:
            await client.retrieve("b1")
        await client.aclose()
        return first.value, later.value

    first, later = anyio.run(main)
    assert first.unreachable is not None
    assert later.unreachable is None and later.code == "connection_refused"
    assert len(slept) == REFUSALS_TO_STOP - 1 + 7


def test_a_batch_run_at_an_unresolvable_host_stops_at_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise aiohttp_dns()

    cfg = replace(settings(tmp_path, rows_file(tmp_path, 50)), mode="batch", quiet=True)
    fake = FakeTime()
    driver = BatchDriver(
        cfg,
        transport=httpx.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        stream=io.StringIO(),
    )
    result = anyio.run(driver.run)
    assert result.status == "endpoint_down" and result.exit_code == EXIT_ERROR
    assert result.summary["requests"]["pending"] == 50
    assert len(calls) == 1 and fake.sleeps == []
    assert any(f"cannot resolve {HOST}" in note for note in result.notes), result.notes


# -- real sockets --------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_command_at(
    tmp_path: Path, base_url: str, *options: str, env: dict[str, str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """`batchrun run` of 30 rows at ``base_url``, timed: its result and summary.json."""
    path = rows_file(tmp_path, 30)
    out = tmp_path / "run"
    started = time.monotonic()
    result = CliRunner().invoke(
        cli, ["run", str(path), "-o", str(out), "--base-url", base_url, "-q", *options], env=env
    )
    took = time.monotonic() - started
    assert result.exit_code == EXIT_ERROR, result.output
    assert took < 20, took  # default --max-attempts 10: about two minutes before the fix
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "endpoint_down"
    assert summary["requests"]["pending"] == 30 and summary["requests"]["failed"] == 0
    return result, summary


def test_a_closed_loopback_port_ends_the_command_within_seconds(tmp_path: Path) -> None:
    port = closed_port()
    result, _ = run_command_at(tmp_path, f"http://127.0.0.1:{port}/v1", "--auth", "none")
    assert f"connection refused by 127.0.0.1:{port}" in result.stderr


def resolution_fails_fast(name: str) -> bool:
    """The resolver says "no" to ``name`` at once (no network needed: .invalid never
    resolves, RFC 6761); a resolver that hangs instead would make the test slow."""
    outcome: list[bool] = []

    def look() -> None:
        try:
            socket.getaddrinfo(name, 443)
            outcome.append(False)
        except OSError:
            outcome.append(True)

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    thread.join(3.0)
    return outcome == [True]


def test_an_unresolvable_host_ends_the_command_within_seconds(tmp_path: Path) -> None:
    if not resolution_fails_fast(HOST):
        pytest.skip(f"the resolver does not fail {HOST} within 3 s here")
    result, _ = run_command_at(
        tmp_path,
        f"https://{HOST}/v1",
        "--api-key-env",
        "BATCHRUN_TEST_KEY",
        env={"BATCHRUN_TEST_KEY": "sk-test-not-a-key"},
    )
    assert f"cannot resolve {HOST}" in result.stderr


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[int]:
    """A loopback HTTPS server whose certificate nobody trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Quiet)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_a_certificate_that_does_not_verify_stops_the_run(
    tmp_path: Path, self_signed_server: int
) -> None:
    cfg = replace(
        settings(tmp_path, rows_file(tmp_path, 20)),
        base_url=f"https://127.0.0.1:{self_signed_server}/v1",
        auth="none",
    )
    started = time.monotonic()
    result = anyio.run(Runner(cfg).run)
    assert time.monotonic() - started < 20
    assert_stopped_pending(result, tmp_path, 20, "TLS: certificate verify failed for 127.0.0.1")
