"""OpenAI's error envelope, and the canned errors the simulator sends.

Every non-200 answer (and the error object injected into a 200 stream) has the
shape ``{"error": {"message", "type", "param", "code"}}``, as OpenAI's API does.

    >>> ApiError(400, "bad", code="invalid_value").body()["error"]["type"]
    'invalid_request_error'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchrun._input.bodies import json_kind


@dataclass(frozen=True, slots=True)
class ApiError:
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


_SERVER_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    504: "Gateway timeout.",
}


def injected_error(status: int) -> ApiError:
    """The error a real server would send with `status` (for fault injection)."""
    if status == 429:
        return ApiError(
            429,
            "Rate limit reached for requests. Please try again later.",
            type="requests",
            code="rate_limit_exceeded",
        )
    if status >= 500:
        message = _SERVER_MESSAGES.get(status, f"Server error {status}.")
        return ApiError(status, message, type="server_error")
    if status == 401:
        return invalid_key()
    return ApiError(status, f"Simulated client error {status}.", code=f"http_{status}")


def insufficient_quota() -> ApiError:
    """OpenAI's *final* 429: the account is out of credit; retrying cannot help."""
    return ApiError(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def invalid_key() -> ApiError:
    # never echo the presented key, not even partly
    return ApiError(
        401,
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def quota_exceeded(limited_by: str, limit: int | None, requested: int, wait: float) -> ApiError:
    unit = "tokens per min (TPM)" if limited_by == "tokens" else "requests per min (RPM)"
    if wait == float("inf"):
        message = f"Request too large on {unit}: Limit {limit}, Requested {requested}."
    else:
        message = (
            f"Rate limit reached on {unit}: Limit {limit}, Requested {requested}. "
            f"Please try again in {wait:.3f}s."
        )
    return ApiError(429, message, type=limited_by, code="rate_limit_exceeded")


def type_name(value: Any) -> str:
    """A JSON value's type as OpenAI's messages name it ("an array" for a list)."""
    return json_kind(value, array="an array")


def bad_param(param: str, code: str | None, message: str) -> ApiError:
    """OpenAI's 400 about one field of the body: its name (`param`), OpenAI's `code`
    for what is wrong with it, and OpenAI's wording."""
    return ApiError(400, message, param=param, code=code)


def missing_parameter(name: str) -> ApiError:
    """OpenAI's 400 for a required field the body lacks."""
    return bad_param(name, "missing_required_parameter", f"Missing required parameter: '{name}'.")


def invalid_type(param: str, expected: str, *, code: str | None = "invalid_type") -> ApiError:
    """OpenAI's 400 for a field of the wrong type; `expected` as OpenAI words it ("a
    string", "an object, but got an array instead")."""
    return bad_param(param, code, f"Invalid type for '{param}': expected {expected}.")


def invalid_value(param: str, value: Any, supported: str) -> ApiError:
    """OpenAI's 400 for a field whose value is not one it supports; `supported` is the
    quoted list as OpenAI words it for that field (``"'asc' and 'desc'"``)."""
    return bad_param(
        param, "invalid_value", f"Invalid value: '{value}'. Supported values are: {supported}."
    )


def model_problem(model: Any, *, name_type: bool = False) -> ApiError | None:
    """OpenAI's 400 for a body's ``model`` that is missing, empty or not a string, else
    None. ``name_type``: the message says what was sent instead (the chat API's does,
    with code ``invalid_type``; the embeddings and Responses APIs' do not)."""
    if model is None or model == "":
        return ApiError(
            400,
            "you must provide a model parameter",
            param="model",
            code="missing_required_parameter",
        )
    if isinstance(model, str):
        return None
    if not name_type:
        return invalid_type("model", "a string", code=None)
    return invalid_type("model", f"a string, but got {type_name(model)} instead")
