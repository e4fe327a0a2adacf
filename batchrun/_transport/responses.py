"""Turn one HTTP answer into a completion body or a classified error. Pure.

    status 200 + the API's answer      -> the body (dict), unmodified: a chat.completion,
                                          an embeddings list (one vector per input), a
                                          Responses object (``failed``: BadResponse)
    status 200 + {"error": {...}}      -> BadResponse (some relays do this)
    status 200 + SSE labelled JSON     -> the assembled stream
    status 200 + non-JSON / no choices -> BadResponse (choices [], [{}], [null] too);
                                          non-JSON is marked ``billed`` and keeps
                                          the whole body
    429                                -> RateLimited (insufficient_quota: ClientError)
    408, 409, 5xx                      -> ServerError
    3xx                                -> ClientError (redirects are not followed for POST)
    other 4xx                          -> ClientError (never retried)

The ``{"error": {"message", "type", "param", "code"}}`` envelope is parsed into the
error's message and code whatever the status.

    >>> parse_completion(200, {}, b'{"choices": [{"message": {"content": "hi"}}]}')
    {'choices': [{'message': {'content': 'hi'}}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES, embedding_inputs
from batchrun._redact import scrub_text
from batchrun.errors import BadResponse, ClientError, RateLimited, RequestError, ServerError

MAX_MESSAGE = 500


def error_envelope(body: Any) -> dict[str, Any] | None:
    """The ``error`` object of an OpenAI-style error body, normalised; else None."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return {"message": error, "type": None, "param": None, "code": None}
    if isinstance(error, dict):
        return {
            "message": str(error.get("message") or ""),
            "type": error.get("type"),
            "param": error.get("param"),
            "code": error.get("code"),
        }
    return None


def request_id_of(headers: Mapping[str, str]) -> str | None:
    value = headers.get("x-request-id") or headers.get("request-id")
    return scrub_text(value) if value else value


