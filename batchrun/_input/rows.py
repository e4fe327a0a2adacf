"""Dataset rows -> requests, through the job's prompt template.

The id comes from the job's id column (``[input] id_column``), else ``row-<n>``
(``<file>:row-<n>`` in an input of many files: `batchrun._input.sources.Source`).
Columns are not copied into the request: results.parquet re-reads the dataset
and joins on the id, so result lines stay small.

    >>> mapper = dataset_mapper(cfg)               # doctest: +SKIP
    >>> mapper({"id": 7, "text": "great"}, 1, "line 1").custom_id  # doctest: +SKIP
    '7'
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from batchrun._apis import CHAT, EMBEDDINGS, defaults_for
from batchrun._input.bodies import embeddings_problem, responses_problem
from batchrun._input.sources import RowMapper
from batchrun._models import Request
from batchrun._settings import Settings
from batchrun.errors import ConfigError, InputError


def dataset_mapper(cfg: Settings) -> RowMapper:
    from batchrun._templating.text import body_builder

    build = body_builder(cfg)
    if build is None:
        raise ConfigError("dataset job without a [prompt] template")
    id_column = cfg.id_column
    path = cfg.input_path
    api = cfg.api
    check = None if api == CHAT else embeddings_problem if api == EMBEDDINGS else responses_problem

    def mapper(obj: Any, row: int, where: str, *, name: str | None = None) -> Request:
        if not isinstance(obj, dict):
            raise InputError(path, where, f"expected a JSON object, got {type(obj).__name__}")
        if id_column:
            value = obj.get(id_column)
            if value is None or value == "":
                raise InputError(path, where, f"id column {id_column!r} is missing or empty")
            custom_id = str(value)
        else:
            custom_id = name or f"row-{row}"
        body = build(obj, where)
        if check is not None:
            problem = check(body)
            if problem is not None:
                raise InputError(path, where, problem)
        return Request(custom_id, body, row, api=api)

    return mapper


def request_defaults_mapper(cfg: Settings) -> RowMapper:
    """Plain request-file jobs: the job's [request] values fill what a body lacks."""
    from batchrun._confidence import with_request_fields
    from batchrun._input.sources import request_from_row
    from batchrun._templating.text import apply_defaults

    defaults = with_request_fields(cfg.request, cfg.confidence)
    path = cfg.input_path

    def mapper(obj: Any, row: int, where: str, *, name: str | None = None) -> Request:
        req = request_from_row(
            obj, row, where, default_model=cfg.default_model, path=path, name=name
        )
        if not defaults:
            return req
        return replace(req, body=apply_defaults(req.body, defaults_for(req.api, defaults)))

    return mapper
