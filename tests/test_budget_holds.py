"""Issue 23, items 13-16: a budget that holds.

--max-cost counts everything the run may have paid for: answers that name a model with
no price (priced as the model asked for), 200s that could not be read (at their
request's worst case), and a 200 over --max-response-bytes is paid for once more at
most. Money is printed with its significant digits.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrun._cost.budget import cost_hooks
from batchrun._engine.hooks import CompositeHooks
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_BUDGET, EXIT_SOME_FAILED, RunResult
from batchrun._output.journal import read_journal
from batchrun._report.tables import format_usd
from batchrun._settings import Settings
from tests.conftest import completion
from tests.test_budget import run as budget_run
from tests.test_budget import setup as budget_setup

ROWS = 100
CAP = 0.0001  # gpt-4o-mini: a few of these rows' worst cases ($0.0000315 each)


def write_rows(path: Path, n: int = ROWS) -> Path:
    with path.open("w") as f:
        for i in range(n):
            row = {
                "custom_id": f"r{i}",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 50,
            }
            f.write(json.dumps(row) + "\n")
    return path


async def no_wait(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


def run(tmp_path: Path, handler: Any, **options: Any) -> RunResult:
    inp = tmp_path / "requests.jsonl"
    if not inp.exists():
        write_rows(inp)
    cfg = Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        quiet=True,
        **{"max_cost": CAP, **options},
    )
    hooks = CompositeHooks(*cost_hooks(cfg))
    runner = Runner(cfg, transport=httpx.MockTransport(handler), hooks=hooks, sleep=no_wait)
    return anyio.run(runner.run)


def recounted_cost(tmp_path: Path) -> float:
    """What a later process counts as spent, from the lines alone (a resume)."""
    from batchrun._cost.budget import CostHooks

    class State:
        tally = read_journal(str(tmp_path / "run"), repair=False).tally

    cost = CostHooks(Settings(input="x", out_dir=str(tmp_path / "run")))
    cost.on_start(State())  # type: ignore[arg-type]
    return cost.spent


# -- item 13: answers naming another model ------------------------------------------------
@pytest.mark.parametrize("answered", ["gpt-4o-mini-ft", None])
def test_an_answer_naming_an_unpriced_model_is_priced_as_the_model_asked_for(
    tmp_path: Path, answered: str | None
) -> None:
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        body = completion(prompt=12, completion_tokens=30)
        body["model"] = answered
        return httpx.Response(200, json=body)

    result = run(tmp_path, handler)
    assert result.exit_code == EXIT_BUDGET, result.notes
    assert result.status == "budget_exceeded"
    cost = result.summary["cost_usd"]
    assert cost["total"] is not None and 0 < cost["total"] <= CAP
    assert cost["complete"] is True
    assert len(sent) < 10  # the cap stopped it, not the end of the input
    per_answer = (12 * 0.15 + 30 * 0.60) / 1e6  # gpt-4o-mini's prices
    assert cost["total"] == pytest.approx(len(sent) * per_answer)
    assert result.summary["budget"]["spent_usd"] == pytest.approx(cost["total"])
    if answered is not None:
        entry = cost["by_model"][answered]
        assert entry["asked_model"] == "gpt-4o-mini" and "priced as 'gpt-4o-mini'" in entry["note"]
        said = [n for n in result.notes if "has no known price" in n]
        assert len(said) == 1 and repr(answered) in said[0]  # once, for the model
    else:
        assert list(cost["by_model"]) == ["gpt-4o-mini"]
    # a resume counts the same from the lines: the cap still holds, nothing is sent
    assert recounted_cost(tmp_path) == pytest.approx(cost["total"])
    before = len(sent)
    again = run(tmp_path, handler)
    assert again.exit_code == EXIT_BUDGET and len(sent) - before <= 1


def test_an_unpriced_model_asked_for_is_still_refused_before_sending(tmp_path: Path) -> None:
    from batchrun.errors import ConfigError

    inp = tmp_path / "requests.jsonl"
    write_rows(inp)
    inp.write_text(inp.read_text().replace("gpt-4o-mini", "nobody-prices-this"))
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(200, json=completion(model="gpt-4o-mini"))

    with pytest.raises(ConfigError, match="no known price for 'nobody-prices-this'"):
        run(tmp_path, handler)
    assert sent == []


def test_batch_answers_naming_an_unpriced_model_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the Batch API: the shards' answers name a model with no price."""
    import batchrun.sim.batch_rows as sim_batches
    from batchrun._cost.budget import worst_case
    from batchrun._cost.prices import PriceBook
    from batchrun.sim import BatchConfig, SimConfig, SimThread
    from tests.test_batch_api import run_batch, settings
    from tests.test_batch_api import write_rows as batch_rows

    made = sim_batches.completion_object

    def renamed(reply: Any, completion_id: str, model: str, *args: Any) -> Any:
        return made(reply, completion_id, "gpt-4o-mini-ft", *args)

    monkeypatch.setattr(sim_batches, "completion_object", renamed)
    n = 100
    inp = batch_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    body = json.loads(inp.read_text().splitlines()[0])["body"]
    # room for 8 rows' worst case; an answer costs ~1/8 of it: the cap ends the run
    cap = worst_case(body, PriceBook.load(None), via_batch=True) * 8.5
    with SimThread(SimConfig(seed=5, batch=BatchConfig(rows_per_second=20_000))) as sim:
        result = run_batch(settings(inp, out, sim.base_url, max_cost=cap))
    assert result.exit_code == EXIT_BUDGET, result.notes
    cost = result.summary["cost_usd"]
    assert cost["total"] is not None and 0 < cost["total"] <= cap
    assert cost["by_model"]["gpt-4o-mini-ft"]["asked_model"] == "gpt-4o-mini"
    answered = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert 0 < len(answered) < n
    assert all(x["response"]["body"]["model"] == "gpt-4o-mini-ft" for x in answered)


