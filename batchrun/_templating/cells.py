"""A row's values as prompt text, and the note naming the columns a template could have
meant: what both template engines (`batchrun._templating.text`, `.jinja`) share."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import orjson

_MAX_COLUMNS_SHOWN = 20


def columns_note(name: str, columns: Sequence[str]) -> str:
    """The columns a template could have meant, for a name that is none of them.

    >>> columns_note("txet", ["id", "text"])
    "(columns: id, text; did you mean 'text'?)"
    """
    import difflib

    shown = ", ".join(columns[:_MAX_COLUMNS_SHOWN])
    if len(columns) > _MAX_COLUMNS_SHOWN:
        shown += f", ... ({len(columns)} in all)"
    close = difflib.get_close_matches(name, list(columns), 1, 0.75)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"(columns: {shown}{hint})" if columns else "(no columns)"


def as_text(value: Any) -> str:
    """A row value as prompt text.

    >>> as_text(None), as_text(True), as_text(0.1), as_text([1, "a"])
    ('', 'true', '0.1', '[1,"a"]')
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)
