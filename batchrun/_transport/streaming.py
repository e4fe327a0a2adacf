"""Turn a streamed (SSE) chat completion back into the object a plain call returns.

Why stream at all in a batch tool: the first token tells us the server is alive long
before a slow completion finishes (a per-chunk read timeout instead of one huge
timeout), and time-to-first-token is worth measuring. But results.jsonl must hold the
same ``chat.completion`` body a non-streaming call would have returned, so the chunks
are assembled here. Pure code: bytes in, dicts out, no httpx, no anyio, no clock.

Three pieces, used in this order by the client:

* `ensure_include_usage` makes the request body ask for a stream *with* a usage
  chunk, so a streamed row is still priced.
* `SSEDecoder` splits raw bytes (in whatever pieces the socket delivers) into the
  ``data:`` payloads of server-sent events.
* `StreamAssembler` folds those payloads into one ``chat.completion`` dict and
  decides whether the stream is complete; a torn or failed stream raises
  `batchrun.errors.BadResponse` (retryable).

    >>> decoder, asm = SSEDecoder(), StreamAssembler()
    >>> for payload in decoder.feed(b'data: {"id":"c1","choices":[{"index":0,"delta":'
    ...                             b'{"content":"hi"},"finish_reason":"stop"}]}\\n\\n'
    ...                             b'data: [DONE]\\n\\n') + decoder.close():
    ...     _ = asm.add(payload)
    >>> asm.result()["choices"][0]["message"]["content"]
    'hi'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from batchrun.errors import BadResponse

__all__ = [
    "SSEDecoder",
    "StreamAssembler",
    "Assembler",
    "assemble",
    "assembled",
    "ensure_include_usage",
    "stream_payload",
]

# Any of the three line ends the SSE spec allows. "\r\n" must come first so it is
# taken as one line end, not a "\r" line end followed by an empty line.
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DONE = "[DONE]"


def ensure_include_usage(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``body`` set up to stream with a final usage chunk.

    Without ``stream_options.include_usage`` an OpenAI-compatible server streams no
    token counts at all, and the row could not be priced. A row that explicitly set
    ``include_usage`` (even to false) keeps the user's choice; other fields are never
    touched, and ``body`` itself is not modified.

        >>> ensure_include_usage({"model": "m", "messages": []})
        {'model': 'm', 'messages': [], 'stream': True, 'stream_options': {'include_usage': True}}
    """
    out = dict(body)
    out["stream"] = True
    options = body.get("stream_options")
    if options is None:
        out["stream_options"] = {"include_usage": True}
    elif isinstance(options, dict) and "include_usage" not in options:
        out["stream_options"] = {**options, "include_usage": True}
    # A non-dict stream_options is the user's (invalid) choice; the server will say so.
    return out


