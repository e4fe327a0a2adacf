"""aiohttp answers shared by the chat-completions and the Files/Batches edges.

JSON bodies (objects or OpenAI's error envelope), the deliberate faults that are
not answers at all (a dropped connection) or are an injected error status, and the API
key check (`KeyCheck`).

    return json_response({"id": "file-abc", "object": "file"}, headers)
    return error_response(ApiError(404, "No such File object: file-abc"))
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from batchrun.sim.envelope import ApiError, injected_error
from batchrun.sim.quota import retry_after_headers

JSON = "application/json"

T = TypeVar("T")
Answer = Awaitable[web.StreamResponse]


def json_response(
    payload: Any, headers: dict[str, str] | None = None, status: int = 200
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type=JSON, headers=headers
    )


def error_response(
    error: ApiError, headers: dict[str, str] | None = None, status: int | None = None
) -> web.Response:
    """OpenAI's error envelope with the error's status (or `status`, e.g. 200)."""
    return json_response(error.body(), headers, status or error.status)


def injected_status(status: int, headers: dict[str, str], retry_after: float) -> web.Response:
    """A scripted or drawn HTTP error fault: OpenAI's envelope for `status`, with the
    ``Retry-After`` headers on a 429 (added to `headers`)."""
    if status == 429:
        headers.update(retry_after_headers(retry_after))
    return error_response(injected_error(status), headers)


def drop(request: web.BaseRequest) -> None:
    """Abort the TCP connection: the client sees a reset, not an HTTP answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()


class KeyCheck:
    """The key a simulator requires (None: any key, or none), as a ``Bearer``
    Authorization or an Azure-style ``api-key`` header; compared in constant time."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    @staticmethod
    def presented(request: web.BaseRequest) -> str | None:
        auth = request.headers.get("Authorization")
        if auth is not None:
            return auth
        return request.headers.get("api-key")

    def authorized(self, request: web.BaseRequest) -> bool:
        return self.ok(self.presented(request))

    def ok(self, presented: str | None) -> bool:
        if self._key is None:
            return True
        if presented is None:
            return False
        value = presented.encode("utf-8", errors="replace")
        if value[:7].lower() == b"bearer ":
            value = value[7:].strip()
        return hmac.compare_digest(value, self._key)


def found_by_id(
    find: Callable[[str], T | None],
    missing: Callable[[str], ApiError],
    route: Callable[[web.BaseRequest, dict[str, str], T], Answer],
) -> Callable[[web.BaseRequest, dict[str, str], str], Answer]:
    """A route over one stored object, given its id from the path: the object
    ``find(id)`` returns is handed to `route`, and when there is none the answer is
    `missing`'s 404 (``No such File object``)."""

    async def by_id(
        request: web.BaseRequest, headers: dict[str, str], key: str
    ) -> web.StreamResponse:
        found = find(key)
        if found is None:
            return error_response(missing(key), headers)
        return await route(request, headers, found)

    return by_id
