"""The model cascade (`batchrun._jobs.cascade`): the setting from Python, a job file and
the command line with its checks; the escalation rule; the issue's must-show run (a
labelling server whose cheap model is sure on 70% of texts, a strong model at ten
times the price: the strong model sees only the escalated rows, the cascade is as
accurate at well under half the cost); resumes that send nothing twice (a rerun, a
changed threshold, a pilot grown into the full run, the cache)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._jobs.cascade import escalates
from batchrun._jobs.jobfile import load_job
from batchrun._settings import Cascade, Settings
from batchrun.errors import ConfigError
from batchrun.sim import SimConfig, SimThread
from tests.test_kill import _complete_ids, _size

REVIEWS = Path(__file__).resolve().parent.parent / "jobs" / "data" / "labelled_reviews.jsonl"
LABELS = ["positive", "negative", "neutral"]
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": LABELS},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "reason"],
    "additionalProperties": False,
}
PRICES = {
    "models": {
        "weak": {"input": 0.15, "output": 0.60},
        "strong": {"input": 1.50, "output": 6.00},  # ten times the price
    }
}
JOB: dict[str, Any] = {
    "id_column": "id",
    "prompt": "Review: {text}\n[gold: {label}]",
    "response_format": SCHEMA,
    "temperature": 0,
    "eval": {"reference_column": "label", "compare": "json_field", "field": "sentiment"},
    "prices": PRICES,
    "auth": "none",
    "quiet": True,
}


def reviews(n: int = 1000) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in REVIEWS.read_text().splitlines()]
    return rows[:n]


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


def answered(sim: SimThread) -> dict[str, int]:
    """Requests each model answered with a 200, counted on the server."""
    by_model = sim.stats.to_dict()["by_model"]
    return {m: s["by_status"].get("200", 0) for m, s in by_model.items()}


def stage_rows(run_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(run_dir / "stages.parquet").to_pylist()


# -- the setting ---------------------------------------------------------------------------
def test_the_setting_from_python_a_job_file_and_the_command_line(tmp_path: Path) -> None:
    assert Settings.build(cascade=["weak", "strong"]).cascade == Cascade(("weak", "strong"))
    spec = Settings.build(
        cascade={"models": ["a", "b", "c"], "escalate_below": [0.7, 0.9], "confidence": "self"}
    ).cascade
    assert spec == Cascade(("a", "b", "c"), (0.7, 0.9), None, "self")
    assert spec.threshold(0) == 0.7 and spec.threshold(1) == 0.9
    bad = [
        (["weak"], r"cascade=.models: a cascade needs two models at least"),
        (["weak", "weak"], r"names a model twice"),
        ({"models": ["a", "b"], "escalate_below": 1.5}, r"escalate_below: must be above 0"),
        ({"models": ["a", "b"], "escalate_below": [0.5, 0.6]}, r"one per stage but the last \(1\)"),
        ({"models": ["a", "b"], "escalate_when": "disagrees"}, r"escalate_when: must be disagree"),
        ({"models": ["a", "b"], "confidence": "logprob"}, r"did you mean 'logprobs'"),
        ({"models": ["a", "b"], "threshold": 0.5}, r"cascade=.threshold: unknown key"),
    ]
    for value, message in bad:
        with pytest.raises(ConfigError, match=message):
            Settings.build(cascade=value)
    (tmp_path / "rows.jsonl").write_text('{"text": "hi"}\n')
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "rows.jsonl"\n[prompt]\nuser = "{text}"\n'
        '[cascade]\nmodels = ["weak", "strong"]\nescalate_below = 0.75\n'
    )
    assert load_job(job).values["cascade"] == Cascade(("weak", "strong"), (0.75,))
    # on the command line, over the job file's table: a real run against the simulator
    out = CliRunner().invoke(
        cli,
        ["run", "-j", str(job), "--cascade-escalate-below", "0.9", "-o", str(tmp_path / "r"),
         "--base-url", "sim", "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["cascade"]["escalate_below"] == [0.9]
    assert summary["cascade"]["models"] == ["weak", "strong"]
    out = CliRunner().invoke(
        cli,
        ["run", str(tmp_path / "rows.jsonl"), "--prompt", "{text}", "--cascade", "weak",
         "--cascade", "strong", "-o", str(tmp_path / "r2"), "--base-url", "sim", "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["cascade"]["rows"] == 1


def test_a_cascade_that_cannot_work_is_refused_before_sending(tmp_path: Path) -> None:
    rows = [{"text": "hi"}]
    base = {"base_url": "sim", "quiet": True}
    refused = [
        ({"cascade": ["weak", "strong"]}, r"cascade=: needs a prompt"),
        (
            {"cascade": ["weak", "strong"], "prompt": "{text}", "model": ["weak", "strong"]},
            r"cascade=: names the models itself",
        ),
        (
            {"cascade": ["weak", "strong"], "prompt": "{text}", "model": "strong"},
            r"model=: 'strong' is not the cascade's first model",
        ),
        (
            {"cascade": ["weak", "strong"], "prompt": "{text}", "ray": "local"},
            r"cascade= cannot run on ray=",
        ),
        (
            {"cascade": {"models": ["weak", "strong"], "confidence": "self"}, "prompt": "{text}",
             "confidence": "logprobs"},
            r"confidence 'self' differs from confidence= 'logprobs'",
        ),
        (
            {"cascade": ["weak", "strong"], "prompt": "{text}", "response_format": "json_object"},
            r"confidence.label_field: the answer is JSON",
        ),
    ]  # fmt: skip
    for extra, message in refused:
        with pytest.raises(ConfigError, match=message):
            batchrun.run(rows, tmp_path / "out", **base, **extra)
        assert not (tmp_path / "out").exists()


def test_the_escalation_rule() -> None:
    assert escalates("succeeded", 0.8, True, 0.8) is None  # at the threshold: sure enough
    assert escalates("succeeded", 0.79, True, 0.8) == "below"
    assert escalates("succeeded", 0.99, False, 0.8) == "unusable"  # a bad answer
    assert escalates("succeeded", None, True, 0.8) == "unusable"  # no confidence: not 1.0
    assert escalates("failed", None, False, 0.8) == "unusable"
    assert escalates("succeeded", 0.99, True, 0.8, disagrees=True) == "disagree"
    assert escalates("succeeded", 0.1, False, None) is None  # the last stage decides


# -- the must-show run -----------------------------------------------------------------------
def test_weak_then_strong_on_1000_labelled_reviews(tmp_path: Path, sim: SimThread) -> None:
    rows = reviews()
    cascade = batchrun.run(
        rows,
        tmp_path / "cascade",
        base_url=sim.base_url,
        cascade={"models": ["weak", "strong"], "confidence": "logprobs", "escalate_below": 0.8},
        **JOB,
    )
    assert cascade.exit_code == 0
    seen = answered(sim)
    block = cascade.summary["cascade"]
    weak, strong = block["stages"]
    # the strong model received only the escalated rows, about 30% of them
    assert seen == {"weak": 1000, "strong": weak["escalated"]}
    assert weak["rows"] == 1000 and strong["rows"] == weak["escalated"]
    assert 0.25 <= block["share_escalated"] <= 0.40
    assert weak["decided"] + strong["decided"] == 1000

    alone = batchrun.run(rows, tmp_path / "strong", base_url=sim.base_url, model="strong", **JOB)
    assert alone.exit_code == 0
    strong_accuracy = alone.summary["eval"]["accuracy"]
    strong_cost = alone.summary["cost_usd"]["total"]
    # as accurate as the strong model alone, within one point, at no more than half its cost
    assert cascade.summary["eval"]["accuracy"] >= strong_accuracy - 0.01
    assert block["eval"]["accuracy"] == cascade.summary["eval"]["accuracy"]
    assert block["cost_usd"] <= 0.5 * strong_cost
    assert block["cost_usd"] == pytest.approx(weak["cost_usd"] + strong["cost_usd"])
    # the last model alone, priced from the escalated rows' measured tokens
    assert block["last_stage_alone_usd"] == pytest.approx(strong_cost, rel=0.10)

    # results.parquet: one row per input row, the deciding answer, decided_by
    table = pq.read_table(tmp_path / "cascade" / "results.parquet").to_pylist()
    assert [r["id"] for r in table] == [r["id"] for r in rows]
    long = stage_rows(tmp_path / "cascade")
    first = {r["custom_id"]: r for r in long if r["stage"] == 1}
    second = {r["custom_id"]: r for r in long if r["stage"] == 2}
    assert len(first) == 1000 and len(long) == 1000 + len(second)
    by = Counter(r["decided_by"] for r in table)
    assert by == {"weak": weak["decided"], "strong": strong["decided"]}
    for row in table:
        one = first[row["custom_id"]]
        if one["confidence"] is not None and one["confidence"] >= 0.8:
            assert row["decided_by"] == "weak" and row["model"] == "weak"
            assert row["confidence"] == one["confidence"]
            assert row["custom_id"] not in second
        else:
            assert row["decided_by"] == "strong" and row["model"] == "strong"
            assert row["confidence"] == second[row["custom_id"]]["confidence"]
            assert json.loads(row["content"])["sentiment"] == row["sentiment"]
    # accuracy per stage: of the rows each decided
    correct = Counter(r["decided_by"] for r in table if r["sentiment"] == r["label"])
    assert weak["eval_decided"]["correct"] == correct["weak"]
    assert strong["eval_decided"]["correct"] == correct["strong"]
    assert weak["eval_decided"]["accuracy"] >= 0.93  # it decided where it was sure
    # the curve ends at the run itself, and starts at weak alone
    curve = block["curve"]
    assert curve[-1]["escalate_below"] == 0.8
    assert curve[-1]["accuracy"] == pytest.approx(cascade.summary["eval"]["accuracy"])
    assert curve[-1]["cost_usd"] == pytest.approx(block["cost_usd"])
    assert curve[0]["escalated"] == 0 and curve[0]["cost_usd"] == pytest.approx(weak["cost_usd"])
    assert curve[0]["accuracy"] == pytest.approx(weak["eval_seen"]["accuracy"])
    interval = cascade.summary["eval"]["accuracy_interval"]
    assert interval["low"] <= cascade.summary["eval"]["accuracy"] <= interval["high"]

    # a rerun sends nothing and changes nothing
    again = batchrun.run(
        rows,
        tmp_path / "cascade",
        base_url=sim.base_url,
        cascade={"models": ["weak", "strong"], "confidence": "logprobs", "escalate_below": 0.8},
        **JOB,
    )
    assert answered(sim) == {"weak": 1000, "strong": weak["escalated"] + 1000}
    assert pq.read_table(tmp_path / "cascade" / "results.parquet").to_pylist() == table
    assert again.summary["cascade"]["stages"][1]["decided"] == strong["decided"]


def test_a_higher_threshold_sends_only_the_newly_escalated_rows(
    tmp_path: Path, sim: SimThread
) -> None:
    rows = reviews(300)
    escalated = []
    for below in (0.8, 0.97, 0.8):  # a sure answer's confidence is about 0.95 to 0.99
        run = batchrun.run(
            rows,
            tmp_path / "run",
            base_url=sim.base_url,
            cascade={"models": ["weak", "strong"], "escalate_below": below},
            **JOB,
        )
        escalated.append(run.summary["cascade"]["stages"][0]["escalated"])
    low, high, back = escalated
    assert high > low + 30 and back == low
    # strong answered every row escalated at 0.97 once (those at 0.8 are among them),
    # and going back to 0.8 sent nothing
    assert answered(sim) == {"weak": 300, "strong": high}
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert Counter(r["decided_by"] for r in table)["strong"] == low


def test_a_pilot_then_the_full_run_pays_each_model_once_per_row(
    tmp_path: Path, sim: SimThread
) -> None:
    rows = reviews(300)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    pilot = batchrun.run(
        rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, limit=60, **JOB
    )
    assert pilot.status == "partial"
    assert pilot.summary["cascade"]["rows"] == 60
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert Counter(r["status"] for r in table) == {"succeeded": 60, "pending": 240}
    full = batchrun.run(rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, **JOB)
    assert full.status == "complete"
    escalated = full.summary["cascade"]["stages"][0]["escalated"]
    assert answered(sim) == {"weak": 300, "strong": escalated}


def test_the_cache_answers_a_second_cascade(tmp_path: Path, sim: SimThread) -> None:
    rows = reviews(100)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    cache = str(tmp_path / "cache")
    first = batchrun.run(
        rows, tmp_path / "a", base_url=sim.base_url, cascade=spec, cache=cache, **JOB
    )
    sent = answered(sim)
    second = batchrun.run(
        rows, tmp_path / "b", base_url=sim.base_url, cascade=spec, cache=cache, **JOB
    )
    assert answered(sim) == sent
    a = pq.read_table(tmp_path / "a" / "results.parquet").column("decided_by").to_pylist()
    b = pq.read_table(tmp_path / "b" / "results.parquet").column("decided_by").to_pylist()
    assert a == b
    assert second.summary["cascade"]["cost_usd"] == 0
    assert first.summary["cascade"]["cost_usd"] > 0


def test_without_an_id_column_later_stages_keep_the_row_ids(tmp_path: Path, sim: SimThread) -> None:
    rows = [{k: v for k, v in r.items() if k != "id"} for r in reviews(80)]
    job = {k: v for k, v in JOB.items() if k != "id_column"}
    run = batchrun.run(
        rows,
        tmp_path / "run",
        base_url=sim.base_url,
        cascade={"models": ["weak", "strong"], "escalate_below": 0.8},
        **job,
    )
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert "_cascade_id" not in table.column_names
    got = table.to_pylist()
    assert [r["custom_id"] for r in got] == [f"row-{i}" for i in range(1, 81)]
    assert {r["decided_by"] for r in got} == {"weak", "strong"}
    assert all(r["status"] == "succeeded" for r in got)
    assert run.summary["requests"]["succeeded"] == 80


# -- kill -9 during a cascade ----------------------------------------------------------------
KILL_ROWS = 400
KILL_CONCURRENCY = 4


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_during_a_cascade_decides_every_row_once_and_pays_once(tmp_path: Path) -> None:
    """SIGKILL `batchrun run` at random moments of both stages, rerun, repeat. The
    simulator runs in this process, so it counts every request across the kills."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    rng = random.Random(27)
    rows = reviews(KILL_ROWS)
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    out = tmp_path / "run"
    config = SimConfig(latency_ms=40.0, jitter_ms=20.0, record_bodies=10 * KILL_ROWS)
    with SimThread(config) as sim:
        job = tmp_path / "job.toml"
        job.write_text(
            f'[input]\npath = "{data}"\nid_column = "id"\n'
            f'[endpoint]\nbase_url = "{sim.base_url}"\nauth = "none"\n'
            "[request]\ntemperature = 0\n"
            '[prompt]\nuser = """Review: {text}\n[gold: {label}]"""\n'
            '[response_format]\ntype = "json_schema"\nschema_file = "schema.json"\n'
            '[cascade]\nmodels = ["weak", "strong"]\nescalate_below = 0.8\n'
        )
        cmd = [sys.executable, "-m", "batchrun", "run", "-j", str(job), "-o", str(out),
               "-c", str(KILL_CONCURRENCY), "-q"]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115 - closed below
        first = out / "stages" / "1-weak" / "results.jsonl"
        second = out / "stages" / "2-strong" / "results.jsonl"
        kills: list[str] = []
        try:
            # kills in stage 1, then in stage 2 (a rerun first settles stage 1, sending
            # nothing, writes the escalated rows again, then resumes stage 2)
            for watched in [first] * 4 + [second] * 4:
                before = _size(watched)
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
                deadline = time.monotonic() + 30
                while _size(watched) <= before and proc.poll() is None:
                    assert time.monotonic() < deadline, "the run wrote nothing in 30 s"
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.05, 0.6))
                if proc.poll() is not None:
                    break  # it finished: the kills are done
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=10) == -signal.SIGKILL
                kills.append(watched.parent.name)
                for path in (first, second):  # exactly once after every crash
                    ids = _complete_ids(path)
                    assert len(ids) == len(set(ids)), f"{path}: a row written twice"
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            assert proc.wait(timeout=60) == 0, (tmp_path / "stderr.log").read_text()[-2000:]
        finally:
            log.close()
        bodies = list(sim.stats.bodies)
        statuses = answered(sim)

    assert "1-weak" in kills and "2-strong" in kills, kills
    summary = json.loads((out / "summary.json").read_text())
    block = summary["cascade"]
    escalated = block["stages"][0]["escalated"]
    assert summary["status"] == "complete"
    # every row decided once
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["id"] for r in table) == sorted(r["id"] for r in rows)
    assert all(r["status"] == "succeeded" and r["decided_by"] for r in table)
    assert Counter(r["decided_by"] for r in table) == {
        "weak": KILL_ROWS - escalated,
        "strong": escalated,
    }
    # each stage's record holds each row it saw once
    assert sorted(_complete_ids(first)) == sorted(r["id"] for r in rows)
    strong_ids = _complete_ids(second)
    assert len(strong_ids) == len(set(strong_ids)) == escalated
    # on the server: each model got each row it saw, and sent again only the few rows
    # in flight when a kill landed (answered by the server, never by the dead process)
    sent: dict[str, Counter[str]] = {"weak": Counter(), "strong": Counter()}
    for body in bodies:
        sent[str(body["model"])][body["messages"][-1]["content"]] += 1
    assert len(sent["weak"]) == KILL_ROWS and len(sent["strong"]) == escalated
    for model, counts in sent.items():
        again = sum(n - 1 for n in counts.values())
        assert again <= len(kills) * KILL_CONCURRENCY, (model, again, kills)
        assert statuses[model] == sum(counts.values())


