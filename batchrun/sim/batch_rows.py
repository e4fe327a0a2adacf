"""What a simulated batch writes: one line per row answered, and its output and error
files once it ends.

Each row is answered as the online endpoint of its API would answer it (`make_reply`,
`embeddings_object`, `response_object`), unless it fails: a body OpenAI would refuse
gets its 400, a scripted marker (``fail_first``) plays like an online attempt, and
otherwise `BatchConfig.row_error_rate` draws from the batch's own generator. Line ids
and request ids carry the simulator's prefix and a serial, as OpenAI's do.

The clock and the states are `batchrun.sim.batches.BatchStore`'s; this module only
makes lines and files.

    >>> rows = BatchRows(config=SimConfig(), files=FileStore(), stats=SimStats(), prefix="0" * 20)
    >>> rows.line_id()
    'batch_req_00000000000000000000000000000001'
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES, api_of_url
from batchrun._output.usage import usage_of
from batchrun.sim.batch_state import Batch
from batchrun.sim.config import BatchConfig, SimConfig
from batchrun.sim.content import completion_object, make_reply
from batchrun.sim.embeddings import embeddings_object
from batchrun.sim.envelope import injected_error, insufficient_quota
from batchrun.sim.faults import FaultPlan
from batchrun.sim.files import FileStore
from batchrun.sim.responses import response_object, response_reply
from batchrun.sim.stats import SimStats
from batchrun.sim.validation import check_api_body

_EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass(eq=False, kw_only=True)
class BatchRows:
    """Answers the rows of batches and writes their files (one per simulator)."""

    config: SimConfig
    files: FileStore
    stats: SimStats
    prefix: str
    """Of every line and request id (the simulator's own, random)."""
    fingerprint: str = "fp_sim"
    faults: FaultPlan | None = None
    _rows_served: Iterator[int] = field(default_factory=lambda: itertools.count(1), init=False)

    @property
    def settings(self) -> BatchConfig:
        return self.config.batch

    def line_id(self) -> str:
        return f"batch_req_{self.prefix}{next(self._rows_served):012x}"

    def answer_row(self, batch: Batch, index: int, created: int) -> None:
        """Answer row ``index`` of ``batch`` (``created``: the answer's Unix time)."""
        custom_id, body = batch.rows[index]
        line_id = self.line_id()
        serial = line_id[-12:]
        api = api_of_url(batch.endpoint) or CHAT
        status, error_body = self._row_fault(batch, custom_id, body, api)
        response: dict[str, Any]
        answer = None
        if status is None:
            try:
                answer = self._answer_body(created, serial, body, api)
            except Exception:  # an odd body must not wedge the batch: a 500 row, as online
                status, error_body = 500, injected_error(500).body()
        if answer is not None:
            response = {"status_code": 200, "request_id": f"req_{self.prefix}{serial}"}
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
                "request_id": f"req_{self.prefix}{serial}",
                "body": error_body,
            }
            line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
            batch.err_lines.append(orjson.dumps(line))
            batch.failed += 1
        self.stats.rows_processed += 1

    def _answer_body(
        self, created: int, serial: str, body: dict[str, Any], api: str
    ) -> dict[str, Any]:
        """The answer to one row, as the online endpoint of ``api`` would give it."""
        config = self.config
        if api == EMBEDDINGS:
            return embeddings_object(body)
        if api == RESPONSES:
            reply = response_reply(body, config.seed, config.reply_words)
            return response_object(reply, body, f"resp_{self.prefix}{serial}", created)
        reply = make_reply(body, config.seed, config.reply_words, config.skills)
        model = str(body["model"])
        completion_id = f"chatcmpl-{self.prefix}{serial}"
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

    def expire_rest(self, batch: Batch) -> None:
        """The rows an expired batch never answered, as error lines (when configured)."""
        if self.settings.expired_rows_to_error_file:
            for index in range(batch.next_row, batch.total):
                custom_id = batch.rows[index][0]
                line = {
                    "id": self.line_id(),
                    "custom_id": custom_id,
                    "response": None,
                    "error": _EXPIRED,
                }
                batch.err_lines.append(orjson.dumps(line))
                batch.failed += 1

    def write_files(self, batch: Batch, at: float) -> None:
        """The output and error files of a batch that ended (if any lines)."""
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

    def _repeat(self, line: bytes) -> bytes:
        """An output line again, under a new line id and with another answer."""
        record = orjson.loads(line)
        record["id"] = self.line_id()
        for choice in record["response"]["body"].get("choices") or ():
            message = choice.get("message") or {}
            message["content"] = f"(repeated) {message.get('content') or ''}"
        return orjson.dumps(record)
