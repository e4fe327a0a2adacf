"""Identical requests through the Batch API are paid once (issue 23 item 20).

A batch run used to put every row in a shard, so a job repeating requests paid for each
copy, and `batchrun estimate`'s Batch API line, which assumes in-run dedupe, was wrong.
Now a repeated request (by the online rule: same key, `cacheable`) is not planned; it
gets its leader's answer as a ``"reused": "run"`` line once the leader's is written.
The in-process simulator counts the rows its batches answer: the distinct requests.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

import batchrun
from batchrun._api import make_runner
from batchrun._batch.driver import BatchDriver
from batchrun.sim import SimConfig, SimThread
from tests.test_batch_api import assert_exactly_once, assert_summary_is_a_recount, settings

N, DISTINCT = 300, 100


def write_repeats(path: Path, n: int = N, distinct: int = DISTINCT, **extra: Any) -> Path:
    """``n`` rows asking ``distinct`` questions (row i asks question i % distinct)."""
    with open(path, "w") as f:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question {i % distinct}"}],
                "max_tokens": 40,
                "temperature": 0,
                **extra,
            }
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def assert_followers_copy_their_leaders(out: Path) -> None:
    by_id = {r["custom_id"]: r for r in read(out / "results.jsonl")}
    for i in range(N):
        record = by_id[f"id-{i}"]
        meta = record["batchrun"]
        if i < DISTINCT:
            assert meta["via"] == "batch" and "reused" not in meta
        else:
            leader = by_id[f"id-{i % DISTINCT}"]
            assert (meta["reused"], meta["same_as"]) == ("run", leader["custom_id"])
            assert record["response"]["body"] == leader["response"]["body"]
            assert meta["row"] == i + 1 and meta["body_hash"] == leader["batchrun"]["body_hash"]


def test_identical_requests_are_sent_once_and_the_estimate_holds(tmp_path: Path) -> None:
    inp = write_repeats(tmp_path / "req.jsonl")
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        result = anyio.run(make_runner(settings(inp, out, sim.base_url), None).run)
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert stats["rows_processed"] == DISTINCT  # billed once per distinct request
    assert_exactly_once(out, N)
    assert_followers_copy_their_leaders(out)
    assert_summary_is_a_recount(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dedupe"] == {
        "cache_hits": 0,
        "deduped": N - DISTINCT,
        "duplicate_requests": N - DISTINCT,
    }
    assert summary["batch"]["rows_via_batch"] == DISTINCT
    # the estimate's Batch API line (typical answer lengths learned from this run) is
    # what the run cost
    actual = summary["cost_usd"]["total"]
    estimate = batchrun.estimate(str(inp), out_dir=str(out)).to_dict()["batch_api_cost_usd"]
    print(f"estimate {estimate['low']:.8f} to {estimate['high']:.8f}, actual {actual:.8f}")
    assert estimate["low"] <= actual * 1.02 and actual <= estimate["high"]
    assert abs(estimate["low"] - actual) <= 0.02 * actual


def test_no_dedupe_and_sampled_requests_send_every_row(tmp_path: Path) -> None:
    out = tmp_path / "off"
    inp = write_repeats(tmp_path / "req.jsonl", n=40, distinct=10)
    sampled = write_repeats(tmp_path / "sampled.jsonl", n=40, distinct=10, temperature=0.7)
    with SimThread(SimConfig()) as sim:
        anyio.run(make_runner(settings(inp, out, sim.base_url, dedupe=False), None).run)
        anyio.run(make_runner(settings(sampled, tmp_path / "sampled", sim.base_url), None).run)
        stats = sim.snapshot()
    assert stats["rows_processed"] == 80  # repeated on purpose: every copy is asked
    assert not [r for r in read(out / "results.jsonl") if "reused" in r["batchrun"]]


def test_a_follower_whose_leader_an_earlier_process_answered_reads_it_back(
    tmp_path: Path,
) -> None:
    inp = write_repeats(tmp_path / "req.jsonl")
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        anyio.run(make_runner(settings(inp, out, sim.base_url), None).run)
    # a process killed between its leaders' lines and their followers' lines
    results = out / "results.jsonl"
    kept = [x for x in results.read_text().splitlines() if '"reused"' not in x]
    assert len(kept) == DISTINCT
    results.write_text("".join(x + "\n" for x in kept))
    (out / "summary.json").unlink()
    with SimThread(SimConfig()) as sim:
        # another simulator is another endpoint (its port): resuming on it takes --force
        again = settings(inp, out, sim.base_url, force=True)
        result = anyio.run(make_runner(again, None).run)
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert stats["rows_processed"] == 0 and stats["files_uploaded"] == 0  # nothing sent
    assert_exactly_once(out, N)
    assert_followers_copy_their_leaders(out)
    assert_summary_is_a_recount(out)


def test_followers_wait_across_a_ctrl_c_and_an_online_resume(tmp_path: Path) -> None:
    inp = write_repeats(tmp_path / "req.jsonl")
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        # every shard at once (no opening batch for the quality breaker)
        cfg = settings(inp, out, sim.base_url, batch_max_requests=40, quality_breaker=0)
        driver = BatchDriver(cfg)

        async def ctrl_c(seconds: float) -> None:  # at the first wait: all shards created
            driver.interrupt()

        driver.sleep = ctrl_c
        assert anyio.run(driver.run).exit_code == 130
        assert not read(out / "results.jsonl")
        # the online resume collects the leaders' batches; their followers are not sent
        online = settings(inp, out, sim.base_url, mode="online")
        result = anyio.run(make_runner(online, None).run)
        sim.advance_batches()
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert stats["rows_processed"] == DISTINCT and stats["requests"] == 0
    assert_exactly_once(out, N)
    assert_followers_copy_their_leaders(out)
    modes = Counter(
        r["batchrun"].get("reused") or r["batchrun"].get("via") for r in read(out / "results.jsonl")
    )
    assert modes == {"batch": DISTINCT, "run": N - DISTINCT}


def test_a_pilot_then_batches_pay_each_distinct_request_once(tmp_path: Path) -> None:
    # a random sample picks copies of requests whose first row it leaves out: the pilot
    # sends them in their leader's place, and the batches must not send the leader again
    inp = write_repeats(tmp_path / "req.jsonl", n=200, distinct=60)
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        pilot = anyio.run(
            make_runner(settings(inp, out, sim.base_url, mode="online", sample=40), None).run
        )
        assert pilot.status == "partial"
        sent_online = sim.snapshot()["requests"]
        stand_ins = [
            r for r in read(out / "results.jsonl") if int(r["custom_id"].split("-")[1]) >= 60
        ]
        assert stand_ins  # the sample holds copies whose first row it did not pick
        rest = anyio.run(make_runner(settings(inp, out, sim.base_url), None).run)
        stats = sim.snapshot()
    assert rest.exit_code == 0, rest.notes
    assert sent_online + stats["rows_processed"] == 60  # each distinct request paid once
    assert_exactly_once(out, 200)
    answers: dict[str, Any] = {}
    for record in read(out / "results.jsonl"):
        text = record["response"]["body"]["choices"][0]["message"]["content"]
        question = int(record["custom_id"].split("-")[1]) % 60
        assert answers.setdefault(question, text) == text  # one answer per request


def test_a_leader_whose_stand_in_line_is_missing_is_planned_after_all(tmp_path: Path) -> None:
    from batchrun._batch.followers import Followers
    from batchrun._cache.dedup import RequestGroups
    from batchrun._ids import id_hash
    from batchrun._models import Request

    groups = RequestGroups()
    groups.add_many([b"k" * 16, b"k" * 16])
    rows = [Request("a", {}, row=1), Request("b", {}, row=2)]
    follow = Followers(groups.finish(), str(tmp_path), array("Q", [id_hash("a"), id_hash("b")]))
    follow.start_pass()
    assert follow.leader_of(0, rows[0]) is None and follow.leader_of(1, rows[1]) == 0
    # "b" counts as answered, but the run directory has no line for it
    assert follow.answered_member(0, lambda h: h == id_hash("b")) == 1
    follow.wait_for_member(1, rows[0], "00000000000000aa")
    assert follow.member_answered(1, rows[1], "00000000000000aa") == []
    assert follow.replan and follow.unreadable == {0}
    assert follow.answered_member(0, lambda h: True) is None  # the next pass plans it