def test_the_example_job_runs_offline_and_saves(tmp_path: Path) -> None:
    job = Path(__file__).resolve().parent.parent / "jobs" / "cascade.toml"
    run = batchrun.run_job(job, out_dir=tmp_path / "run", quiet=True)
    assert run.exit_code == 0 and run.status == "complete"
    block = run.summary["cascade"]
    assert block["rows"] == 1000 and 0.2 <= block["share_escalated"] <= 0.4
    assert block["cost_usd"] <= 0.5 * block["last_stage_alone_usd"]
    assert block["eval"]["accuracy"] >= 0.93
    # the run directory reads like any other: status, the report, the results
    report = batchrun.open(tmp_path / "run").report()
    assert "cascade weak -> strong (escalate below 0.8)" in report
    assert "stage 2 strong: " in report
    assert batchrun.open(tmp_path / "run").results().num_rows == 1000
    out = CliRunner().invoke(cli, ["status", str(tmp_path / "run")], catch_exceptions=False)
    assert out.exit_code == 0 and "escalated past stage 1" in out.output
    # its tokens are every stage's, not only the deciding answers'
    tokens = sum(s["usage"]["total_tokens"] for s in block["stages"])
    assert f"tokens      {tokens:,}:" in out.output


def test_two_cheap_variants_decide_only_where_both_are_sure_and_agree(tmp_path: Path) -> None:
    from batchrun.sim.config import LABELLING_MODELS, Skill

    skills = {**LABELLING_MODELS, "weak2": Skill(sure_share=0.7, right_when_sure=0.97)}
    rows = reviews(300)
    spec = {"models": ["weak", "weak2", "strong"], "escalate_when": "disagree"}
    with SimThread(SimConfig(skills=skills)) as sim:
        run = batchrun.run(rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, **JOB)
        seen = answered(sim)
    assert run.exit_code == 0
    long = stage_rows(tmp_path / "run")
    first = {r["custom_id"]: r for r in long if r["stage"] == 1}
    second = {r["custom_id"]: r for r in long if r["stage"] == 2}
    third = {r["custom_id"]: r for r in long if r["stage"] == 3}
    # both cheap variants answered every row; the strong model only the doubtful ones
    assert len(first) == len(second) == 300
    assert seen == {"weak": 300, "weak2": 300, "strong": len(third)}

    def label(row: dict[str, Any]) -> str:
        return str(json.loads(row["content"])["sentiment"])

    doubtful = {
        cid
        for cid, one in first.items()
        if one["confidence"] < 0.8
        or second[cid]["confidence"] < 0.8
        or label(one) != label(second[cid])
    }
    assert set(third) == doubtful
    assert any(label(first[c]) != label(second[c]) for c in doubtful)  # a real disagreement
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    for row in table:
        assert row["decided_by"] == ("strong" if row["custom_id"] in doubtful else "weak2")
    reasons = run.summary["cascade"]["stages"][1]["reasons"]
    assert set(reasons) <= {"disagree", "below", "below at stage 1", "unusable"}
    assert run.summary["cascade"]["stages"][0]["reasons"]["second opinion"] > 0
    # the share escalated is past the cheap pair
    assert run.summary["cascade"]["escalated_past_stage"] == 2
    assert run.summary["cascade"]["share_escalated"] == len(third) / 300
    with pytest.raises(ConfigError, match="'disagree' needs three models at least"):
        batchrun.run(
            rows, tmp_path / "two", base_url=sim.base_url,
            cascade={"models": ["weak", "strong"], "escalate_when": "disagree"}, **JOB,
        )  # fmt: skip


