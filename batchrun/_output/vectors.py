"""Embedding vectors as one Arrow ``fixed_size_list<float32>[dim]`` array.

An embeddings answer carries each vector as a list of floats or (``encoding_format
= "base64"``, what the official SDK asks for) as the base64 of its little-endian
float32 bytes. `vectors_array` turns a batch of them into one Arrow array whose
values are a single contiguous float32 buffer: a Parquet column of it reads back as
a numpy ``(rows, dim)`` matrix without copying (``column.values.to_numpy()
.reshape(-1, dim)``), and DuckDB, polars and ``datasets`` read it as a fixed-size
array. A base64 vector is decoded straight into that buffer (no Python float per
value); a float list goes through ``array('f')`` once. ``None`` stands for a row
without a vector (a failed row) and becomes a null entry. Pure: no I/O.

    >>> arr = vectors_array([[1.0, 2.0], None, "AACAPwAAAEA="])
    >>> arr.type, arr.to_pylist()
    (FixedSizeListType(fixed_size_list<item: float>[2]), [[1.0, 2.0], None, [1.0, 2.0]])
"""

from __future__ import annotations

import base64
import binascii
import sys
from array import array
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

FLOAT32_BYTES = 4


def decode_vector(value: Any) -> bytes:
    """One vector as little-endian float32 bytes: from base64 text, or a list of
    numbers. Raises ValueError for anything else (or base64 that is not whole floats)."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not base64 float32 data ({exc})") from None
        if not raw or len(raw) % FLOAT32_BYTES:
            raise ValueError(f"{len(raw)} bytes of base64 data are not whole float32 values")
        return raw
    if isinstance(value, list | tuple) and value:
        try:
            packed = array("f", value)
        except (TypeError, OverflowError):
            raise ValueError("a vector holds a value that is not a float32 number") from None
        if sys.byteorder == "big":
            packed.byteswap()
        return packed.tobytes()
    raise ValueError(f"not a vector: {type(value).__name__}")


def vectors_array(vectors: Iterable[Any], dim: int | None = None) -> pa.FixedSizeListArray:
    """One ``fixed_size_list<float32>[dim]`` array of ``vectors`` (float lists, base64
    strings, or None for a null row). ``dim``: the size every vector must have (None:
    the first vector's). Raises ValueError naming the first vector of another size.
    """
    chunks: list[bytes] = []
    nulls: list[int] = []
    size = dim
    count = 0
    for index, value in enumerate(vectors):
        count += 1
        if value is None:
            nulls.append(index)
            chunks.append(b"")
            continue
        raw = decode_vector(value)
        length = len(raw) // FLOAT32_BYTES
        if size is None:
            size = length
        elif length != size:
            raise ValueError(f"vector {index} has {length} dimensions, not {size}")
        chunks.append(raw)
    if size is None:  # no vector at all, and no dim given
        raise ValueError("no vector to take the dimension from (give dim)")
    filler = bytes(size * FLOAT32_BYTES)
    values = b"".join(chunk or filler for chunk in chunks)
    flat = pa.Array.from_buffers(pa.float32(), count * size, [None, pa.py_buffer(values)])
    mask = None
    if nulls:
        flags = [False] * count
        for index in nulls:
            flags[index] = True
        mask = pa.array(flags, pa.bool_())
    return pa.FixedSizeListArray.from_arrays(flat, size, mask=mask)


def answer_vectors(body: Any) -> list[Any]:
    """The vectors of an embeddings answer in input order (by each entry's ``index``).
    Raises ValueError when an entry holds none or the indexes are not 0 to n-1."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data:
        raise ValueError("the answer holds no 'data' list of embeddings")
    ordered: list[Any] = [None] * len(data)
    for position, entry in enumerate(data):
        if not isinstance(entry, dict) or "embedding" not in entry:
            raise ValueError(f"data[{position}] holds no embedding")
        index = entry.get("index", position)
        if not isinstance(index, int) or not 0 <= index < len(data) or ordered[index] is not None:
            raise ValueError(
                f"data[{position}] has index {index!r}: not one of 0 to {len(data) - 1}"
            )
        ordered[index] = entry["embedding"]
    return ordered


__all__ = ["answer_vectors", "decode_vector", "vectors_array"]
