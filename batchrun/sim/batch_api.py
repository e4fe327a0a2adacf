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
(`batchrun.sim.persist`), every call that changed a file or a batch is kept there
before it is answered, and a simulator started on the folder replays them at its
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
from typing import Any, Protocol

import orjson
from aiohttp import BodyPartReader, web

from batchrun.sim.batch_input import ENDPOINTS
from batchrun.sim.batches import LIVE, BatchStore
from batchrun.sim.config import SLOW_LOST, SimConfig
from batchrun.sim.envelope import ApiError, injected_error, invalid_key
from batchrun.sim.faults import ApiFaults, FaultPlan
from batchrun.sim.files import FileStore
from batchrun.sim.http import drop, error_response, json_response
from batchrun.sim.persist import StateLog
from batchrun.sim.quota import retry_after_headers
from batchrun.sim.stats import SimStats

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
WINDOWS = ("24h",)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
EXPIRY_SECONDS = (3600, 2_592_000)
PUMP_ROWS = 500
"""Rows the background task answers before letting requests in (~20 ms of work)."""
PUMP_INTERVAL = 0.01
READ_ROWS = 2_000
"""Rows a request answers before it is served (~0.1 s of work at most)."""
_HEX = "0123456789abcdef"

Handler = Callable[..., Awaitable[web.StreamResponse]]


