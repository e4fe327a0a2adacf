"""Read a Batch API input file the way OpenAI's validation step does.

OpenAI accepts any upload and checks it only when a batch is validated; a bad file
turns the batch ``failed`` with ``errors.data`` entries ``{code, message, param,
line}`` (lines numbered from 1). Checked here, as documented or observed: empty
file (``empty_file``), too many requests (``too_many_tasks``), file too large,
unparseable or non-object lines (``invalid_json_line``), missing ``custom_id`` /
``method`` / ``url`` / ``body``, a method other than POST, a url other than the
batch's endpoint (``url_mismatch``), duplicate custom ids (``duplicate_custom_id``),
more than one model in a file (``model_mismatch``) and, for ``/v1/embeddings``, more
than 50,000 embedding inputs over all its requests. The request bodies
themselves are not checked here: OpenAI answers a bad body with a 400 in the
error file, row by row, and so does the simulator.

    >>> ok = read_batch_input(b'{"custom_id": "a", "method": "POST", '
    ...     b'"url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}\\n')
    >>> len(ok.rows), ok.errors, ok.model
    (1, [], 'm')
    >>> read_batch_input(b"nope\\n").errors[0]["code"]
    'invalid_json_line'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun._apis import EMBEDDING_BATCH_INPUTS, EMBEDDINGS, api_of_url, embedding_inputs

CHAT_ENDPOINT = "/v1/chat/completions"
ENDPOINTS = (CHAT_ENDPOINT, "/v1/embeddings", "/v1/responses")
"""The endpoints a batch may be created for."""
MAX_REPORTED_ERRORS = 100
"""A file with thousands of bad lines reports the first hundred."""


@dataclass(slots=True)
class BatchInput:
    """The rows of a valid file, or the reasons it is not (then `rows` is partial)."""

    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(custom_id, chat-completions body), in file order."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None


def batch_error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """One entry of a batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def read_batch_input(
    content: bytes,
    endpoint: str = CHAT_ENDPOINT,
    *,
    max_requests: int = 50_000,
    max_bytes: int = 200 * 1024 * 1024,
) -> BatchInput:
    """Parse and check every line of `content`; errors say which line and why."""
    result = BatchInput()
    if len(content) > max_bytes:
        result.errors.append(
            batch_error(
                "file_too_large",
                f"The input file is {len(content):,} bytes; a batch accepts at most "
                f"{max_bytes:,} bytes.",
            )
        )
        return result
    lines = [(number, line) for number, line in enumerate(content.splitlines(), 1) if line.strip()]
    if not lines:
        result.errors.append(batch_error("empty_file", "The batch input file is empty."))
        return result
    if len(lines) > max_requests:
        result.errors.append(
            batch_error(
                "too_many_tasks",
                f"The batch input file has {len(lines):,} requests; a batch accepts at most "
                f"{max_requests:,}.",
            )
        )
        return result
    seen: set[str] = set()
    errors = result.errors
    for number, line in lines:
        error = _check_line(line, number, endpoint, seen, result)
        if error is not None:
            errors.append(error)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if not errors and api_of_url(endpoint) == EMBEDDINGS:
        inputs = sum(embedding_inputs(body) for _, body in result.rows)
        if inputs > EMBEDDING_BATCH_INPUTS:
            errors.append(
                batch_error(
                    "too_many_tasks",
                    f"The batch input file asks for {inputs:,} embedding inputs; an "
                    f"embeddings batch accepts at most {EMBEDDING_BATCH_INPUTS:,} over all "
                    "its requests.",
                )
            )
    return result


def _check_line(
    line: bytes, number: int, endpoint: str, seen: set[str], result: BatchInput
) -> dict[str, Any] | None:
    """The error for one line, or None after adding its row to `result`."""
    try:
        request = orjson.loads(line)
    except orjson.JSONDecodeError:
        request = None
    if not isinstance(request, dict):
        return batch_error(
            "invalid_json_line", "This line is not parseable as valid JSON.", line=number
        )
    for name in ("custom_id", "method", "url", "body"):
        if request.get(name) is None:
            return batch_error(
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                param=name,
                line=number,
            )
    custom_id = request["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return batch_error(
            "invalid_type",
            "Invalid 'custom_id': expected a non-empty string.",
            param="custom_id",
            line=number,
        )
    if request["method"] != "POST":
        return batch_error(
            "invalid_value",
            f"Invalid value: '{request['method']}'. Supported values are: 'POST'.",
            param="method",
            line=number,
        )
    if request["url"] != endpoint:
        return batch_error(
            "url_mismatch",
            f"The URL provided for this request ('{request['url']}') does not match the "
            f"batch endpoint '{endpoint}'.",
            param="url",
            line=number,
        )
    body = request["body"]
    if not isinstance(body, dict):
        return batch_error(
            "invalid_type", "Invalid 'body': expected an object.", param="body", line=number
        )
    if custom_id in seen:
        return batch_error(
            "duplicate_custom_id",
            f"The custom_id '{custom_id}' is a duplicate of another request in this batch. "
            "The custom_id must be unique for each request in a batch.",
            param="custom_id",
            line=number,
        )
    seen.add(custom_id)
    model = body.get("model")
    if isinstance(model, str):
        if result.model is None:
            result.model = model
        elif model != result.model:
            return batch_error(
                "model_mismatch",
                f"The model '{model}' of this request does not match the model "
                f"'{result.model}' of the other requests; a batch uses one model.",
                param="body.model",
                line=number,
            )
    result.rows.append((custom_id, body))
    return None
