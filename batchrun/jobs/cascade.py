"""A model cascade: the cheap model first, the next one only where it is not sure.

Every row of the input goes to the first model; a row moves on to the next stage only
when its answer's confidence (`batchrun.confidence`) is below that stage's
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

When the stages are done (or stopped), `batchrun.jobs.cascade_outputs` writes the
run's own files: results.jsonl / errors.jsonl holding each row's deciding line,
results.parquet (one row per input row, the columns of a plain run plus
``decided_by``), stages.parquet (one row per row and stage) and summary.json with a
``cascade`` block (`batchrun.jobs.cascade_outputs.cascade_block`).

    runner = CascadeRunner(settings, make_stage=lambda cfg: make_runner(cfg, key))
    result = anyio.run(runner.run)
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import anyio.to_thread
import orjson
import pyarrow.parquet as pq

from batchrun.engine.rundir import RunDirLock
from batchrun.engine.stops import EXIT_OK, EXIT_SOME_FAILED, RunResult
from batchrun.errors import RunDirError
from batchrun.output.parquet import ResultIndex
from batchrun.output.summary import atomic_file
from batchrun.settings import Cascade, Settings

STAGES = "stages"
ROWS = "rows.jsonl"
ID_COLUMN = "_cascade_id"
"""The id column of a later stage's rows when the run has none (their ``row-<n>`` ids)."""
SECOND_OPINION = "second opinion"
"""Why stage 1 passes on a row it is sure of with ``escalate_when = "disagree"``."""
DONE = (EXIT_OK, EXIT_SOME_FAILED)
"""Exit codes of a stage that answered every row it was given (some may have failed)."""

__all__ = [
    "ID_COLUMN",
    "CascadeRunner",
    "Stage",
    "Verdict",
    "escalates",
    "stage_dir",
    "stage_settings",
    "stages_of",
]


class StageRunner(Protocol):
    """What the cascade needs of a stage's runner (`batchrun.engine.runner.Runner`)."""

    second_signal: str

    async def run(self) -> RunResult: ...

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None: ...


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
    from batchrun.errors import InputError
    from batchrun.input.sources import Source

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


