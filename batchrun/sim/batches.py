"""Batches as a state machine driven by the clock: what a batch is at time t.

A batch is ``validating`` until `validation_delay` has passed, then its input file
is checked (`batchrun.sim.batch_input`): a bad file, a forced ``fail`` fate or a
model over the enqueued-token limit makes it ``failed``; otherwise it is
``in_progress`` and answers `rows_per_second` rows (each with `make_reply`, as the
online endpoint would), then ``finalizing`` for `finalizing_delay`, then
``completed`` with its output and error files. One still short of rows when its
window closes is ``expired`` and keeps what it answered; a cancelled one goes
``cancelling`` then ``cancelled`` and keeps what it answered too.

Nothing runs by itself: `BatchStore.advance(now)` replays every transition due by
`now` in time order (so one batch finishing frees enqueued tokens before a later one
validates) and answers the rows due. The API edge calls it before every read, and a
background task calls it with a row budget so a large batch is answered in slices
between requests. A batch's own state and schedule are `batchrun.sim.batch_state`;
the lines it writes and its files, `batchrun.sim.batch_rows`. With an injected clock a
test moves time and sees the exact state.

    >>> store = BatchStore(SimConfig(), FileStore(), SimStats())
    >>> line = (b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
    ...         b'"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}')
    >>> upload = store.files.add(line, "in.jsonl", "batch", now=100.0)
    >>> batch = store.create(input_file_id=upload.id, now=100.0)
    >>> store.advance(100.0)
    True
    >>> batch.status, batch.completed
    ('completed', 1)
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from batchrun._apis import api_of_url
from batchrun._pacing import tokens
from batchrun.sim.batch_input import CHAT_ENDPOINT, batch_error, read_batch_input
from batchrun.sim.batch_rows import BatchRows
from batchrun.sim.batch_state import CANCELLABLE, Batch, event_time, row_time, rows_due
from batchrun.sim.batch_state import LIVE as LIVE
from batchrun.sim.config import SimConfig, check_fate
from batchrun.sim.faults import FaultPlan
from batchrun.sim.files import FileStore
from batchrun.sim.stats import SimStats

ORGANIZATION = "org-simulator"
DEFAULT_TOKEN_LIMIT = 2_000_000
"""Shown in forced token_limit_exceeded messages when no limit is configured."""
_HEX = "0123456789abcdef"


class BatchStore:
    """Every batch of one simulator, advanced on demand to the caller's clock."""

    def __init__(
        self,
        config: SimConfig,
        files: FileStore,
        stats: SimStats,
        *,
        fingerprint: str = "fp_sim",
        faults: FaultPlan | None = None,
    ) -> None:
        self.config = config
        self.settings = config.batch
        self.files = files
        self._batches: dict[str, Batch] = {}
        self._live: dict[str, Batch] = {}
        self._fates: list[str] = list(self.settings.fates)
        self._enqueued: dict[str, int] = {}
        self._serial = itertools.count(1)
        self._prefix = "".join(random.SystemRandom().choices(_HEX, k=20))
        self._rows = BatchRows(
            config=config,
            files=files,
            stats=stats,
            prefix=self._prefix,
            fingerprint=fingerprint,
            faults=faults,
        )
        self._budget = math.inf

    @property
    def stats(self) -> SimStats:
        """Where the rows answered are counted (a replay counts into a throwaway one)."""
        return self._rows.stats

    @stats.setter
    def stats(self, stats: SimStats) -> None:
        self._rows.stats = stats

    # -- the API's verbs -------------------------------------------------------------

    def create(
        self,
        *,
        input_file_id: str,
        now: float,
        endpoint: str = CHAT_ENDPOINT,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        output_expires_after: float | None = None,
        replayed: tuple[str, int, str] | None = None,
    ) -> Batch:
        """A new ``validating`` batch over a snapshot of the input file (``replayed``:
        the id, serial and fate a simulator before this one gave it)."""
        if replayed is None:
            serial = next(self._serial)
            batch_id = f"batch_{self._prefix}{serial:012x}"
            fate = self._fates.pop(0) if self._fates else "ok"
        else:
            batch_id, serial, fate = replayed
            if self._fates:
                self._fates.pop(0)  # the simulator before this one played it
            self._serial = itertools.count(max(serial + 1, next(self._serial)))
        upload = self.files.get(input_file_id)
        batch = Batch(
            id=batch_id,
            serial=serial,
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            created_at=now,
            expires_at=now + self.settings.window_seconds,
            fate=fate,
            content=None if upload is None else upload.content,
            input_purpose=None if upload is None else upload.purpose,
            output_expires_after=output_expires_after,
        )
        self._batches[batch.id] = batch
        self._live[batch.id] = batch
        self.stats.batch_created(metadata)
        return batch

    def get(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    def retrieved(self, batch: Batch) -> dict[str, Any]:
        """The Batch object a retrieve answers: for the first `late_output_reads`
        retrieves of a finished batch, ``output_file_id`` is still null (LiteLLM #37713)."""
        shown = batch.to_dict()
        late = self.settings.late_output_reads
        if batch.output_file_id is not None and batch.reads_without_output < late:
            batch.reads_without_output += 1
            self.stats.late_output_reads += 1
            shown["output_file_id"] = None
        return shown

    def listed(self) -> list[Batch]:
        """Every batch, newest first."""
        return list(self._batches.values())[::-1]

    def restore_ended(self, shown: dict[str, Any], serial: int) -> Batch:
        """A batch that ended, as a simulator before this one last showed it
        (`Batch.to_dict`): for list and retrieve only, its files long deleted."""
        batch = Batch.restored(shown, serial)
        self._batches[batch.id] = batch
        self._serial = itertools.count(max(serial + 1, next(self._serial)))
        return batch

    def using(self, file_id: str) -> list[Batch]:
        """The batches whose input, output or error file is ``file_id``."""
        return [
            b
            for b in self._batches.values()
            if file_id in (b.input_file_id, b.output_file_id, b.error_file_id)
        ]

    def cancel(self, batch: Batch, now: float) -> bool:
        """Start cancelling `batch` (call `advance(now)` first); False if it is too late.

        Rows answered so far stay; the ones not yet answered are never run.
        """
        if batch.status in ("cancelling", "cancelled"):
            return True
        if batch.status not in CANCELLABLE:
            return False
        self._release(batch)
        batch.status = "cancelling"
        batch.times["cancelling_at"] = now
        return True

    def script_fates(self, *fates: str) -> None:
        """Force the outcomes of the next batches created (see `BatchConfig.fates`)."""
        self._fates = [check_fate(fate) for fate in fates]

    def enqueued_tokens(self, model: str) -> int:
        """Prompt tokens held by `model`'s in-progress batches."""
        return self._enqueued.get(model, 0)

    @property
    def has_live(self) -> bool:
        return bool(self._live)

    # -- time --------------------------------------------------------------------------

    def advance(self, now: float, budget: int | None = None) -> bool:
        """Play every transition and answer every row due by `now`.

        With a `budget`, stop after answering that many rows; returns False when work
        due by `now` was left for the next call (the state stays consistent: rows are
        answered in file order, and transitions wait for the rows before them).
        """
        self._budget = math.inf if budget is None else budget
        while True:
            batch, when = self._next_event(now)
            if batch is None:
                break
            if not self._answer_rows(batch, when):
                return False
            self._transition(batch, when)
        for batch in list(self._live.values()):
            if batch.status == "in_progress" and not self._answer_rows(batch, now):
                return False
        return True

    def _next_event(self, now: float) -> tuple[Batch | None, float]:
        first: Batch | None = None
        first_at = math.inf
        for batch in self._live.values():
            at = event_time(batch, self.settings)
            if at <= now and at < first_at:
                first, first_at = batch, at
        return first, first_at

    def _transition(self, batch: Batch, at: float) -> None:
        status = batch.status
        if status == "validating":
            if at >= batch.expires_at and at < batch.created_at + self.settings.validation_delay:
                self._expire(batch, at)
            else:
                self._validate(batch, at)
        elif status == "in_progress":
            if batch.fate == "expire" or batch.next_row < batch.total:
                self._expire(batch, at)
            else:
                self._release(batch)
                batch.status = "finalizing"
                batch.times["finalizing_at"] = at
        elif status == "finalizing":
            self._finish(batch, "completed", at)
        elif status == "cancelling":
            self._finish(batch, "cancelled", at)

    def _validate(self, batch: Batch, at: float) -> None:
        settings = self.settings
        if batch.fate == "fail":
            self._fail(batch, at, [batch_error("invalid_file", "Simulated validation failure.")])
            return
        if batch.content is None:
            message = f"No such File object: {batch.input_file_id}"
            self._fail(batch, at, [batch_error("invalid_file", message, param="input_file_id")])
            return
        if batch.input_purpose != "batch":
            message = (
                f"The input file must be uploaded with purpose 'batch', not "
                f"'{batch.input_purpose}'."
            )
            self._fail(batch, at, [batch_error("invalid_file", message, param="input_file_id")])
            return
        parsed = read_batch_input(
            batch.content,
            batch.endpoint,
            max_requests=settings.max_requests,
            max_bytes=settings.max_file_bytes,
        )
        batch.content = None
        batch.model = parsed.model
        if parsed.errors:
            self._fail(batch, at, parsed.errors)
            return
        model = parsed.model or ""
        limit = settings.enqueued_token_limit
        if limit is not None or batch.fate == "token_limit":
            api = api_of_url(batch.endpoint)
            batch.enqueued_tokens = sum(
                tokens.prompt_tokens(body, api=api) for _, body in parsed.rows
            )
        if batch.fate == "token_limit" or (
            limit is not None and self.enqueued_tokens(model) + batch.enqueued_tokens > limit
        ):
            shown = limit if limit is not None else DEFAULT_TOKEN_LIMIT
            message = (
                f"Enqueued token limit reached for {model or 'this model'} in organization "
                f"{ORGANIZATION}. Limit: {shown:,} enqueued tokens. Please try again once "
                "some in_progress batches have been completed."
            )
            self._fail(batch, at, [batch_error("token_limit_exceeded", message)])
            return
        batch.rows = parsed.rows
        batch.total = len(parsed.rows)
        batch.stop_row = batch.total
        if batch.fate == "expire":
            batch.stop_row = math.floor(batch.total * settings.expire_fraction)
        batch.status = "in_progress"
        batch.times["in_progress_at"] = at
        batch.rng = random.Random(f"batch-rows-{self.config.seed}-{batch.serial}")
        self._enqueued[model] = self.enqueued_tokens(model) + batch.enqueued_tokens

    def _release(self, batch: Batch) -> None:
        """Give back the batch's enqueued tokens (once it stops being in progress)."""
        if batch.status == "in_progress" and batch.enqueued_tokens:
            model = batch.model or ""
            self._enqueued[model] = self.enqueued_tokens(model) - batch.enqueued_tokens

    def _fail(self, batch: Batch, at: float, errors: list[dict[str, Any]]) -> None:
        batch.errors = errors
        batch.rows = []
        batch.content = None
        batch.status = "failed"
        batch.times["failed_at"] = at
        del self._live[batch.id]

    def _expire(self, batch: Batch, at: float) -> None:
        self._release(batch)
        self._rows.expire_rest(batch)
        self._finish(batch, "expired", at)

    def _finish(self, batch: Batch, status: str, at: float) -> None:
        """Enter a final status and write the output and error files (if any lines)."""
        batch.status = status
        batch.times[f"{status}_at"] = at
        self._rows.write_files(batch, at)
        batch.out_lines = []
        batch.err_lines = []
        batch.rows = []
        batch.content = None
        del self._live[batch.id]

    # -- rows --------------------------------------------------------------------------

    def _answer_rows(self, batch: Batch, until: float) -> bool:
        """Answer the rows of `batch` due by `until`, within the budget."""
        if batch.status != "in_progress":
            return True
        target = rows_due(batch, until, self.settings.rows_per_second)
        while batch.next_row < target:
            if self._budget <= 0:
                return False
            self._budget -= 1
            created = int(row_time(batch, self.settings.rows_per_second, batch.next_row + 1))
            self._rows.answer_row(batch, batch.next_row, created)
            batch.next_row += 1
        return True
