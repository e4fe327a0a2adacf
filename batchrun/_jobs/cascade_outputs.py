"""A cascade's own files, made from its stages' (`batchrun._jobs.cascade`).

After the stages ran (or stopped), the run directory gets:

* ``results.jsonl`` / ``errors.jsonl``: each row's deciding line, copied from the
  stage that decided it (the stages' own files stay the record of what was paid);
* ``results.parquet``: one row per input row, the columns of a plain run holding the
  deciding answer (`batchrun._output.parquet`, joined through each row's deciding
  request), its ``confidence``, and ``decided_by`` (the model whose answer it is;
  null while the row is pending);
* ``stages.parquet``: one row per row and stage it reached (``custom_id``, ``row``,
  ``stage``, ``model``, ``status``, the label, ``confidence``, ``decided``, tokens);
* ``summary.json``: the counts, usage and cost of every stage together, the
  evaluation of the deciding answers, and ``cascade`` (`cascade_block`);
* ``run.json``: the settings, so `batchrun.open` and ``batchrun status`` read it.

    summary = finish_cascade(settings, stages, results, verdicts)
    summary["cascade"]["stages"][0]["decided"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from batchrun._engine.stops import RunResult
from batchrun._input.sources import Source
from batchrun._jobs.cascade import (
    ROWS,
    Stage,
    Verdict,
    as_escalated,
    stage_settings,
)
from batchrun._jobs.evaluate import Evaluator
from batchrun._output.journal import ERRORS, RESULTS, RUN_INFO, SUMMARY
from batchrun._output.lines import encode
from batchrun._output.parquet import ResultIndex, write_results_parquet
from batchrun._output.summary import atomic_file, write_json_atomic
from batchrun._settings import Settings

PARQUET = "results.parquet"
STAGES_PARQUET = "stages.parquet"
USAGE_KEYS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)

__all__ = [
    "cascade_block",
    "finish_cascade",
    "merged_cost",
    "threshold_curve",
]


def finish_cascade(
    settings: Settings,
    stages: Sequence[Stage],
    results: Sequence[tuple[Stage, RunResult]],
    verdicts: Mapping[int, Sequence[Verdict]],
    *,
    target_accuracy: float | None = None,
) -> dict[str, Any]:
    """Write the cascade's files (module docstring); returns its summary."""
    assert settings.out_dir is not None
    run_dir = str(settings.out_dir)
    decided: dict[str, Stage] = {}
    by_number = {stage.number: stage for stage in stages}
    for number in sorted(verdicts):
        for verdict in verdicts[number]:
            if verdict.decided:
                decided.setdefault(verdict.custom_id, by_number[number])
    _write_deciding_lines(run_dir, stages, decided)
    top = replace(
        settings,
        cascade=None,
        model=stages[0].model,
        confidence=settings.judged_by(),
        out_dir=run_dir,
        limit=None,
        sample=None,
    )
    evaluators = {s.number: Evaluator.of(settings.eval) for s in stages}
    reference = settings.eval.reference_column if settings.eval is not None else None
    decided_by: dict[str, str] = {}
    right: dict[str, bool | None] = {}
    references: dict[str, Any] = {}

    def observe(obj: Any, values: Mapping[str, Any], parsed: Any, record: Any) -> None:
        stage = decided.get(str(values.get("custom_id")))
        if stage is None or values.get("status") not in ("succeeded", "failed"):
            return
        decided_by[str(values["custom_id"])] = stage.model
        evaluator = evaluators[stage.number]
        if evaluator is not None and isinstance(obj, dict):
            ok = values["status"] == "succeeded"
            predicted = evaluator.predicted(values.get("content"), parsed) if ok else None
            evaluator.add(obj.get(reference), predicted)
            right[str(values["custom_id"])] = evaluator.is_correct(obj.get(reference), predicted)
            references[str(values["custom_id"])] = obj.get(reference)

    path = os.path.join(run_dir, PARQUET)
    report = write_results_parquet(
        top, path, source=_deciding_source(settings, stages, decided), observe=observe
    )
    _add_decided_by(path, decided_by)
    rows = _write_stages_parquet(run_dir, stages, verdicts, decided)
    if target_accuracy is not None and report.eval is not None:
        sample = report.calibration.get(None)  # a cascade has no variants
        if sample is not None and isinstance(report.eval.get("calibration"), dict):
            report.eval["calibration"]["threshold"] = sample.threshold(target_accuracy).as_dict()
    summary = _summary(settings, top, stages, results, verdicts, report, rows, evaluators)
    block = summary["cascade"]
    if settings.eval is not None and settings.cascade is not None and len(stages) > 1:
        first = _first_answers(settings, stages[0], verdicts.get(1, ()), references)
        block["curve"] = threshold_curve(first, right, block)
    write_json_atomic(os.path.join(run_dir, SUMMARY), summary)
    _write_run_info(top, settings, report.rows)
    return summary