def _decode(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _snippet(content: bytes) -> str:
    text = content[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split())


def error_for_status(status: int, headers: Mapping[str, str], content: bytes) -> RequestError:
    """The classified error for a non-2xx answer."""
    body = _decode(content)
    envelope = error_envelope(body)
    if envelope is not None:
        message = envelope["message"] or f"HTTP {status}"
        code = str(envelope["code"] or envelope["type"] or f"http_{status}")
    else:
        snippet = _snippet(content)
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        code = f"http_{status}"
    message = message[:MAX_MESSAGE]
    kwargs: dict[str, Any] = {
        "code": code,
        "status": status,
        "headers": headers,
        "body": body if body is not None else _snippet(content),
        "request_id": request_id_of(headers),
    }
    if status == 429 and code == "insufficient_quota":
        # OpenAI's "you exceeded your current quota": billing, not pacing; no retry helps
        return ClientError(message, **kwargs)
    if status == 429:
        return RateLimited(message, **kwargs)
    if status in (408, 409) or status >= 500:
        return ServerError(message, **kwargs)
    if 300 <= status < 400:
        location = scrub_text(headers.get("location", ""))
        return ClientError(
            f"HTTP {status} redirect to {location!r} not followed (check --base-url)"[:MAX_MESSAGE],
            **{**kwargs, "code": "redirect"},
        )
    return ClientError(message, **kwargs)


def check_completion(body: Any, status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """Accept a decoded 200 body only if it is a usable chat.completion."""
    choices = _answer_list(
        body,
        status,
        headers,
        "choices",
        "response is not a chat.completion (no 'choices')",
        "invalid_completion",
    )
    if not choices or not all(
        isinstance(c, dict) and isinstance(c.get("message"), dict) for c in choices
    ):
        # `choices: []`, `[{}]`, `[null]`: an answer with nothing in it is no answer
        raise _bad_answer(
            "response has no usable choice (choices empty or without a message)",
            "no_choices",
            body,
            status,
            headers,
        )
    return body


def check_embeddings(
    body: Any, status: int, headers: Mapping[str, str], expected: int | None = None
) -> dict[str, Any]:
    """Accept a decoded 200 body only if it is a usable embeddings list: a ``data``
    list of ``{index, embedding}`` entries, one for each of the ``expected`` inputs
    (every index from 0 exactly once). A vector that cannot be told to its input
    would pair a row with another row's vector: such an answer is no answer."""
    _raise_envelope(body, status, headers, "data")
    data = body.get("data") if isinstance(body, dict) else None
    problem = None
    if not isinstance(data, list):
        problem = "response is not an embeddings list (no 'data')"
    elif not data:
        problem = "response holds no embedding ('data' is empty)"
    else:
        indexes: list[int] = []
        for entry in data:
            vector = entry.get("embedding") if isinstance(entry, dict) else None
            if not isinstance(vector, list | str) or not vector:
                problem = "an entry of 'data' holds no embedding"
                break
            index = entry.get("index", len(indexes))
            indexes.append(index if isinstance(index, int) else -1)
        if problem is None and expected is not None and sorted(indexes) != list(range(expected)):
            problem = (
                f"{len(data)} embeddings for {expected} inputs, or their indexes do not "
                f"match the inputs (0 to {expected - 1})"
            )
    if problem is not None:
        raise _bad_answer(problem, "invalid_embeddings", body, status, headers)
    return body


def check_response(body: Any, status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """Accept a decoded 200 body only if it is a usable Responses ``response`` object:
    an ``output`` list (an ``incomplete`` one too: its quality says so); a ``failed``
    one is its error (retryable, as a server error is)."""
    failed = isinstance(body, dict) and body.get("status") == "failed"
    if failed:
        error = error_envelope({"error": body.get("error")})
        raise _envelope_error(
            error, "the response failed", "response_failed", body, status, headers
        )
    _answer_list(
        body,
        status,
        headers,
        "output",
        "response is not a Responses object (no 'output')",
        "invalid_response",
    )
    return body


def _answer_list(
    body: Any, status: int, headers: Mapping[str, str], field: str, message: str, code: str
) -> list[Any]:
    """The answer's ``field`` list (``choices``, ``output``); an error object in its
    place, or no such list, is `BadResponse`."""
    _raise_envelope(body, status, headers, field)
    if not isinstance(body, dict) or not isinstance(body.get(field), list):
        raise _bad_answer(message, code, body, status, headers)
    return body[field]


def _raise_envelope(body: Any, status: int, headers: Mapping[str, str], field: str) -> None:
    """An error object in a 200 (some relays answer so) without the answer's field."""
    envelope = error_envelope(body)
    if envelope is not None and not (isinstance(body, dict) and body.get(field)):
        raise _envelope_error(
            envelope, "error object in a 200 response", "error_in_200", body, status, headers
        )


def _envelope_error(
    envelope: Mapping[str, Any] | None,
    message: str,
    code: str,
    body: Any,
    status: int,
    headers: Mapping[str, str],
) -> BadResponse:
    """A 200 that carries an error object: its message and code, else these."""
    envelope = envelope or {}
    return _bad_answer(
        (envelope.get("message") or message)[:MAX_MESSAGE],
        str(envelope.get("code") or envelope.get("type") or code),
        body,
        status,
        headers,
    )


def _bad_answer(
    message: str, code: str, body: Any, status: int, headers: Mapping[str, str]
) -> BadResponse:
    """A 200 whose body is no usable answer (retried: `BadResponse`)."""
    return BadResponse(
        message,
        code=code,
        status=status,
        headers=headers,
        body=body,
        request_id=request_id_of(headers),
    )


def check_answer(
    body: Any,
    status: int,
    headers: Mapping[str, str],
    api: str = CHAT,
    sent: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`check_completion`, `check_embeddings` (as many vectors as ``sent`` has inputs)
    or `check_response`, by the request's API."""
    if api == EMBEDDINGS:
        expected = embedding_inputs(sent) if sent is not None else None
        return check_embeddings(body, status, headers, expected)
    if api == RESPONSES:
        return check_response(body, status, headers)
    return check_completion(body, status, headers)


def parse_completion(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    api: str = CHAT,
    sent: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer body of a 2xx answer (``api``: which shape, `check_answer`), or
    raise the classified error."""
    if not 200 <= status < 300:
        raise error_for_status(status, headers, content)
    body = _decode(content)
    if body is None and content.lstrip()[:6] in (b"data: ", b"data:{", b"event:"):
        # an event stream labelled JSON (some relays stream whatever was asked)
        body = _assembled(content, api)
    if body is None:
        ctype = headers.get("content-type", "")
        error = _bad_answer(
            f"HTTP {status} body is not JSON (content-type {ctype!r}): {_snippet(content)!r}",
            "invalid_json",
            # the whole answer, as text: it was probably paid for, and is all there is
            content.decode("utf-8", "replace"),
            status,
            headers,
        )
        error.billed = bool(content.strip())  # an empty body carried no answer to pay for
        raise error
    return check_answer(body, status, headers, api, sent)


def _assembled(content: bytes, api: str = CHAT) -> dict[str, Any] | None:
    try:
        if api == RESPONSES:
            from batchrun._transport.response_stream import assemble_response

            return assemble_response([content])
        from batchrun._transport.streaming import assemble

        return assemble([content], require_done=False)
    except BadResponse:
        return None
