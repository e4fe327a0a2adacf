"""Reading an answer whatever API gave it: a chat.completion, an embeddings list, or a
Responses ``response`` object. Pure.

The answer quality (`batchrun._output.quality`), the counts (`batchrun._output.tally`)
and results.parquet (`batchrun._output.parquet`) read the same few things from every
answer (its kind, text, finish reason, tool calls); for the two newer shapes they are
read here, so the three readers agree.

A Responses answer: ``output`` is a list of items; a ``message`` item's ``content``
holds ``output_text`` parts (the text) and ``refusal`` parts; ``function_call``
items are tool calls; ``reasoning`` items carry a ``summary``. Its finish reason is
its ``status`` (``completed``), or for an ``incomplete`` one the reason it gives
(``max_output_tokens``, ``content_filter``).

    >>> body = {"object": "response", "status": "completed", "output": [{"type": "message",
    ...         "content": [{"type": "output_text", "text": "hi"}]}]}
    >>> answer_kind(body), response_text(body), response_finish(body)
    ('responses', 'hi', 'completed')
"""

from __future__ import annotations

from typing import Any

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES


def answer_kind(body: Any) -> str:
    """ "chat", "embeddings" or "responses" (`batchrun._apis`) by the body's shape."""
    if type(body) is not dict or "choices" in body:
        return CHAT
    if body.get("object") == "response" or "output" in body:
        return RESPONSES
    if body.get("object") == "list" or "data" in body:
        return EMBEDDINGS
    return CHAT


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    output = body.get("output")
    return [i for i in output if type(i) is dict] if type(output) is list else []


def _parts(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for item in _items(body):
        if item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if type(content) is list:
            parts.extend(p for p in content if type(p) is dict and p.get("type") == kind)
    return parts


def response_text(body: dict[str, Any]) -> str | None:
    """The text of a Responses answer (its ``output_text`` parts, joined, what the SDK
    calls ``output_text``); None when it has none."""
    texts = [p.get("text") for p in _parts(body, "output_text")]
    joined = "".join(t for t in texts if type(t) is str)
    return joined if texts else None


def response_refusal(body: dict[str, Any]) -> str | None:
    """The refusal of a Responses answer (its ``refusal`` parts), else None."""
    texts = [p.get("refusal") for p in _parts(body, "refusal")]
    joined = "".join(t for t in texts if type(t) is str)
    return joined or (None if not texts else "refused")


def response_finish(body: dict[str, Any]) -> str | None:
    """``completed``, or what cut an ``incomplete`` answer short, or its status."""
    status = body.get("status")
    if status == "incomplete":
        details = body.get("incomplete_details")
        reason = details.get("reason") if type(details) is dict else None
        return str(reason) if reason else "incomplete"
    return str(status) if status is not None else None


def response_tool_calls(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function_call`` (and other ``*_call``) items of a Responses answer."""
    return [i for i in _items(body) if str(i.get("type", "")).endswith("_call")]


def response_reasoning(body: dict[str, Any]) -> str | None:
    """The reasoning summaries (or reasoning text) of a Responses answer, else None."""
    texts = []
    for item in _items(body):
        if item.get("type") != "reasoning":
            continue
        for key in ("summary", "content"):
            parts = item.get(key)
            if type(parts) is list:
                texts += [p.get("text") for p in parts if type(p) is dict]
    joined = "\n".join(t for t in texts if type(t) is str and t)
    return joined or None


def response_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a Responses answer was asked to follow (its ``text.format``,
    echoed back in the answer), else None."""
    text = body.get("text")
    fmt = text.get("format") if type(text) is dict else None
    if type(fmt) is not dict or fmt.get("type") != "json_schema":
        return None
    schema = fmt.get("schema")
    return schema if type(schema) is dict else None


def embedding_problem(body: dict[str, Any]) -> str | None:
    """Why an embeddings answer holds no usable vectors (one line), else None: no
    ``data`` list, an empty one, an entry without a vector, vectors of different
    lengths. Cheap (the numbers themselves are read where they are stored: checking
    2,048 vectors of 1,536 floats here would cost more than parsing them)."""
    data = body.get("data")
    if type(data) is not list:
        return "no 'data' list"
    if not data:
        return "'data' is empty"
    size, first = None, 0
    for position, entry in enumerate(data):
        vector = entry.get("embedding") if type(entry) is dict else None
        if (type(vector) is not list and type(vector) is not str) or not vector:
            return f"data[{position}] holds no embedding"
        if type(vector) is str:
            continue  # base64: its length says nothing until decoded
        if type(vector[0]) is not float and type(vector[0]) is not int:
            return f"data[{position}].embedding is not a list of numbers"
        if size is None:
            size, first = len(vector), position
        elif len(vector) != size:
            return f"data[{position}] has {len(vector)} dimensions, data[{first}] {size}"
    return None


__all__ = [
    "answer_kind",
    "embedding_problem",
    "response_finish",
    "response_reasoning",
    "response_refusal",
    "response_schema",
    "response_text",
    "response_tool_calls",
]