class BatchApi:
    """The Files/Batches endpoints of one simulator, over its stores and clock."""

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
        self.state = state
        """Where the calls that change files and batches are kept (None: memory only)."""
        self._replayed = state is None

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
        if self.state is not None:
            self.state.close()
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
        if not self._replayed:
            self._replay()
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
                if step == 429:
                    headers.update(retry_after_headers(self.config.retry_after))
                return error_response(injected_error(step), headers)
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
        table: dict[tuple[str, str, int], tuple[str, Handler]] = {
            ("POST", "files", 1): ("upload", self._upload),
            ("GET", "files", 1): ("list_files", self._list_files),
            ("GET", "files", 2): ("file", self._get_file),
            ("DELETE", "files", 2): ("delete", self._delete_file),
            ("GET", "files", 3): ("content", self._content),
            ("POST", "batches", 1): ("create", self._create),
            ("GET", "batches", 1): ("list", self._list_batches),
            ("GET", "batches", 2): ("retrieve", self._retrieve),
            ("POST", "batches", 3): ("cancel", self._cancel),
        }
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

    # -- the state folder --------------------------------------------------------------

    def _replay(self) -> None:
        """Play the calls a simulator before this one kept, each at its own time (at
        the first call, not at start: by then the run owning the folder holds its
        directory's lock, so the log is complete)."""
        assert self.state is not None
        self._replayed = True
        store, files = self.batches, self.files
        ops = self.state.read()
        ended = {str(op["id"]): op for op in ops if op["op"] == "ended"}
        counted, store.stats = store.stats, SimStats()  # replayed rows are not news
        try:
            for op in ops:
                at = float(op["at"])
                store.advance(at)
                kind, ident = op["op"], str(op["id"])
                if kind == "create" and ident in ended:
                    store.restore_ended(ended[ident]["batch"], int(op["serial"]))
                    continue
                if kind == "upload":
                    content = self.state.content(ident)
                    if content is not None:
                        files.add(
                            content,
                            str(op["filename"]),
                            str(op["purpose"]),
                            now=at,
                            expires_after=op.get("expires_after"),
                            file_id=ident,
                        )
                elif kind == "create":
                    store.create(
                        input_file_id=str(op["input_file_id"]),
                        endpoint=str(op["endpoint"]),
                        completion_window=str(op["completion_window"]),
                        metadata=op.get("metadata"),
                        output_expires_after=op.get("output_expires_after"),
                        now=at,
                        replayed=(ident, int(op["serial"]), str(op["fate"])),
                    )
                elif kind == "cancel":
                    batch = store.get(ident)
                    if batch is not None:
                        store.cancel(batch, at)
                elif kind == "delete":
                    files.delete(ident)
        finally:
            store.stats = counted
        if store.has_live and self._wake is not None:
            self._wake.set()

    def _keep(self, op: dict[str, Any], content: bytes | None = None) -> None:
        if self.state is not None:
            self.state.record(op, content)

    def _forget(self, file_id: str, now: float) -> None:
        """After a delete: a batch that ended with every file of it deleted is kept as
        it was last shown, and its input's bytes go (no replay needs them again)."""
        state = self.state
        if state is None:
            return
        users = self.batches.using(file_id)
        if not users:  # an upload no batch was made from
            state.forget_content(file_id)
        files = self.files
        for batch in users:
            mine = (batch.input_file_id, batch.output_file_id, batch.error_file_id)
            if batch.status in LIVE:
                continue
            if any(f is not None and files.get(f) is not None for f in mine):
                continue
            shown = batch.to_dict()
            state.record({"op": "ended", "id": batch.id, "batch": shown, "at": now})
            state.forget_content(batch.input_file_id)

    # -- files -----------------------------------------------------------------------

    async def _upload(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        if request.content_type != "multipart/form-data":
            return error_response(
                ApiError(400, "Invalid request: expected a multipart/form-data body."), headers
            )
        try:
            return await self._read_upload(request, headers)
        except ValueError:  # aiohttp's word for a malformed multipart body
            error = ApiError(400, "Invalid request: the multipart/form-data body is malformed.")
            return error_response(error, headers)

    async def _read_upload(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        fields: dict[str, str] = {}
        content: bytes | None = None
        filename = ""
        limit = self.settings.max_upload_bytes
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename or "upload"
                chunks: list[bytes] = []
                size = 0
                while chunk := await part.read_chunk(1 << 16):
                    size += len(chunk)
                    if size > limit:
                        too_big = f"File is too large: the limit is {limit:,} bytes."
                        refusal = ApiError(413, too_big, param="file", code="file_too_large")
                        return error_response(refusal, headers)
                    chunks.append(chunk)
                content = b"".join(chunks)
            elif part.name:
                fields[part.name] = await part.text()
        purpose = fields.get("purpose")
        error = _check_upload(content, filename, purpose, fields)
        if error is not None:
            return error_response(error, headers)
        assert content is not None and purpose is not None
        expires = fields.get("expires_after[seconds]")
        stored = self.files.add(
            content,
            filename,
            purpose,
            now=self.clock(),
            expires_after=None if expires is None else float(expires),
        )
        self._keep(
            {
                "op": "upload",
                "id": stored.id,
                "filename": filename,
                "purpose": purpose,
                "at": stored.created_at,
                "expires_after": None if expires is None else float(expires),
            },
            content,
        )
        self.stats.files_uploaded += 1
        return json_response(stored.to_dict(), headers)

    async def _list_files(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        query = request.query
        limit = _limit(query.get("limit"), 10_000, 10_000)
        if isinstance(limit, ApiError):
            return error_response(limit, headers)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            message = f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'."
            return error_response(
                ApiError(400, message, param="order", code="invalid_value"), headers
            )
        files = self.files.listed(query.get("purpose"), newest_first=order == "desc")
        return json_response(_page(files, query.get("after"), limit), headers)

    async def _get_file(
        self, request: web.BaseRequest, headers: dict[str, str], file_id: str
    ) -> web.Response:
        stored = self.files.get(file_id)
        if stored is None:
            return error_response(_no_file(file_id), headers)
        return json_response(stored.to_dict(), headers)

    async def _delete_file(
        self, request: web.BaseRequest, headers: dict[str, str], file_id: str
    ) -> web.Response:
        if not self.files.delete(file_id):
            return error_response(_no_file(file_id), headers)
        now = self.clock()
        self._keep({"op": "delete", "id": file_id, "at": now})
        self._forget(file_id, now)
        return json_response({"id": file_id, "object": "file", "deleted": True}, headers)

    async def _content(
        self, request: web.BaseRequest, headers: dict[str, str], file_id: str
    ) -> web.Response:
        stored = self.files.get(file_id)
        if stored is None:
            return error_response(_no_file(file_id), headers)
        self.stats.downloads[file_id] += 1
        return web.Response(
            body=stored.content, content_type="application/octet-stream", headers=headers
        )

    # -- batches ---------------------------------------------------------------------

    async def _create(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            message = "We could not parse the JSON body of your request."
            return error_response(ApiError(400, message, code="invalid_json"), headers)
        error = _check_create(body)
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
        self._keep(
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
        if self._wake is not None:
            self._wake.set()
        return json_response(batch.to_dict(), headers)

    async def _list_batches(
        self, request: web.BaseRequest, headers: dict[str, str]
    ) -> web.Response:
        limit = _limit(request.query.get("limit"), 20, 100)
        if isinstance(limit, ApiError):
            return error_response(limit, headers)
        page = _page(self.batches.listed(), request.query.get("after"), limit)
        return json_response(page, headers)

    async def _retrieve(
        self, request: web.BaseRequest, headers: dict[str, str], batch_id: str
    ) -> web.Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return error_response(_no_batch(batch_id), headers)
        return json_response(self.batches.retrieved(batch), headers)

    async def _cancel(
        self, request: web.BaseRequest, headers: dict[str, str], batch_id: str
    ) -> web.Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return error_response(_no_batch(batch_id), headers)
        now = self.clock()
        if not self.batches.cancel(batch, now):
            message = f"Cannot cancel a batch with status '{batch.status}'."
            return error_response(ApiError(400, message, code=None), headers)
        self._keep({"op": "cancel", "id": batch_id, "at": now})
        return json_response(batch.to_dict(), headers)


# -- request checks (pure) -----------------------------------------------------------------


def _no_file(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id")


def _no_batch(batch_id: str) -> ApiError:
    return ApiError(404, f"No such Batch object: {batch_id}", param="batch_id")


def _missing(name: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{name}'.",
        param=name,
        code="missing_required_parameter",
    )


def _check_upload(
    content: bytes | None, filename: str, purpose: str | None, fields: dict[str, str]
) -> ApiError | None:
    if content is None:
        return _missing("file")
    if purpose is None:
        return _missing("purpose")
    if purpose not in PURPOSES:
        return ApiError(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'")
    if purpose == "batch" and not filename.endswith(".jsonl"):
        return ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is not None or seconds is not None:
        if anchor != "created_at":
            return ApiError(
                400,
                f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
                param="expires_after.anchor",
                code="invalid_value",
            )
        return _check_seconds(seconds, "expires_after.seconds")
    return None


def _check_seconds(value: Any, param: str) -> ApiError | None:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return ApiError(400, f"Invalid type for '{param}': expected an integer.", param=param)
    low, high = EXPIRY_SECONDS
    if not low <= seconds <= high:
        return ApiError(
            400,
            f"Invalid '{param}': expected a value between {low} and {high}, but got "
            f"{seconds} instead.",
            param=param,
            code="invalid_value",
        )
    return None


def _check_create(body: dict[str, Any]) -> ApiError | None:
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) is None:
            return _missing(name)
        if not isinstance(body[name], str):
            return ApiError(
                400,
                f"Invalid type for '{name}': expected a string.",
                param=name,
                code="invalid_type",
            )
    if body["endpoint"] not in ENDPOINTS:
        return ApiError(
            400,
            f"Invalid value: '{body['endpoint']}'. Supported values are: "
            + ", ".join(f"'{e}'" for e in ENDPOINTS)
            + ".",
            param="endpoint",
            code="invalid_value",
        )
    if body["completion_window"] not in WINDOWS:
        return ApiError(
            400,
            f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    expires = body.get("output_expires_after")
    if expires is not None:
        if not isinstance(expires, dict) or expires.get("anchor") != "created_at":
            return ApiError(
                400,
                "Invalid 'output_expires_after': expected {'anchor': 'created_at', 'seconds': N}.",
                param="output_expires_after",
                code="invalid_value",
            )
        error = _check_seconds(expires.get("seconds"), "output_expires_after.seconds")
        if error is not None:
            return error
    return _check_metadata(body.get("metadata"))


def _check_metadata(metadata: Any) -> ApiError | None:
    """OpenAI's metadata rules: at most 16 pairs, keys <= 64 and values <= 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return ApiError(
            400,
            "Invalid type for 'metadata': expected an object.",
            param="metadata",
            code="invalid_type",
        )
    if len(metadata) > MAX_METADATA_PAIRS:
        return ApiError(
            400,
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(metadata)} "
            "properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            return ApiError(
                400,
                f"Invalid 'metadata': key '{key[:20]}...' is longer than {MAX_METADATA_KEY} "
                "characters.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            return ApiError(
                400,
                f"Invalid type for 'metadata.{key}': expected a string.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(value) > MAX_METADATA_VALUE:
            return ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(value)} "
                "instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return None


def _limit(raw: str | None, default: int, highest: int) -> int | ApiError:
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        return ApiError(
            400,
            f"Invalid type for 'limit': expected an integer, but got '{raw}' instead.",
            param="limit",
            code="invalid_type",
        )
    if limit < 1:
        return ApiError(
            400,
            f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got "
            f"{limit} instead.",
            param="limit",
            code="integer_below_min_value",
        )
    if limit > highest:
        return ApiError(
            400,
            f"Invalid 'limit': integer above maximum value. Expected a value <= {highest}, "
            f"but got {limit} instead.",
            param="limit",
            code="integer_above_max_value",
        )
    return limit


class _Listed(Protocol):
    id: str

    def to_dict(self) -> dict[str, Any]: ...


def _page(items: Sequence[_Listed], after: str | None, limit: int) -> dict[str, Any]:
    """One page of a cursor-paginated list: the items after `after`, at most `limit`."""
    start = 0
    if after:
        position = next((i for i, item in enumerate(items) if item.id == after), None)
        start = len(items) if position is None else position + 1
    chosen = items[start : start + limit]
    return {
        "object": "list",
        "data": [item.to_dict() for item in chosen],
        "first_id": chosen[0].id if chosen else None,
        "last_id": chosen[-1].id if chosen else None,
        "has_more": start + limit < len(items),
    }
