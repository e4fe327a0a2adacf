"""What the simulator answers to ``POST /v1/responses``: a Responses API object.

Pure: no I/O, no clock. The answer is the chat reply (`batchrun.sim.content`) to the
chat request the Responses body stands for (`chat_view`: ``instructions`` a system
message, ``input`` the messages, ``text.format`` the response format,
``max_output_tokens`` the token limit, flat function tools as chat tools, and
``reasoning.effort``), shaped as a ``response`` object: a ``reasoning`` item for a
reasoning model, a ``message`` item with one ``output_text`` part (or
``function_call`` items), status ``incomplete`` with ``incomplete_details.reason =
"max_output_tokens"`` when the limit cut it, and usage in the Responses shape
(``input_tokens``, ``output_tokens`` and their details). A streamed answer is the
real event sequence (`response_events`), ending with ``response.completed`` (or
``response.incomplete``) carrying the whole object.

    >>> body = {"model": "gpt-4.1-mini", "input": "Sentiment of: I love it"}
    >>> reply = make_reply(chat_view(body))
    >>> response_object(reply, body, "resp_1", 0)["output"][0]["content"][0]["text"]
    'positive'
"""

from __future__ import annotations

from typing import Any

from batchrun._apis import RESPONSES
from batchrun._pacing import tokens
from batchrun.sim.content import Reply, make_reply
from batchrun.sim.envelope import (
    ApiError,
    bad_param,
    invalid_type,
    missing_parameter,
    model_problem,
)
from batchrun.sim.stream import split_text

_UNSUPPORTED = {
    "messages": "'messages' is not a Responses field: send the conversation as 'input'.",
    "response_format": "Unsupported parameter: 'response_format'. In the Responses API, "
    "this parameter has moved to 'text.format'.",
    "max_tokens": "Unsupported parameter: 'max_tokens'. Use 'max_output_tokens' instead.",
}


def check_responses_body(body: dict[str, Any]) -> ApiError | None:
    """The 400 OpenAI answers to a bad Responses body, else None."""
    problem = model_problem(body.get("model"))
    if problem is not None:
        return problem
    for field, message in _UNSUPPORTED.items():
        if field in body:
            return ApiError(400, message, param=field, code="unsupported_parameter")
    items = body.get("input")
    if items is None:
        return missing_parameter("input")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                return invalid_type(f"input[{index}]", "an object")
    elif not isinstance(items, str):
        return invalid_type("input", "a string or an array of input items")
    limit = body.get("max_output_tokens")
    if limit is not None and (type(limit) is not int or limit < 1):
        return bad_param(
            "max_output_tokens",
            "invalid_value",
            f"Invalid 'max_output_tokens': expected a positive integer, got {limit!r}.",
        )
    return None


def chat_view(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body a (valid) Responses body stands for."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for item in items:
            if item.get("type", "message") == "message":
                messages.append({"role": item.get("role", "user"), "content": item.get("content")})
            elif item.get("type") == "function_call_output":
                messages.append({"role": "tool", "content": str(item.get("output", ""))})
    view: dict[str, Any] = {"model": body["model"], "messages": messages}
    limit = body.get("max_output_tokens")
    if isinstance(limit, int):
        view["max_completion_tokens"] = limit
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        view["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")},
        }
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        view["response_format"] = {"type": "json_object"}
    tools = [
        {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
        for tool in body.get("tools") or ()
        if isinstance(tool, dict) and tool.get("type") == "function" and "name" in tool
    ]
    if tools:
        view["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("name"):
            view["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
        elif choice is not None:
            view["tool_choice"] = choice
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        view["reasoning_effort"] = reasoning["effort"]
    return view


def response_reply(body: dict[str, Any], seed: int = 0, words: tuple[int, int] = (8, 40)) -> Reply:
    """The reply a (valid) Responses body gets (the same as its chat view's)."""
    return make_reply(chat_view(body), seed, words)


def response_object(
    reply: Reply, body: dict[str, Any], response_id: str, created: int
) -> dict[str, Any]:
    """The ``response`` object carrying ``reply`` (online answers and batch rows)."""
    choice = reply.choices[0]
    suffix = response_id.removeprefix("resp_")
    output: list[dict[str, Any]] = []
    if choice.reasoning is not None:
        output.append({"id": f"rs_{suffix}", "type": "reasoning", "summary": []})
    truncated = choice.finish_reason == "length"
    done = "incomplete" if truncated else "completed"
    for position, call in enumerate(choice.tool_calls):
        function = call["function"]
        output.append(
            {
                "id": f"fc_{suffix}{position}",
                "type": "function_call",
                "status": done,
                "call_id": call["id"],
                "name": function["name"],
                "arguments": function["arguments"],
            }
        )
    if choice.content:
        output.append(
            {
                "id": f"msg_{suffix}",
                "type": "message",
                "status": done,
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": choice.content,
                        "annotations": [],
                        "logprobs": [],
                    }
                ],
            }
        )
    usage = reply.usage
    prompt = tokens.prompt_tokens(body, api=RESPONSES)
    completion = usage["completion_tokens"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    text = body.get("text")
    reasoning = body.get("reasoning")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, dict) else None,
            "summary": None,
        },
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": min(cached, prompt)},
            "output_tokens": completion,
            "output_tokens_details": {
                "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"]
            },
            "total_tokens": prompt + completion,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_events(response: dict[str, Any], pieces: int = 6) -> list[dict[str, Any]]:
    """The events OpenAI streams for ``response`` (each with its ``type`` and
    ``sequence_number``), ending with ``response.completed`` or ``response.incomplete``."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    start = {**response, "status": "in_progress", "output": [], "usage": None}
    start["incomplete_details"] = None
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for index, item in enumerate(response["output"]):
        kind = item["type"]
        if kind == "message":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            for content_index, part in enumerate(item["content"]):
                at = {"item_id": item["id"], "output_index": index, "content_index": content_index}
                emit("response.content_part.added", **at, part={**part, "text": ""})
                for piece in split_text(part["text"], pieces):
                    emit("response.output_text.delta", **at, delta=piece, logprobs=[])
                emit("response.output_text.done", **at, text=part["text"], logprobs=[])
                emit("response.content_part.done", **at, part=part)
        elif kind == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in split_text(item["arguments"], pieces):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    emit(final, response=response)
    return events


__all__ = [
    "chat_view",
    "check_responses_body",
    "response_events",
    "response_object",
    "response_reply",
]
