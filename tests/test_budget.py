"""--max-cost: the run stops before the cap, within one request's worst case of it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._cost.budget import BudgetAdmission, CostHooks, cost_hooks
from batchrun._engine.hooks import CompositeHooks
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_BUDGET, EXIT_OK
from batchrun._pacing.tokens import prompt_tokens
from batchrun._settings import Settings
from batchrun.errors import ConfigError
from tests.conftest import body, completion, read_lines

# $1 per million prompt tokens and $2 per million completion tokens: easy arithmetic
PRICES = '[models."test-model"]\ninput = 1.0\noutput = 2.0\n'
COMPLETION, MAX_TOKENS = 100, 500


def setup(tmp_path: Path, rows: int = 40) -> Settings:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {**body(f"q{i}", model="test-model", max_tokens=MAX_TOKENS), "custom_id": f"r{i}"}
            )
            + "\n"
            for i in range(rows)
        )
    )
    return Settings(
        input=str(path),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        prices=str(prices),
    )


async def handler(request: httpx.Request) -> httpx.Response:
    # an honest server: bills the prompt as OpenAI's tokenizer counts it
    await anyio.sleep(0.001)
    prompt = prompt_tokens(json.loads(request.content))
    return httpx.Response(
        200, json=completion(model="test-model", prompt=prompt, completion_tokens=COMPLETION)
    )


def run(cfg: Settings, calls: list[int] | None = None) -> Any:
    async def counting(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(1)
        return await handler(request)

    hooks = CompositeHooks(*cost_hooks(cfg))
    runner = Runner(cfg, transport=httpx.MockTransport(counting), hooks=hooks)
    return anyio.run(runner.run)


PROMPT = prompt_tokens(body("q1", model="test-model", max_tokens=MAX_TOKENS))
ACTUAL = (PROMPT * 1.0 + COMPLETION * 2.0) / 1e6  # what one request really costs


def test_cost_in_summary_matches_hand_computation(tmp_path: Path) -> None:
    cfg = setup(tmp_path, rows=10)
    result = run(cfg)
    assert result.exit_code == EXIT_OK
    cost = result.summary["cost_usd"]
    usage = [
        r["response"]["body"]["usage"] for r in read_lines(Path(cfg.out_dir) / "results.jsonl")
    ]
    prompt = sum(u["prompt_tokens"] for u in usage)
    assert abs(cost["total"] - (prompt * 1.0 + 10 * COMPLETION * 2.0) / 1e6) < 1e-9
    assert abs(cost["input"] - prompt / 1e6) < 1e-9
    assert abs(cost["output"] - 10 * COMPLETION * 2 / 1e6) < 1e-9
    assert cost["by_model"]["test-model"]["price_source"] == "user file"


def test_budget_cap_stops_within_one_worst_case_and_resumes(tmp_path: Path) -> None:
    cfg = setup(tmp_path)
    budget = BudgetAdmission(CostHooks(cfg), cap=1.0)
    first = json.loads(Path(cfg.input_path).read_text().splitlines()[0])
    first.pop("custom_id")
    worst = budget.worst_case(first)
    cap = 20.5 * ACTUAL  # room for 20 requests, not 21
    result = run(replace(cfg, max_cost=cap))
    assert result.exit_code == EXIT_BUDGET
    assert result.status == "budget_exceeded"
    spent = result.summary["cost_usd"]["total"]
    assert spent <= cap
    assert spent > cap - worst  # stopped within one request's worst case of the cap
    lines = read_lines(Path(cfg.out_dir) / "results.jsonl")
    done = len(lines)
    usage = [line["response"]["body"]["usage"] for line in lines]
    by_hand = sum(u["prompt_tokens"] * 1.0 + u["completion_tokens"] * 2.0 for u in usage) / 1e6
    assert abs(spent - by_hand) < 1e-9
    assert any("spent $" in n and "higher --max-cost" in n for n in result.notes)
    assert result.summary["budget"] == {"max_cost_usd": cap, "spent_usd": round(spent, 6)}

    # a higher cap resumes: only the missing rows are sent
    calls: list[int] = []
    again = run(replace(cfg, max_cost=1.0), calls)
    assert again.exit_code == EXIT_OK
    assert len(calls) == 40 - done
    assert len(read_lines(Path(cfg.out_dir) / "results.jsonl")) == 40


def test_unpriced_model_cannot_be_capped(tmp_path: Path) -> None:
    cfg = setup(tmp_path, rows=3)
    path = Path(cfg.input_path)
    path.write_text(path.read_text().replace("test-model", "nobody-prices-this-model"))
    # refused before anything is sent, naming the model and the price-file option
    refused = r"no known price for 'nobody-prices-this-model'.*--prices"
    with pytest.raises(ConfigError, match=refused):
        run(replace(cfg, max_cost=1.0))
    assert read_lines(Path(cfg.out_dir) / "results.jsonl") == []


def test_cli_budget_exit_code_and_message(tmp_path: Path) -> None:
    cfg = setup(tmp_path, rows=30)
    res = CliRunner().invoke(
        cli,
        [
            "run",
            cfg.input_path,
            "-o",
            cfg.out_dir,
            "--base-url",
            "sim",
            "--prices",
            str(cfg.prices),
            "--max-cost",
            "0.00001",
            "-q",
        ],
    )
    assert res.exit_code == EXIT_BUDGET
    assert "budget cap reached" in res.stderr and "higher --max-cost" in res.stderr
