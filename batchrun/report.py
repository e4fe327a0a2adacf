"""`batchrun status`: where a run stands, from its files (read-only).

    >>> status_report("runs/a")["complete"]    # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from batchrun.errors import RunDirError
from batchrun.journal import RUN_INFO, SUMMARY, read_journal


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
        return data if isinstance(data, dict) else None
    except (OSError, orjson.JSONDecodeError):
        return None


def status_report(run_dir: str) -> dict[str, Any]:
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: no such run directory")
    info = _load(os.path.join(run_dir, RUN_INFO))
    if info is None:
        raise RunDirError(f"{run_dir}: no run.json (is this a batchrun run directory?)")
    summary = _load(os.path.join(run_dir, SUMMARY)) or {}
    try:
        journal = read_journal(run_dir, repair=False)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    total = int(info.get("input_rows", 0))
    done = len(journal.done)
    failed = len(journal.failed)
    pending = max(0, total - done - failed)
    state = journal.tally.to_state()
    return {
        "run_dir": run_dir,
        "input": info.get("input_path"),
        "complete": pending == 0,
        "status": summary.get("status", "unknown"),
        "requests": {"total": total, "succeeded": done, "failed": failed, "pending": pending},
        "usage": {**state["usage"], "missing": state["missing_usage"]},
        "by_model": state["by_model"],
        "retries": state["retries"],
        "rate_limited": state["rate_limited"],
        "error_codes": state["error_codes"],
        "cost_usd": summary.get("cost_usd"),
        "elapsed_s": summary.get("elapsed_s"),
    }


def format_status(report: dict[str, Any]) -> str:
    req = report["requests"]
    usage = report["usage"]
    lines = [
        f"run:       {report['run_dir']}  ({'complete' if report['complete'] else 'incomplete'})",
        f"input:     {report['input']}",
        f"requests:  {req['succeeded']} done, {req['failed']} failed, "
        f"{req['pending']} pending of {req['total']}",
        f"tokens:    {usage['prompt_tokens']} prompt ({usage['cached_tokens']} cached), "
        f"{usage['completion_tokens']} completion ({usage['reasoning_tokens']} reasoning)",
        f"retries:   {report['retries']} ({report['rate_limited']} rate-limited)",
    ]
    if report["error_codes"]:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(report["error_codes"].items()))
        lines.append(f"errors:    {codes}")
    return "\n".join(lines)
