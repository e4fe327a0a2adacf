"""A model cascade: the cheap model first, the next one only where it is not sure.

Every row of the input goes to the first model; a row moves on to the next stage only
when its answer's confidence (`batchrun._confidence`) is below that stage's
``escalate_below`` or the answer is unusable (failed for good, not valid against the
schema, cut short or refused, no confidence at all). The last model's answer stands.

Each stage is a plain run of the same Engine in its own directory of the run,
``RUN/stages/<n>-<model>/``, with the run's own settings but the stage's model:
templates, schemas, pilots, the cache, budgets and resumes work in a stage exactly
as in any run, and a stage's directory is its own checkpoint. Stage 1 reads the
input; stage n+1 reads ``RUN/stages/<n+1>-<model>/rows.jsonl``, the input rows stage
n escalated (with their ids: the run's id column, or ``_cascade_id`` holding the
``row-<n>`` id they had), written atomically once stage n is complete, from stage n's
answers only. So a kill -9 anywhere leaves either a stage to resume (it sends only
what it has not answered), or a complete stage whose escalations are computed again
from the same answers, to the same rows: nothing is sent twice, and exactly the
right rows move on. A stage whose escalated rows changed (a pilot grown into the
full run, another threshold) resumes with them: rows it answered keep their
answers, the new ones are sent.

This module is the plan and the rule (stages, their settings, the verdicts, the
escalated rows); `batchrun._jobs.cascade_run` runs the stages. When the stages are
done (or stopped), `batchrun._jobs.cascade_outputs` writes the
run's own files: results.jsonl / errors.jsonl holding each row's deciding line,
results.parquet (one row per input row, the columns of a plain run plus
``decided_by``), stages.parquet (one row per row and stage) and summary.json with a
``cascade`` block (`batchrun._jobs.cascade_outputs.cascade_block`).

    stages = stages_of("runs/labels", settings.cascade)
    cfg = stage_settings(settings, stages[1], rows="runs/labels/stages/2-strong/rows.jsonl")
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pyarrow.parquet as pq

from batchrun._output.parquet import ResultIndex
from batchrun._output.summary import atomic_file
from batchrun._settings import Cascade, Settings

STAGES = "stages"
ROWS = "rows.jsonl"
ID_COLUMN = "_cascade_id"
"""The id column of a later stage's rows when the run has none (their ``row-<n>`` ids)."""
SECOND_OPINION = "second opinion"
"""Why stage 1 passes on a row it is sure of with ``escalate_when = "disagree"``."""

__all__ = [
    "ID_COLUMN",
    "Stage",
    "Verdict",
    "escalates",
    "stage_dir",
    "stage_settings",
    "stages_of",
]


@dataclass(frozen=True)
class Stage:
    """One stage of a cascade: its number (1-based), model and directory."""

    number: int
    model: str
    path: str
    threshold: float | None
    """Rows whose confidence is below this move on (None: the last stage)."""

    @property
    def last(self) -> bool:
        return self.threshold is None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def stage_dir(run_dir: str, number: int, model: str) -> str:
    """``RUN/stages/<n>-<model>`` (a model name's characters that do not belong in a
    file name become ``_``: ``org/model`` -> ``org_model``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"
    return os.path.join(run_dir, STAGES, f"{number}-{safe}")


def stages_of(run_dir: str, cascade: Cascade) -> list[Stage]:
    last = len(cascade.models) - 1
    return [
        Stage(
            k + 1,
            model,
            stage_dir(run_dir, k + 1, model),
            None if k == last else cascade.threshold(k),
        )
        for k, model in enumerate(cascade.models)
    ]


def stage_settings(
    settings: Settings, stage: Stage, *, rows: str | None = None, spent: float = 0.0
) -> Settings:
    """The settings of one stage's run: the run's own, with the stage's model, its
    directory, the cascade's confidence, and (a later stage) the escalated rows as
    input, every one of them wanted (no pilot), and what is left of the budget."""
    changes: dict[str, Any] = {
        "cascade": None,
        "model": stage.model,
        "confidence": settings.judged_by(),
        "out_dir": stage.path,
        "write_parquet": True,
        "serve": None,
    }
    if settings.max_cost is not None:
        changes["max_cost"] = max(settings.max_cost - spent, 1e-9)
    if rows is not None:
        changes.update(
            input=rows,
            limit=None,
            sample=None,
            column_types=None,
            skip_invalid=False,
            id_column=settings.id_column or ID_COLUMN,
        )
    return replace(settings, **changes)


@dataclass(frozen=True)
class Verdict:
    """What one stage's answer to one row means for the cascade."""

    custom_id: str
    row: int
    decided: bool
    reason: str | None = None
    """Why it moved on: "below" (confidence under the threshold), "unusable" (failed,
    bad answer, no confidence), "disagree" (another label than stage 1's), "second
    opinion" (``escalate_when = "disagree"``: stage 1's sure rows), "<reason> at stage
    1"; None: decided here."""


