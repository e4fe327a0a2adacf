"""The simulator's Batches API operations: create, list, retrieve, cancel.

Each takes the aiohttp request, the response headers (its request id) and the batch
the path names (its 404 is `batchrun.sim.batch_api.BatchApi`'s routing), and answers
as OpenAI does (`batchrun.sim.api_checks`); the batches themselves are
`batchrun.sim.batches.BatchStore`'s, already brought up to the clock by
`batchrun.sim.batch_api.BatchApi`. A create or a cancel is kept in the state folder
before it is answered (`batchrun.sim.replay`).

    routes = BatchRoutes(batches=batches, clock=time.time, kept=kept, woken=pump.set)
    response = await routes.retrieve(request, headers, batch)  # BatchApi found it (or 404)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from batchrun.sim.api_checks import check_create, page, page_limit
from batchrun.sim.batch_state import Batch
from batchrun.sim.batches import BatchStore
from batchrun.sim.envelope import ApiError
from batchrun.sim.http import error_response, json_response
from batchrun.sim.replay import KeptCalls


@dataclass(eq=False, kw_only=True)
class BatchRoutes:
    """The Batches endpoints over one simulator's batch store."""

    batches: BatchStore
    clock: Callable[[], float]
    kept: KeptCalls
    woken: Callable[[], None]
    """Called when a batch was created (the background row answerer wakes up)."""

    async def create(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            return error_response(ApiError(400, message, code="invalid_json"), headers)
        error = check_create(body)
        if error is not None:
            return error_response(error, headers)
        expires_after = body.get("output_expires_after")
        now = self.clock()
        batch = self.batches.create(
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            metadata=None if body.get("metadata") is None else dict(body["metadata"]),
            output_expires_after=None if expires_after is None else expires_after["seconds"],
            now=now,
        )
        self.kept.keep(
            {
                "op": "create",
                "id": batch.id,
                "serial": batch.serial,
                "fate": batch.fate,
                "input_file_id": batch.input_file_id,
                "endpoint": batch.endpoint,
                "completion_window": batch.completion_window,
                "metadata": batch.metadata,
                "output_expires_after": batch.output_expires_after,
                "at": now,
            }
        )
        self.woken()
        return json_response(batch.to_dict(), headers)

    async def list_batches(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        limit = page_limit(request.query.get("limit"), 20, 100)
        if isinstance(limit, ApiError):
            return error_response(limit, headers)
        listed = page(self.batches.listed(), request.query.get("after"), limit)
        return json_response(listed, headers)

    async def retrieve(
        self, request: web.BaseRequest, headers: dict[str, str], batch: Batch
    ) -> web.Response:
        return json_response(self.batches.retrieved(batch), headers)

    async def cancel(
        self, request: web.BaseRequest, headers: dict[str, str], batch: Batch
    ) -> web.Response:
        now = self.clock()
        if not self.batches.cancel(batch, now):
            message = f"Cannot cancel a batch with status '{batch.status}'."
            return error_response(ApiError(400, message, code=None), headers)
        self.kept.keep({"op": "cancel", "id": batch.id, "at": now})
        return json_response(batch.to_dict(), headers)