# -- the deciding answers ----------------------------------------------------------------
def _write_deciding_lines(run_dir: str, stages: Sequence[Stage], decided: dict[str, Stage]) -> None:
    """results.jsonl / errors.jsonl: each decided row's line from its deciding stage."""
    answers: list[bytes] = []
    failures: list[bytes] = []
    for stage in stages:
        ids = [cid for cid, s in decided.items() if s.number == stage.number]
        if not ids:
            continue
        with ResultIndex.build(stage.path) as index:
            for custom_id in ids:
                line = index.lookup(custom_id)
                if line is not None:
                    (answers if line.ok else failures).append(encode(line))
    for name, lines in ((RESULTS, answers), (ERRORS, failures)):
        with atomic_file(os.path.join(run_dir, name), ".jsonl") as tmp, open(tmp, "wb") as f:
            f.write(b"".join(lines))


def _deciding_source(
    settings: Settings, stages: Sequence[Stage], decided: dict[str, Stage]
) -> Source:
    """The input, each row mapped to the request its deciding stage sent (so the join
    finds that stage's line by the body's hash); an undecided row to stage 1's."""
    from batchrun._input.select import source_for

    first = source_for(stage_settings(settings, stages[0]))
    later: dict[int, Source] = {}
    for stage in stages[1:]:
        rows = os.path.join(stage.path, ROWS)
        if os.path.exists(rows):
            later[stage.number] = source_for(stage_settings(settings, stage, rows=rows))

    def mapper(obj: Any, row: int, where: str, *, name: str | None = None) -> Any:
        made = first.mapper(obj, row, where, name=name)
        assert not isinstance(made, list)  # a cascade has no variants
        stage = decided.get(made.custom_id)
        if stage is None or stage.number not in later or not isinstance(obj, dict):
            return made
        seen = as_escalated(settings, obj, made.custom_id)
        theirs = later[stage.number].mapper(seen, row, where)
        assert not isinstance(theirs, list)
        return replace(theirs, custom_id=made.custom_id, row=row)

    return Source(
        settings.input_path,
        mapper=mapper,
        dataset=True,
        skip_invalid=settings.skip_invalid,
        column_types=settings.column_types,
    )


def _add_decided_by(path: str, decided_by: Mapping[str, str]) -> None:
    """results.parquet gets ``decided_by`` after ``model`` (null: not decided yet)."""
    if not os.path.exists(path):
        return
    table = pq.read_table(path)
    column = pa.array(
        [decided_by.get(c) for c in table.column("custom_id").to_pylist()], pa.string()
    )
    at = table.schema.get_field_index("model") + 1
    table = table.add_column(at, "decided_by", column)
    with atomic_file(path, ".parquet") as tmp:
        pq.write_table(table, tmp)


