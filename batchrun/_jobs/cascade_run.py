"""Running a cascade (`batchrun._jobs.cascade`): its stages in order, each a plain run
of the Engine made by the caller, then its own files (`batchrun._jobs.cascade_outputs`).

    runner = CascadeRunner(settings, make_stage=lambda cfg: make_runner(cfg, key))
    result = anyio.run(runner.run)
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import anyio.to_thread
import orjson
import pyarrow.parquet as pq

from batchrun._engine.stops import EXIT_OK, EXIT_SOME_FAILED, RunResult
from batchrun._jobs.cascade import (
    ROWS,
    SECOND_OPINION,
    Stage,
    Verdict,
    stage_settings,
    stages_of,
    verdicts,
    write_escalated,
)
from batchrun._jobs.cascade_outputs import finish_cascade
from batchrun._runfiles import RunDirLock
from batchrun._settings import Settings
from batchrun.errors import RunDirError

DONE = (EXIT_OK, EXIT_SOME_FAILED)
"""Exit codes of a stage that answered every row it was given (some may have failed)."""

__all__ = ["CascadeRunner", "rebuild_cascade"]


class StageRunner(Protocol):
    """What the cascade needs of a stage's runner (`batchrun._engine.runner.Runner`)."""

    second_signal: str

    async def run(self) -> RunResult: ...

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None: ...


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
        on_end: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        assert settings.cascade is not None and settings.out_dir
        self.settings = settings
        self.cascade = settings.cascade
        self.run_dir = str(settings.out_dir)
        self.make_stage = make_stage
        self.on_end = on_end
        """Given the cascade's summary once its files are written (the report)."""
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
        os.makedirs(self.run_dir, exist_ok=True)  # noqa: ASYNC240 - one call, before any send
        with RunDirLock(self.run_dir):
            results: list[tuple[Stage, RunResult]] = []
            ended = await self._stages(results)
            stages = stages_of(self.run_dir, self.cascade)
            summary = await anyio.to_thread.run_sync(
                finish_cascade, self.settings, stages, results, self.verdicts
            )
        notes = [note for _, result in results for note in result.notes]
        if self.on_end is not None:
            self.on_end(summary)
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
    from batchrun._input.sources import Source

    try:
        with open(info_path, "rb") as f:
            recorded = orjson.loads(f.read()).get("input_fingerprint")
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{info_path}: unreadable ({exc})") from exc
    return bool(recorded != Source(rows).fingerprint())


def _label_column(settings: Settings) -> str | None:
    """The results.parquet column holding the label (for "disagree"): the confidence's
    label field, else the whole content."""
    from batchrun._confidence import label_field_of

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


def rebuild_cascade(settings: Settings, target_accuracy: float | None = None) -> dict[str, Any]:
    """A cascade's files made again from its stages' directories, sending nothing
    (`batchrun eval`, a results.parquet gone missing); returns the new summary. With
    ``target_accuracy``, the evaluation's ``calibration`` gets the suggested
    ``threshold`` (of the deciding answers' confidences)."""
    assert settings.cascade is not None and settings.out_dir is not None

    def never(cfg: Settings) -> StageRunner:
        raise AssertionError("a rebuild sends nothing")

    found = CascadeRunner(settings, make_stage=never).judge()
    stages = stages_of(str(settings.out_dir), settings.cascade)
    return finish_cascade(settings, stages, [], found, target_accuracy=target_accuracy)
