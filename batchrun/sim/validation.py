"""Reject what OpenAI rejects (and only that) with its 400 envelope.

The checks are the ones every client trips over: a body that is not a JSON
object, no model, no or empty messages, a message without a valid role (an
embeddings or Responses body: `batchrun.sim.embeddings`, `batchrun.sim.responses`). Unknown
fields and any content-part type are accepted, as relays differ in what they add.

    >>> parse_body(b'{"model": "m", "messages": []}')[1].code
    'empty_array'
"""

from __future__ import annotations

from typing import Any

import orjson

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES
from batchrun.sim.content import VALID_ROLES
from batchrun.sim.envelope import (
    ApiError,
    bad_param,
    invalid_type,
    invalid_value,
    missing_parameter,
    model_problem,
    type_name,
)

_ROLE_LIST = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"


def parse_body(raw: bytes, api: str = CHAT) -> tuple[dict[str, Any] | None, ApiError | None]:
    """The parsed body, or the 400 error to answer with (``api``: whose body rules)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly.)",
            code="invalid_json",
        )
    if not isinstance(body, dict):
        return None, ApiError(
            400,
            f"Invalid body: expected an object, but got {type_name(body)} instead.",
            code="invalid_type",
        )
    return body, check_api_body(body, api)


def check_api_body(body: dict[str, Any], api: str = CHAT) -> ApiError | None:
    """`check_body` for chat, the embeddings or Responses rules for those APIs."""
    if api == EMBEDDINGS:
        from batchrun.sim.embeddings import check_embeddings_body

        return check_embeddings_body(body)
    if api == RESPONSES:
        from batchrun.sim.responses import check_responses_body

        return check_responses_body(body)
    return check_body(body)


def check_body(body: dict[str, Any]) -> ApiError | None:
    problem = model_problem(body.get("model"), name_type=True)
    if problem is not None:
        return problem
    messages = body.get("messages")
    if messages is None:
        return missing_parameter("messages")
    if not isinstance(messages, list):
        return invalid_type(
            "messages", f"an array of objects, but got {type_name(messages)} instead"
        )
    if not messages:
        return bad_param(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum "
            "length 1, but got an empty array instead.",
        )
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return invalid_type(where, f"an object, but got {type_name(message)} instead")
        role = message.get("role")
        if role is None:
            return missing_parameter(f"{where}.role")
        if not isinstance(role, str) or role not in VALID_ROLES:
            shown = role if isinstance(role, str) else orjson.dumps(role).decode()
            return invalid_value(f"{where}.role", shown, _ROLE_LIST)
    return None
