"""Dry-run estimate: exact prompt tokens, completion ceilings, learned typical case, cost range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrun._cost.estimate import estimate, format_estimate, learn_from_run
from batchrun._cost.price import ModelPrice, PriceTier
from batchrun._cost.prices import PriceBook
from batchrun._models import Outcome, Request
from batchrun._output import lines as output_lines
from batchrun._pacing.tokens import completion_ceiling, prompt_tokens

BOOK = PriceBook(
    {
        "relay-a": ModelPrice(input=2.0, cached_input=0.5, output=8.0),
        "gpt-4o": ModelPrice(input=2.5, cached_input=1.25, output=10.0),
    },
    use_genai_prices=False,
)


def chat(i: int, model: str | None = "relay-a", **extra: Any) -> Request:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Question number {i}: why is the sky blue?"},
        ],
        **extra,
    }
    if model is not None:
        body["model"] = model
    return Request(f"row-{i}", body, row=i)


def test_prompt_tokens_equal_the_limiter_count() -> None:
    requests = [chat(i, max_tokens=50) for i in range(40)]
    requests += [chat(i, model="gpt-4o", max_tokens=20) for i in range(40, 50)]
    report = estimate(requests, BOOK, None)
    assert report.requests == 50
    assert report.models["relay-a"].requests == 40
    assert report.models["gpt-4o"].requests == 10
    for model in ("relay-a", "gpt-4o"):
        expected = sum(prompt_tokens(r.body) for r in requests if r.body["model"] == model)
        assert report.models[model].prompt_tokens == expected
    assert report.prompt_tokens == sum(prompt_tokens(r.body) for r in requests)


def test_default_model_fills_bodies_without_one() -> None:
    report = estimate([chat(1, model=None, max_tokens=5), chat(2, max_tokens=5)], BOOK, "gpt-4o")
    assert sorted(report.models) == ["gpt-4o", "relay-a"]
    unnamed = chat(1, model=None)
    assert report.models["gpt-4o"].prompt_tokens == prompt_tokens(unnamed.body, "gpt-4o")
    assert estimate([chat(1, model=None)], BOOK, None).models.keys() == {"unknown"}


def test_completion_ceiling_is_max_tokens_times_n() -> None:
    requests = [
        chat(1, max_tokens=100, n=3),
        chat(2, max_completion_tokens=40, max_tokens=999),
        chat(3, max_tokens=7),
    ]
    report = estimate(requests, BOOK, None)
    entry = report.models["relay-a"]
    assert entry.completion_ceiling == 300 + 40 + 7
    assert entry.completion_ceiling == sum(completion_ceiling(r.body) for r in requests)
    assert entry.unbounded_requests == 0
    prompt = entry.prompt_tokens
    assert entry.cost_low == pytest.approx(prompt * 2.0 / 1e6)  # nothing learned: 0 output
    assert entry.cost_high == pytest.approx((prompt * 2.0 + 347 * 8.0) / 1e6)


def test_requests_without_max_tokens_leave_the_high_cost_unbounded() -> None:
    report = estimate([chat(1, max_tokens=10), chat(2), chat(3, n=2)], BOOK, None)
    entry = report.models["relay-a"]
    assert entry.unbounded_requests == 2
    assert entry.completion_ceiling == 10  # only bounded rows; no number invented
    assert entry.cost_high is None
    data = report.to_dict()
    assert data["cost_usd"]["high"] is None
    assert data["unbounded_requests"] == 2
    assert "no upper bound" in data["by_model"]["relay-a"]["cost_usd"]["reason"]
    text = format_estimate(report)
    assert "unbounded" in text
    assert "2 requests set no max_tokens" in text


def _write_run(run_dir: Path, rows: list[tuple[str, int | None]]) -> None:
    run_dir.mkdir()
    lines = []
    for i, (model, completion) in enumerate(rows):
        body: dict[str, Any] = {"model": model, "choices": []}
        if completion is not None:
            body["usage"] = {"prompt_tokens": 10, "completion_tokens": completion}
        req = Request(f"row-{i}", {}, row=i + 1)
        outcome = Outcome.success(req, status=200, request_id=None, body=body, attempts=[])
        lines.append(output_lines.encode(outcome))
    # a torn last line (crash mid-write) must be skipped, not trusted
    (run_dir / "results.jsonl").write_bytes(b"".join(lines) + lines[0][:30])


def test_learn_from_run_averages_completion_tokens_per_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "earlier"
    _write_run(
        run_dir,
        [
            ("gpt-4o-2024-08-06", 100),
            ("gpt-4o-2024-08-06", 300),
            ("relay-a", 40),
            ("relay-a", None),  # no usage: not counted
        ],
    )
    assert learn_from_run(str(run_dir)) == {"gpt-4o-2024-08-06": 200.0, "relay-a": 40.0}
    assert learn_from_run(str(tmp_path / "never-ran")) == {}


def test_learned_typical_case_sets_the_low_cost(tmp_path: Path) -> None:
    run_dir = tmp_path / "earlier"
    _write_run(run_dir, [("gpt-4o-2024-08-06", 100), ("gpt-4o-2024-08-06", 300)])
    learned = learn_from_run(str(run_dir))
    requests = [chat(i, model="gpt-4o", max_tokens=1_000) for i in range(5)]
    report = estimate(requests, BOOK, None, learned, learned_from=str(run_dir))
    entry = report.models["gpt-4o"]  # requested as gpt-4o, answered as gpt-4o-2024-08-06
    assert entry.typical_completion_tokens == pytest.approx(5 * 200)
    prompt = entry.prompt_tokens
    assert entry.cost_low == pytest.approx((prompt * 2.5 + 1_000 * 10.0) / 1e6)
    assert entry.cost_high == pytest.approx((prompt * 2.5 + 5_000 * 10.0) / 1e6)
    data = report.to_dict()
    assert data["by_model"]["gpt-4o"]["typical_completion_tokens"] == 1_000
    assert data["learned_from"] == str(run_dir)
    assert f"typical case learned from {run_dir}" in format_estimate(report)


def test_unpriced_models_are_listed_not_priced() -> None:
    report = estimate([chat(1, max_tokens=5), chat(2, model="mystery", max_tokens=5)], BOOK, None)
    mystery = report.models["mystery"]
    assert mystery.cost_low is None and mystery.cost_high is None
    data = report.to_dict()
    assert data["cost_usd"]["complete"] is False
    assert data["cost_usd"]["unpriced_models"] == ["mystery"]
    assert data["by_model"]["mystery"]["cost_usd"]["reason"] == "no price known"
    relay = report.models["relay-a"]
    assert data["cost_usd"]["low"] == pytest.approx(relay.cost_low)  # priced models only
    assert data["cost_usd"]["high"] == pytest.approx(relay.cost_high)
    assert "no price known for mystery" in format_estimate(report)


def test_tiers_are_chosen_per_request() -> None:
    tiered = ModelPrice(
        input=1.0, output=2.0, tiers=(PriceTier(above=30, input=10.0, output=20.0),)
    )
    book = PriceBook({"t": tiered}, use_genai_prices=False)
    short = chat(1, model="t", max_tokens=10)
    long_body = {"model": "t", "messages": [{"role": "user", "content": "word " * 60}]}
    long = Request("long", {**long_body, "max_tokens": 10}, row=2)
    p_short, p_long = prompt_tokens(short.body), prompt_tokens(long.body)
    assert p_short <= 30 < p_long
    entry = estimate([short, long], book, None).models["t"]
    assert entry.cost_high == pytest.approx((p_short * 1 + 10 * 2 + p_long * 10 + 10 * 20) / 1e6)


def test_format_estimate_has_a_row_per_model_and_a_total() -> None:
    requests = [chat(i, max_tokens=50) for i in range(3)] + [chat(9, model="gpt-4o", max_tokens=8)]
    lines = format_estimate(estimate(requests, BOOK, None)).splitlines()
    assert lines[0].split()[:3] == ["model", "requests", "prompt"]
    assert [line.split()[0] for line in lines[1:4]] == ["gpt-4o", "relay-a", "total"]
    assert len({len(line) for line in lines[:4]}) == 1  # columns line up
    assert lines[3].split()[1] == "4"


def test_requests_are_streamed_once() -> None:
    consumed = []

    def source() -> Any:
        for i in range(3):
            consumed.append(i)
            yield chat(i, max_tokens=1)

    assert estimate(source(), BOOK, None).requests == 3
    assert consumed == [0, 1, 2]
