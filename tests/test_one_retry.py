"""One retry engine and one error mapping (issue 25): the chat client and the Files/
Batches client classify HTTP statuses the same way (`error_for_status`), map the HTTP
stack's exceptions in one table (`map_transport_error`), and retry with the same
tenacity policy (`is_retryable`, `wait_seconds`, `make_retrying`).

The table and the predicate are tested as plain functions; the batch client through
``httpx.MockTransport`` with an injected sleep that records each wait and a seeded
random source, so the waits it takes can be compared with `wait_seconds` computed from
the same states. Nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import pytest
import tenacity

from batchrun._batch.client import RETRY_CAP, BatchClient
from batchrun._batch.protocol import metadata_for
from batchrun._pacing.retry import (
    is_retryable,
    is_retryable_status,
    make_retrying,
    wait_seconds,
)
from batchrun._redact import register_secret
from batchrun._transport.client import ChatClient
from batchrun._transport.connect import map_transport_error
from batchrun._transport.responses import error_for_status
from batchrun.errors import (
    BatchApiError,
    ClientError,
    CreateUnknown,
    EndpointUnreachable,
    RateLimited,
    RequestError,
    RequestTimeout,
    RunDirError,
    ServerError,
    TransportError,
)

HOST = "api.example.test"
KEY = "sk-one-retry-canary-0123456789abcdef"


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


# -- the one table: the HTTP stack's exceptions -> batchrun.errors -----------------------


def server_disconnected() -> BaseException:
    # httpx-aiohttp maps every aiohttp.ClientConnectionError to ConnectTimeout
    return chained(httpx.ConnectTimeout("Server disconnected"), aiohttp.ServerDisconnectedError())


def aiohttp_read_timeout() -> BaseException:
    text = "Timeout on reading data from socket"
    return chained(httpx.TimeoutException(text), aiohttp.ServerTimeoutError(text))


@pytest.mark.parametrize(
    ("make", "kind", "code"),
    [
        (
            lambda: chained(httpx.ConnectError("x"), socket.gaierror(-2, "Name not known")),
            EndpointUnreachable,
            "dns_error",
        ),
        (
            lambda: chained(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")),
            EndpointUnreachable,
            "connection_refused",
        ),
        (server_disconnected, TransportError, "connection_error"),
        (lambda: httpx.ReadTimeout("read timed out"), RequestTimeout, "timeout"),
        (aiohttp_read_timeout, RequestTimeout, "timeout"),
        (lambda: TimeoutError(), RequestTimeout, "timeout"),
        (lambda: httpx.RemoteProtocolError("peer closed"), TransportError, "connection_error"),
        (lambda: httpx.ReadError("reset"), TransportError, "connection_error"),
        (lambda: ConnectionResetError(104, "reset by peer"), TransportError, "connection_error"),
        (lambda: aiohttp.ClientPayloadError("truncated"), TransportError, "connection_error"),
    ],
)
def test_the_table_maps_each_failure_of_the_stack_once(
    make: Callable[[], BaseException], kind: type[RequestError], code: str
) -> None:
    mapped = map_transport_error(make(), HOST, 443)
    assert type(mapped) is kind and mapped.code == code
    assert mapped.status is None and mapped.retryable


def test_a_connection_error_is_named_for_what_really_happened() -> None:
    mapped = map_transport_error(server_disconnected(), HOST, 443)
    assert mapped is not None and mapped.message.startswith("ServerDisconnectedError")


@pytest.mark.parametrize(
    "exc",
    [KeyError("bug"), ValueError("bug"), asyncio.CancelledError(), KeyboardInterrupt()],
    ids=["KeyError", "ValueError", "CancelledError", "KeyboardInterrupt"],
)
def test_what_is_not_the_transport_s_is_not_mapped(exc: BaseException) -> None:
    assert map_transport_error(exc, HOST, 443) is None


def test_a_mapped_message_never_holds_the_key() -> None:
    register_secret(KEY)
    mapped = map_transport_error(httpx.ReadError(f"GET /v1?key={KEY} failed"), HOST, 443)
    assert mapped is not None and KEY not in mapped.message


def test_the_chat_client_maps_a_timeout_of_the_stack_not_as_its_total_deadline() -> None:
    class TimesOut(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise TimeoutError()

    class Bug(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise KeyError("a bug, not a transport failure")

    async def send(transport: httpx.AsyncBaseTransport) -> BaseException:
        client = ChatClient(base_url=f"https://{HOST}/v1", transport=transport)
        try:
            await client.send({"model": "m", "messages": []})
        except BaseException as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no error")

    timed_out = anyio.run(send, TimesOut())
    assert isinstance(timed_out, RequestTimeout) and timed_out.code == "timeout"
    assert isinstance(timed_out.__cause__, TimeoutError)
    assert type(anyio.run(send, Bug())) is KeyError


# -- one predicate: the statuses the retry policy names are the statuses it retries -------


def test_every_status_is_classified_as_the_retry_policy_says() -> None:
    body = b'{"error": {"message": "no"}}'
    differ = [
        status
        for status in range(300, 600)
        if is_retryable(error_for_status(status, {}, body)) != is_retryable_status(status)
    ]
    assert differ == []


def test_insufficient_quota_is_a_429_no_retry_helps() -> None:
    body = b'{"error": {"message": "quota", "code": "insufficient_quota"}}'
    assert not is_retryable(error_for_status(429, {}, body))


def state_after(exc: RequestError, attempt: int) -> tenacity.RetryCallState:
    """The tenacity state of a call whose attempt number ``attempt`` raised ``exc``."""
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    try:
        raise exc
    except RequestError:
        state.set_exception(sys.exc_info())  # type: ignore[arg-type]
    return state


async def never_sleeps(seconds: float) -> None:
    raise AssertionError("a wait was computed, never slept")


@pytest.mark.parametrize(
    ("status", "headers", "attempt", "wait"),
    [
        (503, {}, 1, 1.0),  # half of retry_base: equal jitter, lowest draw
        (503, {}, 3, 4.0),  # doubled twice
        (503, {}, 12, RETRY_CAP / 2),  # the ceiling is RETRY_CAP
        (429, {"retry-after": "3"}, 1, 3.0),
        (429, {"retry-after-ms": "250"}, 5, 0.25),  # a hint wins on any attempt
        (503, {"retry-after": "600"}, 1, RETRY_CAP),  # a hint is capped too
        (429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}, 1, 2.0),
    ],
)
def test_the_batch_calls_policy_waits_from_a_built_state(
    status: int, headers: dict[str, str], attempt: int, wait: float
) -> None:
    failure = error_for_status(status, headers, b"")
    retrying = make_retrying(
        8, never_sleeps, rand=lambda: 0.0, base=2.0, cap=RETRY_CAP, max_wait=RETRY_CAP
    )
    assert retrying.wait(state_after(failure, attempt)) == wait
    assert retrying.retry(state_after(failure, attempt))  # the same predicate decides


# -- the batch client: the same policy, per call kind ------------------------------------


class Script:
    """Answers each request with the next scripted step (a response or an exception)."""

    def __init__(self, *steps: httpx.Response | BaseException) -> None:
        self.steps = list(steps)
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def busy(status: int = 503, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": "busy"}}, headers=headers)


BATCH = {"id": "batch_1", "status": "in_progress"}
SEED = 25


def client_for(script: Script, slept: list[float], **extra: Any) -> BatchClient:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return BatchClient(
        base_url=f"https://{HOST}/v1",
        api_key=KEY,
        transport=httpx.MockTransport(script),
        sleep=sleep,
        rng=random.Random(SEED),
        **extra,
    )


def call(client: BatchClient, method: str, *args: Any) -> Any:
    async def main() -> Any:
        try:
            return await getattr(client, method)(*args)
        except BaseException as exc:
            return exc
        finally:
            await client.aclose()

    return anyio.run(main)


def test_the_batch_client_retries_a_503_and_a_429_through_the_shared_waits() -> None:
    script = Script(busy(503), busy(429, **{"retry-after": "3"}), httpx.Response(200, json=BATCH))
    slept: list[float] = []
    client = client_for(script, slept, retry_base=2.0)
    assert call(client, "retrieve", "batch_1") == BATCH
    # the waits the chat engine's policy gives for the same failures, same random draws
    rand = random.Random(SEED).random
    policy = {"base": 2.0, "cap": RETRY_CAP, "max_wait": RETRY_CAP}
    expected = [
        wait_seconds(ServerError("busy", code="http_503", status=503), 1, rand=rand, **policy),
        wait_seconds(
            RateLimited("busy", code="http_429", status=429, headers={"retry-after": "3"}),
            2,
            rand=rand,
            **policy,
        ),
    ]
    assert slept == expected
    assert 1.0 <= slept[0] <= 2.0  # exponential back-off from retry_base, equal jitter
    assert 3.0 <= slept[1] <= 3.3  # Retry-After honoured; jitter only adds
    assert client.calls == 3 and client.retries == 2


def test_the_batch_client_honours_x_should_retry_as_the_chat_client_does() -> None:
    script = Script(busy(503, **{"x-should-retry": "false"}), httpx.Response(200, json=BATCH))
    slept: list[float] = []
    failed = call(client_for(script, slept), "retrieve", "batch_1")
    assert isinstance(failed, BatchApiError) and failed.status == 503
    assert not failed.retryable and slept == [] and len(script.calls) == 1


def test_a_429_for_insufficient_quota_is_not_retried() -> None:
    error = {"message": "You exceeded your current quota", "code": "insufficient_quota"}
    quota = httpx.Response(429, json={"error": error})
    slept: list[float] = []
    failed = call(client_for(Script(quota), slept), "list_batches")
    assert isinstance(failed, BatchApiError) and failed.code == "insufficient_quota"
    assert not failed.retryable and slept == []


def test_a_server_hint_is_capped_for_the_batch_calls() -> None:
    script = Script(busy(503, **{"retry-after": "600"}), httpx.Response(200, json=BATCH))
    slept: list[float] = []
    call(client_for(script, slept), "retrieve", "batch_1")
    assert slept == [RETRY_CAP]


def test_a_call_that_fails_for_good_is_raised_from_its_last_attempt() -> None:
    script = Script(*[httpx.ReadError("reset by peer")] * 3)
    slept: list[float] = []
    failed = call(client_for(script, slept, max_attempts=3), "cancel", "batch_1")
    assert isinstance(failed, BatchApiError) and failed.retryable and len(slept) == 2
    assert isinstance(failed.__cause__, TransportError)
    assert isinstance(failed.__cause__.__cause__, httpx.ReadError)
    assert failed.message == "cancel: ReadError: reset by peer"


@pytest.mark.parametrize(
    "step",
    [busy(503), httpx.Response(200, content=b"<html>oops</html>"), httpx.ReadTimeout("slow")],
    ids=["503", "unreadable 200", "timeout"],
)
def test_a_create_is_sent_once_and_an_answer_it_may_have_had_is_unknown(
    step: httpx.Response | BaseException,
) -> None:
    script = Script(step, httpx.Response(200, json=BATCH))
    slept: list[float] = []
    failed = call(client_for(script, slept), "create", "file-1", metadata_for("r", 1, 1))
    assert isinstance(failed, CreateUnknown), failed
    assert script.calls == ["POST /v1/batches"] and slept == []


def test_a_create_the_provider_refused_is_not_unknown() -> None:
    refused = httpx.Response(400, json={"error": {"message": "bad file", "code": "invalid_file"}})
    failed = call(client_for(Script(refused), []), "create", "file-1", metadata_for("r", 1, 1))
    assert type(failed) is BatchApiError and failed.status == 400
    assert failed.code == "invalid_file" and not failed.retryable
    assert isinstance(failed.__cause__, ClientError)


def test_an_error_body_quoting_the_key_is_scrubbed_whole() -> None:
    echoed = httpx.Response(401, json={"error": {"message": f"bad key {KEY}"}})
    failed = call(client_for(Script(echoed), []), "retrieve", "batch_1")
    assert isinstance(failed, BatchApiError) and failed.status == 401
    assert KEY not in failed.message and KEY not in str(failed.body)


def test_a_download_the_disk_refuses_is_the_run_directory_s_error(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, content=b'{"id": "x"}\n'))
    slept: list[float] = []
    target = tmp_path / "no-such-dir" / "out.jsonl"
    failed = call(client_for(script, slept), "download", "file-1", str(target))
    assert isinstance(failed, RunDirError) and str(target) in str(failed)
    assert len(script.calls) == 1 and slept == []  # a disk error is not retried


def test_an_upload_whose_file_is_gone_is_the_run_directory_s_error(tmp_path: Path) -> None:
    script = Script(httpx.Response(200, json={"id": "file-1"}))
    slept: list[float] = []
    missing = str(tmp_path / "s000001.jsonl")
    failed = call(client_for(script, slept), "upload", missing, "s000001.jsonl")
    assert isinstance(failed, RunDirError) and missing in str(failed)
    assert script.calls == [] and slept == []
