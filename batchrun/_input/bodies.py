"""What an embeddings or a Responses request body must hold, checked before sending.

A request line is checked like a chat line (`batchrun._input.sources.check_body`): a
body the provider would refuse for its shape is a bad row, named by file and line,
before anything is sent. Checked: the ``input`` (its types; for embeddings no empty
text and at most `batchrun._apis.EMBEDDING_REQUEST_INPUTS` inputs), the fields whose
values have a documented type (``dimensions``, ``encoding_format``, ``instructions``,
``text.format``, ``reasoning``, ``max_output_tokens``, ``tools``, ``stream``), a
JSON schema in ``text.format`` (valid, compiled offline), chat fields put in another
API's body (``messages``, ``response_format``, ``max_tokens``: each named with the
field to use), and a key one letter off a documented field (a typo every request
would fail on, or a lenient server would silently ignore). Other unknown fields
pass: servers add their own (vLLM's ``truncate_prompt_tokens``).

The model's context window is checked separately (`batchrun._input.context`).

    >>> embeddings_problem({"model": "m", "input": ["a", ""]})
    'input[1] is an empty string (an embeddings input needs text)'
    >>> responses_problem({"model": "m", "input": "hi", "max_tokens": 5})
    "'max_tokens' is a chat-completions field; the Responses API takes 'max_output_tokens'"
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson

from batchrun._apis import EMBEDDING_FIELDS, EMBEDDING_REQUEST_INPUTS, RESPONSES_FIELDS

ENCODING_FORMATS = ("float", "base64")
FORMAT_TYPES = ("text", "json_schema", "json_object")
ROLES = ("user", "assistant", "system", "developer")
_TYPO_CUTOFF = 0.85

_CHAT_IN_RESPONSES = {
    "messages": "'input' (a string, or a list of {role, content} items)",
    "response_format": "'text.format' ({type: json_schema, name, schema})",
    "max_tokens": "'max_output_tokens'",
    "max_completion_tokens": "'max_output_tokens'",
    "reasoning_effort": "'reasoning.effort'",
}
_CHAT_IN_EMBEDDINGS = {
    "messages": "'input' (a string or a list of strings)",
    "prompt": "'input'",
}


def json_kind(value: Any, *, array: str = "a list") -> str:
    """A JSON value's type, as an error message names it (``array``: what a list is
    called; OpenAI's own messages say "an array").

    >>> json_kind(None), json_kind(True), json_kind([1]), json_kind([1], array="an array")
    ('null', 'a boolean', 'a list', 'an array')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return array
    return "an object"


def _typo(body: Mapping[str, Any], known: tuple[str, ...]) -> str | None:
    for key in body:
        if key in known or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=_TYPO_CUTOFF)
        if close:
            return f"unknown field {key!r} (did you mean {close[0]!r}?)"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


FieldCheck = tuple[str, Callable[[Any], bool], str]
"""An optional field's name, whether a given value is fine, and what it must be."""

_RESPONSES_FIELD_CHECKS: tuple[FieldCheck, ...] = (
    ("instructions", lambda value: isinstance(value, str), "a string"),
    ("max_output_tokens", lambda value: _whole(value) and value >= 1, "a positive integer"),
    ("stream", lambda value: isinstance(value, bool), "true or false"),
    ("reasoning", lambda value: isinstance(value, dict), "an object like {effort: low}"),
    ("reasoning.effort", lambda value: isinstance(value, str), "a string"),
    ("tools", lambda value: isinstance(value, list), "a list"),
)


def _fields_problem(body: Mapping[str, Any], checks: Sequence[FieldCheck]) -> str | None:
    """The first field of ``checks`` that is given (not None) and refused: "'name' must
    be WHAT (got KIND)". A dotted name is a field of an object field (``reasoning.effort``);
    it is not looked for when the object is no object (a check before says so)."""
    for name, fine, what in checks:
        value: Any = body
        for key in name.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        if value is not None and not fine(value):
            return f"'{name}' must be {what} (got {json_kind(value)})"
    return None


# -- embeddings -------------------------------------------------------------------------
def embeddings_problem(body: Mapping[str, Any]) -> str | None:
    """Why an embeddings body would be refused (one line), or None when it is fine."""
    for key, use in _CHAT_IN_EMBEDDINGS.items():
        if key in body:
            return f"{key!r} is not an embeddings field; an embeddings request takes {use}"
    if "input" not in body:
        return "body has no 'input' (the text to embed)"
    problem = _input_problem(body["input"])
    if problem is not None:
        return problem
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _whole(dimensions) or dimensions < 1):
        return f"'dimensions' must be a positive integer (got {json_kind(dimensions)})"
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        return f"'encoding_format' must be float or base64 (got {encoding!r})"
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        return f"'user' must be a string (got {json_kind(user)})"
    if "stream" in body:
        return "embeddings are not streamed: remove 'stream'"
    return _typo(body, EMBEDDING_FIELDS)