def test_an_estimate_counts_every_row_at_every_stage(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reviews(50)))
    report = batchrun.estimate(
        str(path), cascade=["weak", "strong"], **{k: v for k, v in JOB.items() if k != "quiet"}
    )
    assert {m: e.requests for m, e in report.models.items()} == {"weak": 50, "strong": 50}
    assert report.to_dict()["cost_usd"]["low"] > 0


def test_the_budget_covers_every_stage(tmp_path: Path, sim: SimThread) -> None:
    rows = reviews(200)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    job = {**JOB, "max_tokens": 80, "concurrency": 4}
    free = batchrun.run(rows, tmp_path / "free", base_url=sim.base_url, cascade=spec, **job)
    weak, strong = (s["cost_usd"] for s in free.summary["cascade"]["stages"])
    # enough for stage 1 and half of stage 2: stage 2 stops at what is left
    cap = weak + strong / 2
    capped = batchrun.run(
        rows, tmp_path / "capped", base_url=sim.base_url, cascade=spec, max_cost=cap, **job
    )
    assert capped.exit_code == 3
    block = capped.summary["cascade"]
    assert block["stages"][0]["cost_usd"] == pytest.approx(weak)
    assert 0 < block["stages"][1]["cost_usd"] < strong
    assert block["cost_usd"] <= cap
    assert capped.summary["requests"]["pending"] > 0


