"""The step journal: every remote call a batch run makes, written down before and after.

A batch run's remote state (files uploaded, batches created) lives at the provider,
and a crash can fall between any two calls. So each step is appended to
``batch/steps.jsonl`` and fsynced *before* the call that could change remote state
(``upload``, ``create``, ``cancel``) and again *after* it answered (``uploaded`` with
the file id, ``created`` with the batch id), and each local consequence is recorded
once it is on disk (``downloaded`` after the lines are written and fsynced, ``done``
when every row of the shard is accounted for). On restart `replay` rebuilds where
each shard stood: a ``create`` without ``created`` is a batch that may exist without
its id reaching us, which `batchrun.batch.reconcile` looks for by metadata before
anything is created again; ``create_lost`` records when its answer was given up on
(the connection lost, or found unanswered by the next process), from which the wait
before creating again counts.

Lines hold shard numbers, file ids, batch ids, statuses and custom ids of rows to
retry; never a key, a body or an answer.

    >>> ledger = replay_lines([b'{"step":"run","run_id":"r1"}',
    ...     b'{"step":"planned","shard":1,"model":"m","rows":3,"attempt":1}',
    ...     b'{"step":"create","shard":1,"file_id":"file-1","at":5.0}'])
    >>> ledger.run_id, ledger.shards[1].phase
    ('r1', 'creating')
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.engine.rundir import NEW_FILE
from batchrun.errors import RunDirError
from batchrun.output.journal import repair_torn_tail
from batchrun.redact import scrub


@dataclass
class ShardRecord:
    """Where one shard stands, as far as the journal knows."""

    shard: int
    model: str = ""
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
    for line in lines:
        if not line.strip():
            continue
        try:
            step = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(step, dict):
            ledger.apply(step)
    return ledger


class StepJournal:
    """Append-only, fsynced journal of a batch run's steps (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.ledger = Ledger()

    def open(self, *, wall_time: float) -> Ledger:
        """Read what earlier processes wrote (a torn last line is cut), then append.
        A new journal gets a ``run`` line with a fresh run id."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            repair_torn_tail(self.path)
            if os.path.exists(self.path):
                with open(self.path, "rb") as f:
                    self.ledger = replay_lines(f)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, NEW_FILE)
        except OSError as exc:
            raise RunDirError(
                f"{self.path}: cannot open the step journal ({exc.strerror})"
            ) from exc
        if self.ledger.run_id is None:
            self.write({"step": "run", "run_id": secrets.token_hex(6), "at": wall_time})
        return self.ledger

    def write(self, step: dict[str, Any]) -> None:
        """Append ``step``, fsync, and play it onto the ledger: when this returns, the
        step survives a crash."""
        if self._fd is None:
            raise RunDirError(f"{self.path}: the step journal is not open")
        data = scrub(orjson.dumps(step, option=orjson.OPT_APPEND_NEWLINE))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            raise RunDirError(
                f"{self.path}: cannot write the step journal ({exc.strerror or exc})"
            ) from exc
        self.ledger.apply(step)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def read_ledger(path: str) -> Ledger:
    """The ledger of a run directory without touching it (for `batchrun status`)."""
    try:
        with open(path, "rb") as f:
            return replay_lines(line for line in f if line.endswith(b"\n"))
    except OSError:
        return Ledger()


__all__ = ["Ledger", "ShardRecord", "StepJournal", "read_ledger", "replay_lines"]