def _input_problem(value: Any) -> str | None:
    """``input``: a string, a list of strings, a list of token ids, or a list of lists
    of token ids; never empty."""
    if isinstance(value, str):
        return None if value else "'input' is an empty string (an embeddings input needs text)"
    if not isinstance(value, list):
        return (
            "'input' must be a string, a list of strings or a list of token ids "
            f"(got {json_kind(value)})"
        )
    if not value:
        return "'input' is an empty list"
    first = value[0]
    if _whole(first):
        bad = next((i for i, t in enumerate(value) if not _whole(t) or t < 0), None)
        if bad is not None:
            return f"input[{bad}]: a list of token ids holds only whole numbers of 0 or more"
        return None
    if len(value) > EMBEDDING_REQUEST_INPUTS:
        return (
            f"'input' holds {len(value):,} inputs; one request takes at most "
            f"{EMBEDDING_REQUEST_INPUTS:,}"
        )
    if isinstance(first, str):
        for i, text in enumerate(value):
            if not isinstance(text, str):
                return f"input[{i}] must be a string like the others (got {json_kind(text)})"
            if not text:
                return f"input[{i}] is an empty string (an embeddings input needs text)"
        return None
    if isinstance(first, list):
        for i, ids in enumerate(value):
            if not isinstance(ids, list) or not ids:
                return f"input[{i}] must be a non-empty list of token ids"
            if not all(_whole(t) and t >= 0 for t in ids):
                return f"input[{i}]: a list of token ids holds only whole numbers of 0 or more"
        return None
    return (
        "'input' must be a string, a list of strings or a list of token ids "
        f"(input[0] is {json_kind(first)})"
    )


# -- Responses --------------------------------------------------------------------------
def responses_problem(body: Mapping[str, Any]) -> str | None:
    """Why a Responses body would be refused (one line), or None when it is fine."""
    for key, use in _CHAT_IN_RESPONSES.items():
        if key in body:
            return f"{key!r} is a chat-completions field; the Responses API takes {use}"
    if "input" not in body and not any(
        body.get(k) for k in ("prompt", "previous_response_id", "conversation")
    ):
        return "body has no 'input'"
    problem = _items_problem(body.get("input"))
    if problem is not None:
        return problem
    problem = _fields_problem(body, _RESPONSES_FIELD_CHECKS)
    if problem is not None:
        return problem
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            return f"tools[{i}] must be an object with a 'type'"
    problem = _text_problem(body.get("text"))
    if problem is not None:
        return problem
    return _typo(body, RESPONSES_FIELDS)


def _items_problem(value: Any) -> str | None:
    """``input``: a string, or a list of input items (messages and typed items)."""
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, list):
        return f"'input' must be a string or a list of input items (got {json_kind(value)})"
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return f"input[{i}] must be an object (an input item), got {json_kind(item)}"
        kind = item.get("type")
        if kind is not None and kind != "message":
            if not isinstance(kind, str):
                return f"input[{i}].type must be a string"
            continue  # function_call_output, item_reference, reasoning, ...: the server's
        role = item.get("role")
        if role not in ROLES:
            shown = "none" if role is None else repr(role)
            return f"input[{i}].role must be one of {', '.join(ROLES)} (got {shown})"
        content = item.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"input[{i}].content must be a string or a list of content parts"
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                return f"input[{i}].content[{j}] must be an object with a 'type'"
    return None


def _text_problem(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        return f"'text' must be an object like {{format: {{type: text}}}} (got {json_kind(text)})"
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return f"'text.format' must be an object (got {json_kind(fmt)})"
    kind = fmt.get("type")
    if kind not in FORMAT_TYPES:
        return f"'text.format.type' must be one of {', '.join(FORMAT_TYPES)} (got {kind!r})"
    if kind != "json_schema":
        return None
    if "json_schema" in fmt:
        return (
            "'text.format' takes name and schema directly "
            "({type: json_schema, name, schema}), not a chat-style 'json_schema' object"
        )
    name = fmt.get("name")
    if not isinstance(name, str) or not name:
        return "'text.format.name' is required for a json_schema format"
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        return "'text.format.schema' must be a JSON schema object"
    problem = _schema_problem(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    return (
        None if problem is None else f"'text.format.schema' is not a valid JSON Schema: {problem}"
    )


@lru_cache(maxsize=64)
def _schema_problem(schema: bytes) -> str | None:
    """Checked once per schema, not once per row (every row of a file often has it)."""
    from batchrun._schemas import schema_problem

    return schema_problem(orjson.loads(schema))


__all__ = ["embeddings_problem", "json_kind", "responses_problem"]
