"""A pool's per-endpoint figures count the same live and from the lines read back
(`batchrun._output.endpoints`): what a resume's checkpoint holds equals a recount."""

from __future__ import annotations

from batchrun._models import Attempt, Outcome, Request
from batchrun._output.endpoints import EndpointTally, bucket_of, count_route
from batchrun._output.lines import decode, encode

BODY = {
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def outcomes() -> list[Outcome]:
    answered = Outcome.success(
        Request("r1", {"model": "m"}, row=0),
        status=200,
        request_id=None,
        body=BODY,
        attempts=[Attempt(None, "timeout", "read timed out"), Attempt(503, "server_error"),
                  Attempt(200, "ok")],
        latency_s=0.045749999,  # on a bucket's edge once rounded to 0.1 ms
        body_hash="00000000000000ff",
    )  # fmt: skip
    answered.route = ["c", "c", "a"]
    failed = Outcome.failure(
        Request("r2", {"model": "m"}, row=1),
        code="invalid_api_key",
        message="no",
        attempts=[Attempt(429, "rate_limited", "slow"), Attempt(401, "invalid_api_key", "no")],
        status=401,
        body_hash="00000000000000fe",
    )
    failed.route = ["a", "d"]
    return [answered, failed]


def test_counted_live_and_read_back_alike() -> None:
    live: dict[str, EndpointTally] = {}
    back: dict[str, EndpointTally] = {}
    for outcome in outcomes():
        count_route(live, outcome)
        line = encode(outcome, "http://x/v1")
        again = decode(line)
        assert again.route == outcome.route
        count_route(back, again)
    assert {n: e.to_state() for n, e in live.items()} == {n: e.to_state() for n, e in back.items()}
    figures = {n: e.to_dict() for n, e in live.items()}
    assert figures["c"]["requests"] == 2 and figures["c"]["failures"] == {
        "503": 1,
        "no_response": 1,
    }
    assert figures["a"]["answered"] == 1 and figures["a"]["rate_limited"] == 1
    assert figures["a"]["usage"]["total_tokens"] == 5
    assert figures["d"] == {**figures["d"], "failed": 1, "failures": {"401": 1}}


def test_latency_percentiles_are_within_five_percent() -> None:
    tally = EndpointTally()
    times = [0.010 * (i + 1) for i in range(100)]  # 10 ms .. 1 s
    for t in times:
        tally.finished(True, t, "m", None)
    p50, p95 = tally.percentile(0.5), tally.percentile(0.95)
    assert p50 is not None and p95 is not None
    assert abs(p50 - 0.5) <= 0.05 * 0.5 + 0.01
    assert abs(p95 - 0.95) <= 0.05 * 0.95 + 0.01
    assert bucket_of(0.045749999) == bucket_of(0.0457)


def test_a_batch_answer_counts_in_its_endpoints_batch_tokens_live_and_from_a_checkpoint() -> None:
    batch = Outcome.success(
        Request("r3", {"model": "m"}, row=2),
        status=200,
        request_id=None,
        body=BODY,
        attempts=[Attempt(200, "ok")],
        body_hash="00000000000000fd",
    )
    batch.via, batch.latency_s, batch.route = "batch", None, ["b"]
    live: dict[str, EndpointTally] = {}
    for outcome in [*outcomes(), batch]:
        count_route(live, outcome)
    back: dict[str, EndpointTally] = {}
    count_route(back, decode(encode(batch, "http://b/v1")))
    assert back["b"].to_state() == live["b"].to_state()
    state = live["b"].to_state()
    assert state["batch_by_model"]["m"]["total_tokens"] == 5
    restored = EndpointTally.from_state(state)
    assert restored.to_state() == state and restored.batch_usage.total.total_tokens == 5
    assert "batch_by_model" not in live["a"].to_state()  # online answers only
    merged = EndpointTally()
    merged.merge(restored)
    assert merged.to_state() == state
