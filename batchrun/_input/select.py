"""Pick the Source for a run: a request file, or a dataset through a prompt template.

The requests it yields carry the body exactly as it will be sent (with
``--stream``, already set up to stream with a usage chunk), so the hash each result
line records is the hash of what went over the wire, in every pass.

>>> source_for(Settings(input="requests.jsonl"))   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES
from batchrun._input.sources import RowMapper, Source, Span
from batchrun._models import Request
from batchrun._settings import Settings


def source_for(cfg: Settings, span: Span | None = None) -> Source:
    """The run's source; ``span``: only one shard's rows (`batchrun._scale`)."""
    from batchrun._input.context import context_check
    from batchrun._input.rows import dataset_mapper, request_defaults_mapper
    from batchrun._input.variants import fan_out, plan_variants, with_model

    finish = partial(sent_request, stream=cfg.stream)
    check = context_check(cfg)
    variants = plan_variants(cfg)
    if cfg.is_dataset:
        return Source(
            cfg.input_path,
            mapper=fan_out(dataset_mapper, variants) if variants else dataset_mapper(cfg),
            dataset=True,
            skip_invalid=cfg.skip_invalid,
            finish=finish,
            check=check,
            span=span,
            column_types=cfg.column_types,
        )
    if variants:  # a request file run once per model

        def per_model(settings: Settings) -> RowMapper:
            assert isinstance(settings.model, str)
            return with_model(request_defaults_mapper(settings), settings.model)

        return Source(
            cfg.input_path,
            mapper=fan_out(per_model, variants),
            skip_invalid=cfg.skip_invalid,
            finish=finish,
            check=check,
            span=span,
            column_types=cfg.column_types,
        )
    if cfg.request or cfg.confidence:
        return Source(
            cfg.input_path,
            mapper=request_defaults_mapper(cfg),
            skip_invalid=cfg.skip_invalid,
            finish=finish,
            check=check,
            span=span,
            column_types=cfg.column_types,
        )
    return Source(
        cfg.input_path,
        default_model=cfg.default_model,
        skip_invalid=cfg.skip_invalid,
        finish=finish,
        check=check,
        span=span,
        column_types=cfg.column_types,
    )


def as_sent(body: dict[str, Any], stream: bool, api: str = CHAT) -> dict[str, Any]:
    """The body as batchrun sends it: streamed chat bodies ask for a usage chunk.

    ``--stream`` streams chat and Responses requests; a Responses stream always ends
    with its usage (in ``response.completed``), and embeddings are never streamed.
    """
    if api == EMBEDDINGS:
        return body
    if api == RESPONSES:
        return body if not stream or body.get("stream") is True else {**body, "stream": True}
    if stream or body.get("stream") is True:
        from batchrun._transport.streaming import ensure_include_usage

        return ensure_include_usage(body)
    return body


def sent_request(req: Request, *, stream: bool) -> Request:
    """``req`` with its body as it will be sent."""
    body = as_sent(req.body, stream, req.api)
    return req if body is req.body else replace(req, body=body)