def _write_stages_parquet(
    run_dir: str,
    stages: Sequence[Stage],
    verdicts: Mapping[int, Sequence[Verdict]],
    decided: Mapping[str, Stage],
) -> int:
    """stages.parquet, long form (module docstring); returns its rows."""
    keep = ("status", "confidence", "content", "prompt_tokens", "completion_tokens")
    parts: list[pa.Table] = []
    original: dict[str, int] = {}
    for stage in stages:
        path = os.path.join(stage.path, PARQUET)
        if not os.path.exists(path):
            continue
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=["custom_id", "row", *[k for k in keep if k in names]])
        seen = {v.custom_id: v for v in verdicts.get(stage.number, ())}
        out = []
        for row in table.to_pylist():
            if row.get("status") in ("pending", "invalid"):
                continue
            cid = str(row["custom_id"])
            verdict = seen.get(cid)
            if stage.number == 1:
                original[cid] = int(row["row"])
            deciding = decided.get(cid)
            out.append(
                {
                    "custom_id": cid,
                    "row": original.get(cid, row["row"]),
                    "stage": stage.number,
                    "model": stage.model,
                    "status": row.get("status"),
                    "content": row.get("content"),
                    "confidence": row.get("confidence"),
                    "decided": deciding is not None and deciding.number == stage.number,
                    "escalated": verdict is not None and not verdict.decided,
                    "reason": verdict.reason if verdict is not None else None,
                    "prompt_tokens": row.get("prompt_tokens"),
                    "completion_tokens": row.get("completion_tokens"),
                }
            )
        parts.append(pa.Table.from_pylist(out, schema=_STAGES_SCHEMA))
    table = pa.concat_tables(parts) if parts else _STAGES_SCHEMA.empty_table()
    with atomic_file(os.path.join(run_dir, STAGES_PARQUET), ".parquet") as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