class SSEDecoder:
    """Incremental server-sent-events parser that yields only ``data:`` payloads.

    Follows the WHATWG event-stream rules: ``\\n``, ``\\r\\n`` and ``\\r`` line ends
    (a ``\\r\\n`` split across two chunks counts once), several ``data:`` lines in one
    event joined with ``\\n``, ``:`` comment lines (keep-alives) and the ``event``,
    ``id`` and ``retry`` fields ignored, one leading space after the colon dropped,
    a leading byte-order mark dropped. Lines are decoded only once complete, so a
    UTF-8 character split across chunks arrives whole.

    One deliberate difference from the spec: `close` dispatches an event that was
    not followed by a blank line (some servers end with ``data: [DONE]`` and close),
    including an unterminated last line. A stream torn in the middle of a JSON chunk
    therefore surfaces as ``bad_stream_chunk`` from the assembler.

        >>> d = SSEDecoder()
        >>> d.feed(b"data: a\\r\\ndata: b\\r\\n\\r\\n: ping\\n\\ndata: [DO")
        ['a\\nb']
        >>> d.feed(b"NE]") + d.close()
        ['[DONE]']
    """

    __slots__ = ("_buf", "_data", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()  # bytes after the last line end seen (no EOL inside)
        self._data: list[str] = []  # data lines of the event being read
        self._skip_lf = False  # last chunk ended in "\r": a leading "\n" is its pair
        self._started = False  # first line not yet seen (BOM check)

    def feed(self, data: bytes) -> list[str]:
        """Add the next piece of the body; return the payloads completed by it."""
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buf
        scan_from = len(buf)  # the kept tail never holds a line end
        buf += data
        out: list[str] = []
        start = 0
        last_end = -1
        for match in _EOL.finditer(buf, scan_from):
            self._line(buf[start : match.start()], out)
            start = last_end = match.end()
        if last_end >= 0:
            if last_end == len(buf) and buf[-1] == 0x0D:
                self._skip_lf = True
            del buf[:start]
        return out

    def close(self) -> list[str]:
        """End of body: flush the unterminated last line and the pending event."""
        out: list[str] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = bytearray()
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        self._skip_lf = False
        return out

    def _line(self, line: bytearray, out: list[str]) -> None:
        if not self._started:
            self._started = True
            if line.startswith(_BOM):
                line = line[len(_BOM) :]
        if not line:
            if self._data:
                out.append("\n".join(self._data))
                self._data = []
            return
        if line[0] == 0x3A:  # ":" comment, e.g. ": OPENROUTER PROCESSING"
            return
        colon = line.find(b":")
        value: bytes | bytearray = b""
        if colon < 0:
            name = line
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))


class _ToolCall:
    __slots__ = ("id", "type", "name", "arguments", "extra")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: list[str] = []
        self.arguments: list[str] = []
        self.extra: dict[str, Any] = {}

    def add(self, delta: dict[str, Any]) -> None:
        for key, value in delta.items():
            if key == "index":
                continue
            if key == "id":
                if value and not self.id:
                    self.id = value
            elif key == "type":
                if value:
                    self.type = value
            elif key == "function":
                if isinstance(value, dict):
                    name = value.get("name")
                    # OpenAI sends the name once; some servers repeat it whole on
                    # every chunk, which must not double it.
                    if name and name != "".join(self.name):
                        self.name.append(name)
                    arguments = value.get("arguments")
                    if arguments:
                        self.arguments.append(arguments)
            elif value is not None:
                self.extra[key] = value

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type or "function",
            "function": {"name": "".join(self.name), "arguments": "".join(self.arguments)},
            **self.extra,
        }


