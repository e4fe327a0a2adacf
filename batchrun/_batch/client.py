"""The provider's Files and Batches API over HTTP, with retries that never double a batch.

One method per call a batch run makes: `upload`, `create`, `retrieve`, `list_batches`,
`cancel`, `download`, `delete_file`, `list_files`. The transport is injected
(``httpx.MockTransport`` in unit tests, a loopback simulator in integration tests).

Every call goes through the chat client's retry engine and error mapping: an HTTP
status is classified by `batchrun._transport.responses.error_for_status`, an exception
of the HTTP stack by `batchrun._transport.connect.map_transport_error`, and tenacity
retries with `batchrun._pacing.retry`'s policy (`is_retryable`: connection errors,
timeouts, 408/409/429 and 5xx, ``x-should-retry`` obeyed; `wait_seconds`:
``retry-after-ms``/``Retry-After``/``x-ratelimit-reset-*``, else exponential back-off
from ``retry_base`` seconds, both capped at `RETRY_CAP`) up to ``max_attempts``. What
differs is how many attempts each kind of call gets. Calls that cannot change what
is paid for (retrieve, list, download, delete, cancel, and upload: an extra upload is
an unused file, never a batch) get ``max_attempts``. `create` gets one: a create
whose answer was lost may have made the batch, and creating again would run (and
bill) the shard twice. A create that may have happened (no answer, a timeout, an
unreadable answer, 408/409/5xx) raises `CreateUnknown`, and the run looks for the
batch by its metadata (`batchrun._batch.submit`, `batchrun._batch.reconcile`) before it
may create again; one the provider refused (another 4xx) or that never connected was
not made: an ordinary `BatchApiError`.

A call that cannot connect at all (the name does not resolve, TLS fails, the port
refuses) is an `EndpointUnreachable`, as for the chat client; before the endpoint has
answered this client once, it is not retried (refused: a few quick times) and the
error carries ``unreachable``, on which the run stops
(`batchrun._pacing.retry.ends_the_run`).

A call that fails for good raises `BatchApiError` ``from`` the last attempt's
`RequestError`; a download that cannot write its file raises `RunDirError`. Messages
never hold the key: every text taken from a response passes through
`batchrun._redact.scrub_text`, and the key is registered as a secret here.

    client = BatchClient(base_url="https://api.openai.com/v1", api_key=key)
    uploaded = await client.upload("batch/s000001.jsonl", "s000001.jsonl")
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
import orjson

from batchrun._batch.protocol import CHAT_ENDPOINT, COMPLETION_WINDOW
from batchrun._pacing.retry import (
    ends_the_run,
    is_retryable,
    make_retrying,
    retry_after_seconds,
)
from batchrun._redact import register_secret, scrub, scrub_json, scrub_text
from batchrun._transport.client import auth_headers
from batchrun._transport.connect import map_transport_error
from batchrun._transport.responses import error_for_status
from batchrun._version import __version__
from batchrun.errors import (
    BadResponse,
    BatchApiError,
    BatchrunError,
    CreateUnknown,
    EndpointUnreachable,
    RequestError,
    RunDirError,
)

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
MAX_ATTEMPTS = 8
RETRY_CAP = 60.0
"""Longest wait between two attempts of a call, a server's hint included: the run polls
on, and a provider that asks for more is asked again then."""
DOWNLOAD_CHUNK = 1 << 20
MAX_MESSAGE = 300


class BatchClient:
    """Files and Batches API calls (see the module docstring)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        auth: str = "bearer",
        auth_header: str = "Authorization",
        extra_headers: Sequence[tuple[str, str]] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 120.0,
        max_attempts: int = MAX_ATTEMPTS,
        retry_base: float = 1.0,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        register_secret(api_key)
        headers = {"user-agent": f"batchrun/{__version__}", **dict(extra_headers)}
        headers.update(auth_headers(api_key, auth, auth_header))
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            event_hooks={"response": [self._answered]},
        )
        url = self._http.base_url
        self._host = url.host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self.reached = False
        """The endpoint has answered a call (any HTTP status)."""
        self.max_attempts = max(1, max_attempts)
        self.retry_base = retry_base
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.calls = 0
        self.retries = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _answered(self, response: httpx.Response) -> None:
        self.reached = True

    # -- the calls ----------------------------------------------------------------------
    async def upload(self, path: str, filename: str) -> dict[str, Any]:
        """Upload a batch input file (``purpose=batch``), streamed from disk."""

        async def send() -> httpx.Response:
            # httpx streams the multipart body from the open file, 64 KiB a read
            with _on_disk(path, "read the batch input file"):
                f = open(path, "rb")  # noqa: ASYNC230
            with f:
                files = {"file": (filename, f, "application/jsonl")}
                return await self._http.post("files", data={"purpose": "batch"}, files=files)

        return await self._call("upload", send)

    async def create(
        self, input_file_id: str, metadata: Mapping[str, str], endpoint: str = CHAT_ENDPOINT
    ) -> dict[str, Any]:
        """Create a batch for ``endpoint`` (every line of its file names it). Never
        retried blindly: see `CreateUnknown`."""
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": dict(metadata),
        }
        try:
            made: dict[str, Any] = await self._call(
                "create", lambda: self._http.post("batches", json=body), attempts=1
            )
        except BatchApiError as exc:
            failure = exc.__cause__
            if isinstance(failure, RequestError) and _may_have_created(failure):
                raise CreateUnknown(
                    exc.message,
                    status=exc.status,
                    code=exc.code,
                    body=exc.body,
                    retryable=exc.retryable,
                ) from failure
            raise
        return made

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._call("retrieve", lambda: self._http.get(f"batches/{batch_id}"))

    async def list_batches(self, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """One page of the batches, newest first (``has_more``/``last_id`` to page on)."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return await self._call("list", lambda: self._http.get("batches", params=params))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("cancel", lambda: self._http.post(f"batches/{batch_id}/cancel"))

    async def delete_file(self, file_id: str) -> None:
        try:
            await self._call("delete", lambda: self._http.delete(f"files/{file_id}"))
        except BatchApiError as exc:
            if exc.status != 404:  # already gone: what we wanted
                raise

    async def list_files(self, purpose: str = "batch", after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"purpose": purpose}
        if after:
            params["after"] = after
        return await self._call("list_files", lambda: self._http.get("files", params=params))

    async def download(self, file_id: str, path: str) -> int:
        """A file's content into ``path`` (replaced whole on each attempt); its size.

        Downloaded to disk first, so a connection lost halfway retries the download
        without a single line having been taken from it.
        """

        async def attempt() -> int:
            size = 0
            async with self._http.stream("GET", f"files/{file_id}/content") as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _refused(response)
                with _on_disk(path, "write the downloaded file"):
                    out = await anyio.open_file(path, "wb")
                async with out:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                        with _on_disk(path, "write the downloaded file"):
                            await out.write(chunk)
                        size += len(chunk)
                    with _on_disk(path, "write the downloaded file"):
                        await out.flush()
                        await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            return size

        return await self._retrying("download", attempt)

    # -- retries ------------------------------------------------------------------------
    async def _call(
        self,
        what: str,
        send: Callable[[], Awaitable[httpx.Response]],
        *,
        attempts: int | None = None,
    ) -> Any:
        """The JSON answer of ``send``, retried (`_retrying`)."""

        async def attempt() -> Any:
            return _parsed(await send())

        return await self._retrying(what, attempt, attempts=attempts)

    async def _retrying(
        self, what: str, attempt: Callable[[], Awaitable[T]], *, attempts: int | None = None
    ) -> T:
        """``attempt`` under the shared retry policy (`batchrun._pacing.retry`), at most
        ``attempts`` times (default ``max_attempts``); a failure for good as a
        `BatchApiError` raised from the last attempt's `RequestError`."""
        limit = self.max_attempts if attempts is None else max(1, attempts)
        tries = 0

        async def once() -> T:
            nonlocal tries
            tries += 1
            self.calls += 1
            try:
                return await attempt()
            except BatchrunError:
                raise
            except Exception as exc:
                failure = map_transport_error(exc, self._host, self._port)
                if failure is None:  # not the transport's: a bug, raised as it is
                    raise
                if isinstance(failure, EndpointUnreachable) and ends_the_run(
                    failure, reached=self.reached, refusals=tries, max_attempts=limit
                ):
                    # not a RequestError, so tenacity does not retry it
                    failure.__cause__ = exc
                    raise _api_error(what, failure, unreachable=failure) from failure
                raise failure from exc

        retrying = make_retrying(
            limit,
            self.sleep,
            self._retried,
            rand=self.rng.random,
            base=self.retry_base,
            cap=RETRY_CAP,
            max_wait=RETRY_CAP,
        )
        try:
            result: T = await retrying(once)
        except RequestError as exc:
            raise _api_error(what, exc) from exc
        return result

    def _retried(self, state: Any) -> None:
        self.retries += 1


def _may_have_created(exc: RequestError) -> bool:
    """Whether a create that failed so may have made its batch: unless it never
    connected, or the provider refused it (a 4xx other than 408/409), it may."""
    if isinstance(exc, EndpointUnreachable):
        return False
    status = exc.status
    refused = status is not None and 300 <= status < 500 and status not in (408, 409)
    return not refused


@contextlib.contextmanager
def _on_disk(path: str, doing: str) -> Iterator[None]:
    """The files a call reads or writes: a disk that refuses them is the run
    directory's trouble, not the provider's (never retried as a transport error)."""
    try:
        yield
    except OSError as exc:
        raise RunDirError(f"{path}: cannot {doing} ({exc.strerror or exc})") from exc


def _api_error(
    what: str, exc: RequestError, *, unreachable: EndpointUnreachable | None = None
) -> BatchApiError:
    """The `BatchApiError` of a call that failed with ``exc``: the provider's own
    message and code, scrubbed and cut short; ``retryable`` as `is_retryable` says."""
    message = scrub_text(exc.message)
    status = exc.status
    if status is not None and status >= 300 and not message.startswith(f"HTTP {status}"):
        message = f"HTTP {status}: {message}"
    return BatchApiError(
        f"{what}: {message}"[:MAX_MESSAGE],
        status=status,
        code=exc.code,
        body=scrub_json(exc.body),
        retry_after=retry_after_seconds(exc.headers) if exc.headers else None,
        unreachable=unreachable,
        retryable=is_retryable(exc),
    )


def _refused(response: httpx.Response) -> RequestError:
    """The classified error of a read answer that is not a 200 (`error_for_status`),
    from its body with every registered secret masked first: a proxy quoting our
    Authorization header must not put the key in a message, whole or cut short."""
    return error_for_status(response.status_code, response.headers, scrub(response.content))


def _parsed(response: httpx.Response) -> Any:
    """The JSON body of a 200, or the classified error."""
    if response.status_code != 200:
        raise _refused(response)
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise BadResponse(
            "the answer is not JSON",
            code="invalid_json",
            status=response.status_code,
            headers=response.headers,
        ) from exc


__all__ = ["BatchClient", "CreateUnknown"]
