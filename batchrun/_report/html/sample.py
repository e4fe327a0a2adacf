"""A bounded sample of a run's rows for the page's table, each marked for the filters.

The page never embeds every row: `SAMPLE_ROWS` at most, long texts cut to
`MAX_TEXT` characters. From results.parquet (a dataset job's finished run) a row
carries its input columns and parsed answer fields; the rows that did not succeed
are taken first (up to `PROBLEM_ROWS`, spread over the file), the rest evenly spaced,
so a filter on "failed" or "wrong" has something to show. While a run is going (no
results.parquet yet, or one from an earlier process) the sample comes from the
output lines instead, drawn by `LineSample` during the one pass the report makes.

Every row gets ``status``, and, when the job has an [eval] section and the row has
its reference, ``label`` (the reference as the confusion table names it) and
``correct`` (true/false), judged by `batchrun._jobs.evaluate.Evaluator` exactly as the
run's accuracy counts them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchrun._jobs.evaluate import Evaluator
from batchrun._models import Outcome
from batchrun._output.answers import parse_content
from batchrun._output.parquet import FAILED, PARSED_PREFIX, RESULT_COLUMNS, SUCCEEDED, result_values
from batchrun._settings import Settings

SAMPLE_ROWS = 200
PROBLEM_ROWS = 50
"""At most this many rows that did not succeed (failed, pending, invalid)."""
MAX_TEXT = 600
"""Characters kept of a long value (answers, input texts, error messages)."""
LINE_COLUMNS = (
    "status",
    "model",
    "content",
    "finish_reason",
    "latency_ms",
    "attempts",
    "error_code",
    "error_message",
)
"""Result columns shown for every row (the parquet file has more)."""


def cut(value: Any, limit: int = MAX_TEXT) -> Any:
    """A long string shortened (with an ellipsis); anything else as is, made JSON-safe.

    >>> cut("x" * 10, 4), cut(1.5), cut([1, 2])
    ('xxx…', 1.5, '[1,2]')
    """
    if isinstance(value, str):
        return value if len(value) <= limit else value[: limit - 1] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    return cut(orjson.dumps(value, default=str).decode(), limit)


def spread(indices: Sequence[int], k: int) -> list[int]:
    """``k`` of ``indices`` evenly spaced (all of them when there are no more than ``k``).

    >>> spread(list(range(10)), 3)
    [0, 3, 6]
    """
    if len(indices) <= k:
        return list(indices)
    return [indices[i * len(indices) // k] for i in range(k)]


def _recorded(options: Mapping[str, Any]) -> Settings | None:
    try:
        return Settings.from_public_dict(options)
    except (KeyError, ValueError, TypeError):
        return None


def evaluator_of(options: Mapping[str, Any]) -> Evaluator | None:
    """The run's evaluator from run.json's options (None without an [eval] section)."""
    settings = _recorded(options)
    return Evaluator.of(settings.eval) if settings is not None else None


def schema_of(options: Mapping[str, Any]) -> Mapping[str, Any] | None:
    settings = _recorded(options)
    return settings.schema if settings is not None else None


def _judge(
    evaluator: Evaluator | None,
    status: str | None,
    reference: Any,
    content: str | None,
    parsed: Mapping[str, Any] | None,
) -> tuple[str | None, bool | None]:
    """(label, correct) as the run's evaluation counted this row: only succeeded and
    failed rows count, a failed one as having no prediction (`batchrun._output.parquet`
    feeds the evaluator the same way)."""
    if evaluator is None or status not in (SUCCEEDED, FAILED):
        return None, None
    if reference is None or (isinstance(reference, str) and not reference.strip()):
        return None, None
    predicted = evaluator.predicted(content, parsed) if status == SUCCEEDED else None
    return evaluator.label(reference), evaluator.is_correct(reference, predicted)


def packed(
    values: Mapping[str, Any], columns: Sequence[str], label: str | None, correct: bool | None
) -> dict[str, Any]:
    """One table row for the page: its cells in column order, and what the filters read
    (apart from the cells: an input column may well be called ``label``)."""
    return {
        "cells": [cut(values.get(c)) for c in columns],
        "status": values.get("status"),
        "label": label,
        "correct": correct,
    }


def parquet_sample(path: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The sample from results.parquet: input columns, result columns, parsed fields."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, memory_map=True)
    names = pf.schema_arrow.names
    result_names = {name for name, _ in RESULT_COLUMNS}
    status_at = names.index("status")
    last_result = names.index("error_message")
    inputs = [n for n in names[2:status_at] if n not in result_names]
    parsed = list(names[last_result + 1 :])
    meta = orjson.loads((pf.schema_arrow.metadata or {}).get(b"batchrun", b"{}"))
    renamed = (meta.get("renamed") or {}) if isinstance(meta, dict) else {}

    statuses = pf.read(columns=["status"]).column("status")
    problems = pc.indices_nonzero(pc.not_equal(statuses, SUCCEEDED)).to_pylist()
    picked = spread(problems, PROBLEM_ROWS)
    rest = SAMPLE_ROWS - len(picked)
    chosen = set(picked)
    evenly = spread(range(len(statuses)), SAMPLE_ROWS + len(picked))
    picked += [i for i in evenly if i not in chosen][:rest]
    picked.sort()

    columns = ["custom_id", "row", *inputs, *LINE_COLUMNS, *parsed]
    table = pf.read(columns=columns).take(picked) if picked else None
    evaluator = evaluator_of(options)
    reference_column = None
    if evaluator is not None:
        reference = evaluator.reference_column
        reference_column = renamed.get("input", {}).get(reference, reference)
    # parsed columns back to the schema's field names (a clash was renamed out_<name>)
    field_of = {column: field for field, column in renamed.get("parsed", {}).items()}
    rows: list[dict[str, Any]] = []
    for record in table.to_pylist() if table is not None else []:
        fields = None
        if record.get("status") == SUCCEEDED and record.get("parse_error") is None and parsed:
            fields = {field_of.get(c, c): record[c] for c in parsed if c != "parse_error"}
        label, correct = _judge(
            evaluator,
            record.get("status"),
            record.get(reference_column) if reference_column else None,
            record.get("content"),
            fields,
        )
        rows.append(packed(record, columns, label, correct))
    return {
        "source": "results.parquet",
        "total_rows": len(statuses),
        "input_columns": inputs,
        "parsed_columns": parsed,
        "columns": columns,
        "rows": rows,
    }


class LineSample:
    """Reservoir samples of result and error lines, drawn while the lines stream by.

    A seeded RNG keeps the sample the same for the same files. Only a line that
    enters a reservoir is turned into a row (expected k * ln(n / k) of n lines).
    """

    def __init__(self, options: Mapping[str, Any], seed: int = 0) -> None:
        self.schema = schema_of(options)
        self.evaluator = evaluator_of(options)
        self._rng = random.Random(seed)
        self._keep = {SUCCEEDED: SAMPLE_ROWS, "failed": PROBLEM_ROWS}
        self._seen = {SUCCEEDED: 0, "failed": 0}
        self._rows: dict[str, list[dict[str, Any]]] = {SUCCEEDED: [], "failed": []}

    def add(self, outcome: Outcome) -> None:
        """One decoded output line."""
        status = SUCCEEDED if outcome.ok else FAILED
        self._seen[status] += 1
        seen, keep, rows = self._seen[status], self._keep[status], self._rows[status]
        if len(rows) < keep:
            rows.append(self._row(outcome))
            return
        slot = int(self._rng.random() * seen)  # randrange's exactness is not needed here
        if slot < keep:
            rows[slot] = self._row(outcome)

    def _row(self, outcome: Outcome) -> dict[str, Any]:
        values = result_values(outcome)
        values["custom_id"] = outcome.custom_id
        values["row"] = outcome.row
        if self.schema is not None:
            parsed, error = None, None
            if outcome.ok:
                parsed, error = parse_content(values["content"], self.schema)
            for field, column in self.parsed_columns:
                values[column] = (parsed or {}).get(field)
            values["parse_error"] = error
        # the output lines hold no reference column: only results.parquet can be scored
        return packed(values, self.columns, None, None)

    @property
    def parsed_columns(self) -> list[tuple[str, str]]:
        """(schema field, column) pairs; a field named like a shown column gets the
        ``out_`` prefix, as in results.parquet."""
        props = (self.schema or {}).get("properties")
        taken = {"custom_id", "row", *LINE_COLUMNS, "parse_error", "label", "correct"}
        return [
            (name, PARSED_PREFIX + name if name in taken else name)
            for name in (props if isinstance(props, Mapping) else ())
        ]

    @property
    def columns(self) -> list[str]:
        parsed = [c for _, c in self.parsed_columns]
        if self.schema is not None:
            parsed.append("parse_error")
        return ["custom_id", "row", *LINE_COLUMNS, *parsed]

    def sample(self) -> dict[str, Any]:
        failed = self._rows["failed"]
        succeeded = self._rows[SUCCEEDED][: SAMPLE_ROWS - len(failed)]
        row_at = self.columns.index("row")
        rows = sorted([*failed, *succeeded], key=lambda r: r["cells"][row_at] or 0)
        columns = self.columns
        return {
            "source": "results.jsonl",
            "total_rows": self._seen[SUCCEEDED] + self._seen["failed"],
            "input_columns": [],
            "parsed_columns": columns[2 + len(LINE_COLUMNS) :],
            "columns": columns,
            "rows": rows,
        }
