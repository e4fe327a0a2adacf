"""SSE decoding and chunk assembly (batchrun._transport.streaming): pure, no sockets."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchrun._transport.streaming import (
    SSEDecoder,
    StreamAssembler,
    assemble,
    ensure_include_usage,
)
from batchrun.errors import BadResponse, RetryableError


def sse(*chunks: dict[str, Any] | str, eol: str = "\n") -> bytes:
    """An SSE body: one ``data:`` event per chunk (dicts are JSON-encoded)."""
    out = []
    for chunk in chunks:
        payload = chunk if isinstance(chunk, str) else orjson.dumps(chunk).decode()
        out.append(f"data: {payload}{eol}{eol}")
    return "".join(out).encode()


def chunk(
    *choices: dict[str, Any], usage: dict[str, Any] | None = None, **head: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_1",
        "choices": list(choices),
        **head,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def delta(index: int = 0, finish: str | None = None, logprobs: Any = None, **d: Any) -> dict:
    return {"index": index, "delta": d, "logprobs": logprobs, "finish_reason": finish}


USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}

# A small but complete stream: role, multi-byte UTF-8 text, finish, usage chunk.
SIMPLE = sse(
    chunk(delta(role="assistant", content="", refusal=None)),
    chunk(delta(content="Héllo")),
    chunk(delta(content=", 世界 🙂")),
    chunk(delta(finish="stop")),
    chunk(usage=USAGE),
    "[DONE]",
)


def decode_all(pieces: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    out: list[str] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.close()


# --- SSEDecoder -----------------------------------------------------------------------


def test_decoder_yields_data_payloads() -> None:
    payloads = decode_all([SIMPLE])
    assert len(payloads) == 6
    assert payloads[-1] == "[DONE]"
    assert orjson.loads(payloads[2])["choices"][0]["delta"]["content"] == ", 世界 🙂"


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_split_point_gives_the_same_payloads(eol: str) -> None:
    tail = b": keep-alive\n\ndata: multi\ndata: line\n\n"
    body = (SIMPLE + tail).replace(b"\n", eol.encode())
    expected = decode_all([body])
    assert len(expected) == 7
    assert expected[-1] == "multi\nline"
    for cut in range(len(body) + 1):
        assert decode_all([body[:cut], body[cut:]]) == expected, cut


def test_three_way_splits_and_byte_by_byte() -> None:
    body = SIMPLE.replace(b"\n", b"\r\n")
    expected = decode_all([body])
    assert decode_all([body[i : i + 1] for i in range(len(body))]) == expected
    for a in range(0, len(body), 7):
        for b in range(a, len(body), 11):
            assert decode_all([body[:a], body[a:b], body[b:]]) == expected


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # The "\n" pairs with the "\r"; it must not count as the blank line ending the event.
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r") == ["a"]
    assert decoder.feed(b"\ndata: b\n\n") == ["b"]


def test_lone_cr_line_ends() -> None:
    assert decode_all([b"data: a\rdata: b\r\rdata: c\r\r"]) == ["a\nb", "c"]


def test_multiline_data_is_joined_with_newline() -> None:
    body = b'data: {"a":\ndata: 1}\n\ndata:x\ndata\ndata: y\n\n'
    assert decode_all([body]) == ['{"a":\n1}', "x\n\ny"]


def test_comments_and_other_fields_are_ignored() -> None:
    body = (
        b": OPENROUTER PROCESSING\n\n"
        b"event: message\nid: 7\nretry: 1000\ndataset: no\ndata: one\n\n"
        b"event: ping\n\n"
        b":\n"
        b"data: two\n: mid-event comment\n\n"
    )
    assert decode_all([body]) == ["one", "two"]


def test_only_one_leading_space_is_dropped() -> None:
    assert decode_all([b"data:  two spaces\n\ndata:none\n\n"]) == [" two spaces", "none"]


def test_empty_data_field_still_dispatches() -> None:
    assert decode_all([b"data:\n\n"]) == [""]


def test_utf8_split_inside_a_character() -> None:
    body = "data: 世界\n\n".encode()
    cut = body.index("界".encode()) + 1  # in the middle of the 3-byte sequence
    decoder = SSEDecoder()
    assert decoder.feed(body[:cut]) == []
    assert decoder.feed(body[cut:]) == ["世界"]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode_all([b"data: \xff\xfe\n\n"]) == ["\ufffd\ufffd"]


def test_leading_bom_is_dropped() -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    assert decode_all([body]) == ["x"]
    assert decode_all([body[:1], body[1:2], body[2:]]) == ["x"]


def test_close_flushes_event_without_blank_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: [DONE]\n") == ["a"]
    assert decoder.close() == ["[DONE]"]
    assert decoder.close() == []


def test_close_flushes_unterminated_last_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == ["[DONE]"]


def test_empty_feed_is_harmless() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"") == []
    assert decoder.close() == []


def test_large_line_in_many_pieces() -> None:
    text = "x" * 200_000
    body = f"data: {text}\n\n".encode()
    pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    assert decode_all(pieces) == [text]


# --- StreamAssembler --------------------------------------------------------------------


def run(body: bytes, **kwargs: Any) -> dict[str, Any]:
    return assemble([body], **kwargs)


def test_simple_stream_becomes_a_chat_completion() -> None:
    result = run(SIMPLE)
    assert result == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Héllo, 世界 🙂", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
        "system_fingerprint": "fp_1",
    }


def test_same_result_at_every_split_point() -> None:
    expected = run(SIMPLE)
    for cut in range(len(SIMPLE) + 1):
        assert assemble([SIMPLE[:cut], SIMPLE[cut:]]) == expected


def test_missing_usage_is_none() -> None:
    body = sse(chunk(delta(content="hi", finish="stop")), "[DONE]")
    assert run(body)["usage"] is None


def test_usage_on_a_content_chunk_last_non_null_wins() -> None:
    body = sse(
        chunk(delta(content="a"), usage={"prompt_tokens": 1, "completion_tokens": 1}),
        chunk(delta(content="b", finish="stop"), usage=USAGE),
        chunk(usage=None),
        "[DONE]",
    )
    assert run(body)["usage"] == USAGE


def test_service_tier_kept_when_present() -> None:
    body = sse(chunk(delta(content="a", finish="stop"), service_tier="default"), "[DONE]")
    assert run(body)["service_tier"] == "default"
    assert "service_tier" not in run(sse(chunk(delta(content="a", finish="stop")), "[DONE]"))


def test_no_content_deltas_gives_none_content() -> None:
    body = sse(chunk(delta(role="assistant")), chunk(delta(finish="length")), "[DONE]")
    message = run(body)["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None}


def test_parallel_tool_calls_interleaved_by_index() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"index": index, **fields}

    body = sse(
        chunk(delta(role="assistant", content=None)),
        chunk(
            delta(
                tool_calls=[
                    call(0, id="call_a", type="function", function={"name": "get", "arguments": ""})
                ]
            )
        ),
        chunk(
            delta(
                tool_calls=[
                    call(1, id="call_b", type="function", function={"name": "put", "arguments": ""})
                ]
            )
        ),
        chunk(delta(tool_calls=[call(0, function={"arguments": '{"ci'})])),
        chunk(delta(tool_calls=[call(1, function={"arguments": '{"k": '})])),
        chunk(delta(tool_calls=[call(0, function={"arguments": 'ty": "Paris"}'})])),
        chunk(delta(tool_calls=[call(1, function={"arguments": "1}"})])),
        chunk(delta(finish="tool_calls")),
        "[DONE]",
    )
    message = run(body)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get", "arguments": '{"city": "Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "put", "arguments": '{"k": 1}'}},
    ]
    assert run(body)["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_calls_without_index_split_by_id() -> None:
    body = sse(
        chunk(delta(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": "{"}}])),
        chunk(delta(tool_calls=[{"function": {"arguments": "}"}}])),
        chunk(delta(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "[]"}}])),
        chunk(delta(finish="tool_calls")),
        "[DONE]",
    )
    calls = run(body)["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("a", "f", "{}"),
        ("b", "g", "[]"),
    ]


def test_repeated_tool_name_is_not_doubled() -> None:
    body = sse(
        chunk(delta(tool_calls=[{"index": 0, "id": "a", "function": {"name": "f"}}])),
        chunk(delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{}"}}])),
        chunk(delta(finish="tool_calls")),
        "[DONE]",
    )
    assert run(body)["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


def test_legacy_function_call_assembled() -> None:
    body = sse(
        chunk(delta(role="assistant", function_call={"name": "lookup", "arguments": ""})),
        chunk(delta(function_call={"arguments": '{"q":'})),
        chunk(delta(function_call={"arguments": ' "x"}'})),
        chunk(delta(finish="function_call")),
        "[DONE]",
    )
    message = run(body)["choices"][0]["message"]
    assert message["function_call"] == {"name": "lookup", "arguments": '{"q": "x"}'}


def test_n2_interleaved_choices_sorted_by_index() -> None:
    body = sse(
        chunk(delta(1, role="assistant", content="")),
        chunk(delta(0, role="assistant", content="")),
        chunk(delta(1, content="Mi")),
        chunk(delta(0, content="Gr")),
        chunk(delta(0, content="ey")),
        chunk(delta(1, content="lo")),
        chunk(delta(1, finish="stop")),
        chunk(delta(0, finish="length")),
        chunk(usage=USAGE),
        "[DONE]",
    )
    result = run(body, expected_choices=2)
    assert [
        (c["index"], c["message"]["content"], c["finish_reason"]) for c in result["choices"]
    ] == [
        (0, "Grey", "length"),
        (1, "Milo", "stop"),
    ]


def test_expected_choices_missing_is_truncated() -> None:
    body = sse(chunk(delta(0, content="a", finish="stop")), "[DONE]")
    with pytest.raises(BadResponse) as info:
        run(body, expected_choices=2)
    assert info.value.code == "stream_truncated"
    assert "[1]" in info.value.message


def test_reasoning_content_concatenated() -> None:
    body = sse(
        chunk(delta(role="assistant", content=None, reasoning_content="Let me ")),
        chunk(delta(content=None, reasoning_content="think.")),
        chunk(delta(content="42", reasoning_content=None)),
        chunk(delta(finish="stop")),
        "[DONE]",
    )
    message = run(body)["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think."
    assert message["content"] == "42"


def test_refusal_concatenated() -> None:
    body = sse(
        chunk(delta(role="assistant", content=None, refusal="I can't ")),
        chunk(delta(refusal="help with that.")),
        chunk(delta(finish="stop")),
        "[DONE]",
    )
    message = run(body)["choices"][0]["message"]
    assert message["refusal"] == "I can't help with that."
    assert message["content"] is None


def test_logprobs_concatenated_across_chunks() -> None:
    def lp(token: str) -> dict[str, Any]:
        return {"token": token, "logprob": -0.1, "bytes": list(token.encode()), "top_logprobs": []}

    body = sse(
        chunk(delta(content="Hi", logprobs={"content": [lp("Hi")], "refusal": None})),
        chunk(delta(content=" there", logprobs={"content": [lp(" there")], "refusal": None})),
        chunk(delta(finish="stop", logprobs=None)),
        "[DONE]",
    )
    logprobs = run(body)["choices"][0]["logprobs"]
    assert logprobs == {"content": [lp("Hi"), lp(" there")], "refusal": None}


def test_refusal_logprobs_concatenated() -> None:
    body = sse(
        chunk(delta(refusal="No", logprobs={"content": None, "refusal": [{"token": "No"}]})),
        chunk(delta(refusal=".", logprobs={"content": None, "refusal": [{"token": "."}]})),
        chunk(delta(finish="stop")),
        "[DONE]",
    )
    logprobs = run(body)["choices"][0]["logprobs"]
    assert logprobs == {"content": None, "refusal": [{"token": "No"}, {"token": "."}]}


def test_audio_deltas_assembled() -> None:
    body = sse(
        chunk(delta(role="assistant", audio={"id": "audio_1", "transcript": "Hel"})),
        chunk(delta(audio={"id": "audio_1", "data": "AAA", "transcript": "lo"})),
        chunk(delta(audio={"data": "BBB", "expires_at": 99})),
        chunk(delta(finish="stop")),
        "[DONE]",
    )
    audio = run(body)["choices"][0]["message"]["audio"]
    assert audio == {"id": "audio_1", "transcript": "Hello", "data": "AAABBB", "expires_at": 99}


def test_unknown_delta_fields_are_merged() -> None:
    body = sse(
        chunk(delta(content="a", reasoning="th", annotations=[{"n": 1}])),
        chunk(delta(content="b", reasoning="ink", annotations=[{"n": 2}])),
        chunk(delta(finish="stop"), provider="x"),
        "[DONE]",
    )
    message = run(body)["choices"][0]["message"]
    assert message["reasoning"] == "think"
    assert message["annotations"] == [{"n": 1}, {"n": 2}]


def test_result_is_repeatable_and_independent() -> None:
    asm = StreamAssembler()
    for payload in decode_all([SIMPLE]):
        asm.add(payload)
    first = asm.result()
    first["choices"][0]["message"]["content"] = "changed"
    assert asm.result()["choices"][0]["message"]["content"] == "Héllo, 世界 🙂"


# --- failures ---------------------------------------------------------------------------


def test_truncated_stream_is_bad_response() -> None:
    body = sse(chunk(delta(role="assistant", content="Hel")), chunk(delta(content="lo")))
    with pytest.raises(BadResponse) as info:
        run(body)
    error = info.value
    assert error.code == "stream_truncated"
    assert isinstance(error, RetryableError)
    # The partial completion rides along for inspection.
    assert error.body["choices"][0]["message"]["content"] == "Hello"


def test_torn_in_the_middle_of_a_chunk() -> None:
    body = SIMPLE[: SIMPLE.index(b"\xe4\xb8\x96") + 1]  # cut inside a JSON chunk
    with pytest.raises(BadResponse) as info:
        run(body)
    assert info.value.code == "bad_stream_chunk"


def test_torn_at_every_point_is_never_a_success() -> None:
    done_at = SIMPLE.index(b"data: [DONE]")
    for cut in range(done_at):
        with pytest.raises(BadResponse):
            run(SIMPLE[:cut])


def test_finish_reason_without_done_needs_opt_in() -> None:
    body = sse(chunk(delta(content="a", finish="stop")), chunk(usage=USAGE))
    with pytest.raises(BadResponse) as info:
        run(body)
    assert info.value.code == "stream_truncated"
    assert "[DONE]" in info.value.message
    result = run(body, require_done=False)
    assert result["choices"][0]["finish_reason"] == "stop"
    assert result["usage"] == USAGE


def test_done_without_finish_reason_is_truncated() -> None:
    body = sse(chunk(delta(content="a")), "[DONE]")
    with pytest.raises(BadResponse) as info:
        run(body)
    assert info.value.code == "stream_truncated"
    assert "finish_reason" in info.value.message


def test_one_of_two_choices_unfinished_is_truncated() -> None:
    body = sse(chunk(delta(0, content="a", finish="stop")), chunk(delta(1, content="b")), "[DONE]")
    with pytest.raises(BadResponse, match=r"\[1\]"):
        run(body, require_done=False)


def test_usage_only_stream_is_truncated() -> None:
    body = sse(chunk(usage=USAGE), "[DONE]")
    with pytest.raises(BadResponse) as info:
        run(body, require_done=False)
    assert info.value.code == "stream_truncated"
    assert info.value.body["usage"] == USAGE


def test_empty_stream_is_truncated() -> None:
    with pytest.raises(BadResponse) as info:
        run(b"")
    assert info.value.code == "stream_truncated"


def test_error_object_in_stream() -> None:
    error = {"message": "upstream overloaded", "type": "server_error", "code": "overloaded"}
    body = sse(chunk(delta(content="a")), {"error": error})
    with pytest.raises(BadResponse) as info:
        run(body)
    assert info.value.code == "overloaded"
    assert "upstream overloaded" in info.value.message
    assert info.value.body == error


def test_error_code_falls_back_to_type_then_generic() -> None:
    asm = StreamAssembler()
    with pytest.raises(BadResponse) as info:
        asm.add('{"error": {"message": "m", "type": "rate_limit_error", "code": null}}')
    assert info.value.code == "rate_limit_error"
    with pytest.raises(BadResponse) as info:
        asm.add('{"error": {"message": "m", "code": 500}}')
    assert info.value.code == "500"
    with pytest.raises(BadResponse) as info:
        asm.add('{"error": "boom"}')
    assert (info.value.code, info.value.body) == ("stream_error", "boom")


def test_vllm_style_error_chunk() -> None:
    asm = StreamAssembler()
    with pytest.raises(BadResponse) as info:
        asm.add(
            '{"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}'
        )
    assert info.value.code == "400"
    assert "too long" in info.value.message


def test_null_error_field_is_not_an_error() -> None:
    asm = StreamAssembler()
    asm.add(orjson.dumps(chunk(delta(content="a", finish="stop"), error=None)).decode())
    asm.add("[DONE]")
    assert asm.result()["choices"][0]["message"]["content"] == "a"


@pytest.mark.parametrize("payload", ["not json", '{"a": ', "[1, 2]", "42"])
def test_non_json_chunk(payload: str) -> None:
    with pytest.raises(BadResponse) as info:
        StreamAssembler().add(payload)
    assert info.value.code == "bad_stream_chunk"


def test_blank_payloads_and_data_after_done_are_ignored() -> None:
    asm = StreamAssembler()
    assert asm.add("  ") is False
    asm.add(orjson.dumps(chunk(delta(content="a", finish="stop"))).decode())
    asm.add(" [DONE] ")
    assert asm.add("garbage after done") is False
    assert asm.done
    assert asm.result()["choices"][0]["message"]["content"] == "a"


# --- first-token signal -----------------------------------------------------------------


def payloads_of(body: bytes) -> list[str]:
    return decode_all([body])


@pytest.mark.parametrize(
    ("first_output", "field"),
    [
        (delta(content="x"), "content"),
        (delta(reasoning_content="x"), "reasoning_content"),
        (delta(refusal="x"), "refusal"),
        (delta(tool_calls=[{"index": 0, "id": "c", "function": {"name": "f"}}]), "tool_calls"),
    ],
)
def test_first_token_signal(first_output: dict[str, Any], field: str) -> None:
    body = sse(
        chunk(delta(role="assistant", content="", refusal=None)),
        chunk(usage=None),
        chunk(first_output),
        chunk(delta(content="more")),
        chunk(delta(finish="stop")),
        "[DONE]",
    )
    asm = StreamAssembler()
    signals = [asm.add(p) for p in payloads_of(body)]
    assert signals == [False, False, True, False, False, False], field
    assert asm.has_output


def test_no_first_token_for_empty_output() -> None:
    asm = StreamAssembler()
    signals = [asm.add(p) for p in payloads_of(sse(chunk(delta(finish="stop")), "[DONE]"))]
    assert signals == [False, False]
    assert not asm.has_output


def test_first_token_with_n2_fires_once() -> None:
    asm = StreamAssembler()
    body = sse(chunk(delta(0, content="a"), delta(1, content="b")), chunk(delta(1, content="c")))
    assert [asm.add(p) for p in payloads_of(body)] == [True, False]


# --- ensure_include_usage ---------------------------------------------------------------


def test_include_usage_added() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    out = ensure_include_usage(body)
    assert out == {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert "stream" not in body  # input untouched


def test_include_usage_merged_into_existing_options() -> None:
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"other": 1}}
    out = ensure_include_usage(body)
    assert out["stream_options"] == {"other": 1, "include_usage": True}
    assert body["stream_options"] == {"other": 1}


@pytest.mark.parametrize("value", [False, True])
def test_explicit_include_usage_kept(value: bool) -> None:
    body = {"model": "m", "messages": [], "stream_options": {"include_usage": value}}
    out = ensure_include_usage(body)
    assert out["stream_options"] == {"include_usage": value}
    assert out["stream"] is True


def test_stream_false_becomes_true_and_null_options_replaced() -> None:
    out = ensure_include_usage(
        {"model": "m", "messages": [], "stream": False, "stream_options": None}
    )
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}


def test_key_order_and_other_fields_kept() -> None:
    body = {"model": "m", "messages": [], "web_search_options": {}, "n": 2}
    out = ensure_include_usage(body)
    assert list(out)[:4] == ["model", "messages", "web_search_options", "n"]
