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
between requests. With an injected clock a test moves time and sees the exact state.

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
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun.apis import CHAT, EMBEDDINGS, RESPONSES, api_of_url
from batchrun.output.usage import usage_of
from batchrun.pacing import tokens
from batchrun.sim.batch_input import CHAT_ENDPOINT, batch_error, read_batch_input
from batchrun.sim.config import SimConfig, check_fate
from batchrun.sim.content import completion_object, make_reply
from batchrun.sim.embeddings import embeddings_object
from batchrun.sim.envelope import injected_error, insufficient_quota
from batchrun.sim.faults import FaultPlan
from batchrun.sim.files import FileStore
from batchrun.sim.responses import response_object, response_reply
from batchrun.sim.stats import SimStats
from batchrun.sim.validation import check_api_body

LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
CANCELLABLE = frozenset({"validating", "in_progress"})
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
ORGANIZATION = "org-simulator"
DEFAULT_TOKEN_LIMIT = 2_000_000
"""Shown in forced token_limit_exceeded messages when no limit is configured."""
_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
_HEX = "0123456789abcdef"


@dataclass(slots=True)
class Batch:
    """One batch: its request, where it is in its life, and what it has answered."""

    id: str
    serial: int
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    fate: str
    content: bytes | None
    """The input file as it was at creation (None: no such file)."""
    input_purpose: str | None
    output_expires_after: float | None
    status: str = "validating"
    times: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    total: int = 0
    stop_row: int = 0
    """Rows it will answer before it stops (fewer than `total` for an ``expire`` fate)."""
    next_row: int = 0
    completed: int = 0
    failed: int = 0
    out_lines: list[bytes] = field(default_factory=list)
    err_lines: list[bytes] = field(default_factory=list)
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    enqueued_tokens: int = 0
    usage: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """input, cached input, output, reasoning tokens of the rows answered."""
    rng: random.Random | None = None
    """Draws this batch's row errors: its own, so how the work is sliced never matters."""
    reads_without_output: int = 0
    """Retrieves that showed it finished with ``output_file_id`` still null."""

    def to_dict(self) -> dict[str, Any]:
        """The Batch object, field for field as OpenAI returns it."""
        stamps = {name: _stamp(self.times.get(name)) for name in TIMESTAMPS}
        prompt, cached, output, reasoning = self.usage
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": stamps["in_progress_at"],
            "expires_at": int(self.expires_at),
            "finalizing_at": stamps["finalizing_at"],
            "completed_at": stamps["completed_at"],
            "failed_at": stamps["failed_at"],
            "expired_at": stamps["expired_at"],
            "cancelling_at": stamps["cancelling_at"],
            "cancelled_at": stamps["cancelled_at"],
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + output,
            },
        }


