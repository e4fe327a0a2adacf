"""After a run: results.parquet, the evaluation, and both recorded in summary.json.

Runs after *every* run, whatever made it stop, so results.parquet and the score always
describe the whole run directory (every earlier process included), with unfinished
rows marked ``pending``. `DatasetOutputHooks` plugs this into the Runner:

    hooks = CompositeHooks(make_hooks(cfg), DatasetOutputHooks(cfg))
    result = anyio.run(Runner(cfg, hooks=hooks).run)
    result.summary["eval"]["accuracy"], result.summary["parquet"]["rows"]

summary.json then has two more keys: ``"parquet"`` (``{"path", "rows", "statuses"}``;
null with --no-parquet; ``{"error": "..."}`` when it could not be written) and
``"eval"`` (`batchrun.jobs.evaluate.Evaluator.report`; null without an [eval] section).
results.jsonl stays the record: a failure here is a note, never a failed run.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

import orjson
import pyarrow as pa

from batchrun.config import RunConfig
from batchrun.engine.runner import RunHooks, Runner
from batchrun.errors import BatchrunError, ConfigError, RunDirError
from batchrun.input.sources import ScanResult
from batchrun.jobs.evaluate import format_eval
from batchrun.output.journal import SUMMARY
from batchrun.output.parquet import write_results_parquet
from batchrun.output.summary import write_json_atomic

PARQUET = "results.parquet"


def finish_dataset_run(cfg: RunConfig) -> dict[str, Any]:
    """Write results.parquet (unless ``cfg.write_parquet`` is off) and evaluate.

    Returns the keys to merge into summary.json: ``{"parquet": {...} | None, "eval":
    {...} | None}``. One pass over the input and the output files does both.
    """
    path = os.path.join(cfg.out_dir, PARQUET) if cfg.write_parquet else None
    report = write_results_parquet(cfg, path)
    parquet = None
    if path is not None:
        parquet = {"path": path, "rows": report.rows, "statuses": report.statuses}
        if report.renamed:
            parquet["renamed"] = report.renamed
    return {"parquet": parquet, "eval": report.eval}


def merge_summary(summary: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with ``extra`` merged in place, ``journal`` kept last (for readers)."""
    journal = summary.pop("journal", None)
    summary.update(extra)
    if journal is not None:
        summary["journal"] = journal
    return summary


def rescore(run_dir: str, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a run again without sending anything: rebuild results.parquet and the
    evaluation from the run's files (the input must still be where it was), with the
    recorded [eval] or ``evaluation``, and record both in summary.json.

        report = rescore("runs/sentiment", {"reference_column": "label",
                                            "compare": "json_field", "field": "sentiment"})
    """
    from dataclasses import replace

    from batchrun.engine.rundir import RunDirLock
    from batchrun.output.journal import RUN_INFO

    info_path = os.path.join(run_dir, RUN_INFO)
    try:
        with open(info_path, "rb") as f:
            info = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{run_dir}: no readable run.json (is it a batchrun run?)") from exc
    cfg = RunConfig.from_public_dict(info.get("options") or {})
    cfg = replace(cfg, out_dir=run_dir)
    if evaluation is not None:
        cfg = replace(cfg, job={**cfg.job, "eval": evaluation})
    if not cfg.job.get("eval"):
        raise ConfigError(f"{run_dir}: the run has no [eval]; say what to score against")
    if not cfg.job.get("prompt"):
        raise ConfigError(f"{run_dir}: a plain request file has no reference column to score")
    with RunDirLock(run_dir):  # never next to a run still writing
        extra = finish_dataset_run(cfg)
        summary_path = os.path.join(run_dir, SUMMARY)
        try:
            with open(summary_path, "rb") as f:
                summary = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            summary = {}
        write_json_atomic(summary_path, merge_summary(summary, extra))
    report: dict[str, Any] = extra["eval"]
    return report


class DatasetOutputHooks(RunHooks):
    """On run end: results.parquet + evaluation, merged into summary.json.

    The summary dict the Runner hands over is updated in place, so
    ``RunResult.summary`` has the new keys too. The evaluation table goes to stderr
    unless ``cfg.quiet``.
    """

    def __init__(self, cfg: RunConfig, *, err: IO[str] | None = None) -> None:
        self.cfg = cfg
        self.err = err

    def before_send(self, runner: Runner, scan: ScanResult) -> None:
        """The evaluation's reference column must exist before anything is paid for."""
        spec = self.cfg.job.get("eval")
        if not spec or scan.columns is None:
            return
        column = spec["reference_column"]
        if column not in scan.columns:
            raise ConfigError(
                f"[eval] reference_column {column!r} is not a column of "
                f"{self.cfg.input_path}{_suggest(column, scan.columns)} "
                f"(columns: {_listing(scan.columns)})"
            )

    def on_end(self, runner: Runner, summary: dict[str, Any]) -> None:
        try:
            extra = finish_dataset_run(self.cfg)
        except (BatchrunError, OSError, pa.ArrowException) as exc:
            runner.notes.append(f"could not write {PARQUET}: {exc}")
            extra = {"parquet": {"error": str(exc)}, "eval": None}
        merge_summary(summary, extra)
        try:
            write_json_atomic(os.path.join(self.cfg.out_dir, SUMMARY), summary)
        except OSError as exc:
            runner.notes.append(f"could not write summary.json: {exc}")
        report = extra.get("eval")
        if report is not None and not self.cfg.quiet:
            err = self.err or sys.stderr
            what = report["reference_column"]
            if report.get("field"):
                what += f" vs {report['field']}"
            err.write(f"batchrun: evaluation ({what}):\n{format_eval(report)}\n")
            err.flush()


def _suggest(word: str, choices: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _listing(names: set[str], most: int = 20) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:most])
    return text + (f", ... ({len(shown)} in all)" if len(shown) > most else "")
