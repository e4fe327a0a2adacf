"""A Batch API run's part of its run directory, read back: the step journal's ledger
and what `batchrun status` and the report say of the batches.

A run through the Batch API keeps ``batch/steps.jsonl`` (every remote call, written
down before and after; `batchrun._batch.steps.StepJournal` writes it) and
``batch/state.json`` (the last state of each batch seen; `batchrun._batch.state`).
Replaying the journal (`replay_lines`) tells where each shard stands; `batch_status`
and `batch_history` add the last states seen, for the text report and the HTML one.
This module reads, never writes, and imports nothing of ``batchrun._batch``, so the
reports and `batchrun._output.rundir.RunDir` can describe a batch run without the
driver.

    >>> ledger = replay_lines([b'{"step":"run","run_id":"r1"}',
    ...     b'{"step":"planned","shard":1,"model":"m","rows":3,"attempt":1}',
    ...     b'{"step":"create","shard":1,"file_id":"file-1","at":5.0}'])
    >>> ledger.run_id, ledger.shards[1].phase, shard_tag(1)
    ('r1', 'creating', 's000001')
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

BATCH_DIR = "batch"
STEPS = "steps.jsonl"
STATE = "state.json"


def steps_path(run_dir: str) -> str:
    """``RUN_DIR/batch/steps.jsonl``: the step journal."""
    return os.path.join(run_dir, BATCH_DIR, STEPS)


def state_path(run_dir: str) -> str:
    """``RUN_DIR/batch/state.json``: the last state of each batch seen."""
    return os.path.join(run_dir, BATCH_DIR, STATE)


def shard_tag(shard: int) -> str:
    """How a shard is named in metadata and file names: ``s000003``."""
    return f"s{shard:06d}"


@dataclass
class ShardRecord:
    """Where one shard stands, as far as the journal knows."""

    shard: int
    model: str = ""
    endpoint: str | None = None
    """The pool's endpoint whose Files/Batches API takes the shard (None: the run's one
    endpoint, and every shard a journal wrote before pools went through batches)."""
    rows: int = 0
    attempt: int = 1
    file_id: str | None = None
    batch_id: str | None = None
    upload_started: bool = False
    create_started_at: float | None = None
    """Wall time a create was sent; set until its answer (or a finding) is recorded."""
    create_lost_at: float | None = None
    """Wall time the answer to that create was given up on (None: not yet)."""
    created_at: float | None = None
    cancel_requested: bool = False
    downloaded: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    status: str | None = None
    """The batch's last status the journal saw final (``done`` lines)."""
    finished_at: float | None = None
    """Wall time the batch ended (its ``ended_at``, else when it was taken in); None
    in journals written before ``done`` lines said it."""
    answered: int | None = None
    """Rows the batch reported completed when it ended (None: not recorded)."""
    errored: int | None = None
    """Rows the batch reported failed when it ended (None: not recorded)."""
    done: bool = False
    abandoned: bool = False
    worst_usd: float | None = None
    """Most its rows can cost through the Batch API (planned under --max-cost; None:
    planned without a cap, so unknown)."""
    prompt_tokens: int | None = None
    """A shard of one row: that row's prompt tokens (to tell, when the provider's queue
    refuses it alone, whether it can ever fit)."""

    @property
    def phase(self) -> str:
        """planned, uploading, uploaded, creating, submitted, done or abandoned."""
        if self.abandoned:
            return "abandoned"
        if self.done:
            return "done"
        if self.batch_id is not None:
            return "submitted"
        if self.create_started_at is not None:
            return "creating"
        if self.file_id is not None:
            return "uploaded"
        if self.upload_started:
            return "uploading"
        return "planned"

    @property
    def open(self) -> bool:
        """Its rows are taken: neither done nor abandoned."""
        return not (self.done or self.abandoned)


