"""OpenAI's Files and Batches API on the simulator's server, faithful enough for the SDK.

Routes (each also without the ``/v1`` prefix):

    POST   /v1/files                 upload (multipart: purpose, file)   -> File
    GET    /v1/files                 list (purpose, limit, order, after)  -> list
    GET    /v1/files/{id}            -> File
    GET    /v1/files/{id}/content    the bytes
    DELETE /v1/files/{id}            -> {"id", "object": "file", "deleted": true}
    POST   /v1/batches               create (input_file_id, endpoint, completion_window, metadata)
    GET    /v1/batches               list, newest first (limit, after)    -> list
    GET    /v1/batches/{id}          -> Batch
    POST   /v1/batches/{id}/cancel   -> Batch (cancelling)

Per call, in order: auth (401, the same key as chat completions), the operation's
injected fault (a status, a hang, a reset, "lost": done, then dropped, or
"slow_lost:S": done S seconds later whether or not the client still waits, then dropped), bring
every batch up to the clock, then the operation. Checks of the request itself answer
400/404 at once, as OpenAI does; checks of the input file's contents happen when
the batch validates (`batchrun.sim.batches`). With a state folder
(`batchrun.sim.persist`, `batchrun.sim.replay`), every call that changed a file or a
batch is kept there before it is answered, and a simulator started on the folder replays them at its
first call: its batches outlive its process. A background task answers due rows in
slices between requests, and a request answers at most `READ_ROWS` due rows itself,
so a poll never stalls behind a large batch: like a real server, a batch whose rows
are due but not yet computed still shows ``in_progress``. Below that, a read shows
the exact state at the clock, which is what tests with an injected clock rely on.

    async with running_sim() as sim:
        client = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim")
        upload = await client.files.create(file=("in.jsonl", data), purpose="batch")
        batch = await client.batches.create(input_file_id=upload.id,
            endpoint="/v1/chat/completions", completion_window="24h")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from batchrun.sim.api_checks import no_batch, no_file
from batchrun.sim.batch_routes import BatchRoutes
from batchrun.sim.batches import BatchStore
from batchrun.sim.config import SLOW_LOST, SimConfig
from batchrun.sim.envelope import ApiError, invalid_key
from batchrun.sim.faults import ApiFaults, FaultPlan
from batchrun.sim.file_routes import FileRoutes
from batchrun.sim.files import FileStore
from batchrun.sim.http import drop, error_response, found_by_id, injected_status
from batchrun.sim.persist import StateLog
from batchrun.sim.replay import KeptCalls
from batchrun.sim.stats import SimStats

PUMP_ROWS = 500
"""Rows the background task answers before letting requests in (~20 ms of work)."""
PUMP_INTERVAL = 0.01
READ_ROWS = 2_000
"""Rows a request answers before it is served (~0.1 s of work at most)."""
_HEX = "0123456789abcdef"

Handler = Callable[..., Awaitable[web.StreamResponse]]


class BatchApi:
    """The Files/Batches endpoints of one simulator, over its stores and clock: auth,
    routing, injected faults and the background row answerer. The operations are
    `FileRoutes` and `BatchRoutes`; the state folder, `KeptCalls`."""

    def __init__(
        self,
        config: SimConfig,
        stats: SimStats,
        *,
        clock: Callable[[], float],
        authorized: Callable[[web.BaseRequest], bool],
        fingerprint: str = "fp_sim",
        faults: FaultPlan | None = None,
        state: StateLog | None = None,
    ) -> None:
        self.config = config
        self.settings = config.batch
        self.stats = stats
        self.clock = clock
        self.authorized = authorized
        self.files = FileStore()
        self.batches = BatchStore(config, self.files, stats, fingerprint=fingerprint, faults=faults)
        self.faults = ApiFaults(self.settings, config.seed)
        self._serial = itertools.count(1)
        self._prefix = "".join(random.SystemRandom().choices(_HEX, k=20))
        self._closing: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._pump: asyncio.Task[None] | None = None
        self._late: set[asyncio.Task[web.StreamResponse]] = set()
        """Operations of ``slow_lost`` calls, done on their own time."""
        self.kept = KeptCalls(state, self.files, self.batches)
        """The calls that change files and batches, kept in the state folder (if any)."""
        self._file_routes = FileRoutes(
            files=self.files, stats=stats, settings=self.settings, clock=clock, kept=self.kept
        )
        self._batch_routes = BatchRoutes(
            batches=self.batches, clock=clock, kept=self.kept, woken=self._woken
        )
        files, batches = self._file_routes, self._batch_routes
        file_, batch = self.files.get, self.batches.get
        self._table: dict[tuple[str, str, int], tuple[str, Handler]] = {
            ("POST", "files", 1): ("upload", files.upload),
            ("GET", "files", 1): ("list_files", files.list_files),
            ("GET", "files", 2): ("file", found_by_id(file_, no_file, files.get_file)),
            ("DELETE", "files", 2): ("delete", files.delete_file),
            ("GET", "files", 3): ("content", found_by_id(file_, no_file, files.content)),
            ("POST", "batches", 1): ("create", batches.create),
            ("GET", "batches", 1): ("list", batches.list_batches),
            ("GET", "batches", 2): ("retrieve", found_by_id(batch, no_batch, batches.retrieve)),
            ("POST", "batches", 3): ("cancel", found_by_id(batch, no_batch, batches.cancel)),
        }
        """Method, first path part and path depth: the operation (as faults name it) and
        its handler; one that takes a stored file or batch answers 404 for an unknown id."""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the background row answerer (call on the server's event loop)."""
        self._closing = asyncio.Event()
        self._wake = asyncio.Event()
        self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def stop(self) -> None:
        """End hung requests and the background task, so shutdown does not wait."""
        if self._closing is not None:
            self._closing.set()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        for task in list(self._late):
            task.cancel()
        self.kept.close()
        await asyncio.sleep(0)  # let hung handlers see the event and drop their sockets

    def advance(self, budget: int | None = READ_ROWS) -> bool:
        """Bring every batch up to the clock, answering at most `budget` rows (None: all).

        Returns False when rows due were left to the background task.
        """
        return self.batches.advance(self.clock(), budget=budget)

    async def _run_pump(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            done = self.batches.advance(self.clock(), budget=PUMP_ROWS)
            if not self.batches.has_live:
                self._wake.clear()
                continue
            await asyncio.sleep(PUMP_INTERVAL if done else 0)

    # -- dispatch --------------------------------------------------------------------

    @staticmethod
    def serves(path: str) -> bool:
        """Whether `path` is a Files/Batches path (with or without ``/v1``)."""
        parts = path.removeprefix("/v1").split("/", 2)
        return len(parts) > 1 and parts[0] == "" and parts[1] in ("files", "batches")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """Answer one Files/Batches call; None when the connection was dropped."""
        headers = {"x-request-id": f"req_{self._prefix}{next(self._serial):012x}"}
        path = request.path.removeprefix("/v1")
        parts = [part for part in path.split("/") if part]
        route = self._route(request.method, parts)
        if isinstance(route, ApiError):
            return error_response(route, headers)
        operation, handler, args = route
        self.stats.api_calls[operation] += 1
        if not self.kept.replayed:
            self.kept.replay()
            if self.batches.has_live:
                self._woken()
        if not self.authorized(request):
            return error_response(invalid_key(), headers)
        step = self.faults.next_step(operation)
        if step is not None:
            self.stats.api_faults[f"{operation}:{step}"] += 1
            if step == "hang":
                await self._hang(request)
                return None
            if step == "reset":
                drop(request)
                return None
            if isinstance(step, int):
                return injected_status(step, headers, self.config.retry_after)
            if step.startswith(SLOW_LOST):
                await self._slow_lost(request, headers, handler, args, step)
                return None
        self.advance()
        response = await handler(request, headers, *args)
        if step == "lost":
            drop(request)
            return None
        return response

    def _route(
        self, method: str, parts: Sequence[str]
    ) -> tuple[str, Handler, tuple[str, ...]] | ApiError:
        table = self._table
        depth = len(parts)
        shape_ok = depth in (1, 2) or (
            depth == 3 and parts[2] == ("content" if parts[0] == "files" else "cancel")
        )
        found = table.get((method, parts[0], depth)) if parts and shape_ok else None
        if found is None:
            where = "/v1/" + "/".join(parts)
            if shape_ok and any(key[1:] == (parts[0], depth) for key in table):
                return ApiError(405, f"Method not allowed ({method} {where})", code=None)
            return ApiError(404, f"Invalid URL ({method} {where})")
        operation, handler = found
        return operation, handler, tuple(parts[1:2])

    async def _slow_lost(
        self,
        request: web.BaseRequest,
        headers: dict[str, str],
        handler: Handler,
        args: tuple[str, ...],
        step: str,
    ) -> None:
        """Do the operation `step`'s seconds after the call arrived, on its own task (a
        client that gave up meanwhile does not stop it), then drop the connection."""
        seconds = float(step.removeprefix(SLOW_LOST))
        await request.read()  # kept by aiohttp: the operation reads it after the client left

        async def later() -> web.StreamResponse:
            await asyncio.sleep(seconds)
            self.advance()
            return await handler(request, headers, *args)

        task = asyncio.get_running_loop().create_task(later())
        self._late.add(task)
        task.add_done_callback(self._late.discard)
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        drop(request)

    async def _hang(self, request: web.BaseRequest) -> None:
        """Hold the request without answering, then drop it (or at shutdown)."""
        closing = self._closing
        if closing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), self.settings.hang_seconds)
        drop(request)

    def _woken(self) -> None:
        if self._wake is not None:
            self._wake.set()
