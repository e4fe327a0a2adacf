"""After a run: results.parquet, the evaluation, and both recorded in summary.json.

Runs after *every* run, whatever made it stop, so results.parquet and the score always
describe the whole run directory (every earlier process included), with unfinished
rows marked ``pending``. `DatasetOutputHooks` plugs this into the Runner:

    hooks = CompositeHooks(make_hooks(cfg), DatasetOutputHooks(cfg))
    result = anyio.run(Runner(cfg, hooks=hooks).run)
    result.summary["eval"]["accuracy"], result.summary["parquet"]["rows"]

summary.json then has two more keys: ``"parquet"`` (``{"path", "rows", "statuses"}``;
null with --no-parquet; ``{"error": "..."}`` when it could not be written) and
``"eval"`` (`batchrun._jobs.evaluate.Evaluator.report`; null without an [eval] section).
results.jsonl stays the record: a failure here is a note, never a failed run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import IO, Any

import orjson
import pyarrow as pa

from batchrun._checks import suggest
from batchrun._confidence import has_logprobs
from batchrun._engine.hooks import Ending, RunHooks, RunState
from batchrun._input.sources import ScanResult
from batchrun._jobs.evaluate import format_eval
from batchrun._jobs.gold import read_gold
from batchrun._models import Outcome
from batchrun._output.journal import SUMMARY
from batchrun._output.parquet import ParquetReport, RowObserver, write_results_parquet
from batchrun._output.summary import merge_summary, write_json_atomic
from batchrun._settings import Settings
from batchrun._values import Evaluation
from batchrun.errors import BatchrunError, ConfigError, RunDirError

PARQUET = "results.parquet"


def finish_dataset_run(cfg: Settings, *, target_accuracy: float | None = None) -> dict[str, Any]:
    """Write results.parquet (unless ``cfg.write_parquet`` is off) and evaluate.

    Returns the keys to merge into summary.json: ``{"parquet": {...} | None, "eval":
    {...} | None}``, and ``"confidence"`` for a job with a confidence setting. One pass
    over the input and the output files does all. With ``target_accuracy``, each
    evaluation's ``calibration`` gets the suggested ``threshold``
    (`batchrun._jobs.calibration.suggest_threshold`).
    """
    assert cfg.out_dir is not None
    if cfg.cascade is not None:  # its files are made from its stages'
        from batchrun._jobs.cascade_run import rebuild_cascade

        return rebuild_cascade(cfg, target_accuracy)
    path = os.path.join(cfg.out_dir, PARQUET) if cfg.write_parquet else None
    comparison = examples = None
    observers: list[RowObserver] = []
    if cfg.has_variants:
        from batchrun._jobs.compare import Comparison

        comparison = Comparison(cfg)
        observers.append(comparison.observe)
    if cfg.is_pilot:
        from batchrun._jobs.examples import Examples

        examples = Examples(cfg)
        observers.append(examples.observe)
    report = write_results_parquet(cfg, path, observe=_all(observers))
    parquet = None
    if path is not None:
        parquet = {"path": path, "rows": report.rows, "statuses": report.statuses}
        if report.renamed:
            parquet["renamed"] = report.renamed
    extra: dict[str, Any] = {"parquet": parquet, "eval": report.eval}
    if report.confidence is not None:
        extra["confidence"] = {**report.confidence, "warning": report.confidence_note}
    if target_accuracy is not None:
        _add_thresholds(report, target_accuracy)
    if comparison is not None:
        variants, block = comparison.report(report.eval_by_variant)
        extra["variants"] = variants
        extra["comparison"] = block
        by_variant = report.eval_by_variant
        if by_variant:
            # the flat figures are the best variant's, or with no clear winner the most
            # accurate one's (what a one-variant reader shows); every variant's whole
            # report is under "variants"
            best = block.get("best") or block.get("leader") or next(iter(by_variant))
            extra["eval"] = {**by_variant[best], "variant": best, "variants": by_variant}
    if examples is not None:
        extra["examples"] = examples.rows
    return extra


def _add_thresholds(report: ParquetReport, target_accuracy: float) -> None:
    """Each evaluation with confidences gets the threshold its sample suggests."""
    for name, sample in report.calibration.items():
        one = report.eval if name is None else (report.eval_by_variant or {}).get(str(name))
        if one is not None and isinstance(one.get("calibration"), dict):
            one["calibration"]["threshold"] = sample.threshold(target_accuracy).as_dict()


def _all(observers: list[RowObserver]) -> RowObserver | None:
    if len(observers) < 2:
        return observers[0] if observers else None

    def each(*row: Any) -> None:
        for observe in observers:
            observe(*row)

    return each


def rescore(
    run_dir: str,
    evaluation: Evaluation | None = None,
    *,
    variants: Sequence[str] = (),
    target_accuracy: float | None = None,
) -> dict[str, Any]:
    """Score a run again without sending anything: rebuild results.parquet and the
    evaluation from the run's files (the input must still be where it was), with the
    recorded [eval] or ``evaluation``, and record both in summary.json. Returns
    ``{"eval", "variants", "comparison"}`` (the last two for a job with variants;
    with ``variants`` named, only those are compared, and the best is theirs).

    Labels people gave (gold.jsonl, `batchrun._jobs.review.import_labels`) are the
    reference of their rows; a run without an [eval] is scored against them alone.
    With ``target_accuracy``, each evaluation's ``calibration`` gets the suggested
    confidence ``threshold`` (`batchrun._jobs.calibration.suggest_threshold`).

        report = rescore("runs/sentiment", Evaluation("label", "json_field", "sentiment"))
        rescore("runs/labels", target_accuracy=0.95)["eval"]["calibration"]["threshold"]
    """
    from dataclasses import replace

    from batchrun._output.journal import RUN_INFO
    from batchrun._runfiles import RunDirLock

    info_path = os.path.join(run_dir, RUN_INFO)
    try:
        with open(info_path, "rb") as f:
            info = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{run_dir}: no readable run.json (is it a batchrun run?)") from exc
    cfg = Settings.from_public_dict(info.get("options") or {})
    cfg = replace(cfg, out_dir=run_dir)
    if evaluation is not None:
        cfg = replace(cfg, eval=evaluation)
    if cfg.eval is None and read_gold(run_dir):
        cfg = replace(cfg, eval=gold_evaluation(cfg))
    if cfg.eval is None:
        raise ConfigError(f"{run_dir}: the run has no [eval]; say what to score against")
    if not cfg.is_dataset:
        raise ConfigError(f"{run_dir}: a plain request file has no reference column to score")
    if variants and not cfg.has_variants:
        raise ConfigError(f"{run_dir}: the run has no variants to choose from")
    with RunDirLock(run_dir):  # never next to a run still writing
        extra = finish_dataset_run(cfg, target_accuracy=target_accuracy)
        summary_path = os.path.join(run_dir, SUMMARY)
        try:
            with open(summary_path, "rb") as f:
                summary = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError):
            summary = {}
        extra.pop("examples", None)
        write_json_atomic(summary_path, merge_summary(summary, extra))
    out = {key: extra.get(key) for key in ("eval", "variants", "comparison")}
    if variants and out["variants"]:
        from batchrun._jobs.compare import select_variants

        names = list(dict.fromkeys(variants))
        out["variants"], out["comparison"] = select_variants(
            out["variants"], out["comparison"] or {}, names
        )
    return out


GOLD_REFERENCE = "gold"
"""The reference column of a run scored against imported labels alone (gold.jsonl
gives the rows' references; an input column of that name, the others')."""


def gold_evaluation(cfg: Settings) -> Evaluation:
    """How a run without an [eval] is scored against the labels people gave it: the
    answer's label field (the confidence's, else the schema's one enum field), else
    the whole answer."""
    from batchrun._confidence import label_field_of

    field = label_field_of(cfg.confidence, cfg.schema)
    if field is not None:
        return Evaluation(GOLD_REFERENCE, "json_field", field)
    return Evaluation(GOLD_REFERENCE, "exact")


def evaluation_from(
    base: Evaluation | None,
    *,
    reference_column: str | None = None,
    compare: str | None = None,
    field: str | None = None,
    normalize: bool | None = None,
    tolerance: float | None = None,
) -> Evaluation:
    """``base`` (a run's recorded [eval], or None) with the given parts changed; a new
    ``compare`` drops the old field unless one is given."""
    reference = reference_column or (base.reference_column if base else None)
    if not reference:
        raise ConfigError("a reference column is needed (the run recorded no [eval])")
    chosen_field = field or (base.field if base and not compare else None)
    kind = compare or (base.compare if base and not field else None)
    kind = kind or ("json_field" if chosen_field else "exact")
    if kind == "json_field" and not chosen_field:
        raise ConfigError("compare json_field needs a field")
    keep = normalize if normalize is not None else (base.normalize if base else True)
    return Evaluation(
        reference,
        kind,
        chosen_field if kind != "exact" else None,
        keep,
        tolerance=tolerance if tolerance is not None else (base.tolerance if base else 0.0),
        interval=base.interval if base else True,
    )


def recorded_evaluation(run_dir: str) -> Evaluation | None:
    """The [eval] a run recorded in its run.json (None: none, or no readable run.json)."""
    from batchrun._output.journal import RUN_INFO

    try:
        with open(os.path.join(run_dir, RUN_INFO), "rb") as f:
            options = orjson.loads(f.read()).get("options") or {}
    except (OSError, orjson.JSONDecodeError):
        return None
    return Settings.from_public_dict(options).eval


class DatasetOutputHooks(RunHooks):
    """On run end: results.parquet + evaluation, merged into summary.json.

    The summary dict the Runner hands over is updated in place, so
    ``RunResult.summary`` has the new keys too. The evaluation table goes to stderr
    unless ``cfg.quiet``.
    """

    def __init__(self, cfg: Settings, *, err: IO[str] | None = None) -> None:
        self.cfg = cfg
        self.err = err
        spec = cfg.confidence
        self._watch_logprobs = spec is not None and spec.method == "logprobs"

    def before_send(self, state: RunState, scan: ScanResult) -> None:
        """The evaluation's reference column must exist before anything is paid for."""
        spec = self.cfg.eval
        if spec is None or scan.columns is None:
            return
        column = spec.reference_column
        if column not in scan.columns:
            raise ConfigError(
                f"[eval] reference_column {column!r} is not a column of "
                f"{self.cfg.input_path}{suggest(column, sorted(scan.columns))} "
                f"(columns: {_listing(scan.columns)})"
            )

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        """Confidence from logprobs: say at the first answer without them, not after
        paying for every row (once a run; the run goes on)."""
        if not self._watch_logprobs:
            return None
        for outcome in batch:
            if outcome.ok and not has_logprobs(outcome.body):
                self._watch_logprobs = False
                if not self.cfg.quiet:
                    err = self.err or sys.stderr
                    err.write(
                        f"batchrun: warning: {state.settings.endpoint} answered "
                        f"{outcome.custom_id} without logprobs: its confidence is empty "
                        "(confidence = 'logprobs' needs an endpoint that returns them)\n"
                    )
                    err.flush()
                break
        return None

    def on_end(self, state: RunState, summary: dict[str, Any]) -> Ending:
        """Write results.parquet and score the run; its figures go into summary.json
        (the engine writes it, once)."""
        notes = []
        try:
            extra = finish_dataset_run(self.cfg)
        except (BatchrunError, OSError, pa.ArrowException) as exc:
            notes.append(f"could not write {PARQUET}: {exc}")
            extra = {"parquet": {"error": str(exc)}, "eval": None}
        warning = (extra.get("confidence") or {}).get("warning")
        if warning:
            notes.append(warning)
        examples = extra.pop("examples", None)
        if examples is not None and isinstance(summary.get("pilot"), dict):
            extra["pilot"] = {**summary["pilot"], "examples": examples}
        report = extra.get("eval")
        err = self.err or sys.stderr
        if examples and not self.cfg.quiet:
            from batchrun._jobs.examples import format_examples

            err.write(
                "batchrun: pilot answers, to look at before running the rest:\n"
                + format_examples(examples)
                + "\n"
            )
        if extra.get("variants") and not self.cfg.quiet:
            from batchrun._jobs.compare import format_comparison

            err.write(
                "batchrun: variants (* best):\n"
                + format_comparison(extra["variants"], extra["comparison"])
                + "\n"
            )
            err.flush()
        elif report is not None and not self.cfg.quiet:
            err.write(evaluation_message(report) + "\n")
            err.flush()
        return Ending(notes=notes, summary=extra)


def evaluation_message(report: dict[str, Any]) -> str:
    """The evaluation as a run prints it when it ends (one process or a Ray cluster).

    >>> print(evaluation_message({"reference_column": "label", "field": "sentiment",
    ...     "n": 0, "correct": 0, "accuracy": None, "missing_predictions": 0}))
    batchrun: evaluation (label vs sentiment):
    accuracy - (0/0 correct)
    """
    what = str(report["reference_column"])
    if report.get("field"):
        what += f" vs {report['field']}"
    return f"batchrun: evaluation ({what}):\n{format_eval(report)}"


def _listing(names: set[str], most: int = 20) -> str:
    shown = sorted(names)
    text = ", ".join(shown[:most])
    return text + (f", ... ({len(shown)} in all)" if len(shown) > most else "")
