"""The simulator's pure parts as plain functions: buckets, durations, schemas, chunks."""

from __future__ import annotations

import math
import statistics

import orjson
import pytest

from batchrun.sim import SimConfig
from batchrun.sim.content import is_reasoning_model, make_reply
from batchrun.sim.faults import FaultPlan
from batchrun.sim.quota import Quota, TokenBucket, format_reset, retry_after_headers
from batchrun.sim.stream import split_text, stream_chunks
from batchrun.sim.validation import parse_body


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- quota ---------------------------------------------------------------------------


def test_bucket_refills_continuously_up_to_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock)
    bucket.take(60)
    assert bucket.level() == 0
    assert bucket.wait_for(3) == pytest.approx(3.0)
    clock.t = 1.5
    assert bucket.level() == pytest.approx(1.5)
    assert bucket.seconds_to_full() == pytest.approx(58.5)
    clock.t = 1000
    assert bucket.level() == 60
    assert bucket.wait_for(61) == math.inf


def test_quota_takes_from_both_buckets_or_neither() -> None:
    clock = Clock()
    quota = Quota(rpm=10, tpm=100, now=clock)
    first = quota.admit("k", 80)
    assert first.allowed
    assert first.headers["x-ratelimit-remaining-requests"] == "9"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    assert first.headers["x-ratelimit-reset-tokens"] == "48s"
    refused = quota.admit("k", 50)
    assert not refused.allowed and refused.limited_by == "tokens"
    assert refused.retry_after == pytest.approx(30 * 60 / 100)
    assert refused.headers["x-ratelimit-remaining-requests"] == "9"  # nothing taken
    assert quota.admit("other", 50).allowed
    too_big = quota.admit("k", 101)
    assert not too_big.allowed and too_big.retry_after == math.inf


def test_quota_requests_limit_alone() -> None:
    clock = Clock()
    quota = Quota(rpm=2, tpm=None, now=clock)
    assert quota.admit("k", 10**9).allowed
    assert quota.admit("k", 10**9).allowed
    refused = quota.admit("k", 1)
    assert refused.limited_by == "requests" and refused.retry_after == pytest.approx(30)
    assert "x-ratelimit-limit-tokens" not in refused.headers


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (0.0004, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (59.9, "59.9s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.25, "1m30.25s"),
        (3723, "1h2m3s"),
    ],
)
def test_reset_durations_look_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_retry_after_headers_round_up() -> None:
    assert retry_after_headers(0.2) == {"Retry-After": "1", "retry-after-ms": "200"}
    assert retry_after_headers(2.0) == {"Retry-After": "2", "retry-after-ms": "2000"}
    assert retry_after_headers(0) == {"Retry-After": "0", "retry-after-ms": "0"}


# -- faults and latency -----------------------------------------------------------------


def test_latency_uniform_and_lognormal_are_seeded() -> None:
    uniform = FaultPlan(SimConfig(latency_ms=100, jitter_ms=20, seed=1))
    draws = [uniform.latency() for _ in range(500)]
    assert all(0.08 <= d <= 0.12 for d in draws)
    replay = FaultPlan(SimConfig(latency_ms=100, jitter_ms=20, seed=1))
    assert [replay.latency() for _ in range(5)] == draws[:5]
    lognormal = FaultPlan(SimConfig(latency_ms=100, jitter_ms=50, jitter="lognormal", seed=2))
    draws = [lognormal.latency() for _ in range(4000)]
    assert all(d > 0 for d in draws)
    assert statistics.fmean(draws) == pytest.approx(0.1, rel=0.08)
    assert statistics.pstdev(draws) == pytest.approx(0.05, rel=0.2)
    assert FaultPlan(SimConfig()).latency() == 0


