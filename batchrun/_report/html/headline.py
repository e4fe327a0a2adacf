"""What the report says first, and what a section says when it has nothing to draw.

The page leads with one sentence that answers the run: the verdict of a comparison,
the accuracy of an evaluation, or, for a run that stopped, why and how far it got
(never a ``0.0% accuracy`` for rows that were never answered). A section with no
figures says why there are none, from what the run did: the latency section of a
Batch API run or of a run answered from the cache is not "No answers yet".

Pure: everything comes in as the report's plain data (`batchrun._report.text.run_report`
and summary.json's blocks).

    >>> headline({"status": "complete", "running_pid": None, "requests": {"total": 2,
    ...     "succeeded": 2, "failed": 0, "pending": 0}}, None, None)["title"]
    'All 2 rows answered'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from batchrun._jobs.evaluate import not_scored

STATUS_WORDS = {
    "complete": "Complete",
    "running": "Running",
    "stopped": "Stopped: the process ended without finishing (killed?)",
    "interrupted": "Interrupted",
    "endpoint_down": "Stopped: the endpoint failed every recent request",
    "budget_exceeded": "Stopped at the --max-cost cap",
    "disk_error": "Stopped: the run directory could not be written",
    "bad_answers": "Stopped: too many unusable answers",
    "incomplete": "Incomplete",
    "partial": "A pilot",
    "deadline": "Deadline reached",
}
"""How the headline names each summary.json ``status``."""


def _n(value: Any) -> str:
    return f"{int(value or 0):,}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(low: Any, high: Any) -> str:
    if low is None or high is None:
        return ""
    return f" [{low:.1%}, {high:.1%}]"


def _eval_sentence(evaluation: Mapping[str, Any]) -> str:
    """``accuracy 37.0% [31.3%, 42.3%] on 300 rows; macro-F1 0.355, kappa 0.044``."""
    ci = evaluation.get("accuracy_interval") or {}
    text = (
        f"accuracy {_pct(evaluation.get('accuracy'))}"
        f"{_interval(ci.get('low'), ci.get('high'))} on {_n(evaluation.get('n'))} rows"
    )
    extra = []
    if evaluation.get("macro_f1") is not None:
        extra.append(f"macro-F1 {evaluation['macro_f1']:.3f}")
    if evaluation.get("kappa") is not None:
        extra.append(f"kappa {evaluation['kappa']:.3f}")
    if evaluation.get("mae") is not None:
        extra.append(f"MAE {evaluation['mae']:.4g}")
    return text + (f"; {', '.join(extra)}" if extra else "")


def headline(
    report: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    verdict: Mapping[str, Any] | None,
    *,
    variants: Sequence[Mapping[str, Any]] | None = None,
    stop_note: str | None = None,
) -> dict[str, Any]:
    """The page's first sentence: ``{"tone", "title", "detail"}``.

    ``tone`` is ``ok``, ``warn``, ``bad`` or ``info`` (running). ``report``: the run
    report's plain data (status, running_pid, requests, error_codes, at_provider);
    ``evaluation``: summary.json's ``eval`` (the best or most accurate variant's for a
    comparison); ``verdict``: the comparison's (`comparison_of`), None without
    variants, and ``variants`` its rows; ``stop_note``: why the run stopped, in its
    own words.

    A run that stopped leads with why, and how far it got; one whose rows with a
    reference all went unanswered is "not scored", never ``0.0%``. A finished
    comparison leads with its verdict, a finished evaluation with its accuracy and
    interval.

        >>> report = {"status": "endpoint_down", "running_pid": None, "error_codes":
        ...     {"invalid_api_key": 32}, "requests": {"total": 300, "succeeded": 0,
        ...     "failed": 32, "pending": 268}}
        >>> line = headline(report, {"n": 32, "missing_predictions": 32,
        ...     "accuracy": 0.0}, None)
        >>> line["tone"], line["title"]
        ('bad', 'No answers. Stopped: the endpoint failed every recent request')
        >>> line["detail"]
        '32 rows failed (invalid_api_key), 268 not sent; nothing to score'
    """
    req = report.get("requests") or {}
    total, succeeded = int(req.get("total") or 0), int(req.get("succeeded") or 0)
    failed, pending = int(req.get("failed") or 0), int(req.get("pending") or 0)
    status = str(report.get("status") or "unknown")
    if report.get("running_pid") is not None:
        title = f"Running: {_n(succeeded + failed)} of {_n(total)} rows finished"
        inside = int(report.get("at_provider") or 0)
        if inside:
            title += f", {_n(inside)} more answered inside running batches"
        return {"tone": "info", "title": title, "detail": None}
    words = STATUS_WORDS.get(status, status)
    codes = report.get("error_codes") or {}
    failures = f"{_n(failed)} rows failed"
    if len(codes) == 1:
        failures += f" ({next(iter(codes))})"
    elif codes:
        failures += " (" + ", ".join(f"{c} {_n(n)}" for c, n in list(codes.items())[:3]) + ")"
    scored = evaluation is not None and not not_scored(evaluation)
    if status not in ("complete", "partial"):
        parts = [failures] if failed else []
        if pending:
            parts.append(f"{_n(pending)} not sent" if not succeeded else f"{_n(pending)} pending")
        if succeeded == 0:
            title = f"No answers. {words}"
            detail = ", ".join(parts) + ("; nothing to score" if evaluation is not None else "")
            tone = "bad"
        else:
            title = f"{words}: {_n(succeeded)} of {_n(total)} rows answered"
            detail = ", ".join(parts)
            if evaluation is not None and scored:
                detail += f"; so far {_eval_sentence(evaluation)} (unfinished rows not scored)"
            tone = "warn"
        if stop_note:
            note = stop_note[:1].upper() + stop_note[1:]
            detail = f"{detail}. {note}" if detail else note
        return {"tone": tone, "title": title, "detail": detail or None}
    pilot = "Pilot: " if status == "partial" else ""
    done = f"{_n(succeeded)} of {_n(total)} rows answered" + (f", {failures}" if failed else "")
    if verdict is not None and verdict.get("leader") and scored:
        line = _comparison_line(verdict, variants or [])
        return {**line, "title": pilot + line["title"], "detail": f"{line['detail']}; {done}"}
    if evaluation is not None:
        if not scored:
            title = "Not scored: no row with a reference got an answer"
            return {"tone": "bad", "title": pilot + title, "detail": done}
        title = _eval_sentence(evaluation)
        return {"tone": "ok", "title": pilot + title[:1].upper() + title[1:], "detail": done}
    if failed:
        return {"tone": "warn", "title": pilot + done, "detail": None}
    title = f"All {_n(total)} rows answered" if succeeded == total else done
    return {"tone": "ok", "title": pilot + title, "detail": None}


def _comparison_line(
    verdict: Mapping[str, Any], variants: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The verdict of a comparison in a few words (the section below gives it whole,
    in the text report's words), with the leader's accuracy and interval."""
    rows = {str(v.get("name")): v for v in variants}
    best, leader = verdict.get("best"), str(verdict.get("leader"))
    row = rows.get(leader) or {}
    low, high = row.get("accuracy_low"), row.get("accuracy_high")
    figure = f"{_pct(row.get('accuracy'))}{_interval(low, high)}"
    many = f"{len(rows)} variants" if rows else "the variants"
    if best:
        return {
            "tone": "ok",
            "title": f"Best of {many}: {best}",
            "detail": f"accuracy {figure}, clearly above every other variant",
        }
    others = [n for n in verdict.get("contenders") or () if n != leader]
    detail = f"most accurate: {leader} at {figure}"
    if others:
        many_others = "1 other" if len(others) == 1 else f"{len(others)} others"
        detail += f", not clearly above {many_others}"
    cheapest = verdict.get("cheapest_contender")
    if cheapest:
        detail += f"; the cheapest of them to answer: {cheapest}"
    return {"tone": "warn", "title": f"No clear winner among {many}", "detail": detail}


