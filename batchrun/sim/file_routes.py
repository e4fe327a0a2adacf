"""The simulator's Files API operations: upload, list, retrieve, delete, content.

Each takes the aiohttp request, the response headers (its request id) and the file the
path names (delete: its id; the 404 of the others is `batchrun.sim.batch_api.BatchApi`'s
routing), and answers as OpenAI does (`batchrun.sim.api_checks`); auth, injected
faults and routing are `batchrun.sim.batch_api.BatchApi`'s. An upload or a delete is
kept in the state folder before it is answered (`batchrun.sim.replay`).

    routes = FileRoutes(files=files, stats=stats, settings=settings, clock=time.time, kept=kept)
    response = await routes.get_file(request, headers, stored)  # BatchApi found it (or 404)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from batchrun.sim.api_checks import check_upload, no_file, page, page_limit
from batchrun.sim.config import BatchConfig
from batchrun.sim.envelope import ApiError, invalid_value
from batchrun.sim.files import FileStore, StoredFile
from batchrun.sim.http import error_response, json_response
from batchrun.sim.replay import KeptCalls
from batchrun.sim.stats import SimStats


@dataclass(eq=False, kw_only=True)
class FileRoutes:
    """The Files endpoints over one simulator's file store."""

    files: FileStore
    stats: SimStats
    settings: BatchConfig
    clock: Callable[[], float]
    kept: KeptCalls

    async def upload(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
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
        error = check_upload(content, filename, purpose, fields)
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
        self.kept.keep(
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

    async def list_files(self, request: web.BaseRequest, headers: dict[str, str]) -> web.Response:
        query = request.query
        limit = page_limit(query.get("limit"), 10_000, 10_000)
        if isinstance(limit, ApiError):
            return error_response(limit, headers)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            return error_response(invalid_value("order", order, "'asc' and 'desc'"), headers)
        files = self.files.listed(query.get("purpose"), newest_first=order == "desc")
        return json_response(page(files, query.get("after"), limit), headers)

    async def get_file(
        self, request: web.BaseRequest, headers: dict[str, str], stored: StoredFile
    ) -> web.Response:
        return json_response(stored.to_dict(), headers)

    async def delete_file(
        self, request: web.BaseRequest, headers: dict[str, str], file_id: str
    ) -> web.Response:
        if not self.files.delete(file_id):
            return error_response(no_file(file_id), headers)
        now = self.clock()
        self.kept.keep({"op": "delete", "id": file_id, "at": now})
        self.kept.forget(file_id, now)
        return json_response({"id": file_id, "object": "file", "deleted": True}, headers)

    async def content(
        self, request: web.BaseRequest, headers: dict[str, str], stored: StoredFile
    ) -> web.Response:
        self.stats.downloads[stored.id] += 1
        return web.Response(
            body=stored.content, content_type="application/octet-stream", headers=headers
        )
