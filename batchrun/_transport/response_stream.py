"""Turn a streamed Responses API answer back into the object a plain call returns.

The Responses API streams typed events, not chat chunks: ``response.created``, then
per output item ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` ... ``response.output_text.done``,
``response.output_item.done``, and one final event carrying the whole response:
``response.completed`` (or ``response.incomplete``, a usable answer cut short, or
``response.failed``). An ``error`` event ends a stream that failed. There is no
``[DONE]``.

The final event's ``response`` is the object a non-streamed call returns, usage
included: that is what results.jsonl holds. The deltas are assembled as they come
only so that a stream torn before its final event still shows what it had (the
partial answer rides on the retryable ``stream_truncated`` error, as for chat), and
to time the first token. Usage is the final event's; none is ever made up. Pure code:
payloads in, dicts out (`batchrun._transport.streaming.SSEDecoder` splits the bytes).

    >>> asm = ResponseStreamAssembler()
    >>> _ = asm.add('{"type":"response.output_text.delta","output_index":0,'
    ...             '"content_index":0,"delta":"hi"}')
    >>> _ = asm.add('{"type":"response.completed","response":{"id":"resp_1",'
    ...             '"object":"response","status":"completed","output":[]}}')
    >>> asm.result()["id"]
    'resp_1'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from batchrun._transport.streaming import assembled, stream_payload
from batchrun.errors import BadResponse

FINAL_EVENTS = frozenset({"response.completed", "response.incomplete"})
_HEAD_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
_OUTPUT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
"""Deltas of generated output: the first one non-empty is the first token."""


class _Item:
    """One output item as streamed so far: its head, and the text of its parts."""

    __slots__ = ("head", "parts", "arguments", "done")

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = dict(head)
        self.parts: dict[int, tuple[dict[str, Any], list[str]]] = {}
        self.arguments: list[str] = []
        self.done = False

    def part(self, index: int) -> tuple[dict[str, Any], list[str]]:
        found = self.parts.get(index)
        if found is None:
            found = self.parts[index] = ({"type": "output_text", "annotations": []}, [])
        return found

    def to_dict(self) -> dict[str, Any]:
        if self.done:
            return self.head
        item = dict(self.head)
        if self.parts:
            content = []
            for index in sorted(self.parts):
                part, pieces = self.parts[index]
                key = "refusal" if part.get("type") == "refusal" else "text"
                content.append({**part, key: "".join(pieces)})
            item["content"] = content
        if self.arguments:
            item["arguments"] = "".join(self.arguments)
        item["status"] = "incomplete"
        return item


class ResponseStreamAssembler:
    """Fold a Responses stream's event payloads into its ``response`` object.

    Call `add` with every ``data:`` payload in order, then `result`: the final
    event's response, or ``BadResponse("stream_truncated")`` (retryable) with the
    response assembled from the deltas attached when the stream ended without one.
    ``response.failed`` and ``error`` events raise at once (retryable, with the
    provider's code).
    """

    def __init__(self) -> None:
        self.events = 0
        self.has_output = False
        self._head: dict[str, Any] = {}
        self._items: dict[int, _Item] = {}
        self._final: dict[str, Any] | None = None

    def add(self, payload: str) -> bool:
        """Fold in one payload; True exactly once, on the first generated output."""
        text = payload.strip()
        if not text or text == "[DONE]" or self._final is not None:
            return False
        event = stream_payload(text, "event")
        self.events += 1
        kind = event.get("type")
        if kind in FINAL_EVENTS:
            response = event.get("response")
            if not isinstance(response, dict):
                raise BadResponse(f"{kind} without its response object", code="bad_stream_chunk")
            self._final = response
            return False
        if kind in ("response.failed", "error") or (kind is None and "error" in event):
            raise _failure(event)
        if kind in _HEAD_EVENTS:
            response = event.get("response")
            if isinstance(response, dict):
                self._head = response
            return False
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = event.get("item")
            if isinstance(item, dict):
                index = _index(event, "output_index", len(self._items))
                known = self._items.get(index)
                if kind.endswith(".done") or known is None:
                    fresh = _Item(item)
                    if known is not None:
                        fresh.parts, fresh.arguments = known.parts, known.arguments
                    fresh.done = kind.endswith(".done")
                    self._items[index] = fresh
            return False
        if kind == "response.content_part.added":
            part = event.get("part")
            if isinstance(part, dict):
                item = self._item(event)
                _, pieces = item.part(_index(event, "content_index", 0))
                item.parts[_index(event, "content_index", 0)] = (dict(part), pieces)
            return False
        if kind in _OUTPUT_DELTAS:
            delta = event.get("delta")
            if not isinstance(delta, str):
                return False
            item = self._item(event)
            if kind == "response.function_call_arguments.delta":
                item.arguments.append(delta)
            elif kind in ("response.output_text.delta", "response.refusal.delta"):
                part, pieces = item.part(_index(event, "content_index", 0))
                if kind == "response.refusal.delta":
                    part["type"] = "refusal"
                pieces.append(delta)
            if delta and not self.has_output:
                self.has_output = True
                return True
            return False
        if kind in ("response.output_text.done", "response.refusal.done"):
            key = "text" if kind == "response.output_text.done" else "refusal"
            whole = event.get(key)
            if isinstance(whole, str):
                _, pieces = self._item(event).part(_index(event, "content_index", 0))
                pieces[:] = [whole]  # the whole text, whatever deltas were lost
        return False

    def _item(self, event: dict[str, Any]) -> _Item:
        index = _index(event, "output_index", 0)
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item({"type": "message", "role": "assistant"})
        return item

    def snapshot(self) -> dict[str, Any]:
        """The response as assembled from the events so far (no completeness check)."""
        body = dict(self._head)
        body.setdefault("object", "response")
        body["status"] = "incomplete"
        body["output"] = [self._items[i].to_dict() for i in sorted(self._items)]
        body.setdefault("usage", None)
        return body

    def result(self) -> dict[str, Any]:
        """The final event's response; ``BadResponse("stream_truncated")`` without one.

        A final response whose ``output`` is empty while items were streamed (a relay
        that strips it) gets the streamed items; anything else is returned as sent.
        """
        final = self._final
        if final is None:
            raise BadResponse(
                f"stream ended early: no response.completed after {self.events} event(s)",
                code="stream_truncated",
                body=self.snapshot(),
            )
        if not final.get("output") and self._items:
            final = {**final, "output": [self._items[i].to_dict() for i in sorted(self._items)]}
        return final


def _index(event: dict[str, Any], key: str, default: int) -> int:
    value = event.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _failure(event: dict[str, Any]) -> BadResponse:
    """The error of a ``response.failed`` or ``error`` event."""
    response = event.get("response")
    error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        inner = event.get("error")
        error = inner if isinstance(inner, dict) else event
    message = error.get("message") or orjson.dumps(error).decode()
    code = error.get("code") or error.get("type") or "stream_error"
    if code == "error":
        code = "stream_error"
    return BadResponse(
        f"error inside the stream: {message}",
        code=str(code),
        body=response if isinstance(response, dict) else error,
    )


def assemble_response(chunks: Iterable[bytes]) -> dict[str, Any]:
    """Decode and assemble a whole Responses SSE body given as byte pieces.

    >>> assemble_response([b'event: response.completed\\ndata: {"type":"response.completed",'
    ...     b'"response":{"id":"r","status":"completed","output":[]}}\\n\\n'])["status"]
    'completed'
    """
    return assembled(ResponseStreamAssembler(), chunks)


__all__ = ["FINAL_EVENTS", "ResponseStreamAssembler", "assemble_response"]