def latency_note(report: Mapping[str, Any], timed: int, *, running: bool) -> str | None:
    """What the latency section says of answers without a time on the wire (None:
    every answer has one). ``timed``: the answers with a latency.

    Answers through the Batch API have none (a batch answers its rows together), nor
    do answers reused from the cache or from an identical request (never sent).

        >>> latency_note({"requests": {"succeeded": 300}, "by_mode": {"batch": 300}}, 0,
        ...     running=False)[:58]
        'None of the 300 answers has a time on the wire: 300 came t'
    """
    succeeded = int((report.get("requests") or {}).get("succeeded") or 0)
    if succeeded == 0:
        if running:
            return "No answers yet."
        return "No answers: no request was answered, so there is no time to show."
    untimed = succeeded - timed
    if untimed <= 0:
        return None
    by_mode = report.get("by_mode") or {}
    reused = report.get("reused") or {}
    batch = int(by_mode.get("batch") or 0)
    cache, same = int(reused.get("cache") or 0), int(reused.get("run") or 0)
    why = []
    if batch:
        why.append(
            f"{_n(batch)} came through the Batch API, which answers a batch's rows "
            "together (see Batches for how long each batch took)"
        )
    if cache or same:
        why.append(
            f"{_n(cache + same)} were reused ({_n(cache)} from the cache, {_n(same)} from "
            "identical requests of this run) and never sent"
        )
    if not why:
        why.append("their lines were written before lines recorded their time")
    if timed == 0:
        head = f"None of the {_n(succeeded)} answers has a time on the wire"
    else:
        head = f"{_n(untimed)} of the {_n(succeeded)} answers have no time on the wire"
    return f"{head}: {'; '.join(why)}."


__all__ = ["STATUS_WORDS", "headline", "latency_note"]
