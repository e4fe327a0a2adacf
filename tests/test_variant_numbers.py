"""Numbers that add up (issue 23, items 19, 21, 22): a comparison of variants prices each
row at what it was paid, keeps paid and reused answers apart, and stars a variant only
when it is clearly the best.

Item 19 and 21 run against the loopback simulator (it counts what it is sent); item 22
against an `httpx.MockTransport` whose answers are scripted per row, so how far apart
two variants are is known exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

import batchrun
from batchrun._api import make_runner
from batchrun._jobs.jobfile import load_job
from batchrun._output.lines import decode_meta
from batchrun._report.html.data import OutputScan, build_page_data
from batchrun._report.statistics import OutputStats
from batchrun._report.tables import format_usd
from batchrun._report.text import format_status, status_report
from batchrun.sim import BatchConfig, SimConfig, SimThread

LABELS = ("positive", "negative", "neutral")


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(latency_ms=20.0, jitter_ms=10.0)) as server:
        yield server


def write_reviews(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"r{i:03d}", "text": f"review number {i}", "label": LABELS[i % 3]}
            f.write(json.dumps(row) + "\n")
    return path


def variants_job(tmp_path: Path, n: int, prompts: dict[str, str], **request: Any) -> Path:
    """A job over ``n`` reviews, one variant per prompt, labels scored against ``label``
    (room for the simulator's longest answer: a truncated one is never cached)."""
    data = write_reviews(tmp_path / "reviews.jsonl", n)
    blocks = "\n".join(f'[prompts.{name}]\nuser = "{text}"' for name, text in prompts.items())
    request = {"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 300, **request}
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in request.items())
    job = tmp_path / "job.toml"
    job.write_text(
        f"""
name = "numbers"
[input]
path = "{data}"
id_column = "id"
[request]
{extra}
{blocks}
[eval]
reference_column = "label"
"""
    )
    return job


def lines(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# -- 19: a Batch API comparison is priced at the prices paid ------------------------------------
def test_a_batch_comparison_adds_up_to_the_cost_it_paid(tmp_path: Path) -> None:
    job = variants_job(
        tmp_path,
        60,
        {"terse": "Review: {text}", "wordy": "Say if this review is positive: {text}"},
        model=["gpt-4o-mini", "gpt-4.1-mini"],
    )
    out = tmp_path / "run"
    with SimThread(SimConfig(batch=BatchConfig(rows_per_second=20_000))) as sim:
        run = batchrun.run_job(
            job, out_dir=out, base_url=sim.base_url, mode="batch", poll_interval=0.02, quiet=True
        )
    assert run.status == "complete" and run.variants is not None and len(run.variants) == 4
    cost = run.summary["cost_usd"]
    assert cost["by_mode"] == {"online": 0.0, "batch": pytest.approx(cost["total"])}
    # every variant priced at the batch prices its rows paid: they add up to the total
    assert sum(v["cost_usd"] for v in run.variants) == pytest.approx(cost["total"], rel=1e-9)
    for v in run.variants:
        assert 0 < v["cost_usd"] < cost["total"]
    # what the same tokens would have cost online: the standard prices, twice the batch
    batch = run.summary["batch_api_cost_usd"]
    assert batch["total"] == pytest.approx(cost["total"])
    assert batch["standard_cost_of_same_models"] == pytest.approx(2 * cost["total"], rel=0.01)
    text = format_status(status_report(str(out)))
    assert "(Batch API prices; " in text and " at online prices)" in text
    # the variants' cost column is the one the run paid
    for v in run.variants:
        row = next(x for x in text.splitlines() if x.strip(" *").startswith(v["name"] + " "))
        assert f" {format_usd(v['cost_usd'])} " in row


# -- 21: paid and reused apart -------------------------------------------------------------------
def test_latency_leaves_out_answers_that_were_not_sent(tmp_path: Path) -> None:
    def line(meta: dict[str, Any]) -> bytes:
        record = {"custom_id": "x", "response": {"status_code": 200, "body": {}}, "error": None}
        return orjson.dumps({**record, "batchrun": meta}) + b"\n"

    sent: list[dict[str, Any]] = [
        {"latency_ms": ms, "wait_ms": 5.0, "at": 100.0 + ms} for ms in (100.0, 200.0, 300.0)
    ]
    # an older line of a reused answer says 0 ms; a newer one null, with the original's time
    unsent: list[dict[str, Any]] = [
        {"latency_ms": 0.0, "wait_ms": 0.0, "at": 400.0, "reused": "run", "same_as": "a"},
        {"latency_ms": None, "wait_ms": None, "at": 401.0, "reused": "cache",
         "original_latency_ms": 250.0},
    ]  # fmt: skip
    stats = OutputStats()
    for meta in sent + unsent:
        stats.add(decode_meta(line(meta)))
    latency = stats.latency_ms.summary()
    assert latency["count"] == 3 and latency["p50"] == 200.0 and stats.lines == 5
    # the HTML report's wait distribution and time series, likewise
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_bytes(b"".join(line(m) for m in sent + unsent))
    scan = OutputScan(str(run), {})
    scan.update()
    assert scan.wait_ms.summary()["count"] == 3
    assert scan.outputs.latency_ms.summary()["p50"] == 200.0
    assert len(scan.series) == 5 and list(scan.series.wire_s)[3:] == [0.0, 0.0]


def test_a_reused_answer_carries_the_time_of_the_request_that_got_it() -> None:
    from batchrun._engine.reuse import original_latency_ms, reused
    from batchrun._models import Outcome, Request
    from batchrun._output.lines import decode

    req = Request("b", {"model": "m", "temperature": 0}, row=2)
    leader = Outcome.success(
        Request("a", {"model": "m", "temperature": 0}, row=1),
        status=200,
        request_id=None,
        body={"choices": []},
        attempts=[],
        latency_s=0.1234,
    )
    copy = reused(req, leader, "run", same_as="a")
    assert copy.original_latency_ms == 123.4
    assert copy.latency_s is None and copy.wait_s is None
    # a copy of a copy, a row answered through the Batch API (no time of its own)
    assert reused(req, copy, "run").original_latency_ms == 123.4
    leader.via, leader.latency_s = "batch", None
    assert reused(req, leader, "run").original_latency_ms is None
    # a leader answered by an earlier process: its line says how long it took
    line: dict[str, Any] = {
        "custom_id": "a",
        "response": {"status_code": 200, "body": {}},
        "error": None,
        "batchrun": {"latency_ms": 70.0},
    }
    assert original_latency_ms(decode(orjson.dumps(line))) == 70.0
    line["batchrun"] = {"latency_ms": None, "reused": "cache", "original_latency_ms": 80.0}
    assert original_latency_ms(decode(orjson.dumps(line))) == 80.0


TWIN_PROMPTS = {
    "terse": "Review: {text}",
    "twin": "Review: {text}",  # the same requests as terse: answered by terse's
    "product": "Product review: {text}",
}


def test_a_variant_answered_by_anothers_requests(sim: SimThread, tmp_path: Path) -> None:
    n = 60
    job = variants_job(tmp_path, n, TWIN_PROMPTS)
    out = tmp_path / "run"
    run = batchrun.run_job(job, out_dir=out, base_url=sim.base_url, quiet=True)
    assert run.status == "complete" and sim.stats.requests == 2 * n  # twin sent nothing
    v = {x["name"]: x for x in run.variants or []}
    terse, twin, product = v["terse"], v["twin"], v["product"]
    summary = run.summary

    # paid: twin paid nothing, and the paid figures add up to the run's
    assert twin["reused"] == n and twin["cost_usd"] == 0 and twin["prompt_tokens"] == 0
    assert terse["reused"] == 0 and product["reused"] == 0
    assert sum(x["prompt_tokens"] for x in v.values()) == summary["usage"]["prompt_tokens"]
    assert sum(x["completion_tokens"] for x in v.values()) == summary["usage"]["completion_tokens"]
    assert sum(x["cost_usd"] for x in v.values()) == pytest.approx(summary["cost_usd"]["total"])
    # reused, apart: twin's answers cost what terse paid for them
    assert twin["reused_prompt_tokens"] == terse["prompt_tokens"] > 0
    assert twin["reused_completion_tokens"] == terse["completion_tokens"]
    assert twin["reused_cost_usd"] == pytest.approx(terse["cost_usd"])
    assert twin["answer_cost_usd"] == pytest.approx(terse["answer_cost_usd"])
    assert terse["answer_cost_usd"] == terse["cost_usd"] and terse["reused_cost_usd"] == 0
    assert twin["reused_cost_usd"] == pytest.approx(summary["saved_usd"])
    # latency: twin's answers took terse's time; the run's figure is its requests'
    assert twin["latency_p50_ms"] == terse["latency_p50_ms"] >= 10
    assert twin["latency_p95_ms"] == terse["latency_p95_ms"]
    report = status_report(str(out))
    assert report["latency_ms"]["count"] == 2 * n and report["latency_ms"]["p50"] >= 10
    reused_lines = [x for x in lines(out) if x["batchrun"].get("reused")]
    assert len(reused_lines) == n
    assert all(x["batchrun"]["latency_ms"] is None for x in reused_lines)
    # a tie is no win: twin is never the best for its $0 paid
    assert not twin["best"]
    assert twin["accuracy"] == terse["accuracy"]
    block = summary["comparison"]
    assert twin["name"] != block["best"] and twin["name"] != block["cheapest_contender"]
    text = format_status(report)
    assert "cost: of answering the variant's rows, whoever paid" in text
    row = next(x for x in text.splitlines() if x.strip(" *").startswith("twin "))
    assert f" {format_usd(0.0)} " in row and f" {n} " in row  # paid nothing, reused every row
    # the HTML page shows the same figures and the reused answers apart
    page = build_page_data(str(out))
    assert page["reused"]["run"] == n and page["reused"]["saved_usd"] == summary["saved_usd"]
    assert {x["name"]: x["answer_cost_usd"] for x in page["variants"]} == {
        x["name"]: x["answer_cost_usd"] for x in v.values()
    }
    assert page["latency"]["wire"]["count"] == 2 * n
    assert page["latency"]["wait"]["count"] == 2 * n


def test_a_comparison_rerun_from_the_cache(sim: SimThread, tmp_path: Path) -> None:
    n = 45
    job = variants_job(tmp_path, n, TWIN_PROMPTS)
    cache = tmp_path / "cache"
    first = batchrun.run_job(
        job, out_dir=tmp_path / "a", base_url=sim.base_url, cache=str(cache), quiet=True
    )
    assert sim.stats.requests == 2 * n
    second = batchrun.run_job(
        job, out_dir=tmp_path / "b", base_url=sim.base_url, cache=str(cache), quiet=True
    )
    assert second.status == "complete" and sim.stats.requests == 2 * n  # nothing sent
    before = {x["name"]: x for x in first.variants or []}
    after = {x["name"]: x for x in second.variants or []}
    assert second.summary["cost_usd"]["total"] == 0
    for name, was in before.items():
        now = after[name]
        assert now["cost_usd"] == 0 and now["reused"] == n and now["prompt_tokens"] == 0
        # what answering it costs, and how long its answers took, when they were paid for
        assert now["answer_cost_usd"] == pytest.approx(was["answer_cost_usd"])
        assert now["reused_prompt_tokens"] == was["prompt_tokens"] + was["reused_prompt_tokens"]
        assert now["latency_p50_ms"] == pytest.approx(was["latency_p50_ms"], abs=0.05)
        assert now["latency_p95_ms"] == pytest.approx(was["latency_p95_ms"], abs=0.05)
        assert now["accuracy"] == was["accuracy"]
    # nothing was sent: no latency of its own
    report = status_report(str(tmp_path / "b"))
    assert report["latency_ms"]["count"] == 0
    text = format_status(report)
    for name, now in after.items():
        row = next(x for x in text.splitlines() if x.strip(" *").startswith(name + " "))
        assert f" {format_usd(now['answer_cost_usd'])} " in row
        assert row.rstrip().endswith(f"{now['latency_p50_ms']:.0f}")


# -- 22: a best only when the interval says so -----------------------------------------------------
def starred(text: str) -> list[str]:
    """The variants the text report marks best."""
    return [x.split()[1] for x in text.splitlines() if x.lstrip().startswith("* ")]


def scripted(wrong: Callable[[str, int], bool]) -> Callable[[httpx.Request], httpx.Response]:
    """A server answering review i's label, or another when ``wrong(prompt, i)``."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        prompt, _, number = body["messages"][-1]["content"].rpartition("review number ")
        i = int(number)
        label = LABELS[(i + wrong(prompt, i)) % 3]
        return httpx.Response(
            200,
            json={
                "id": f"c{i}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": label},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
            },
        )

    return handle


@pytest.mark.parametrize(
    ("vague_wrong", "clear"),
    [
        (lambda i: i % 2 == 0, True),  # 100% vs 50% right: clearly better
        (lambda i: i in (3, 50), False),  # 100% vs 99%: the interval includes 0
    ],
)
def test_a_best_variant_only_when_the_difference_is_clear(
    tmp_path: Path, vague_wrong: Callable[[int], bool], clear: bool
) -> None:
    n = 200
    job = variants_job(tmp_path, n, {"sharp": "Sharp: {text}", "vague": "Vague: {text}"})
    settings = load_job(job).settings(out_dir=str(tmp_path / "run"), quiet=True)

    def wrong(prompt: str, i: int) -> bool:
        return prompt.startswith("Vague") and vague_wrong(i)

    transport = httpx.MockTransport(scripted(wrong))
    result = anyio.run(make_runner(settings, None, transport=transport).run)
    assert result.status == "complete"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    v = {x["name"]: x for x in summary["variants"]}
    assert v["sharp"]["accuracy"] == 1.0 and v["vague"]["accuracy"] < 1.0
    block = summary["comparison"]
    pair = block["pairs"][0]
    assert (pair["difference_low"] > 0) is clear
    text = format_status(status_report(str(tmp_path / "run")))
    page = build_page_data(str(tmp_path / "run"))
    stars = {x["name"]: x["best"] for x in page["variants"]}
    if clear:
        assert block["best"] == "sharp" and v["sharp"]["best"] and not v["vague"]["best"]
        assert starred(text) == ["sharp"] and "best: sharp, clearly more accurate" in text
        assert stars == {"sharp": True, "vague": False}
        assert page["comparison"]["verdict"].startswith("best: sharp")
    else:
        assert block["best"] is None and not v["sharp"]["best"] and not v["vague"]["best"]
        assert block["contenders"] == ["sharp", "vague"]
        assert starred(text) == []
        assert "no clear winner: sharp is the most accurate, but not clearly more than vague" in (
            text
        )
        assert stars == {"sharp": False, "vague": False}
        assert page["comparison"]["best"] is None
        assert page["comparison"]["verdict"].startswith("no clear winner")
    assert block["leader"] == "sharp"  # the most accurate, winner or not