_STAGES_SCHEMA = pa.schema(
    [
        ("custom_id", pa.string()),
        ("row", pa.int64()),
        ("stage", pa.int32()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("content", pa.string()),
        ("confidence", pa.float64()),
        ("decided", pa.bool_()),
        ("escalated", pa.bool_()),
        ("reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)


# -- the summary -------------------------------------------------------------------------
def _summary(
    settings: Settings,
    top: Settings,
    stages: Sequence[Stage],
    results: Sequence[tuple[Stage, RunResult]],
    verdicts: Mapping[int, Sequence[Verdict]],
    report: Any,
    stage_rows: int,
    evaluators: Mapping[int, Evaluator | None],
) -> dict[str, Any]:
    stopped = next((r for _, r in results if r.exit_code not in (0, 4)), None)
    statuses = dict(report.statuses)
    if stopped is not None:
        status = stopped.status
    elif statuses.get("pending"):
        status = "partial"
    else:
        status = "complete"
    summaries = {stage.number: result.summary for stage, result in results}
    usage = {key: 0 for key in USAGE_KEYS}
    by_model: dict[str, Any] = {}
    for stage in stages:
        one = summaries.get(stage.number) or _stage_summary(stage)
        for key in USAGE_KEYS:
            usage[key] += int((one.get("usage") or {}).get(key) or 0)
        by_model.update(one.get("by_model") or {})
    block = cascade_block(settings, stages, summaries, verdicts, evaluators, report.eval)
    stage_summaries = [summaries.get(s.number) or _stage_summary(s) for s in stages]
    summary: dict[str, Any] = {
        "status": status,
        "stop_reason": stopped.summary.get("stop_reason") if stopped is not None else None,
        "input": settings.input_path,
        "requests": {
            "total": report.rows,
            "succeeded": statuses.get("succeeded", 0),
            "failed": statuses.get("failed", 0),
            "pending": statuses.get("pending", 0),
            "invalid": statuses.get("invalid", 0),
        },
        "usage": usage,
        "by_model": by_model,
        "cost_usd": merged_cost([_cost_of(one, "cost_usd") for one in stage_summaries]),
        "batch_api_cost_usd": merged_cost(
            [_cost_of(one, "batch_api_cost_usd") for one in stage_summaries]
        ),
        "parquet": {
            "path": os.path.join(str(top.out_dir), PARQUET),
            "rows": report.rows,
            "statuses": statuses,
            "stages_rows": stage_rows,
        },
        "eval": report.eval,
        "cascade": block,
    }
    endpoints = merged_endpoints([one.get("endpoints") for one in stage_summaries])
    if endpoints:
        summary["endpoints"] = endpoints
    if report.confidence is not None:
        summary["confidence"] = {**report.confidence, "warning": report.confidence_note}
    return summary


def merged_endpoints(blocks: Sequence[Any]) -> dict[str, Any]:
    """A pool's ``endpoints`` over the stages: each endpoint's counts, tokens and cost
    added up; its latency percentiles are the stages' own (kept per stage, in
    ``stages``: percentiles do not add); its breaker as the last stage left it.

        >>> merged_endpoints([{"a": {"requests": 2, "cost_usd": 0.5, "latency_p50_ms": 9,
        ...     "usage": {"total_tokens": 10}, "failures": {"503": 1}, "breaker": "open"}},
        ...     {"a": {"requests": 1, "cost_usd": 0.25, "latency_p50_ms": 5,
        ...     "usage": {"total_tokens": 4}, "failures": {}, "breaker": "closed"}}])["a"]
        ... # doctest: +NORMALIZE_WHITESPACE
        {'requests': 3, 'cost_usd': 0.75, 'usage': {'total_tokens': 14},
         'failures': {'503': 1}, 'breaker': 'closed',
         'stages': [{'latency_p50_ms': 9}, {'latency_p50_ms': 5}]}
    """

    def add(into: dict[str, Any], other: Mapping[str, Any]) -> None:
        for key, value in other.items():
            if isinstance(value, bool) or not isinstance(value, int | float | Mapping):
                into[key] = value
            elif isinstance(value, Mapping):
                add(into.setdefault(key, {}), value)
            elif isinstance(into.get(key), int | float):
                into[key] = into[key] + value
            else:
                into[key] = value

    out: dict[str, Any] = {}
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        for name, one in block.items():
            if not isinstance(one, Mapping):
                continue
            latency = {k: v for k, v in one.items() if k.startswith("latency_")}
            merged = out.setdefault(name, {})
            add(merged, {k: v for k, v in one.items() if not k.startswith("latency_")})
            merged.setdefault("stages", []).append(latency)
    for merged in out.values():  # "stages" last, after the sums
        merged["stages"] = merged.pop("stages")
    return out


def _cost_of(summary: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    found = summary.get(key)
    return found if isinstance(found, Mapping) else None


def merged_cost(blocks: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """One cost block (``cost_usd`` or ``batch_api_cost_usd`` of a summary) of the
    stages' blocks: the money added up (None when a stage's is unknown), the models of
    every stage, complete when every stage's is.

        >>> merged_cost([{"total": 1.0, "complete": True, "by_model": {"a": 1.0}},
        ...              {"total": 2.5, "complete": True, "by_model": {"b": 2.5}}])
        {'total': 3.5, 'complete': True, 'by_model': {'a': 1.0, 'b': 2.5}}
    """
    found = [b for b in blocks if b is not None]
    if not found:
        return None
    out: dict[str, Any] = {}
    for block in found:
        for key, value in block.items():
            if key == "by_model":
                out.setdefault(key, {}).update(value or {})
            elif key == "complete":
                out[key] = out.get(key, True) and bool(value)
            elif isinstance(value, list):
                out[key] = sorted({*out.get(key, []), *value})
            elif key in out and out[key] is None:
                continue
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = (out.get(key) or 0.0) + value
            else:
                out[key] = None if key in out or value is None else value
    return out


def _stage_summary(stage: Stage) -> dict[str, Any]:
    """A stage's summary.json from an earlier process (this one did not run it)."""
    try:
        with open(os.path.join(stage.path, SUMMARY), "rb") as f:
            found = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return found if isinstance(found, dict) else {}


def cascade_block(
    settings: Settings,
    stages: Sequence[Stage],
    summaries: Mapping[int, Mapping[str, Any]],
    verdicts: Mapping[int, Sequence[Verdict]],
    evaluators: Mapping[int, Evaluator | None],
    overall: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """summary.json's ``cascade``: per stage the rows it saw, decided and escalated
    (and why), its cost, its accuracy on the rows it decided (with [eval]); the share
    of rows escalated past the first stage; the cascade's cost next to what the last
    model alone would have cost, priced from the rows it answered (their measured
    tokens at its prices, scaled to every row the cascade saw)."""
    cascade = settings.cascade
    assert cascade is not None
    judged = settings.judged_by()
    out_stages = []
    total = 0.0
    complete = True
    for stage in stages:
        one = summaries.get(stage.number) or _stage_summary(stage)
        found = list(verdicts.get(stage.number, ()))
        reasons: dict[str, int] = {}
        for v in found:
            if v.reason is not None:
                reasons[v.reason] = reasons.get(v.reason, 0) + 1
        cost = (one.get("cost_usd") or {}).get("total")
        if isinstance(cost, int | float):
            total += float(cost)
        elif found:
            complete = False
        seen = int((one.get("requests") or {}).get("succeeded") or 0) + int(
            (one.get("requests") or {}).get("failed") or 0
        )
        entry: dict[str, Any] = {
            "stage": stage.number,
            "model": stage.model,
            "escalate_below": stage.threshold,
            "rows": seen,
            "decided": sum(1 for v in found if v.decided),
            "escalated": sum(1 for v in found if not v.decided),
            "reasons": reasons,
            "cost_usd": cost,
            "usage": one.get("usage"),
        }
        evaluator = evaluators.get(stage.number)
        if evaluator is not None:
            entry["eval_decided"] = _accuracy(evaluator.report())
            seen_eval = one.get("eval")
            if isinstance(seen_eval, dict):
                entry["eval_seen"] = _accuracy(seen_eval)
        out_stages.append(entry)
    first = out_stages[0]["rows"] if out_stages else 0
    # the rows the cheap stage let through: with "disagree" the cheap stage is a pair
    cheap = 1 if cascade.escalate_when == "disagree" and len(out_stages) > 2 else 0
    escalated = out_stages[cheap]["escalated"] if out_stages else 0
    last = out_stages[-1] if out_stages else None
    alone = None
    if last is not None and last["rows"] and isinstance(last["cost_usd"], int | float) and first:
        alone = last["cost_usd"] / last["rows"] * first
    block: dict[str, Any] = {
        "models": list(cascade.models),
        "escalate_below": list(cascade.escalate_below),
        "escalate_when": cascade.escalate_when,
        "confidence": judged.method if judged is not None else None,
        "rows": first,
        "share_escalated": escalated / first if first else None,
        "escalated_past_stage": cheap + 1,
        "stages": out_stages,
        "cost_usd": total if complete else None,
        "cost_complete": complete,
        "last_stage_alone_usd": alone,
        "last_stage_alone_basis": (
            f"{last['model']}'s cost on the {last['rows']} rows it answered, per row, "
            f"times the {first} rows of the cascade"
            if alone is not None and last is not None
            else None
        ),
        "saving": 1 - total / alone if alone and complete else None,
    }
    if overall is not None:
        block["eval"] = _accuracy(overall)
    return block


def _first_answers(
    settings: Settings,
    stage: Stage,
    verdicts: Sequence[Verdict],
    references: Mapping[str, Any],
) -> dict[str, tuple[float | None, bool | None]]:
    """Stage 1's answer to each row it finished, for the curve: (its confidence, or None
    when the answer was unusable; whether it was right)."""
    from batchrun._output.answers import parse_content

    evaluator = Evaluator.of(settings.eval)
    path = os.path.join(stage.path, PARQUET)
    if evaluator is None or not os.path.exists(path):
        return {}
    unusable = {v.custom_id for v in verdicts if v.reason == "unusable"}
    columns = ["custom_id", "status", "content", "confidence"]
    out: dict[str, tuple[float | None, bool | None]] = {}
    for row in pq.read_table(path, columns=columns).to_pylist():
        cid = str(row["custom_id"])
        if row["status"] != "succeeded" or cid in unusable:
            out[cid] = (None, None)
            continue
        parsed, _ = parse_content(row["content"], settings.schema)
        predicted = evaluator.predicted(row["content"], parsed)
        out[cid] = (row["confidence"], evaluator.is_correct(references.get(cid), predicted))
    return out


def threshold_curve(
    first: Mapping[str, tuple[float | None, bool | None]],
    final: Mapping[str, bool | None],
    block: Mapping[str, Any],
    points: int = 20,
) -> list[dict[str, Any]]:
    """The cost and accuracy the cascade would have had with a lower first threshold,
    for each threshold from 0 up to the one it ran with (exactly: a row escalated at a
    lower threshold was escalated at this one too, so its deciding answer is known). A
    row decided by stage 1 counts its stage-1 answer, an escalated one the answer that
    decided it; the later stages' cost is shared out evenly over the rows they saw.
    Pure.

        >>> first = {"a": (0.9, True), "b": (0.5, False), "c": (None, None)}
        >>> final = {"a": True, "b": True, "c": True}
        >>> block = {"escalate_below": [0.8], "stages": [
        ...     {"cost_usd": 1.0, "rows": 3}, {"cost_usd": 2.0, "rows": 2}]}
        >>> [(p["escalate_below"], round(p["accuracy"], 3), p["cost_usd"])
        ...  for p in threshold_curve(first, final, block, points=2)]
        [(0.0, 0.667, 2.0), (0.4, 0.667, 2.0), (0.8, 1.0, 3.0)]
    """
    stages = block.get("stages") or []
    below = (block.get("escalate_below") or [None])[0]
    if len(stages) < 2 or below is None or block.get("escalate_when"):
        return []
    first_cost = stages[0].get("cost_usd")
    later_cost = [s.get("cost_usd") for s in stages[1:]]
    if not isinstance(first_cost, int | float) or not all(
        isinstance(c, int | float) for c in later_cost
    ):
        return []
    seen_later = stages[1].get("rows") or 0
    per_row = sum(later_cost) / seen_later if seen_later else 0.0
    grid = sorted({round(below * k / points, 6) for k in range(points + 1)} | {below})
    out = []
    for threshold in grid:
        escalated = right = scored = 0
        for cid, (confidence, was_right) in first.items():
            moves = confidence is None or confidence < threshold
            escalated += moves
            verdict = final.get(cid) if moves else was_right
            if verdict is not None:
                scored += 1
                right += verdict
        out.append(
            {
                "escalate_below": threshold,
                "escalated": escalated,
                "share_escalated": escalated / len(first) if first else None,
                "accuracy": right / scored if scored else None,
                "cost_usd": first_cost + per_row * escalated,
            }
        )
    return out


def _accuracy(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n": report.get("n"),
        "correct": report.get("correct"),
        "accuracy": report.get("accuracy"),
        "accuracy_interval": report.get("accuracy_interval"),
    }


def _write_run_info(top: Settings, settings: Settings, rows: int) -> None:
    """run.json: the cascade's settings, for `batchrun.open` and ``batchrun status``."""
    from batchrun._engine.runinfo import write_run_info

    fingerprint = Source(settings.input_path).fingerprint()
    write_run_info(
        os.path.join(str(top.out_dir), RUN_INFO),
        settings,
        fingerprint=fingerprint,
        rows=rows,
        outside_input={},
        changed_rows=0,
    )
