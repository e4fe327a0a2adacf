"""aiohttp answers shared by the chat-completions and the Files/Batches edges.

JSON bodies (objects or OpenAI's error envelope) and the deliberate faults that are
not answers at all: a dropped connection.

    return json_response({"id": "file-abc", "object": "file"}, headers)
    return error_response(ApiError(404, "No such File object: file-abc"))
"""

from __future__ import annotations

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
