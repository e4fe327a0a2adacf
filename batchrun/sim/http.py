"""aiohttp answers shared by the chat-completions and the Files/Batches edges.

JSON bodies (objects or OpenAI's error envelope), the deliberate faults that are
not answers at all (a dropped connection), and the API key check (`KeyCheck`).

    return json_response({"id": "file-abc", "object": "file"}, headers)
    return error_response(ApiError(404, "No such File object: file-abc"))
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from aiohttp import web

from batchrun.sim.envelope import ApiError

JSON = "application/json"


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