def escalates(
    status: str | None,
    confidence: float | None,
    usable: bool,
    threshold: float | None,
    disagrees: bool = False,
) -> str | None:
    """Why a row's answer at a stage moves it on, or None: it is decided there. Pure.

    >>> escalates("succeeded", 0.93, True, 0.8), escalates("succeeded", 0.6, True, 0.8)
    (None, 'below')
    >>> escalates("failed", None, False, 0.8), escalates("failed", None, False, None)
    ('unusable', None)
    """
    if threshold is None:
        return None
    if status != "succeeded" or not usable or confidence is None:
        return "unusable"
    if confidence < threshold:
        return "below"
    if disagrees:
        return "disagree"
    return None


def verdicts(
    stage: Stage, label_column: str | None, earlier: dict[str, str | None], disagree: bool
) -> Iterator[Verdict]:
    """Each finished row's verdict at ``stage``, read from the stage's results.parquet
    (its confidence and parse error) and lines (the answer's quality); rows not
    finished there (pending) give none. ``earlier``: the label an earlier stage gave
    each row (``escalate_when = "disagree"``)."""
    path = os.path.join(stage.path, "results.parquet")
    names = ["custom_id", "row", "status", "confidence", "parse_error"]
    schema = pq.read_schema(path)
    wanted = [n for n in names if n in schema.names]
    if label_column is not None and label_column in schema.names:
        wanted.append(label_column)
    table = pq.read_table(path, columns=wanted).to_pylist()
    with ResultIndex.build(stage.path) as index:
        for row in table:
            status = row.get("status")
            if status not in ("succeeded", "failed"):
                continue
            custom_id = str(row["custom_id"])
            usable = status == "succeeded" and row.get("parse_error") is None
            if usable:
                line = index.lookup(custom_id)
                usable = line is not None and line.quality is None
            label = row.get(label_column) if label_column is not None else None
            before = earlier.get(custom_id)
            disagrees = disagree and before is not None and label is not None and label != before
            reason = escalates(status, row.get("confidence"), usable, stage.threshold, disagrees)
            yield Verdict(custom_id, int(row["row"]), reason is None, reason)


def write_escalated(settings: Settings, path: str, wanted: dict[int, str]) -> bool:
    """Write the input rows numbered in ``wanted`` (row number -> id) to ``path`` as
    JSONL, each with its id (`ID_COLUMN` unless the run has an id column), atomically;
    returns whether the file changed (or is new). Values JSON cannot hold are written
    as their text."""
    from batchrun._input.sources import Source
    from batchrun.errors import InputError

    source = Source(settings.input_path, dataset=True, column_types=settings.column_types)
    lines: list[bytes] = []
    for number, _where, obj in source.rows():
        custom_id = wanted.get(number)
        if custom_id is None or isinstance(obj, InputError) or not isinstance(obj, dict):
            continue
        lines.append(escalated_line(settings, obj, custom_id))
    data = b"".join(lines)
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path, ".jsonl") as tmp, open(tmp, "wb") as f:
        f.write(data)
    return True


def escalated_line(settings: Settings, obj: dict[str, Any], custom_id: str) -> bytes:
    """One input row as a later stage reads it (see `write_escalated`)."""
    row = dict(obj) if settings.id_column else {**obj, ID_COLUMN: custom_id}
    return orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS) + b"\n"


def as_escalated(settings: Settings, obj: dict[str, Any], custom_id: str) -> dict[str, Any]:
    """The row a later stage saw for ``obj`` (its JSON round trip): what its body was
    made from."""
    decoded: dict[str, Any] = orjson.loads(escalated_line(settings, obj, custom_id))
    return decoded