class _Choice:
    """Everything streamed so far for one choice index."""

    __slots__ = (
        "index",
        "role",
        "content",
        "reasoning",
        "saw_reasoning",
        "refusal",
        "saw_refusal",
        "tool_calls",
        "last_tool",
        "function_call",
        "audio",
        "logprobs_content",
        "logprobs_refusal",
        "saw_logprobs",
        "finish_reason",
        "extra_message",
        "extra_choice",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] | None = None
        self.reasoning: list[str] = []
        self.saw_reasoning = False
        self.refusal: list[str] = []
        self.saw_refusal = False
        self.tool_calls: dict[int, _ToolCall] = {}
        self.last_tool = -1
        self.function_call: tuple[list[str], list[str]] | None = None
        self.audio: dict[str, Any] | None = None
        self.logprobs_content: list[Any] | None = None
        self.logprobs_refusal: list[Any] | None = None
        self.saw_logprobs = False
        self.finish_reason: str | None = None
        self.extra_message: dict[str, Any] = {}
        self.extra_choice: dict[str, Any] = {}

    def add(self, choice: dict[str, Any]) -> bool:
        """Fold one streamed choice in; True when it carried generated output."""
        produced = False
        delta = choice.get("delta")
        if isinstance(delta, dict):
            produced = self._add_delta(delta)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            self.saw_logprobs = True
            content = logprobs.get("content")
            if isinstance(content, list):
                if self.logprobs_content is None:
                    self.logprobs_content = []
                self.logprobs_content.extend(content)
            refusal = logprobs.get("refusal")
            if isinstance(refusal, list):
                if self.logprobs_refusal is None:
                    self.logprobs_refusal = []
                self.logprobs_refusal.extend(refusal)
        finish = choice.get("finish_reason")
        if finish is not None:
            self.finish_reason = finish
        for key, value in choice.items():
            if key not in ("index", "delta", "logprobs", "finish_reason") and value is not None:
                self.extra_choice[key] = value
        return produced

    def _add_delta(self, delta: dict[str, Any]) -> bool:
        produced = False
        for key, value in delta.items():
            if key == "content":
                if isinstance(value, str):
                    if self.content is None:
                        self.content = []
                    self.content.append(value)
                    produced = produced or bool(value)
            elif key == "role":
                if value:
                    self.role = value
            elif key == "reasoning_content":
                self.saw_reasoning = True
                if isinstance(value, str) and value:
                    self.reasoning.append(value)
                    produced = True
            elif key == "refusal":
                self.saw_refusal = True
                if isinstance(value, str) and value:
                    self.refusal.append(value)
                    produced = True
            elif key == "tool_calls":
                if isinstance(value, list) and value:
                    for call in value:
                        if isinstance(call, dict):
                            self._add_tool_call(call)
                    produced = True
            elif key == "function_call":
                if isinstance(value, dict) and value:
                    if self.function_call is None:
                        self.function_call = ([], [])
                    name, arguments = value.get("name"), value.get("arguments")
                    if name and name != "".join(self.function_call[0]):
                        self.function_call[0].append(name)
                    if arguments:
                        self.function_call[1].append(arguments)
                    produced = True
            elif key == "audio":
                if isinstance(value, dict) and value:
                    self._add_audio(value)
                    produced = True
            else:
                produced = self._add_other(key, value) or produced
        return produced

    def _add_tool_call(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            # Servers that omit the index: a new id starts a new call, otherwise the
            # delta continues the last one.
            new_id = call.get("id")
            last = self.tool_calls.get(self.last_tool)
            if last is None or (new_id and last.id and new_id != last.id):
                index = self.last_tool + 1
            else:
                index = self.last_tool
        tool = self.tool_calls.get(index)
        if tool is None:
            tool = self.tool_calls[index] = _ToolCall()
        self.last_tool = index
        tool.add(call)

    def _add_audio(self, audio: dict[str, Any]) -> None:
        if self.audio is None:
            self.audio = {}
        _merge(self.audio, audio, text_keys=("data", "transcript"))

    def _add_other(self, key: str, value: Any) -> bool:
        # Fields we do not know (``reasoning``, ``annotations``, vendor extras).
        _merge(self.extra_message, {key: value})
        return key == "reasoning" and isinstance(value, str) and bool(value)

    def to_dict(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": None if self.content is None else "".join(self.content),
        }
        if self.saw_reasoning:
            message["reasoning_content"] = "".join(self.reasoning) or None
        if self.saw_refusal:
            message["refusal"] = "".join(self.refusal) or None
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i].to_dict() for i in sorted(self.tool_calls)]
        if self.function_call is not None:
            name, arguments = self.function_call
            message["function_call"] = {"name": "".join(name), "arguments": "".join(arguments)}
        if self.audio is not None:
            message["audio"] = _merged(self.audio)
        for key, value in _merged(self.extra_message).items():
            message.setdefault(key, value)
        logprobs = None
        if self.saw_logprobs:
            logprobs = {"content": self.logprobs_content, "refusal": self.logprobs_refusal}
        return {
            "index": self.index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": self.finish_reason,
            **self.extra_choice,
        }


class _Text(list[str]):
    """String pieces of one merged field, joined on output (no quadratic ``+=``)."""


class _Items(list[Any]):
    """List slices of one merged field, owned by us so they can be extended."""


