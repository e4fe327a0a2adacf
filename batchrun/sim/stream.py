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


def split_tokens(entries: tuple[dict[str, Any], ...], pieces: int) -> list[list[dict[str, Any]]]:
    """Token logprob entries cut into at most `pieces` runs whose bytes are whole
    characters (a delta's text must decode), in order."""
    if not entries:
        return []
    size = max(1, -(-len(entries) // max(1, pieces)))
    runs: list[list[dict[str, Any]]] = []
    run: list[dict[str, Any]] = []
    data = b""
    for entry in entries:
        run.append(entry)
        data += bytes(entry["bytes"])
        if len(run) >= size:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a character split between tokens: keep going
            runs.append(run)
            run, data = [], b""
    if run:
        runs.append(run)
    return runs


_Delta = tuple[dict[str, Any], str | None, "list[dict[str, Any]] | None"]


def _choice_deltas(choice: Choice, pieces: int) -> list[_Delta]:
    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if choice.tool_calls or choice.function_call is not None:
        first["content"] = None
    deltas: list[_Delta] = [(first, None, None)]
    for part in split_text(choice.reasoning or "", pieces):
        deltas.append(({"reasoning_content": part}, None, None))
    if choice.logprobs is not None:
        # each content delta carries the logprobs of its own tokens
        for run in split_tokens(choice.logprobs, pieces):
            text = b"".join(bytes(entry["bytes"]) for entry in run).decode("utf-8")
            deltas.append(({"content": text}, None, run))
    else:
        for part in split_text(choice.content or "", pieces):
            deltas.append(({"content": part}, None, None))
    for position, call in enumerate(choice.tool_calls):
        function = call["function"]
        head = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, None, None))
        for part in split_text(function["arguments"], pieces):
            tail = {"index": position, "function": {"arguments": part}}
            deltas.append(({"tool_calls": [tail]}, None, None))
    if choice.function_call is not None:
        name = choice.function_call["name"]
        deltas.append(({"function_call": {"name": name, "arguments": ""}}, None, None))
        for part in split_text(choice.function_call["arguments"], pieces):
            deltas.append(({"function_call": {"arguments": part}}, None, None))
    deltas.append(({}, choice.finish_reason, None))
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
            delta, finish, run = item
            chunk = dict(head)
            logprobs = {"content": run, "refusal": None} if run is not None else None
            chunk["choices"] = [
                {
                    "index": choice.index,
                    "delta": delta,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ]
            if include_usage:
                chunk["usage"] = None
            chunks.append(chunk)
    if include_usage:
        chunks.append({**head, "choices": [], "usage": reply.usage})
    return chunks
