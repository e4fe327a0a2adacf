"""The provider's Files and Batches API over HTTP, with retries that never double a batch.

One method per call a batch run makes: `upload`, `create`, `retrieve`, `list_batches`,
`cancel`, `download`, `delete_file`, `list_files`. The transport is injected
(``httpx.MockTransport`` in unit tests, a loopback simulator in integration tests).

Calls that cannot change what is paid for (retrieve, list, download, delete, cancel,
and upload: an extra upload is an unused file, never a batch) are retried on
connection errors, timeouts, 408/409/429 and 5xx, backing off exponentially from
``retry_base`` seconds (``Retry-After`` obeyed) up to ``max_attempts``. `create` is
not: a create whose answer was lost may have made the batch, and creating again
would run (and bill) the shard twice. A lost or 5xx answer to a create raises
`CreateUnknown`, and the run looks for the batch by its metadata
(`batchrun.batch.submit`, `batchrun.batch.reconcile`) before it may create again.

A call that cannot connect at all (the name does not resolve, TLS fails, the port
refuses) is mapped as the chat client maps it (`batchrun.transport.connect`); before
the endpoint has answered this client once, it is not retried (refused: a few quick
times) and the error carries ``unreachable``, on which the run stops
(`batchrun.pacing.retry.ends_the_run`). A create that never connected was never sent:
it is an ordinary failure, not `CreateUnknown`.

Messages never hold the key: every text taken from a response passes through
`batchrun.redact.scrub_text`, and the key is registered as a secret here.

    client = BatchClient(base_url="https://api.openai.com/v1", api_key=key)
    uploaded = await client.upload("batch/s000001.jsonl", "s000001.jsonl")
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.to_thread
import httpx
import orjson

from batchrun import __version__
from batchrun.batch.protocol import CHAT_ENDPOINT, COMPLETION_WINDOW
from batchrun.errors import BatchApiError
from batchrun.pacing.retry import ends_the_run, retry_after_seconds
from batchrun.redact import register_secret, scrub_text
from batchrun.transport.client import auth_headers
from batchrun.transport.connect import unreachable

Sleep = Callable[[float], Awaitable[None]]
MAX_ATTEMPTS = 8
RETRY_CAP = 60.0
DOWNLOAD_CHUNK = 1 << 20


class CreateUnknown(BatchApiError):
    """A create got no answer we can trust (lost connection, timeout, 5xx): the batch
    may exist. Look for it by metadata before creating again."""


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

    def _failed(self, what: str, exc: httpx.HTTPError, attempts: int, limit: int) -> BatchApiError:
        """A call that got no HTTP answer, as a BatchApiError (``unreachable`` set when
        the run should stop on it: `ends_the_run`)."""
        down = unreachable(exc, self._host, self._port)
        if down is None:
            return BatchApiError(f"{what}: {_describe(exc)}")
        stops = ends_the_run(down, reached=self.reached, refusals=attempts, max_attempts=limit)
        return BatchApiError(
            f"{what}: {down.message}", code=down.code, unreachable=down if stops else None
        )

    # -- the calls ----------------------------------------------------------------------
    async def upload(self, path: str, filename: str) -> dict[str, Any]:
        """Upload a batch input file (``purpose=batch``), streamed from disk."""

        async def send() -> httpx.Response:
            # httpx streams the multipart body from the open file, 64 KiB a read
            with open(path, "rb") as f:  # noqa: ASYNC230
                files = {"file": (filename, f, "application/jsonl")}
                return await self._http.post("files", data={"purpose": "batch"}, files=files)

        return await self._json("upload", send)

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
        self.calls += 1
        try:
            response = await self._http.post("batches", json=body)
        except httpx.HTTPError as exc:
            failed = self._failed("create", exc, 1, 1)
            if failed.code is not None:  # never connected: the create was not sent
                raise failed from exc
            raise CreateUnknown(f"create: no answer ({_describe(exc)})") from exc
        if response.status_code >= 500 or response.status_code in (408, 409):
            raise CreateUnknown(f"create: HTTP {response.status_code}", status=response.status_code)
        return _parsed("create", response)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._json("retrieve", lambda: self._http.get(f"batches/{batch_id}"))

    async def list_batches(self, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """One page of the batches, newest first (``has_more``/``last_id`` to page on)."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return await self._json("list", lambda: self._http.get("batches", params=params))

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._json("cancel", lambda: self._http.post(f"batches/{batch_id}/cancel"))

    async def delete_file(self, file_id: str) -> None:
        try:
            await self._json("delete", lambda: self._http.delete(f"files/{file_id}"))
        except BatchApiError as exc:
            if exc.status != 404:  # already gone: what we wanted
                raise

    async def list_files(self, purpose: str = "batch", after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"purpose": purpose}
        if after:
            params["after"] = after
        return await self._json("list_files", lambda: self._http.get("files", params=params))

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
                    raise _error("download", response)
                async with await anyio.open_file(path, "wb") as out:
                    async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK):
                        await out.write(chunk)
                        size += len(chunk)
                    await out.flush()
                    await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            return size

        return await self._retrying("download", attempt)

    # -- retries ------------------------------------------------------------------------
    async def _json(self, what: str, send: Callable[[], Awaitable[httpx.Response]]) -> Any:
        async def attempt() -> Any:
            return _parsed(what, await send())

        return await self._retrying(what, attempt)

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        for number in range(1, self.max_attempts + 1):
            self.calls += 1
            try:
                return await attempt()
            except httpx.HTTPError as exc:
                error = self._failed(what, exc, number, self.max_attempts)
                if error.unreachable is not None:
                    raise error from exc
                hint = None
            except BatchApiError as exc:
                if not exc.retryable:
                    raise
                error, hint = exc, exc.retry_after
            if number == self.max_attempts:
                raise error
            self.retries += 1
            await self.sleep(self.backoff(number, hint))
        raise AssertionError("unreachable")  # pragma: no cover

    def backoff(self, failures: int, hint: float | None = None) -> float:
        """Seconds before the next attempt: the server's hint, else exponential with
        full jitter from ``retry_base`` up to `RETRY_CAP`.

        >>> BatchClient(base_url="http://x", retry_base=1.0).backoff(3, hint=7.5)
        7.5
        """
        if hint is not None:
            return min(hint, RETRY_CAP)
        ceiling = min(RETRY_CAP, self.retry_base * 2 ** (failures - 1))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)


def _describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = scrub_text(str(exc))[:200]
    return f"{kind}: {text}" if text else kind


def _parsed(what: str, response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise _error(what, response)
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise BatchApiError(f"{what}: the answer is not JSON", status=502) from exc


def _error(what: str, response: httpx.Response) -> BatchApiError:
    """The provider's own message and code, scrubbed and cut short."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    code = message = None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = error.get("message")
    text = scrub_text(str(message or response.text or response.reason_phrase))[:300]
    return BatchApiError(
        f"{what}: HTTP {response.status_code}: {text}",
        status=response.status_code,
        code=str(code) if code else None,
        body=body,
        retry_after=retry_after_seconds(response.headers),
    )


__all__ = ["BatchClient", "CreateUnknown"]
