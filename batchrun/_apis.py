"""The three APIs a request can target: chat completions, embeddings, Responses.

A request file line names its API by its Batch API ``url`` (``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/responses``); a `batchrun._models.Request` carries it as
``api``, the client posts to the API's path under the base URL, and the Batch API
files of each shard name it. Pure: names and paths, no I/O.

Where only a body is at hand (a price estimate of a stored body), `api_of_body` reads
the API from the body's shape; a body that could be either an embeddings or a
Responses request (``{"model", "input": "text"}`` and nothing else) is taken as
Responses, whose answers can be long: the estimate errs on the side of cost.

    >>> api_of_url("/v1/embeddings"), batch_url(RESPONSES)
    ('embeddings', '/v1/responses')
    >>> api_of_body({"model": "m", "input": "hi", "dimensions": 256})
    'embeddings'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CHAT: Final = "chat"
EMBEDDINGS: Final = "embeddings"
RESPONSES: Final = "responses"
APIS = (CHAT, EMBEDDINGS, RESPONSES)

PATHS = {CHAT: "/chat/completions", EMBEDDINGS: "/embeddings", RESPONSES: "/responses"}
"""Each API's path under a base URL that ends in ``/v1`` (or an Azure deployment)."""
_URLS = {CHAT: "/v1/chat/completions", EMBEDDINGS: "/v1/embeddings", RESPONSES: "/v1/responses"}
_BY_URL = {url: api for api, url in _URLS.items()} | {path: api for api, path in PATHS.items()}

EMBEDDING_REQUEST_INPUTS = 2048
"""Most inputs one embeddings request may hold (OpenAI's documented limit)."""
EMBEDDING_BATCH_INPUTS = 50_000
"""Most embedding inputs one Batch API batch may hold, over all its requests (OpenAI)."""

EMBEDDING_FIELDS = ("model", "input", "dimensions", "encoding_format", "user")
RESPONSES_FIELDS = (
    "model", "input", "instructions", "text", "reasoning", "max_output_tokens", "tools",
    "tool_choice", "parallel_tool_calls", "max_tool_calls", "temperature", "top_p",
    "top_logprobs", "stream", "stream_options", "store", "metadata", "user",
    "previous_response_id", "conversation", "include", "truncation", "service_tier",
    "background", "prompt", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier",
)  # fmt: skip
"""The body fields OpenAI documents for each API (a key close to one is a typo)."""
_RESPONSES_ONLY = frozenset(RESPONSES_FIELDS) - {"model", "input", "user", "stream"}
_EMBEDDINGS_ONLY = frozenset({"dimensions", "encoding_format"})


def api_of_url(url: Any) -> str | None:
    """The API a Batch API line's ``url`` names (with or without ``/v1``), else None."""
    return _BY_URL.get(url) if isinstance(url, str) else None


def batch_url(api: str) -> str:
    """The ``url`` of a Batch API input line (and the ``endpoint`` of its batch)."""
    return _URLS[api]


def api_of_body(body: Mapping[str, Any]) -> str:
    """The API a body is shaped for: chat when it has ``messages``; embeddings when it
    sets an embeddings-only field or its ``input`` is a list of texts or token ids (a
    Responses input list holds objects); else Responses when it has an ``input``."""
    if "messages" in body or "input" not in body:
        return CHAT
    if any(key in body for key in _EMBEDDINGS_ONLY):
        return EMBEDDINGS
    value = body["input"]
    if isinstance(value, list) and value and not isinstance(value[0], Mapping):
        return EMBEDDINGS
    return RESPONSES


def defaults_for(api: str, defaults: Mapping[str, Any]) -> Mapping[str, Any]:
    """The job's body defaults (``[request]``, ``--max-tokens``, ...) as an ``api``
    request takes them: a chat request takes them all; a Responses request takes the
    fields it knows, with ``max_tokens`` (or ``max_completion_tokens``) as
    ``max_output_tokens`` and ``reasoning_effort`` as ``reasoning.effort``; an
    embeddings request only its own fields. A field a request cannot take is left
    out, never sent to be refused.

    >>> defaults_for(RESPONSES, {"max_tokens": 50, "temperature": 0, "n": 2})
    {'temperature': 0, 'max_output_tokens': 50}
    >>> defaults_for(EMBEDDINGS, {"max_tokens": 50, "temperature": 0})
    {}
    """
    if api == CHAT:
        return defaults  # every row of a chat file: no copy
    known = EMBEDDING_FIELDS if api == EMBEDDINGS else RESPONSES_FIELDS
    out = {key: value for key, value in defaults.items() if key in known}
    if api == RESPONSES:
        limit = defaults.get("max_completion_tokens", defaults.get("max_tokens"))
        if limit is not None:
            out.setdefault("max_output_tokens", limit)
        effort = defaults.get("reasoning_effort")
        if effort is not None and "reasoning" not in out:
            out["reasoning"] = {"effort": effort}
    return out


def embedding_inputs(body: Mapping[str, Any]) -> int:
    """How many texts an embeddings body asks vectors for: one for a string or a list
    of token ids, one per item for a list of strings or of token lists.

    >>> embedding_inputs({"input": ["a", "b"]}), embedding_inputs({"input": [1, 2, 3]})
    (2, 1)
    """
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


__all__ = [
    "APIS",
    "CHAT",
    "EMBEDDINGS",
    "EMBEDDING_BATCH_INPUTS",
    "EMBEDDING_FIELDS",
    "EMBEDDING_REQUEST_INPUTS",
    "PATHS",
    "RESPONSES",
    "RESPONSES_FIELDS",
    "api_of_body",
    "api_of_url",
    "batch_url",
    "defaults_for",
    "embedding_inputs",
]
