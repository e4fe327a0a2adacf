"""Arrow values made from buffers, never from Python objects.

pyarrow converts Python objects (``pa.array([...])``, ``pa.scalar(3)``, a bare number
handed to a compute function) through code that imports pandas when it is installed:
~35 MiB of peak memory and ~0.4 s, in the middle of a run (measured with
``scripts/bench --memory``: 167 MiB for 10,000 rows with the import, 131 MiB without).
What a run does before and while it sends (in-run dedupe, pilots, a cluster's shard
check) builds its Arrow data here instead. ``tests/test_cli.py`` pins it.

    >>> import pyarrow.compute as pc
    >>> pc.add(from_array(array("Q", [1, 2]), "uint64"), scalar(3, "uint64")).to_pylist()
    [4, 5]
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

_CODES = {
    "bool": "?",
    "uint8": "B",
    "uint16": "H",
    "uint32": "I",
    "int32": "i",
    "int64": "q",
    "uint64": "Q",
    "float": "f",
    "double": "d",
}
"""Arrow type name -> struct/array code of the same width."""


def _type(name: str) -> Any:
    import pyarrow as pa

    return pa.bool_() if name == "bool" else pa.type_for_alias(name)


def scalar(value: float | int | bool, type_name: str) -> Any:
    """A pyarrow scalar of ``type_name`` (one of `_CODES`' names)."""
    import pyarrow as pa

    if type_name == "bool":
        data = pa.py_buffer(b"\x01" if value else b"\x00")
    else:
        data = pa.py_buffer(struct.pack("=" + _CODES[type_name], value))
    return pa.Array.from_buffers(_type(type_name), 1, [None, data])[0]


def null(type_name: str) -> Any:
    """A null scalar of ``type_name``."""
    import pyarrow as pa

    return pa.nulls(1, _type(type_name))[0]


def falses(n: int) -> Any:
    """A bool array of ``n`` False values."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bytes((n + 7) // 8))])


def from_array(values: array[Any], type_name: str) -> Any:
    """A pyarrow array over the memory of an ``array.array`` of the same width (no copy)."""
    import pyarrow as pa

    if type_name == "bool" or array(_CODES[type_name]).itemsize != values.itemsize:
        raise ValueError(f"array of {values.typecode!r} cannot be read as {type_name}")
    return pa.Array.from_buffers(_type(type_name), len(values), [None, pa.py_buffer(values)])


__all__ = ["falses", "from_array", "null", "scalar"]
