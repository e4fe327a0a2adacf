"""The step journal: every remote call a batch run makes, written down before and after.

A batch run's remote state (files uploaded, batches created) lives at the provider,
and a crash can fall between any two calls. So each step is appended to
``batch/steps.jsonl`` and fsynced *before* the call that could change remote state
(``upload``, ``create``, ``cancel``) and again *after* it answered (``uploaded`` with
the file id, ``created`` with the batch id), and each local consequence is recorded
once it is on disk (``downloaded`` after the lines are written and fsynced, ``done``
when every row of the shard is accounted for). On restart `replay_lines` rebuilds
where each shard stood (the ledger, `batchrun._output.ledger`, which the reports read
too): a ``create`` without ``created`` is a batch that may exist without
its id reaching us, which `batchrun._batch.reconcile` looks for by metadata before
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
from typing import Any

import orjson

from batchrun._output.journal import repair_torn_tail
from batchrun._output.ledger import Ledger, ShardRecord, read_ledger, replay_lines
from batchrun._redact import scrub
from batchrun._runfiles import NEW_FILE
from batchrun.errors import RunDirError


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


__all__ = ["Ledger", "ShardRecord", "StepJournal", "read_ledger", "replay_lines"]
