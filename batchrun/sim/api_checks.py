"""The checks of a Files or Batches API request that answer 400/404 at once, as OpenAI's
do, with OpenAI's messages, params and codes; and the cursor-paginated list page. Pure:
no store, no clock (`batchrun.sim.file_routes` and `batchrun.sim.batch_routes` use them).

    >>> check_create({"input_file_id": "file-1", "endpoint": "/v1/chat/completions"}).param
    'completion_window'
    >>> page_limit("0", 20, 100).code
    'integer_below_min_value'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from batchrun.sim.batch_input import ENDPOINTS
from batchrun.sim.envelope import (
    ApiError,
    bad_param,
    invalid_type,
    invalid_value,
    missing_parameter,
)

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
WINDOWS = ("24h",)
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
EXPIRY_SECONDS = (3600, 2_592_000)


def no_file(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id")


def no_batch(batch_id: str) -> ApiError:
    return ApiError(404, f"No such Batch object: {batch_id}", param="batch_id")


def check_upload(
    content: bytes | None, filename: str, purpose: str | None, fields: dict[str, str]
) -> ApiError | None:
    if content is None:
        return missing_parameter("file")
    if purpose is None:
        return missing_parameter("purpose")
    if purpose not in PURPOSES:
        return ApiError(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'")
    if purpose == "batch" and not filename.endswith(".jsonl"):
        return ApiError(400, "Invalid file format for Batch API. Must be .jsonl")
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is not None or seconds is not None:
        if anchor != "created_at":
            return invalid_value("expires_after.anchor", anchor, "'created_at'")
        return check_seconds(seconds, "expires_after.seconds")
    return None


def check_seconds(value: Any, param: str) -> ApiError | None:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        return invalid_type(param, "an integer", code=None)
    low, high = EXPIRY_SECONDS
    if not low <= seconds <= high:
        return bad_param(
            param,
            "invalid_value",
            f"Invalid '{param}': expected a value between {low} and {high}, but got "
            f"{seconds} instead.",
        )
    return None


def check_create(body: dict[str, Any]) -> ApiError | None:
    for name in ("input_file_id", "endpoint", "completion_window"):
        if body.get(name) is None:
            return missing_parameter(name)
        if not isinstance(body[name], str):
            return invalid_type(name, "a string")
    if body["endpoint"] not in ENDPOINTS:
        supported = ", ".join(f"'{e}'" for e in ENDPOINTS)
        return invalid_value("endpoint", body["endpoint"], supported)
    if body["completion_window"] not in WINDOWS:
        return invalid_value("completion_window", body["completion_window"], "'24h'")
    expires = body.get("output_expires_after")
    if expires is not None:
        if not isinstance(expires, dict) or expires.get("anchor") != "created_at":
            return bad_param(
                "output_expires_after",
                "invalid_value",
                "Invalid 'output_expires_after': expected {'anchor': 'created_at', 'seconds': N}.",
            )
        error = check_seconds(expires.get("seconds"), "output_expires_after.seconds")
        if error is not None:
            return error
    return check_metadata(body.get("metadata"))


def check_metadata(metadata: Any) -> ApiError | None:
    """OpenAI's metadata rules: at most 16 pairs, keys <= 64 and values <= 512 chars."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return invalid_type("metadata", "an object")
    if len(metadata) > MAX_METADATA_PAIRS:
        return bad_param(
            "metadata",
            "object_above_max_properties",
            f"Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(metadata)} "
            "properties instead.",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            return bad_param(
                "metadata",
                "string_above_max_length",
                f"Invalid 'metadata': key '{key[:20]}...' is longer than {MAX_METADATA_KEY} "
                "characters.",
            )
        if not isinstance(value, str):
            return invalid_type(f"metadata.{key}", "a string")
        if len(value) > MAX_METADATA_VALUE:
            return bad_param(
                f"metadata.{key}",
                "string_above_max_length",
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(value)} "
                "instead.",
            )
    return None


def page_limit(raw: str | None, default: int, highest: int) -> int | ApiError:
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        return invalid_type("limit", f"an integer, but got '{raw}' instead")
    if limit < 1:
        return bad_param(
            "limit",
            "integer_below_min_value",
            f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got "
            f"{limit} instead.",
        )
    if limit > highest:
        return bad_param(
            "limit",
            "integer_above_max_value",
            f"Invalid 'limit': integer above maximum value. Expected a value <= {highest}, "
            f"but got {limit} instead.",
        )
    return limit


class _Listed(Protocol):
    id: str

    def to_dict(self) -> dict[str, Any]: ...


def page(items: Sequence[_Listed], after: str | None, limit: int) -> dict[str, Any]:
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
