"""The answering endpoints of the simulator: chat completions, embeddings and the
Responses API, each streamed or not where the API streams.

Per request, in order: auth (401), body checks (400), quota (429), scripted or random
fault, latency, then the reply from `batchrun.sim.content` (chat),
`batchrun.sim.embeddings` or `batchrun.sim.responses`. The faults that are not
answers: a reset connection, a half-sent body (``truncate``), an error inside a 200
stream (``stream_error``), an HTML page (``garbage``). Routing, the Files/Batches API
and the server itself are `batchrun.sim.server.SimServer`'s.

    completions = Completions(config=config, stats=stats, faults=faults, quota=None, ...)
    response = await completions.answer(request, CHAT)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from batchrun._apis import CHAT, RESPONSES
from batchrun._pacing import tokens
from batchrun.sim.config import ScriptStep, SimConfig
from batchrun.sim.content import Reply, completion_object, make_reply
from batchrun.sim.embeddings import embeddings_object
from batchrun.sim.envelope import (
    ApiError,
    injected_error,
    insufficient_quota,
    invalid_key,
    quota_exceeded,
)
from batchrun.sim.faults import FaultPlan
from batchrun.sim.http import JSON, KeyCheck, drop, error_response
from batchrun.sim.quota import Quota, retry_after_headers
from batchrun.sim.responses import response_events, response_object, response_reply
from batchrun.sim.stats import SimStats
from batchrun.sim.stream import stream_chunks
from batchrun.sim.validation import parse_body

_MODEL = web.RequestKey("model", str)
"""The model a request named (per-model stats), once its body is read."""
_DONE = b"data: [DONE]\n\n"


@dataclass(eq=False, kw_only=True)
class Completions:
    """Answers completion, embeddings and Responses requests for one simulator."""

    config: SimConfig
    stats: SimStats
    faults: FaultPlan
    quota: Quota | None
    keys: KeyCheck
    now: Callable[[], float]
    fingerprint: str
    id_prefix: str
    _served: int = field(default=0, init=False)

    async def answer(self, request: web.BaseRequest, api: str = CHAT) -> web.StreamResponse:
        arrived_at = self.now()
        self.stats.arrived(arrived_at)
        status: int | None = None
        try:
            response = await self._answer(request, api)
            status = response.status if response is not None else None
            if response is None:
                # the connection was dropped on purpose; give aiohttp something inert
                response = web.Response(status=499)
            return response
        finally:
            self.stats.finished(status)
            model = request.get(_MODEL)
            if model is not None:
                self.stats.model_answered(model, arrived_at, status)

    async def _answer(self, request: web.BaseRequest, api: str) -> web.StreamResponse | None:
        presented = self.keys.presented(request)
        self._served += 1
        serial = self._served
        headers = {"x-request-id": f"req_sim{serial:012x}"}
        if not self.keys.ok(presented):
            return error_response(invalid_key(), headers)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            too_big = f"Request body larger than {self.config.max_body_bytes} bytes."
            return error_response(ApiError(413, too_big, code="request_too_large"), headers)
        body, error = parse_body(raw, api)
        if error is not None or body is None:
            return error_response(error or ApiError(400, "Invalid body."), headers)
        if self.stats.bodies.maxlen:
            self.stats.bodies.append(body)
        request[_MODEL] = str(body.get("model") or "")

        refusal = self._quota_refusal(body, presented or "anon", headers, api)
        if refusal is not None:
            return refusal

        step = self.faults.next_step(raw, body)
        delay = self.faults.latency()
        if isinstance(step, str) and step.startswith("delay:"):
            delay += float(step.removeprefix("delay:")) / 1000
            step = None
        started = time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)

        if step == "reset":
            self.stats.faults["reset"] += 1
            drop(request)
            return None
        if isinstance(step, int):
            if step == 429:
                headers.update(retry_after_headers(self.config.retry_after))
            return error_response(injected_error(step), headers)
        if step == "insufficient_quota":
            return error_response(insufficient_quota(), headers)

        if api != CHAT:
            return await self._other_answer(request, api, body, serial, headers, step, started)
        reply = make_reply(body, self.config.seed, self.config.reply_words, self.config.skills)
        completion_id = f"chatcmpl-{self.id_prefix}{serial:012x}"
        model = body["model"]
        headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
        if body.get("stream") is True:
            return await self._stream(request, body, reply, completion_id, model, headers, step)
        if step == "garbage":
            self.stats.faults["garbage"] += 1
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(body=page, content_type="text/html", headers=headers)
        if step == "stream_error":
            self.stats.faults["stream_error"] += 1
            return error_response(injected_error(500), headers, status=200)
        created = int(time.time())
        payload = orjson.dumps(
            completion_object(reply, completion_id, model, created, self.fingerprint)
        )
        if step == "truncate":
            self.stats.faults["truncate"] += 1
            return await _torn_body(request, payload, headers)
        return web.Response(body=payload, content_type=JSON, headers=headers)

    async def _other_answer(
        self,
        request: web.BaseRequest,
        api: str,
        body: dict[str, Any],
        serial: int,
        headers: dict[str, str],
        step: ScriptStep | None,
        started: float,
    ) -> web.StreamResponse | None:
        """The answer to an embeddings or a Responses request (faults as for chat)."""
        cfg = self.config
        if api == RESPONSES:
            reply = response_reply(body, cfg.seed, cfg.reply_words)
            answer = response_object(
                reply, body, f"resp_{self.id_prefix}{serial:012x}", int(time.time())
            )
        else:
            answer = embeddings_object(body)
        headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
        if api == RESPONSES and body.get("stream") is True:
            return await self._stream_events(request, answer, headers, step)
        if step == "garbage":
            self.stats.faults["garbage"] += 1
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return web.Response(body=page, content_type="text/html", headers=headers)
        if step == "stream_error":
            self.stats.faults["stream_error"] += 1
            return error_response(injected_error(500), headers, status=200)
        payload = orjson.dumps(answer)
        if step == "truncate":
            self.stats.faults["truncate"] += 1
            return await _torn_body(request, payload, headers)
        return web.Response(body=payload, content_type=JSON, headers=headers)

    def _quota_refusal(
        self, body: dict[str, Any], key: str, headers: dict[str, str], api: str = CHAT
    ) -> web.Response | None:
        """Take this request from `key`'s buckets (adding x-ratelimit headers), or a 429.

        Like OpenAI, the token cost is an estimate made up front: prompt tokens plus
        the max completion tokens times n (a default when the body sets none; none for
        embeddings).
        """
        if self.quota is None:
            return None
        estimate = tokens.prompt_tokens(body, api=api) + tokens.completion_ceiling(
            body, self.config.default_completion_tokens, api=api
        )
        model = str(body.get("model") or "")
        admission = self.quota.admit(key, estimate, model)
        headers.update(admission.headers)
        if admission.allowed:
            return None
        wait = admission.retry_after
        by_tokens = admission.limited_by == "tokens"
        rpm, tpm = self.quota.limits(model)
        limit = tpm if by_tokens else rpm
        if math.isfinite(wait):
            headers.update(retry_after_headers(wait))
        error = quota_exceeded(admission.limited_by, limit, estimate if by_tokens else 1, wait)
        return error_response(error, headers)

    async def _stream(
        self,
        request: web.BaseRequest,
        body: dict[str, Any],
        reply: Reply,
        completion_id: str,
        model: str,
        headers: dict[str, str],
        step: ScriptStep | None,
    ) -> web.StreamResponse:
        config = self.config
        self.stats.streams += 1
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        chunks = stream_chunks(
            reply,
            completion_id=completion_id,
            created=int(time.time()),
            model=model,
            fingerprint=self.fingerprint,
            include_usage=include_usage,
            pieces=config.stream_pieces,
        )
        fault = step if step in ("truncate", "stream_error") else self.faults.stream_fault()
        cut = max(1, len(chunks) // 2) if fault else len(chunks)
        if fault:
            self.stats.faults[str(fault)] += 1
        events = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks[:cut]]
        error = b"data: " + orjson.dumps(injected_error(500).body()) + b"\n\n"
        return await self._send_stream(request, headers, events, fault, error, _DONE)

    async def _stream_events(
        self,
        request: web.BaseRequest,
        answer: dict[str, Any],
        headers: dict[str, str],
        step: ScriptStep | None,
    ) -> web.StreamResponse:
        """A Responses answer as its event stream (`batchrun.sim.responses.response_events`):
        ``event:`` lines, no ``[DONE]``; a fault cuts it before its final event."""
        self.stats.streams += 1
        events = response_events(answer, self.config.stream_pieces)
        fault = step if step in ("truncate", "stream_error") else self.faults.stream_fault()
        cut = max(1, len(events) // 2) if fault else len(events)
        if fault:
            self.stats.faults[str(fault)] += 1
        error = {
            "type": "error",
            "sequence_number": cut,
            "code": "server_error",
            "message": injected_error(500).message,
            "param": None,
        }
        return await self._send_stream(
            request,
            headers,
            [_event(event) for event in events[:cut]],
            fault,
            _event(error),
            None,
        )

    async def _send_stream(
        self,
        request: web.BaseRequest,
        headers: dict[str, str],
        events: list[bytes],
        fault: str | ScriptStep | None,
        error: bytes,
        done: bytes | None,
    ) -> web.StreamResponse:
        """Write ``events`` (paced by the config), then ``error`` (a stream_error
        fault), a dropped connection (a truncate fault that aborts), or ``done``."""
        config = self.config
        response = web.StreamResponse(
            status=200,
            headers={
                **headers,
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
            },
        )
        try:
            await response.prepare(request)
            if config.stream_comments:
                await response.write(b": keep-alive\n\n")
            if config.first_token_ms > 0:
                await asyncio.sleep(config.first_token_ms / 1000)
            gap = config.chunk_delay_ms / 1000
            if gap > 0:
                for index, event in enumerate(events):
                    if index:
                        await asyncio.sleep(gap)
                    await response.write(event)
            else:
                # unpaced: one write (same bytes, far fewer syscalls); clients must
                # split events themselves either way
                await response.write(b"".join(events))
            if fault == "stream_error":
                await response.write(error)
            elif fault == "truncate" and config.truncate_abort:
                drop(request)
                return response
            elif not fault and done is not None:
                await response.write(done)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream; nothing left to do
        return response


def _event(event: dict[str, Any]) -> bytes:
    """One server-sent event of a Responses stream: its type, then its data."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def _torn_body(
    request: web.BaseRequest, payload: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Announce the full length, send half, then drop the connection."""
    response = web.StreamResponse(status=200, headers={**headers, "Content-Type": JSON})
    response.content_length = len(payload)
    try:
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
    except ConnectionError:
        pass
    drop(request)
    return response
