"""The last known state of each batch, kept in the run directory for `batchrun status`.

Batches run at the provider whether or not a batchrun process is watching (after a
Ctrl-C they go on). `batchrun status` must say where they stand without the key and
without a call, so the run writes what it last saw to ``batch/state.json``
(`batchrun.batch.bookkeeping`; atomically, at every poll that changed something),
and the report reads it back together with the step journal: submitted, validating,
in progress with completed and failed counts, finalizing, done, and how long ago
each was submitted. `iter_open_batches` lists the open shards from the journal alone.

    >>> line = shard_line({"shard": "s000001", "status": "in_progress", "completed": 5,
    ...     "failed": 1, "total": 10, "created_at": 100.0}, now=160.0)
    >>> line
    's000001  in_progress  5 done, 1 failed of 10  (submitted 1:00 ago)'
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from batchrun.batch.protocol import BatchView, shard_tag
from batchrun.batch.steps import Ledger, read_ledger
from batchrun.batch.workdir import state_path, steps_path
from batchrun.output.summary import write_json_atomic


def shard_entry(
    shard: int, phase: str, view: BatchView | None, rows: int, created_at: float | None
) -> dict[str, Any]:
    """One shard as state.json keeps it."""
    entry: dict[str, Any] = {
        "shard": shard_tag(shard),
        "phase": phase,
        "rows": rows,
        "batch_id": None,
        "status": phase,
        "total": rows,
        "completed": 0,
        "failed": 0,
        "created_at": created_at,
    }
    if view is not None:
        entry.update(
            batch_id=view.id,
            status=view.status,
            total=view.total or rows,
            completed=view.completed,
            failed=view.failed,
        )
        if view.created_at is not None:
            entry["created_at"] = view.created_at
    return entry


def write_state(run_dir: str, *, run_id: str | None, updated_at: float, shards: list[Any]) -> None:
    write_json_atomic(
        state_path(run_dir),
        {"run_id": run_id, "updated_at": updated_at, "pid": os.getpid(), "shards": shards},
    )


def read_state(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(state_path(run_dir), "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def batch_status(run_dir: str) -> dict[str, Any] | None:
    """What `batchrun status` shows of a batch run (None: it never used the Batch API).

    Shards still open come from the journal, with the last state seen of each; done
    shards are counted, not listed one by one.
    """
    if not os.path.exists(steps_path(run_dir)):
        return None
    ledger: Ledger = read_ledger(steps_path(run_dir))
    state = read_state(run_dir) or {}
    seen = _seen(state)
    open_shards = []
    done = 0
    answered = failed = 0
    for number, record in sorted(ledger.shards.items()):
        if record.abandoned:
            continue
        if record.done:
            done += 1
            continue
        entry = dict(seen.get(shard_tag(number)) or {})
        if record.batch_id is not None and not record.downloaded:
            # rows the provider says it finished, not in results.jsonl until the batch
            # ends and its files are taken in (then the shard is done, not counted here)
            answered += _count(entry.get("completed"))
            failed += _count(entry.get("failed"))
        entry.setdefault("shard", shard_tag(number))
        entry.setdefault("rows", record.rows)
        entry.setdefault("total", record.rows)
        entry.setdefault("completed", 0)
        entry.setdefault("failed", 0)
        entry.setdefault("batch_id", record.batch_id)
        entry["phase"] = record.phase
        if entry.get("status") in (None, "planned", "uploading", "uploaded", "creating"):
            entry["status"] = record.phase
        if record.cancel_requested and entry["status"] not in ("cancelled", "cancelling"):
            entry["status"] = f"{entry['status']} (cancel requested)"
        entry.setdefault("created_at", record.created_at)
        open_shards.append(entry)
    return {
        "run_id": ledger.run_id,
        "updated_at": state.get("updated_at"),
        "shards_done": done,
        "open": open_shards,
        "attempts_used": sum(ledger.attempts.values()),
        "at_provider": {"answered": answered, "failed": failed},
    }


def _seen(state: Mapping[str, Any]) -> dict[Any, Mapping[str, Any]]:
    return {e.get("shard"): e for e in state.get("shards") or () if isinstance(e, Mapping)}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


HISTORY_ROWS = 200
"""Batches listed one by one in `batch_history` (the latest); the rest are counted."""


def batch_history(run_dir: str) -> dict[str, Any] | None:
    """Every batch a run made, for the HTML report (None: it never used the Batch API).

    One entry per shard, from the step journal and the last state seen of the open
    ones: its batch id, model, rows, attempt (above 1: a batch of rows an earlier
    batch left unanswered), its state (the provider's last status; a batch that ended
    has its final one: ``completed``, ``expired``, ``failed``, ``cancelled``, or
    ``token_limit`` when the provider's queue refused it), rows answered and failed,
    created and finished (Unix seconds). Counts cover every batch; ``shards`` holds the
    latest `HISTORY_ROWS` of them.
    """
    if not os.path.exists(steps_path(run_dir)):
        return None
    ledger: Ledger = read_ledger(steps_path(run_dir))
    state = read_state(run_dir) or {}
    seen = _seen(state)
    shards: list[dict[str, Any]] = []
    for number, record in sorted(ledger.shards.items()):
        entry = seen.get(shard_tag(number)) or {}
        if record.done:
            status, answered, failed = record.status, record.answered, record.errored
        elif record.abandoned:
            status, answered, failed = "abandoned", None, None
        else:
            status = str(entry.get("status") or record.phase)
            if status in ("planned", "uploading", "uploaded", "creating"):
                status = record.phase
            answered, failed = _count(entry.get("completed")), _count(entry.get("failed"))
        created = record.created_at
        if created is None and isinstance(entry.get("created_at"), int | float):
            created = float(entry["created_at"])
        shards.append(
            {
                "shard": shard_tag(number),
                "batch_id": record.batch_id or entry.get("batch_id"),
                "model": record.model,
                "rows": record.rows,
                "attempt": record.attempt,
                "status": status or "unknown",
                "open": record.open,
                "cancel_requested": record.cancel_requested,
                "answered": answered,
                "failed": failed,
                "created_at": created,
                "finished_at": record.finished_at,
            }
        )
    by_status: dict[str, int] = {}
    for shard in shards:
        by_status[shard["status"]] = by_status.get(shard["status"], 0) + 1
    return {
        "run_id": ledger.run_id,
        "updated_at": state.get("updated_at"),
        "batches": len(shards),
        "open": sum(1 for s in shards if s["open"]),
        "by_status": by_status,
        "resubmissions": sum(1 for s in shards if s["attempt"] > 1),
        "rows_sent_again": len(ledger.attempts),
        "shards": shards[-HISTORY_ROWS:],
    }


def iter_open_batches(run_dir: str) -> Iterator[tuple[str, str | None]]:
    """(shard tag, batch id) of every shard a run directory still has open."""
    for record in read_ledger(steps_path(run_dir)).open_shards():
        yield shard_tag(record.shard), record.batch_id


NAMED_AT_MOST = 3
"""Open batches named one by one in `open_batches_refusal`; the rest are counted."""


def open_batches_refusal(run_dir: str) -> str | None:
    """Why a run that does not go through the Batch API may not send anything in
    ``run_dir`` now (None: it may): a shard an earlier ``--batch-api`` process left
    open is, or may become, a batch the provider runs and bills, so its rows sent
    online would be paid twice, and its answers would be in no total.

    The one rule every online way in shares (the runner, a Ray run); the library's
    `make_runner` first collects what has finished (`BatchDriver` ``settle_only``)."""
    if not os.path.exists(steps_path(run_dir)):
        return None
    open_shards = read_ledger(steps_path(run_dir)).open_shards()
    if not open_shards:
        return None
    rows = sum(record.rows for record in open_shards)
    names = [
        f"{record.batch_id or 'not created yet'} ({shard_tag(record.shard)})"
        for record in open_shards[:NAMED_AT_MOST]
    ]
    if len(open_shards) > NAMED_AT_MOST:
        names.append(f"{len(open_shards) - NAMED_AT_MOST} more")
    return (
        f"{run_dir} has {len(open_shards)} open batches ({', '.join(names)}; {rows:,} rows) "
        "left by a --batch-api run: sending their rows online now would pay for them "
        "twice. Rerun with --batch-api to collect them (add --deadline to send what is "
        f"left online), or `batchrun cancel {run_dir}` first (rows they finished are kept)"
    )


def _ago(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def shard_line(entry: Mapping[str, Any], now: float) -> str:
    """One open shard on one line (status, counts, time since submission)."""
    status = str(entry.get("status"))
    text = f"{entry.get('shard')}  {status}"
    total = int(entry.get("total") or 0)
    if status.startswith(("in_progress", "finalizing", "cancelling")) or entry.get("completed"):
        text += (
            f"  {int(entry.get('completed') or 0):,} done, {int(entry.get('failed') or 0):,} "
            f"failed of {total:,}"
        )
    else:
        text += f"  {total:,} rows"
    created = entry.get("created_at")
    if isinstance(created, int | float):
        text += f"  (submitted {_ago(now - created)} ago)"
    return text


def status_lines(status: Mapping[str, Any], now: float) -> list[str]:
    """The batch part of the text report."""
    head = f"batches     {len(status['open'])} open, {status['shards_done']} done"
    if isinstance(status.get("updated_at"), int | float):
        head += f"; last checked {_ago(now - status['updated_at'])} ago"
    inside = (status.get("at_provider") or {}).get("answered")
    if inside:
        head += f"; {inside:,} rows answered inside the open ones, collected when each ends"
    lines = [head]
    lines.extend("  " + shard_line(entry, now) for entry in status["open"])
    return lines


__all__ = [
    "batch_history",
    "batch_status",
    "iter_open_batches",
    "open_batches_refusal",
    "read_state",
    "shard_entry",
    "shard_line",
    "status_lines",
    "write_state",
]