def test_the_review_queue_shows_every_stage_disagreeing_rows_first(
    tmp_path: Path, sim: SimThread
) -> None:
    from batchrun._jobs.review import write_review

    rows = reviews(300)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    batchrun.run(rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, **JOB)
    report, data = write_review(str(tmp_path / "run"), None, below=1.0)
    queue = [json.loads(line) for line in data.splitlines()]
    assert report.rows == len(queue) == 300
    long = stage_rows(tmp_path / "run")
    stages = Counter(r["custom_id"] for r in long)
    split = [len({s["prediction"] for s in q.get("stages", ())}) > 1 for q in queue]
    assert any(split) and not all(split)
    first_agreeing = split.index(False)
    assert all(split[:first_agreeing]) and not any(split[first_agreeing:])
    for q in queue:
        assert len(q["stages"]) == stages[q["custom_id"]]
        assert q["stages"][-1]["model"] == q["model"]  # the deciding answer last
        assert q["stages"][-1]["prediction"] == q["prediction"]
    rest = [q["confidence"] for q in queue[first_agreeing:]]
    assert rest == sorted(rest)
    # Label Studio: one scored prediction per stage
    _, data = write_review(str(tmp_path / "run"), None, below=1.0, format="label-studio")
    tasks = json.loads(data)
    assert len(tasks[0]["predictions"]) == 2
    assert tasks[0]["predictions"][1]["model_version"] == "stage 1: weak"


