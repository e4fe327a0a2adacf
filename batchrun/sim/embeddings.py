"""What the simulator answers to ``POST /v1/embeddings``: deterministic vectors.

Pure: no I/O, no clock. A vector is drawn from a hash of the model and the input
(text, or the list of token ids), so identical inputs get identical vectors and a
test can recompute any vector the simulator gave (`embedding_vector`). Vectors are
unit length, like OpenAI's, and float32 values; with ``dimensions`` a vector is the
first ``dimensions`` values of the model's full vector, normalised again (how
OpenAI's text-embedding-3 models shorten theirs). ``encoding_format=base64`` sends
the little-endian float32 bytes in base64, as OpenAI does (the official SDK asks for
that by default); the floats sent either way are the same float32 values. numpy,
when installed, makes a vector ~10x faster (the values are the same without it).

A model's full dimension comes from `NATIVE_DIMENSIONS` by name (1,536 when no
entry matches). Usage counts the inputs' tokens with `batchrun._pacing.tokens`.

    >>> len(embedding_vector("hello", "text-embedding-3-small"))
    1536
    >>> embedding_vector("hi", "m", 4) == embedding_vector("hi", "m", 4)
    True
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import sys
from array import array
from typing import Any

import orjson

from batchrun._apis import EMBEDDING_REQUEST_INPUTS
from batchrun._pacing import tokens
from batchrun.sim.envelope import (
    ApiError,
    bad_param,
    invalid_value,
    missing_parameter,
    model_problem,
)

NATIVE_DIMENSIONS = (
    ("text-embedding-3-large", 3072),
    ("text-embedding-3-small", 1536),
    ("text-embedding-ada-002", 1536),
    ("embeddinggemma", 768),
    ("gemma", 640),  # Gemma 3 270M's hidden size, what llama-server --embeddings gives
    ("nomic-embed", 768),
    ("mxbai-embed-large", 1024),
    ("mistral-embed", 1024),
    ("bge-m3", 1024),
    ("bge-small", 384),
    ("minilm", 384),
)
"""Model-name substrings and their full vector size (first match wins)."""
DEFAULT_DIMENSIONS = 1536
MAX_INPUT_TOKENS = 8192
"""Tokens one input may have (OpenAI's embedding models)."""
MAX_REQUEST_TOKENS = 300_000
"""Tokens one request may have over all its inputs (OpenAI)."""
_FIXED_SIZE = ("text-embedding-ada-002",)
"""Models that refuse ``dimensions`` (OpenAI: only text-embedding-3 and later take it)."""
_SCALE = 1.0 / 32768.0


def native_dimensions(model: str) -> int:
    """The full vector size of ``model`` (`NATIVE_DIMENSIONS`)."""
    name = model.rsplit("/", 1)[-1].lower()
    for fragment, size in NATIVE_DIMENSIONS:
        if fragment in name:
            return size
    return DEFAULT_DIMENSIONS


def _seed(item: Any, model: str) -> bytes:
    if isinstance(item, str):
        data = item.encode("utf-8", "surrogatepass")
    else:  # a list of token ids: never the same bytes as a text
        data = b"\x00ids" + orjson.dumps(item)
    return model.encode() + b"\x00" + data


def _draws(item: Any, model: str, dimensions: int | None) -> bytes:
    """The vector's values before scaling: little-endian int16s drawn from the hash
    (the first ``dimensions`` of the model's full vector)."""
    full = native_dimensions(model)
    size = full if dimensions is None else min(dimensions, full)
    return hashlib.shake_256(_seed(item, model)).digest(2 * full)[: 2 * size]


def _inverse_norm(square_sum: int) -> float:
    """One over the length, from the exact integer sum of squares (the same double
    whichever way the sum was taken)."""
    return 1.0 / math.sqrt(square_sum) if square_sum else 1.0


def _unit_pure(draws: bytes) -> array[float]:
    """The unit float32 vector of ``draws``, in plain Python."""
    values = struct.unpack(f"<{len(draws) // 2}h", draws)
    inverse = _inverse_norm(sum(v * v for v in values))
    return array("f", [v * inverse for v in values])


def _unit_numpy(draws: bytes) -> Any:
    """`_unit_pure` with numpy (when installed: ~10x faster, the same float32 values:
    an int16 times the same double, rounded to float32, is IEEE arithmetic either
    way)."""
    values = _np.frombuffer(draws, "<i2").astype(_np.int64)
    inverse = _inverse_norm(int(values @ values))
    return (values.astype(_np.float64) * inverse).astype(_np.float32)


_np: Any
try:  # an accelerator for the simulator only; batchrun does not need numpy
    import numpy

    _np = numpy
except ImportError:  # pragma: no cover - numpy comes with pandas and most data stacks
    _np = None


def _unit(draws: bytes) -> Any:
    return _unit_pure(draws) if _np is None else _unit_numpy(draws)


def embedding_vector(item: Any, model: str, dimensions: int | None = None) -> list[float]:
    """The vector the simulator gives ``item`` (a text, or a list of token ids) for
    ``model``: float32 values (as Python floats) of unit length."""
    return _unit(_draws(item, model, dimensions)).tolist()


def encoded_vector(
    item: Any, model: str, dimensions: int | None, encoding_format: str | None
) -> list[float] | str:
    """A vector as sent: the floats, or (``base64``) their little-endian float32 bytes."""
    vector = _unit(_draws(item, model, dimensions))
    if encoding_format != "base64":
        return vector.tolist()
    if isinstance(vector, array):
        if sys.byteorder == "big":
            vector.byteswap()
        raw = vector.tobytes()
    else:
        raw = vector.astype("<f4").tobytes()
    return base64.b64encode(raw).decode("ascii")


def _inputs(body: dict[str, Any]) -> list[Any]:
    value = body["input"]
    if isinstance(value, str) or (isinstance(value, list) and value and type(value[0]) is int):
        return [value]
    return list(value)


def check_embeddings_body(body: dict[str, Any]) -> ApiError | None:
    """The 400 OpenAI answers to a bad embeddings body, else None."""
    problem = model_problem(body.get("model"))
    if problem is not None:
        return problem
    model: str = body["model"]
    if "input" not in body:
        return missing_parameter("input")
    value = body["input"]
    invalid = ApiError(400, "'$.input' is invalid. Please check the API reference.", param="input")
    if isinstance(value, str):
        if not value:
            return invalid
    elif not isinstance(value, list) or not value:
        return invalid
    elif type(value[0]) is int:
        if not all(type(t) is int and t >= 0 for t in value):
            return invalid
    else:
        if len(value) > EMBEDDING_REQUEST_INPUTS:
            return ApiError(
                400,
                f"'$.input' is invalid: at most {EMBEDDING_REQUEST_INPUTS} inputs a request.",
                param="input",
            )
        for item in value:
            if isinstance(item, str):
                if not item:
                    return invalid
            elif not (
                isinstance(item, list) and item and all(type(t) is int and t >= 0 for t in item)
            ):
                return invalid
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        return invalid_value("encoding_format", encoding, "'float' and 'base64'")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if any(name in model for name in _FIXED_SIZE):
            return ApiError(
                400, "This model does not support specifying dimensions.", param="dimensions"
            )
        full = native_dimensions(model)
        if type(dimensions) is not int or not 1 <= dimensions <= full:
            return bad_param(
                "dimensions",
                "invalid_value",
                f"Invalid value for 'dimensions' = {dimensions}. Must be between 1 and {full}.",
            )
    counts = tokens.embedding_input_tokens(body)
    longest = max(counts, default=0)
    if longest > MAX_INPUT_TOKENS:
        return bad_param(
            "input",
            "context_length_exceeded",
            f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
            f"requested {longest} tokens in an input. Please reduce your input.",
        )
    if sum(counts) > MAX_REQUEST_TOKENS:
        return bad_param(
            "input",
            "max_tokens_per_request",
            f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request.",
        )
    return None


def embeddings_object(body: dict[str, Any]) -> dict[str, Any]:
    """The ``list`` object answering a (valid) embeddings body."""
    model = str(body["model"])
    dimensions = body.get("dimensions")
    encoding = body.get("encoding_format")
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": encoded_vector(item, model, dimensions, encoding),
        }
        for index, item in enumerate(_inputs(body))
    ]
    prompt = sum(tokens.embedding_input_tokens(body))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }


__all__ = [
    "DEFAULT_DIMENSIONS",
    "NATIVE_DIMENSIONS",
    "check_embeddings_body",
    "embedding_vector",
    "embeddings_object",
    "encoded_vector",
    "native_dimensions",
]
