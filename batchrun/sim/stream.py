"""A reply as the sequence of ``chat.completion.chunk`` events OpenAI would stream.

Pure: the server decides pacing and faults, this module only decides the chunks.
Per choice: a role chunk, reasoning deltas, content deltas (or a tool call whose
arguments arrive in pieces), a finish chunk; choices are interleaved round-robin,
as with ``n > 1`` on the real API. With ``include_usage`` every chunk carries
``"usage": null`` and a last chunk with ``choices: []`` carries the usage.

    >>> split_text("one two three four", 2)
    ['one two ', 'three four']
"""

from __future__ import annotations

import re
from itertools import zip_longest
from typing import Any

from batchrun.sim.content import Choice, Reply

_WORDS = re.compile(r"\s*\S+\s*|\s+")


def split_text(text: str, pieces: int) -> list[str]:
    """`text` cut into at most `pieces` non-empty parts that join back to it."""
    if not text:
        return []
    units = _WORDS.findall(text) if " " in text else list(text)
    if len("".join(units)) != len(text):  # whitespace-only edge cases
        units = list(text)
    pieces = max(1, min(pieces, len(units)))
    size, extra = divmod(len(units), pieces)
    parts, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        parts.append("".join(units[start:end]))
        start = end
    return [part for part in parts if part]


def _choice_deltas(choice: Choice, pieces: int) -> list[tuple[dict[str, Any], str | None]]:
    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if choice.tool_calls or choice.function_call is not None:
        first["content"] = None
    deltas: list[tuple[dict[str, Any], str | None]] = [(first, None)]
    for part in split_text(choice.reasoning or "", pieces):
        deltas.append(({"reasoning_content": part}, None))
    for part in split_text(choice.content or "", pieces):
        deltas.append(({"content": part}, None))
    for position, call in enumerate(choice.tool_calls):
        function = call["function"]
        head = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, None))
        for part in split_text(function["arguments"], pieces):
            tail = {"index": position, "function": {"arguments": part}}
            deltas.append(({"tool_calls": [tail]}, None))
    if choice.function_call is not None:
        name = choice.function_call["name"]
        deltas.append(({"function_call": {"name": name, "arguments": ""}}, None))
        for part in split_text(choice.function_call["arguments"], pieces):
            deltas.append(({"function_call": {"arguments": part}}, None))
    deltas.append(({}, choice.finish_reason))
    return deltas


def stream_chunks(
    reply: Reply,
    *,
    completion_id: str,
    created: int,
    model: str,
    fingerprint: str,
    include_usage: bool,
    pieces: int = 6,
) -> list[dict[str, Any]]:
    """Every chunk of the stream, in order (without the final ``[DONE]``)."""
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": fingerprint,
    }
    per_choice = [_choice_deltas(choice, pieces) for choice in reply.choices]
    chunks: list[dict[str, Any]] = []
    for row in zip_longest(*per_choice):
        for choice, item in zip(reply.choices, row, strict=True):
            if item is None:
                continue
            delta, finish = item
            chunk = dict(head)
            chunk["choices"] = [
                {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ]
            if include_usage:
                chunk["usage"] = None
            chunks.append(chunk)
    if include_usage:
        chunks.append({**head, "choices": [], "usage": reply.usage})
    return chunks