# -- item 14: unreadable 200s ----------------------------------------------------------------
def test_unreadable_200s_count_at_their_worst_case_and_the_cap_engages(tmp_path: Path) -> None:
    from batchrun._cost.budget import worst_case
    from batchrun._cost.prices import PriceBook

    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(200, text="upstream hiccup", headers={"content-type": "text/plain"})

    result = run(tmp_path, handler, max_attempts=10)
    assert result.exit_code == EXIT_BUDGET, result.notes
    worst = worst_case(
        json.loads((tmp_path / "requests.jsonl").read_text().splitlines()[0]),
        PriceBook.load(None),
    )
    cost = result.summary["cost_usd"]
    # every 200 the server sent is counted, at its request's worst case, within the cap
    assert cost["unreadable_answers"]["attempts"] == len(sent)
    assert cost["total"] == pytest.approx(len(sent) * worst, rel=0.05)
    assert cost["total"] <= CAP and result.summary["budget"]["spent_usd"] <= CAP
    assert result.summary["requests"]["pending"] > 90
    errors = [json.loads(x) for x in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    assert sum(e["batchrun"]["billed_unread"]["attempts"] for e in errors) == len(sent)
    assert any("paid for but could not be read" in n for n in result.notes)
    # the figure survives a resume (counted from the lines), and so does the cap
    assert recounted_cost(tmp_path) == pytest.approx(cost["total"])
    before = len(sent)
    again = run(tmp_path, handler, max_attempts=10)
    assert again.exit_code == EXIT_BUDGET and len(sent) - before <= 1


def test_an_unreadable_answer_retried_into_an_answer_counts_both(tmp_path: Path) -> None:
    write_rows(tmp_path / "requests.jsonl", 3)
    seen: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.content.decode()
        if key not in seen:  # each request's first answer is unreadable
            seen.add(key)
            return httpx.Response(200, text="not json", headers={"content-type": "text/plain"})
        return httpx.Response(200, json=completion(prompt=12, completion_tokens=30))

    result = run(tmp_path, handler, max_cost=1.0)
    assert result.exit_code == 0, result.notes
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [x["batchrun"]["billed_unread"]["attempts"] for x in lines] == [1, 1, 1]
    cost = result.summary["cost_usd"]
    assert cost["unreadable_answers"]["attempts"] == 3
    answers = 3 * (12 * 0.15 + 30 * 0.60) / 1e6
    assert cost["total"] == pytest.approx(answers + cost["unreadable_answers"]["worst_case_usd"])


# -- item 15: a 200 over --max-response-bytes ---------------------------------------------------
def test_a_too_large_200_is_paid_for_once_more_at_most(tmp_path: Path) -> None:
    write_rows(tmp_path / "requests.jsonl", 2)
    attempts: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["messages"][0]["content"]
        attempts[key] = attempts.get(key, 0) + 1
        return httpx.Response(200, content=b"x" * 5000, headers={"content-type": "text/plain"})

    result = run(tmp_path, handler, max_cost=None, max_attempts=10, max_response_bytes=1024)
    assert result.exit_code == EXIT_SOME_FAILED
    assert attempts == {"question 0": 2, "question 1": 2}
    errors = [json.loads(x) for x in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    for error in errors:
        assert error["error"]["code"] == "response_too_large"
        message = error["error"]["message"]
        assert "--max-response-bytes" in message and "5,000 bytes" in message  # its size
        assert [a["billed"] for a in error["error"]["attempts"]] == [True, True]
        assert error["batchrun"]["billed_unread"]["attempts"] == 2


# -- item 16: money with its significant digits ---------------------------------------------------
def test_small_amounts_show_their_significant_digits() -> None:
    assert format_usd(0.000134) == "$0.000134"
    assert format_usd(0.0000001342) == "$0.000000134"
    assert format_usd(0.0134) == "$0.0134"
    assert format_usd(1234.567) == "$1,234.57"
    assert format_usd(0.0) == "$0.0000"
    assert format_usd(None) == "-"
    assert format_usd(-0.000134) == "-$0.000134"


def test_the_budget_message_shows_what_was_spent(tmp_path: Path) -> None:
    cfg = budget_setup(tmp_path, rows=30)
    # a model at a thousandth of a dollar per million tokens: each answer < $0.000001
    Path(str(cfg.prices)).write_text('[models."test-model"]\ninput = 0.001\noutput = 0.002\n')
    result = budget_run(replace(cfg, max_cost=0.0000015))
    assert result.exit_code == EXIT_BUDGET
    spent = result.summary["cost_usd"]["total"]
    assert 0 < spent < 0.000001
    message = next(n for n in result.notes if "budget cap reached" in n)
    shown = re.search(r"spent \$([0-9.]+) of --max-cost \$([0-9.]+)", message)
    assert shown is not None, message
    figure, cap = float(shown.group(1)), float(shown.group(2))
    assert figure == pytest.approx(spent, rel=0.01)  # three significant digits
    assert cap == 0.0000015
    assert result.summary["budget"]["spent_usd"] == pytest.approx(spent, rel=1e-6)