def test_through_the_batch_api_stage_by_stage(tmp_path: Path, sim: SimThread) -> None:
    rows = reviews(120)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    prices = {
        "models": {
            "weak": {"input": 0.15, "output": 0.60, "batch_input": 0.075, "batch_output": 0.30},
            "strong": {"input": 1.50, "output": 6.00, "batch_input": 0.75, "batch_output": 3.0},
        }
    }
    job = {**JOB, "prices": prices, "poll_interval": 0.1}
    run = batchrun.run(
        rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, mode="batch", **job
    )
    assert run.exit_code == 0 and run.status == "complete"
    block = run.summary["cascade"]
    weak, strong = block["stages"]
    stats = sim.stats.to_dict()
    # one batch (at least) per stage; the strong one holds the escalated rows only
    assert stats["requests"] == 0  # nothing online
    assert stats["rows_processed"] == 120 + weak["escalated"] == 120 + strong["rows"]
    for stage in ("1-weak", "2-strong"):
        lines = (tmp_path / "run" / "stages" / stage / "results.jsonl").read_text().splitlines()
        assert {json.loads(line)["batchrun"]["via"] for line in lines} == {"batch"}
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert Counter(r["decided_by"] for r in table) == {
        "weak": weak["decided"],
        "strong": strong["decided"],
    }
    created = stats["batches_created"]
    batchrun.run(rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, mode="batch", **job)
    assert sim.stats.to_dict()["batches_created"] == created  # a rerun sends nothing


