"""The simulator's HTTP edge: aiohttp's low-level server, one handler, no router.

Serves ``POST /v1/chat/completions`` (and ``/chat/completions``), ``POST
/v1/embeddings`` (`batchrun.sim.embeddings`) and ``POST /v1/responses``
(`batchrun.sim.responses`, streamed too) on loopback, the
Files and Batches API (`batchrun.sim.batch_api`), ``GET /v1/models`` (a configured
list: the simulator answers any model, as a relay might), plus ``GET /_sim/stats`` and
``POST /_sim/reset`` for tests. Per completion request, in order: auth (401), body
checks (400), quota (429), scripted or random fault, latency, then the reply from
`batchrun.sim.content`, streamed or not (`batchrun.sim.completions`). The clock used
by quotas, arrival times and batches is injected (``now``), so quota and batch tests
move time by hand; batch timestamps are that clock shifted to Unix time at
construction.

    async with running_sim(SimConfig(error_rates={503: 0.1})) as sim:
        client = httpx.AsyncClient(base_url=sim.base_url)
        ...
    with SimThread(SimConfig(latency_ms=20)) as sim:   # from sync code / fixtures
        print(sim.base_url)
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiohttp import web

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES
from batchrun._pacing import tokens
from batchrun.sim.batch_api import BatchApi
from batchrun.sim.batches import BatchStore
from batchrun.sim.completions import Completions
from batchrun.sim.config import ApiStep, ScriptStep, SimConfig
from batchrun.sim.envelope import ApiError, invalid_key
from batchrun.sim.faults import FaultPlan
from batchrun.sim.http import JSON, KeyCheck, error_response, json_response
from batchrun.sim.persist import StateLog
from batchrun.sim.quota import Quota
from batchrun.sim.stats import SimStats

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
API_PATHS = {
    **{path: CHAT for path in COMPLETION_PATHS},
    "/v1/embeddings": EMBEDDINGS,
    "/embeddings": EMBEDDINGS,
    "/v1/responses": RESPONSES,
    "/responses": RESPONSES,
}
"""The answering paths and the API each serves (`batchrun._apis`)."""
MODEL_PATHS = ("/v1/models", "/models")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class SimServer:
    """One simulated OpenAI-compatible endpoint; `stats` counts what it saw.

    It routes: the answering paths to `Completions`, the Files/Batches API to
    `BatchApi`, and serves the model list and the test endpoints itself."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        state_dir: str | None = None,
    ) -> None:
        """``state_dir``: keep the files and batches there, and carry on the ones a
        simulator before this one kept (`batchrun.sim.persist`)."""
        self.config = config or SimConfig()
        self.now = now
        self.stats = SimStats(self.config.record_arrivals, self.config.record_bodies)
        self.faults = FaultPlan(self.config)
        cfg = self.config
        limits = cfg.model_limits()
        self.quota = (
            Quota(cfg.rpm, cfg.tpm, now, model_limits=limits, start_drained=cfg.start_drained)
            if (cfg.rpm or cfg.tpm or limits)
            else None
        )
        self.host = "127.0.0.1"
        self.port = 0
        # ids: a per-server random prefix plus a counter (unique, and cheap to make)
        self._id_prefix = "".join(random.SystemRandom().choices(_ALNUM, k=17))
        seed_bytes = str(self.config.seed).encode()
        self.fingerprint = "fp_" + hashlib.blake2b(seed_bytes, digest_size=5).hexdigest()
        self._keys = KeyCheck(self.config.require_key)
        self._runner: web.ServerRunner | None = None
        # batch timestamps are Unix seconds, but must move with the injected clock
        self._epoch = time.time() - now()
        self.batch_api = BatchApi(
            self.config,
            self.stats,
            clock=self.unix_now,
            authorized=self._authorized,
            fingerprint=self.fingerprint,
            faults=self.faults,
            state=None if state_dir is None else StateLog(state_dir),
        )
        self._completions = Completions(
            config=self.config,
            stats=self.stats,
            faults=self.faults,
            quota=self.quota,
            keys=self._keys,
            now=now,
            fingerprint=self.fingerprint,
            id_prefix=self._id_prefix,
        )

    def unix_now(self) -> float:
        """The injected clock as Unix time (what batch and file timestamps use)."""
        return self._epoch + self.now()

    @property
    def batches(self) -> BatchStore:
        """Every batch (and, as ``batches.files``, every file) this server holds."""
        return self.batch_api.batches

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        # load the default vocabulary now, not inside the first request (~0.4 s)
        await asyncio.to_thread(tokens.get_encoding, "o200k_base")
        # the low-level server skips routing and middlewares: this must stay cheap
        server = web.Server(self._handle, request_factory=self._make_request, access_log=None)
        runner = web.ServerRunner(server, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=2048)
        site = web.SockSite(runner, sock)
        try:
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = sock.getsockname()[1]
        self.batch_api.start()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await self.batch_api.stop()
            await runner.cleanup()

    def _make_request(
        self, message: Any, payload: Any, protocol: Any, writer: Any, task: asyncio.Task[None]
    ) -> web.BaseRequest:
        # aiohttp reads at most 1 MiB by default; base64 images are bigger than that
        return web.BaseRequest(
            message,
            payload,
            protocol,
            writer,
            task,
            task.get_loop(),
            client_max_size=self.config.max_body_bytes,
        )

    # -- test helpers ------------------------------------------------------------

    def fail_first(self, marker: str, *steps: ScriptStep) -> None:
        """Script the next attempts of bodies containing `marker`.

        >>> sim.fail_first("row-7", 429, 503)  # then 200  # doctest: +SKIP
        """
        self.faults.script(marker, steps)

    def script_api(self, operation: str, *steps: ApiStep) -> None:
        """Play `steps` on the next Files/Batches calls of `operation`.

        >>> sim.script_api("retrieve", 503, "hang")  # then normal  # doctest: +SKIP
        """
        self.batch_api.faults.script(operation, steps)

    def script_batches(self, *fates: str) -> None:
        """Force the outcomes of the next batches created ("ok", "fail", "expire", ...)."""
        self.batches.script_fates(*fates)

    def advance_batches(self) -> None:
        """Bring every batch up to the clock now, answering every row due.

        Reads through the API do this too, but answer at most a slice of rows each.
        """
        self.batch_api.advance(budget=None)

    def reset(self) -> None:
        """Zero the counters and the scripted attempt counts (files and batches stay)."""
        self.stats.reset()
        self.faults.reset()
        self.batch_api.faults.reset()

    # -- dispatch ----------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        api = API_PATHS.get(path)
        if api is not None:
            if request.method != "POST":
                return error_response(
                    ApiError(405, "Method not allowed.", code="method_not_allowed")
                )
            return await self._completions.answer(request, api)
        if BatchApi.serves(path):
            response = await self.batch_api.handle(request)
            # None: the connection was dropped on purpose; give aiohttp something inert
            return web.Response(status=499) if response is None else response
        if path in MODEL_PATHS or path.startswith(tuple(p + "/" for p in MODEL_PATHS)):
            return self._models(request, path)
        if path == "/_sim/stats" and request.method == "GET":
            return web.Response(body=orjson.dumps(self.stats.to_dict()), content_type=JSON)
        if path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return web.Response(body=b"{}", content_type=JSON)
        return error_response(ApiError(404, f"Invalid URL ({request.method} {path})"))

    def _authorized(self, request: web.BaseRequest) -> bool:
        return self._keys.authorized(request)

    def _models(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        """``GET /v1/models`` (the configured list) and ``GET /v1/models/{id}``, in
        OpenAI's shape; the key is checked as for completions."""
        if request.method != "GET":
            return error_response(ApiError(405, "Method not allowed.", code="method_not_allowed"))
        if not self._authorized(request):
            return error_response(invalid_key())
        created = int(self.unix_now())
        listed = {
            m: {"id": m, "object": "model", "created": created, "owned_by": "batchrun-sim"}
            for m in self.config.models
        }
        if path in MODEL_PATHS:
            return json_response({"object": "list", "data": list(listed.values())})
        model = path.split("/models/", 1)[1]
        if model not in listed:
            return error_response(
                ApiError(
                    404,
                    f"The model '{model}' does not exist or you do not have access to it.",
                    code="model_not_found",
                    type="invalid_request_error",
                )
            )
        return json_response(listed[model])


@asynccontextmanager
async def running_sim(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    now: Callable[[], float] = time.monotonic,
) -> AsyncIterator[SimServer]:
    """Run a simulator in the current (asyncio) event loop for the block's duration.

    async with running_sim(SimConfig(latency_ms=5)) as sim:
        r = await httpx.AsyncClient().post(sim.base_url + "/chat/completions", json=body)
    """
    server = SimServer(config, now=now)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.stop()


class SimThread:
    """A simulator on its own event loop in a background thread (fixtures, the CLI).

    with SimThread(SimConfig(error_rates={429: 0.2})) as sim:
        run_batch(base_url=sim.base_url)
        assert sim.stats.rate_limited > 0
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        now: Callable[[], float] = time.monotonic,
        state_dir: str | None = None,
    ) -> None:
        self.server = SimServer(config, now=now, state_dir=state_dir)
        self.host = host
        self.requested_port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def stats(self) -> SimStats:
        """Live counters; read them, or use `snapshot()` for a consistent copy."""
        return self.server.stats

    def start(self) -> SimThread:
        self._thread = threading.Thread(target=self._run, name="batchrun-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("simulator did not start within 30 s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._loop = None

    def __enter__(self) -> SimThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict[str, Any]:
        """The stats as a dict, copied on the server's own loop."""
        return self._call(self.server.stats.to_dict)

    def fail_first(self, marker: str, *steps: ScriptStep) -> None:
        self._call(lambda: self.server.fail_first(marker, *steps))

    def script_api(self, operation: str, *steps: ApiStep) -> None:
        self._call(lambda: self.server.script_api(operation, *steps))

    def script_batches(self, *fates: str) -> None:
        self._call(lambda: self.server.script_batches(*fates))

    def advance_batches(self) -> None:
        self._call(self.server.advance_batches)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        """A batch object as the API would return it now (None if unknown)."""

        def look() -> dict[str, Any] | None:
            self.server.advance_batches()
            batch = self.server.batches.get(batch_id)
            return None if batch is None else batch.to_dict()

        return self._call(look)

    def reset(self) -> None:
        self._call(self.server.reset)

    def _call(self, fn: Callable[[], Any]) -> Any:
        if self._loop is None:
            return fn()

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        try:
            await self.server.start(self.host, self.requested_port)
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()