class CascadeRunner:
    """Runs a cascade's stages in order (see the module docstring). ``make_stage``
    makes a stage's runner from its settings (the same runner any run gets: its
    hooks, its injected transport); the cascade holds the run directory's lock
    while its stages run, each stage holding its own directory's."""

    def __init__(
        self,
        settings: Settings,
        *,
        make_stage: Callable[[Settings], StageRunner],
    ) -> None:
        assert settings.cascade is not None and settings.out_dir
        self.settings = settings
        self.cascade = settings.cascade
        self.run_dir = str(settings.out_dir)
        self.make_stage = make_stage
        self.second_signal = "exit"
        self._current: StageRunner | None = None
        self._stopped = False
        self.verdicts: dict[int, list[Verdict]] = {}
        """Each stage's verdict on every row it finished, by stage number."""
        self._label_column = _label_column(settings)
        self._labels: dict[str, str | None] = {}
        """The label stage 1 gave each row (``escalate_when = "disagree"``)."""
        self._doubts: dict[str, str] = {}
        """Why stage 1 was not sure of a row (``escalate_when = "disagree"``)."""

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None:
        """Stop the stage running now (as a Ctrl-C does) and start no other."""
        self._stopped = True
        if self._current is not None:
            self._current.interrupt(times, signum)

    async def run(self) -> RunResult:
        from batchrun.jobs.cascade_outputs import finish_cascade

        os.makedirs(self.run_dir, exist_ok=True)  # noqa: ASYNC240 - one call, before any send
        with RunDirLock(self.run_dir):
            results: list[tuple[Stage, RunResult]] = []
            ended = await self._stages(results)
            stages = stages_of(self.run_dir, self.cascade)
            summary = await anyio.to_thread.run_sync(
                finish_cascade, self.settings, stages, results, self.verdicts
            )
        notes = [note for _, result in results for note in result.notes]
        if not self.settings.quiet:
            from batchrun.report.cascade import format_cascade

            print(format_cascade(summary), file=sys.stderr, flush=True)
        exit_code = ended.exit_code if ended is not None else EXIT_OK
        if ended is None and any(r.exit_code == EXIT_SOME_FAILED for _, r in results[-1:]):
            exit_code = EXIT_SOME_FAILED
        return RunResult(exit_code, str(summary.get("status")), summary, self.run_dir, notes)

    async def _stages(self, results: list[tuple[Stage, RunResult]]) -> RunResult | None:
        """Run each stage with the rows it should answer; the result of the stage that
        stopped the cascade short (interrupted, over budget, an error), else None."""

        stages = stages_of(self.run_dir, self.cascade)
        rows: str | None = None
        spent = 0.0
        for stage in stages:
            if self._stopped:
                return results[-1][1] if results else None
            cfg = stage_settings(self.settings, stage, rows=rows, spent=spent)
            if rows is not None and await anyio.to_thread.run_sync(
                _changed_since_answered, stage, rows
            ):
                cfg = replace(cfg, force=True)  # other escalations: the rows answered keep theirs
            runner = self.make_stage(cfg)
            runner.second_signal = self.second_signal
            self._current = runner
            try:
                result = await runner.run()
            finally:
                self._current = None
            results.append((stage, result))
            spent += _cost(result.summary)
            done = result.exit_code in DONE and not self._stopped
            more = await anyio.to_thread.run_sync(self._after, stages, stage, cfg, done)
            if not done:
                return result
            if not more:
                return None
            rows = os.path.join(stages[stage.number].path, ROWS)
        return None

    def _after(
        self, stages: list[Stage], stage: Stage, cfg: Settings, done: bool, write: bool = True
    ) -> bool:
        """Judge a stage's answers (`verdicts`); when it is done and not the last, write
        the next stage's rows. Returns whether any row moves on. A stage that stopped
        short keeps only what it decided: the rows it would escalate wait for it.

        With ``escalate_when = "disagree"`` the first two models are two cheap variants
        that both answer every row: stage 1 decides nothing (its sure rows move on for
        a second opinion, reason "second opinion"), and stage 2 decides a row only when
        both answers are usable and sure enough and give the same label."""
        if not os.path.exists(os.path.join(stage.path, "results.parquet")):
            return False
        pair = self.cascade.escalate_when == "disagree"
        column = self._label_column
        found = list(verdicts(stage, column, self._labels, pair and stage.number == 2))
        if pair and stage.number == 1:
            self._labels = _labels(stage, column) if column is not None else {}
            self._doubts = {v.custom_id: v.reason for v in found if v.reason is not None}
            found = [replace(v, decided=False, reason=v.reason or SECOND_OPINION) for v in found]
        elif pair and stage.number == 2:
            found = [
                replace(v, decided=False, reason=f"{doubt} at stage 1")
                if v.decided and (doubt := self._doubts.get(v.custom_id)) is not None
                else v
                for v in found
            ]
        if not done:
            self.verdicts[stage.number] = [v for v in found if v.decided]
            return False
        self.verdicts[stage.number] = found
        if stage.last:
            return False
        wanted = {v.row: v.custom_id for v in found if not v.decided}
        if write:  # a later stage's rows come from this stage's input, by its row numbers
            write_escalated(cfg, os.path.join(stages[stage.number].path, ROWS), wanted)
        return bool(wanted)

    def judge(self) -> dict[int, list[Verdict]]:
        """Each stage's verdicts from its directory as it stands, sending and writing
        nothing (`batchrun eval` of a cascade): a stage counts as done when its
        summary.json has no pending row."""
        stages = stages_of(self.run_dir, self.cascade)
        rows: str | None = None
        for stage in stages:
            cfg = stage_settings(self.settings, stage, rows=rows)
            done = _stage_done(stage)
            if not self._after(stages, stage, cfg, done, write=False) or not done:
                break
            rows = os.path.join(stages[stage.number].path, ROWS)
        return self.verdicts


def _stage_done(stage: Stage) -> bool:
    try:
        with open(os.path.join(stage.path, "summary.json"), "rb") as f:
            summary = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return False
    requests = summary.get("requests") if isinstance(summary, dict) else None
    return isinstance(requests, dict) and requests.get("pending") == 0


def _changed_since_answered(stage: Stage, rows: str) -> bool:
    """Whether the stage's run.json recorded another rows file than ``rows`` holds now
    (its escalations changed since it answered: resumed with ``force``)."""
    info_path = os.path.join(stage.path, "run.json")
    if not os.path.exists(info_path):
        return False
    from batchrun.input.sources import Source

    try:
        with open(info_path, "rb") as f:
            recorded = orjson.loads(f.read()).get("input_fingerprint")
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{info_path}: unreadable ({exc})") from exc
    return bool(recorded != Source(rows).fingerprint())


def _label_column(settings: Settings) -> str | None:
    """The results.parquet column holding the label (for "disagree"): the confidence's
    label field, else the whole content."""
    from batchrun.confidence import label_field_of

    field = label_field_of(settings.judged_by(), settings.schema, settings.eval)
    return field if field is not None else "content"


def _labels(stage: Stage, column: str) -> dict[str, str | None]:
    path = os.path.join(stage.path, "results.parquet")
    if column not in pq.read_schema(path).names:
        return {}
    table = pq.read_table(path, columns=["custom_id", column]).to_pylist()
    return {str(r["custom_id"]): r[column] for r in table}


def _cost(summary: dict[str, Any]) -> float:
    cost = summary.get("cost_usd")
    total = cost.get("total") if isinstance(cost, dict) else None
    return float(total) if isinstance(total, int | float) else 0.0