def test_scripts_count_attempts_per_body_and_reset() -> None:
    plan = FaultPlan(SimConfig(fail_first={"m1": [429, "ok", 503]}))
    body_a, body_b = {"q": "m1 a"}, {"q": "m1 b"}
    raw_a, raw_b = orjson.dumps(body_a), orjson.dumps(body_b)
    assert plan.next_step(raw_a, body_a) == 429
    assert plan.next_step(raw_b, body_b) == 429
    assert plan.next_step(raw_a, body_a) is None  # "ok" plays as a normal answer
    assert plan.next_step(raw_a, body_a) == 503
    assert plan.next_step(raw_a, body_a) is None
    plan.reset()
    assert plan.next_step(raw_a, body_a) == 429
    unicode_body = {"q": "ligne-é"}
    plan.script("ligne-é", [500])
    assert plan.next_step(b'{"q":"ligne-\\u00e9"}', unicode_body) == 500


# -- content and chunks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("o1", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("azure/o3", True),
        ("deepseek-r1-distill", True),
        ("claude-thinking", True),
        ("QwQ-32B", True),
        ("gpt-4o", False),
        ("gpt-4.1-mini", False),
        ("llama-3-70b", False),
    ],
)
def test_reasoning_model_names(model: str, reasoning: bool) -> None:
    assert is_reasoning_model(model) is reasoning


def test_split_text_joins_back() -> None:
    for text in ["", "x", "a b", "  lead and trail  ", '{"k":"v","n":[1,2,3]}', "one two " * 20]:
        parts = split_text(text, 6)
        assert "".join(parts) == text
        assert len(parts) <= 6 and all(parts)


def test_stream_chunks_interleave_choices() -> None:
    body = {"model": "m", "n": 2, "messages": [{"role": "user", "content": "Tell me more."}]}
    reply = make_reply(body)
    chunks = stream_chunks(
        reply, completion_id="c", created=1, model="m", fingerprint="fp", include_usage=True
    )
    indexes = [c["choices"][0]["index"] for c in chunks[:-1]]
    assert indexes[:4] == [0, 1, 0, 1]
    finals = [c for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in finals] == [
        (0, {}),
        (1, {}),
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == reply.usage


def test_reasoning_eats_the_budget_first() -> None:
    body = {
        "model": "o3",
        "max_completion_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    choice = make_reply(body).choices[0]
    assert choice.finish_reason == "length" and choice.content == ""
    assert make_reply(body).usage["completion_tokens_details"]["reasoning_tokens"] == 5


def test_parse_body_accepts_extra_fields() -> None:
    body, error = parse_body(
        b'{"model": "m", "messages": [{"role": "user", "content": "x", "extra": 1}], "zzz": 2}'
    )
    assert error is None and body is not None and body["zzz"] == 2
    _, error = parse_body(b'{"model": 5, "messages": [{"role": "user"}]}')
    assert error is not None and error.code == "invalid_type"
    _, error = parse_body(b'{"model": "m", "messages": [{"role": ["user"]}]}')
    assert error is not None and error.code == "invalid_value"


def test_quotas_are_per_model_with_their_own_limits() -> None:
    clock = [0.0]
    quota = Quota(600, None, lambda: clock[0], model_limits={"slow": (6, None)})
    for _ in range(6):
        assert quota.admit("k", 10, "slow").allowed
    refused = quota.admit("k", 10, "slow")
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    assert refused.headers["x-ratelimit-limit-requests"] == "6"
    fast = quota.admit("k", 10, "fast")  # another model: its own, untouched bucket
    assert fast.allowed and fast.headers["x-ratelimit-limit-requests"] == "600"
    assert fast.headers["x-ratelimit-remaining-requests"] == "599"
    assert quota.limits("slow") == (6, None) and quota.limits("other") == (600, None)


def test_a_drained_quota_starts_empty_and_refills() -> None:
    clock = [0.0]
    quota = Quota(600, None, lambda: clock[0], start_drained=True)
    first = quota.admit("k", 1, "m")
    assert not first.allowed and first.retry_after == pytest.approx(0.1)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    clock[0] = 1.0
    admitted = sum(quota.admit("k", 1, "m").allowed for _ in range(20))
    assert admitted == 10  # a second's refill at 10/s


def test_sim_config_checks_model_limits() -> None:
    with pytest.raises(ValueError, match="model_rpm"):
        SimConfig(model_rpm={"m": 0})
    assert SimConfig(model_rpm={"a": 6}, model_tpm={"b": 100}).model_limits() == {
        "a": (6, None),
        "b": (None, 100),
    }
