"""gold.jsonl: the labels people gave a run's rows, kept in the run directory.

`batchrun review --import` (`batchrun._jobs.review.import_labels`) appends them; the
evaluation (`batchrun eval`, results.parquet's pass) takes a row's gold label as its
reference, over the input's reference column. One line per label::

    {"custom_id": "rev-0007", "label": "negative", "source": "label-studio:out.json",
     "at": 1764513600.1}

The file only grows: importing again appends, and for a row with several lines the
last one wins (a later review corrects an earlier one); ``"label": null`` withdraws a
row's gold label. A torn last line (a crash while appending) is ignored, never trusted.

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> append_gold(run, [("row-1", "yes"), ("row-2", "no")], source="jsonl:x")
    2
    >>> read_gold(run)
    {'row-1': 'yes', 'row-2': 'no'}
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import orjson

GOLD = "gold.jsonl"

__all__ = ["GOLD", "append_gold", "read_gold"]


def read_gold(run_dir: str) -> dict[str, str]:
    """custom_id -> the row's gold label (empty: no gold.jsonl)."""
    path = os.path.join(run_dir, GOLD)
    labels: dict[str, str] = {}
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return labels
    with f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn: the import that wrote it did not finish
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
                continue
            label = record.get("label")
            if label is None:
                labels.pop(record["custom_id"], None)
            elif isinstance(label, str):
                labels[record["custom_id"]] = label
    return labels


def append_gold(run_dir: str, labels: Iterable[tuple[str, str | None]], *, source: str) -> int:
    """Append ``(custom_id, label)`` pairs (None withdraws a label) in one write,
    flushed to disk; returns how many."""
    at = round(time.time(), 3)
    data = b"".join(
        orjson.dumps(
            {"custom_id": custom_id, "label": label, "source": source, "at": at},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for custom_id, label in labels
    )
    if not data:
        return 0
    path = os.path.join(run_dir, GOLD)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _repair_tail(fd, path)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return data.count(b"\n")


def _repair_tail(fd: int, path: str) -> None:
    """A torn last line gets its newline, so the lines appended after it stay whole
    (the torn one is then skipped as not JSON)."""
    size = os.fstat(fd).st_size
    if not size:
        return
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) != b"\n":
            os.write(fd, b"\n")