def _merge(
    into: dict[str, Any], delta: dict[str, Any], text_keys: tuple[str, ...] | None = None
) -> None:
    """Fold a delta of unknown shape into ``into``.

    Text arrives in pieces and is concatenated, lists arrive in slices and are
    extended, dicts are updated, anything else is a snapshot (last non-null wins).
    With ``text_keys`` only those strings are concatenated; other strings (ids) are
    snapshots too, so a server repeating an id on every chunk does not multiply it.
    """
    for key, value in delta.items():
        known = into.get(key)
        if isinstance(value, str) and (text_keys is None or key in text_keys):
            if isinstance(known, _Text):
                known.append(value)
            else:
                into[key] = _Text([value])
        elif isinstance(value, list):
            if isinstance(known, _Items):
                known.extend(value)
            else:
                into[key] = _Items(value)
        elif isinstance(value, dict) and isinstance(known, dict):
            into[key] = {**known, **value}
        elif value is not None or key not in into:
            into[key] = value


def _merged(parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in parts.items():
        if isinstance(value, _Text):
            out[key] = "".join(value)
        elif isinstance(value, _Items):
            out[key] = list(value)
        else:
            out[key] = value
    return out


def _error_of(chunk: dict[str, Any]) -> BadResponse | None:
    """The error a chunk reports, if any (``{"error": ...}`` or vLLM's ``object: error``)."""
    error = chunk.get("error")
    if not error and chunk.get("object") == "error":
        error = chunk
    if not error:
        return None
    if isinstance(error, dict):
        message = error.get("message") or error.get("msg") or orjson.dumps(error).decode()
        code = error.get("code") or error.get("type") or "stream_error"
    else:
        message, code = str(error), "stream_error"
    return BadResponse(f"error inside the stream: {message}", code=str(code), body=error)


class StreamAssembler:
    """Fold streamed ``chat.completion.chunk`` payloads into one ``chat.completion``.

    Call `add` with every ``data:`` payload in order, then `result`. Choices may be
    interleaved (``n > 1``) and are returned sorted by index; tool calls are
    assembled by their ``index``; the usage chunk (``choices: []``), or usage on any
    chunk, is kept (last non-null wins) and ``usage`` is None when none came.

    Completeness is strict: `result` raises ``BadResponse(code="stream_truncated")``
    unless the stream saw ``[DONE]`` *and* every choice got a ``finish_reason``
    (and, when ``expected_choices`` is given, every index ``0..n-1`` appeared). A
    finish_reason alone proves the generation ended, so servers that never send
    ``[DONE]`` can be accepted with ``require_done=False``. A missing finish_reason is
    never accepted: the text may be cut off and we would store it as a success.

        >>> asm = StreamAssembler(require_done=False)
        >>> asm.add('{"id":"c","choices":[{"index":0,"delta":{"content":"4"}}]}')
        True
        >>> _ = asm.add('{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
        >>> asm.result()["choices"][0]["message"]["content"]
        '4'
    """

    def __init__(self, *, require_done: bool = True, expected_choices: int | None = None) -> None:
        self.require_done = require_done
        self.expected_choices = expected_choices
        self.done = False  # "[DONE]" seen
        self.chunks = 0  # JSON chunks folded in
        self.has_output = False  # a content/reasoning/tool/refusal delta was seen
        self._head: dict[str, Any] = {}
        self._usage: Any = None
        self._choices: dict[int, _Choice] = {}

    def add(self, payload: str) -> bool:
        """Fold in one payload; True exactly once, on the first generated output.

        The True return is the time-to-first-token signal: the caller reads its clock
        then. Raises `BadResponse` for a non-JSON payload (``bad_stream_chunk``) or an
        error object in the stream (code taken from the error). Blank payloads and
        anything after ``[DONE]`` are ignored.
        """
        if self.done:
            return False
        text = payload.strip()
        if not text:
            return False
        if text == _DONE:
            self.done = True
            return False
        chunk = stream_payload(text, "chunk")
        error = _error_of(chunk)
        if error is not None:
            raise error
        self.chunks += 1
        head = self._head
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            value = chunk.get(key)
            if value is not None and head.get(key) is None:
                head[key] = value
        usage = chunk.get("usage")
        if usage is not None:
            self._usage = usage
        produced = False
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for raw in choices:
                if not isinstance(raw, dict):
                    continue
                index = raw.get("index")
                if not isinstance(index, int):
                    index = 0
                choice = self._choices.get(index)
                if choice is None:
                    choice = self._choices[index] = _Choice(index)
                produced = choice.add(raw) or produced
        if produced and not self.has_output:
            self.has_output = True
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        """The completion as assembled so far, without any completeness check."""
        head = self._head
        body: dict[str, Any] = {
            "id": head.get("id"),
            "object": "chat.completion",
            "created": head.get("created"),
            "model": head.get("model"),
            "choices": [self._choices[i].to_dict() for i in sorted(self._choices)],
            "usage": self._usage,
            "system_fingerprint": head.get("system_fingerprint"),
        }
        if head.get("service_tier") is not None:
            body["service_tier"] = head["service_tier"]
        return body

    def result(self) -> dict[str, Any]:
        """The final completion; raises ``BadResponse("stream_truncated")`` if incomplete.

        The partial completion is attached as the error's ``body`` so a torn but
        paid-for stream can still be inspected.
        """
        problem = self._incomplete()
        if problem:
            raise BadResponse(
                f"stream ended early: {problem} after {self.chunks} chunk(s)",
                code="stream_truncated",
                body=self.snapshot(),
            )
        return self.snapshot()

    def _incomplete(self) -> str | None:
        if not self._choices:
            return "no choice was streamed" + ("" if self.done else " and no [DONE]")
        unfinished = [i for i in sorted(self._choices) if self._choices[i].finish_reason is None]
        missing_done = self.require_done and not self.done
        if unfinished and missing_done:
            return f"no [DONE] and no finish_reason for choice(s) {unfinished}"
        if unfinished:
            return f"no finish_reason for choice(s) {unfinished}"
        if missing_done:
            return "no [DONE]"
        if self.expected_choices is not None:
            absent = [i for i in range(self.expected_choices) if i not in self._choices]
            if absent:
                return f"choice(s) {absent} of n={self.expected_choices} never arrived"
        return None


def assemble(
    chunks: Iterable[bytes], *, require_done: bool = True, expected_choices: int | None = None
) -> dict[str, Any]:
    """Decode and assemble a whole SSE body given as byte pieces (tests, replays).

    >>> assemble([b'data: {"choices":[{"delta":{"content":"x"},"finish_reason":"stop"}]}',
    ...           b"\\n\\ndata: [DONE]\\n\\n"])["choices"][0]["message"]["content"]
    'x'
    """
    assembler = StreamAssembler(require_done=require_done, expected_choices=expected_choices)
    return assembled(assembler, chunks)


class Assembler(Protocol):
    """What `assembled` feeds: `StreamAssembler`, or the Responses API's
    `batchrun._transport.response_stream.ResponseStreamAssembler`."""

    def add(self, payload: str) -> bool: ...

    def result(self) -> dict[str, Any]: ...


def assembled(assembler: Assembler, chunks: Iterable[bytes]) -> dict[str, Any]:
    """Every SSE payload of the byte pieces ``chunks`` fed to ``assembler``: its result."""
    decoder = SSEDecoder()
    for piece in chunks:
        for payload in decoder.feed(piece):
            assembler.add(payload)
    for payload in decoder.close():
        assembler.add(payload)
    return assembler.result()


def stream_payload(text: str, what: str) -> dict[str, Any]:
    """One payload of a stream as the JSON object it must be (``what``: "chunk" for
    chat, "event" for Responses); else `BadResponse` ``bad_stream_chunk``."""
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadResponse(
            f"stream {what} is not JSON: {_clip(text)}", code="bad_stream_chunk"
        ) from exc
    if not isinstance(payload, dict):
        raise BadResponse(
            f"stream {what} is not a JSON object: {_clip(text)}", code="bad_stream_chunk"
        )
    return payload


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