def test_a_cascade_is_not_streamed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stream\(\) cannot run a cascade="):
        batchrun.stream(reviews(3), tmp_path / "run", cascade=["weak", "strong"], **JOB)
    assert not (tmp_path / "run").exists()


def test_eval_and_a_lost_results_parquet_rebuild_from_the_stages(
    tmp_path: Path, sim: SimThread
) -> None:
    rows = reviews(150)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    run = batchrun.run(rows, tmp_path / "run", base_url=sim.base_url, cascade=spec, **JOB)
    path = tmp_path / "run" / "results.parquet"
    before = pq.read_table(path).to_pylist()
    sent = answered(sim)
    scored = run.evaluate(target_accuracy=0.95)
    assert scored["eval"]["accuracy"] == run.summary["cascade"]["eval"]["accuracy"]
    assert "threshold" in scored["eval"]["calibration"]
    assert pq.read_table(path).to_pylist() == before
    path.unlink()
    assert batchrun.open(tmp_path / "run").results().to_pylist() == before
    assert answered(sim) == sent  # nothing sent
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["cascade"]["rows"] == 150


def test_a_cascade_in_its_first_pass_points_at_its_stages(tmp_path: Path) -> None:
    from batchrun.errors import RunDirError

    (tmp_path / "run" / "stages" / "1-weak").mkdir(parents=True)
    with pytest.raises(RunDirError, match=r"a cascade still in its first pass.*stages/1-weak"):
        batchrun.open(tmp_path / "run")