@dataclass
class Ledger:
    """Everything the journal says: the run's id, each shard, attempts used per row."""

    run_id: str | None = None
    started_at: float | None = None
    shards: dict[int, ShardRecord] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    """custom_id -> batch attempts that ended without an answer or a final error."""
    repeated_lines: int = 0
    """Lines of downloaded files that repeated a row (a provider anomaly, never written)."""

    @property
    def next_shard(self) -> int:
        return max(self.shards, default=0) + 1

    def open_shards(self) -> list[ShardRecord]:
        return [r for _, r in sorted(self.shards.items()) if r.open]

    def shard(self, number: int) -> ShardRecord:
        record = self.shards.get(number)
        if record is None:
            record = self.shards[number] = ShardRecord(number)
        return record

    def apply(self, step: dict[str, Any]) -> None:
        """Play one journal line onto the ledger (`replay` and the live writer alike)."""
        kind = step.get("step")
        if kind == "run":
            if self.run_id is None:
                self.run_id = str(step.get("run_id"))
                at = step.get("at")
                self.started_at = float(at) if isinstance(at, int | float) else None
            return
        number = step.get("shard")
        if not isinstance(number, int):
            return
        record = self.shard(number)
        if kind == "planned":
            record.model = str(step.get("model") or "")
            endpoint = step.get("endpoint")
            record.endpoint = endpoint if isinstance(endpoint, str) else None
            record.rows = int(step.get("rows") or 0)
            record.attempt = int(step.get("attempt") or 1)
            worst = step.get("worst_usd")
            record.worst_usd = float(worst) if isinstance(worst, int | float) else None
            tokens = step.get("prompt_tokens")
            record.prompt_tokens = tokens if isinstance(tokens, int) else None
        elif kind == "upload":
            record.upload_started = True
        elif kind == "uploaded":
            record.file_id = str(step["file_id"])
        elif kind == "create":
            record.file_id = str(step.get("file_id") or record.file_id)
            record.create_started_at = float(step.get("at") or 0.0)
            record.create_lost_at = None
        elif kind == "create_lost":
            record.create_lost_at = float(step.get("at") or 0.0)
        elif kind == "created":
            record.batch_id = str(step["batch_id"])
            record.create_started_at = record.create_lost_at = None
            at = step.get("at")
            record.created_at = float(at) if isinstance(at, int | float) else None
        elif kind == "not_created":
            record.create_started_at = record.create_lost_at = None
        elif kind == "cancel":
            record.cancel_requested = True
        elif kind == "downloaded":
            file_id = str(step["file_id"])
            repeated = step.get("repeated")
            if file_id not in record.downloaded and isinstance(repeated, int):
                self.repeated_lines += repeated
            record.downloaded.add(file_id)
        elif kind == "deleted":
            record.deleted.add(str(step["file_id"]))
        elif kind == "done":
            record.done = True
            record.status = str(step.get("status") or "")
            at = step.get("at")
            record.finished_at = float(at) if isinstance(at, int | float) else None
            for name, key in (("answered", "completed"), ("errored", "failed")):
                count = step.get(key)
                setattr(record, name, count if isinstance(count, int) else None)
            for custom_id in step.get("retry") or ():
                self.attempts[str(custom_id)] += 1
        elif kind == "abandoned":
            record.abandoned = True


def replay_lines(lines: Iterable[bytes]) -> Ledger:
    """The ledger from journal lines (blank and unreadable lines are skipped: a torn
    last line never reached its fsync, so the step it began was never relied on)."""
    ledger = Ledger()
    for step in json_objects(lines):
        ledger.apply(step)
    return ledger


def json_objects(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of an append-only log's lines, in order: blank lines, lines
    that are not JSON (a torn last line) and values that are not objects are skipped."""
    for line in lines:
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def read_ledger(path: str) -> Ledger:
    """The ledger of a run directory without touching it (for `batchrun status`)."""
    try:
        with open(path, "rb") as f:
            return replay_lines(line for line in f if line.endswith(b"\n"))
    except OSError:
        return Ledger()


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
        if record.endpoint is not None:  # a pool's: whose Batch API has it
            entry.setdefault("endpoint", record.endpoint)
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


__all__ = [
    "json_objects",
    "BATCH_DIR",
    "NAMED_AT_MOST",
    "open_batches_refusal",
    "HISTORY_ROWS",
    "STATE",
    "STEPS",
    "Ledger",
    "ShardRecord",
    "batch_history",
    "batch_status",
    "read_ledger",
    "read_state",
    "replay_lines",
    "shard_tag",
    "state_path",
    "steps_path",
]


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