def _stamp(value: float | None) -> int | None:
    return None if value is None else int(value)


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
        self.stats = stats
        self.fingerprint = fingerprint
        self.faults = faults
        self._batches: dict[str, Batch] = {}
        self._live: dict[str, Batch] = {}
        self._fates: list[str] = list(self.settings.fates)
        self._enqueued: dict[str, int] = {}
        self._serial = itertools.count(1)
        self._rows_served = itertools.count(1)
        self._prefix = "".join(random.SystemRandom().choices(_HEX, k=20))
        self._budget = math.inf

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
        counts = shown.get("request_counts") or {}
        usage = shown.get("usage") or {}
        errors = shown.get("errors")
        batch = Batch(
            id=str(shown["id"]),
            serial=serial,
            input_file_id=str(shown["input_file_id"]),
            endpoint=str(shown["endpoint"]),
            completion_window=str(shown["completion_window"]),
            metadata=shown.get("metadata"),
            created_at=float(shown["created_at"]),
            expires_at=float(shown["expires_at"]),
            fate="ok",
            content=None,
            input_purpose=None,
            output_expires_after=None,
            status=str(shown["status"]),
            times={n: float(shown[n]) for n in TIMESTAMPS if shown.get(n) is not None},
            model=shown.get("model"),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            errors=errors.get("data") if isinstance(errors, dict) else None,
            output_file_id=shown.get("output_file_id"),
            error_file_id=shown.get("error_file_id"),
            usage=[
                int(usage.get("input_tokens") or 0),
                int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                int(usage.get("output_tokens") or 0),
                int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
            ],
        )
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
            at = self._event_time(batch)
            if at <= now and at < first_at:
                first, first_at = batch, at
        return first, first_at

    def _event_time(self, batch: Batch) -> float:
        settings = self.settings
        status = batch.status
        if status == "validating":
            return min(batch.created_at + settings.validation_delay, batch.expires_at)
        if status == "in_progress":
            return min(self._row_time(batch, batch.stop_row), batch.expires_at)
        if status == "finalizing":
            return batch.times["finalizing_at"] + settings.finalizing_delay
        if status == "cancelling":
            return batch.times["cancelling_at"] + settings.cancel_delay
        return math.inf

    def _row_time(self, batch: Batch, rows: int) -> float:
        """When the first `rows` rows of an in-progress batch are answered."""
        started = batch.times["in_progress_at"]
        rate = self.settings.rows_per_second
        return started if math.isinf(rate) else started + rows / rate

    def _rows_due(self, batch: Batch, at: float) -> int:
        """How many rows are answered by `at`: the n with ``_row_time(n) <= at``.

        Judged with `_row_time` itself, the function that schedules the events: at
        Unix times a float holds ~2.4e-7 s, so dividing the elapsed time back into
        rows can come out one short at the very event that needs them all.
        """
        rate = self.settings.rows_per_second
        stop = batch.stop_row
        if math.isinf(rate):
            return stop
        guess = (at - batch.times["in_progress_at"]) * rate
        rows = max(0, min(stop, math.floor(guess)))
        while rows < stop and self._row_time(batch, rows + 1) <= at:
            rows += 1
        while rows > 0 and self._row_time(batch, rows) > at:
            rows -= 1
        return rows

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
        if self.settings.expired_rows_to_error_file:
            for index in range(batch.next_row, batch.total):
                custom_id = batch.rows[index][0]
                line = {
                    "id": self._line_id(),
                    "custom_id": custom_id,
                    "response": None,
                    "error": _EXPIRED,
                }
                batch.err_lines.append(orjson.dumps(line))
                batch.failed += 1
        self._finish(batch, "expired", at)

    def _finish(self, batch: Batch, status: str, at: float) -> None:
        """Enter a final status and write the output and error files (if any lines)."""
        batch.status = status
        batch.times[f"{status}_at"] = at
        files = self.files
        keep = batch.output_expires_after
        if batch.out_lines:
            repeated = [
                self._repeat(line) for line in batch.out_lines[: self.settings.repeat_output_lines]
            ]
            self.stats.repeated_output_lines += len(repeated)
            content = b"\n".join(batch.out_lines + repeated) + b"\n"
            name = f"{batch.id}_output.jsonl"
            batch.output_file_id = files.add(
                content,
                name,
                "batch_output",
                now=at,
                expires_after=keep,
                file_id=files.derived_id(f"{batch.id}/output"),
            ).id
        if batch.err_lines:
            content = b"\n".join(batch.err_lines) + b"\n"
            name = f"{batch.id}_error.jsonl"
            batch.error_file_id = files.add(
                content,
                name,
                "batch_output",
                now=at,
                expires_after=keep,
                file_id=files.derived_id(f"{batch.id}/error"),
            ).id
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
        target = self._rows_due(batch, until)
        while batch.next_row < target:
            if self._budget <= 0:
                return False
            self._budget -= 1
            self._answer_row(batch, batch.next_row)
            batch.next_row += 1
        return True

    def _repeat(self, line: bytes) -> bytes:
        """An output line again, under a new line id and with another answer."""
        record = orjson.loads(line)
        record["id"] = self._line_id()
        for choice in record["response"]["body"].get("choices") or ():
            message = choice.get("message") or {}
            message["content"] = f"(repeated) {message.get('content') or ''}"
        return orjson.dumps(record)

    def _line_id(self) -> str:
        return f"batch_req_{self._prefix}{next(self._rows_served):012x}"

    def _answer_row(self, batch: Batch, index: int) -> None:
        custom_id, body = batch.rows[index]
        line_id = self._line_id()
        serial = line_id[-12:]
        api = api_of_url(batch.endpoint) or CHAT
        status, error_body = self._row_fault(batch, custom_id, body, api)
        response: dict[str, Any]
        answer = None
        if status is None:
            try:
                answer = self._answer_body(batch, index, serial, body, api)
            except Exception:  # an odd body must not wedge the batch: a 500 row, as online
                status, error_body = 500, injected_error(500).body()
        if answer is not None:
            response = {"status_code": 200, "request_id": f"req_{self._prefix}{serial}"}
            response["body"] = answer
            line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            batch.out_lines.append(orjson.dumps(line))
            batch.completed += 1
            usage = usage_of(answer)
            if usage is not None:
                totals = batch.usage
                totals[0] += usage.prompt_tokens
                totals[1] += usage.cached_tokens
                totals[2] += usage.completion_tokens
                totals[3] += usage.reasoning_tokens
        else:
            response = {
                "status_code": status,
                "request_id": f"req_{self._prefix}{serial}",
                "body": error_body,
            }
            line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            batch.err_lines.append(orjson.dumps(line))
            batch.failed += 1
        self.stats.rows_processed += 1

    def _answer_body(
        self, batch: Batch, index: int, serial: str, body: dict[str, Any], api: str
    ) -> dict[str, Any]:
        """The answer to one row, as the online endpoint of ``api`` would give it."""
        created = int(self._row_time(batch, index + 1))
        config = self.config
        if api == EMBEDDINGS:
            return embeddings_object(body)
        if api == RESPONSES:
            reply = response_reply(body, config.seed, config.reply_words)
            return response_object(reply, body, f"resp_{self._prefix}{serial}", created)
        reply = make_reply(body, config.seed, config.reply_words, config.skills)
        model = str(body["model"])
        completion_id = f"chatcmpl-{self._prefix}{serial}"
        return completion_object(reply, completion_id, model, created, self.fingerprint)

    def _row_fault(
        self, batch: Batch, custom_id: str, body: dict[str, Any], api: str = CHAT
    ) -> tuple[int | None, dict[str, Any] | None]:
        """(status, error body) when this row fails, else (None, None).

        A body OpenAI would refuse gets its 400; a scripted marker (``fail_first``)
        found in the custom_id or the body plays like an online attempt of that body
        (so a resubmitted row plays the next step); otherwise `row_error_rate` draws.
        """
        problem = check_api_body(body, api)
        if problem is not None:
            return problem.status, problem.body()
        faults = self.faults
        if faults is not None and faults.has_scripts:
            marked = custom_id.encode() + b"\n" + orjson.dumps(body)
            scripted = faults.scripted_step(marked, body)
            if scripted is not None and scripted[0] is not None:
                step = scripted[0]
                if step == "insufficient_quota":
                    return 429, insufficient_quota().body()
                if isinstance(step, int):
                    return step, injected_error(step).body()
                if not step.startswith("delay:"):
                    return 500, injected_error(500).body()
        settings = self.settings
        rng = batch.rng
        if settings.row_error_rate and rng is not None and rng.random() < settings.row_error_rate:
            status = settings.row_error_status
            return status, injected_error(status).body()
        return None, None