def test_a_cascade_over_a_pool_of_endpoints(tmp_path: Path) -> None:
    """Each stage is routed over the pool like any run: the two servers together answer
    every row once per model it reaches, each line names its endpoint, and summary.json
    adds up each endpoint over the stages."""
    rows = reviews(120)
    spec = {"models": ["weak", "strong"], "escalate_below": 0.8}
    with SimThread(SimConfig(seed=3)) as a, SimThread(SimConfig(seed=4)) as b:
        job = {k: v for k, v in JOB.items() if k != "auth"}
        run = batchrun.run(
            rows,
            tmp_path / "run",
            cascade=spec,
            endpoints={
                "a": {"base_url": a.base_url, "auth": "none", "concurrency": 2},
                "b": {"base_url": b.base_url, "auth": "none", "concurrency": 2},
            },
            **job,
        )
        assert run.status == "complete", run.summary
        escalated = run.summary["cascade"]["stages"][0]["escalated"]
        served = Counter(answered(a)) + Counter(answered(b))
        assert served == {"weak": 120, "strong": escalated}
        assert sum(answered(a).values()) > 0 and sum(answered(b).values()) > 0
    endpoints = run.summary["endpoints"]
    assert set(endpoints) == {"a", "b"}
    assert sum(e["answered"] for e in endpoints.values()) == 120 + escalated
    for number in ("1-weak", "2-strong"):
        lines = (tmp_path / "run" / "stages" / number / "results.jsonl").read_text()
        assert all(json.loads(line)["batchrun"]["endpoint"] for line in lines.splitlines())
