"""Offline evaluation (issue 17): variants compared side by side, pilots, the response
cache and in-run dedupe, Jinja templates, `batchrun eval` on variants. Against the
loopback simulator, which counts (and records) what it is sent.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._input.pilot import PilotPicker
from batchrun._models import Request
from batchrun.errors import ConfigError, InputError
from batchrun.sim import SimConfig, SimThread

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "jobs" / "data" / "reviews.jsonl"
SCHEMA = ROOT / "jobs" / "schemas" / "sentiment.json"
N_REVIEWS = 300

VARIANTS_JOB = f"""
name = "compare"
[input]
path = "{REVIEWS}"
id_column = "id"
[request]
model = ["gpt-4o-mini", "gpt-4.1-mini"]
temperature = 0
max_tokens = 80
[prompt]
system = "You label the sentiment of product reviews."
[prompts.terse]
user = "Review: {{text}}"
[prompts.product]
user = \"\"\"Product: {{product}}
Review: {{text}}\"\"\"
[response_format]
type = "json_schema"
name = "sentiment"
schema_file = "{SCHEMA}"
[eval]
reference_column = "label"
compare = "json_field"
field = "sentiment"
"""


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=2000)) as server:
        yield server


def lines(run_dir: Path, name: str = "results.jsonl") -> list[dict[str, Any]]:
    path = run_dir / name
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


# -- variants ---------------------------------------------------------------------------
def test_two_models_two_prompts_compared_and_nothing_paid_twice(
    sim: SimThread, tmp_path: Path
) -> None:
    job = tmp_path / "compare.toml"
    job.write_text(VARIANTS_JOB)
    out = tmp_path / "run"
    run = batchrun.run_job(job, out_dir=out, base_url=sim.base_url, quiet=True)
    assert run.status == "complete" and sim.stats.requests == 4 * N_REVIEWS

    names = [
        "terse/gpt-4o-mini",
        "terse/gpt-4.1-mini",
        "product/gpt-4o-mini",
        "product/gpt-4.1-mini",
    ]
    variants = run.variants
    assert variants is not None and [v["name"] for v in variants] == names
    for v in variants:
        assert v["succeeded"] == N_REVIEWS and v["n"] == N_REVIEWS
        assert 0 <= v["accuracy_low"] <= v["accuracy"] <= v["accuracy_high"] <= 1
        assert v["cost_usd"] > 0 and v["prompt_tokens"] > 0 and v["macro_f1"] is not None
        assert v["latency_p50_ms"] is not None
    # the dearer model costs more on the same prompts
    assert variants[1]["cost_usd"] > variants[0]["cost_usd"]
    # the simulator's labels are noise: the most accurate variant leads by luck, and
    # its paired differences' intervals include 0, so none is starred
    block = run.summary["comparison"]
    leader = max(variants, key=lambda v: v["accuracy"])
    assert block["leader"] == leader["name"] and len(block["pairs"]) == 6
    assert block["best"] is None and not any(v["best"] for v in variants)
    assert leader["name"] in block["contenders"] and len(block["contenders"]) > 1
    for pair in block["pairs"]:
        assert pair["rows"] == N_REVIEWS and 0 <= pair["agree"] <= 1
        assert pair["difference_low"] <= pair["accuracy_difference"] <= pair["difference_high"]
    # the flat evaluation is the leader's, each variant's whole report beside it
    assert run.eval is not None and run.eval["variant"] == leader["name"]
    assert set(run.eval["variants"]) == set(names)

    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 4 * N_REVIEWS
    assert table.column_names[:3] == ["custom_id", "row", "variant"]
    first = table.slice(0, 4).to_pylist()
    assert [r["custom_id"] for r in first] == [f"{first[0]['id']}@{n}" for n in names]
    assert {r["variant"] for r in first} == set(names) and len({r["row"] for r in first}) == 1

    status = CliRunner().invoke(cli, ["status", str(out)])
    assert "variants    (* best)" in status.output
    assert not any(x.lstrip().startswith("* ") for x in status.output.splitlines())
    assert f"no clear winner: {leader['name']} is the most accurate" in status.output

    # a rerun sends nothing
    again = batchrun.run_job(job, out_dir=out, base_url=sim.base_url, quiet=True)
    assert again.status == "complete" and sim.stats.requests == 4 * N_REVIEWS

    # one prompt changed: only its two variants' rows are sent
    before = len(lines(out))
    job.write_text(VARIANTS_JOB.replace('user = "Review: {text}"', 'user = "Text: {text}"'))
    changed = batchrun.run_job(job, out_dir=out, base_url=sim.base_url, quiet=True)
    assert changed.status == "complete" and sim.stats.requests == 6 * N_REVIEWS
    new = lines(out)[before:]
    assert len(new) == 2 * N_REVIEWS
    assert {x["custom_id"].split("@", 1)[1] for x in new} == {names[0], names[1]}
    assert any("variants changed since the last run" in n for n in changed.notes)
    assert changed.summary["requests"]["succeeded"] == 4 * N_REVIEWS


def test_variants_need_a_prompt_in_one_place(tmp_path: Path) -> None:
    job = tmp_path / "both.toml"
    job.write_text(VARIANTS_JOB.replace("[prompt]\n", '[prompt]\nuser = "{text}"\n'))
    with pytest.raises(ConfigError, match="not both"):
        batchrun.run_job(job, out_dir=tmp_path / "x", base_url="sim")


def test_a_request_file_runs_once_per_model(sim: SimThread, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"custom_id": f"q{i}", "body": {"model": "x", "messages": [
                {"role": "user", "content": f"question {i}"}]}}) + "\n"
            for i in range(5)
        )
    )  # fmt: skip
    run = batchrun.run(
        requests, tmp_path / "out", model=["gpt-4o-mini", "gpt-4.1-mini"],
        base_url=sim.base_url, quiet=True,
    )  # fmt: skip
    assert run.status == "complete" and sim.stats.requests == 10
    assert (
        sorted(b["model"] for b in sim.stats.bodies) == ["gpt-4.1-mini"] * 5 + ["gpt-4o-mini"] * 5
    )
    assert {x["custom_id"] for x in lines(tmp_path / "out")} == {
        f"q{i}@{m}" for i in range(5) for m in ("gpt-4o-mini", "gpt-4.1-mini")
    }


def test_eval_scores_a_subset_of_variants_without_sending(sim: SimThread, tmp_path: Path) -> None:
    job = tmp_path / "compare.toml"
    job.write_text(VARIANTS_JOB)
    out = tmp_path / "run"
    batchrun.run_job(job, out_dir=out, base_url=sim.base_url, quiet=True)
    sent = sim.stats.requests
    two = ["terse/gpt-4o-mini", "product/gpt-4o-mini"]
    result = CliRunner().invoke(
        cli, ["eval", str(out), "--variant", two[0], "--variant", two[1], "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [v["name"] for v in report["variants"]] == two
    assert [p["a"] for p in report["comparison"]["pairs"]] == [two[0]]
    assert report["comparison"]["leader"] in two and sim.stats.requests == sent
    assert report["comparison"]["best"] in (*two, None)
    text = CliRunner().invoke(cli, ["eval", str(out), "--variant", two[0], "--variant", two[1]])
    assert "terse/gpt-4.1-mini" not in text.output and two[1] in text.output
    wrong = CliRunner().invoke(cli, ["eval", str(out), "--variant", "terse/gpt-4o"])
    assert wrong.exit_code == 1 and "no variant 'terse/gpt-4o'" in wrong.output
    # the Python twin; the whole comparison stays recorded in summary.json
    again = batchrun.open(out).evaluate(variants=[two[0]])
    assert len(again["variants"]) == 1
    assert len(json.loads((out / "summary.json").read_text())["variants"]) == 4


# -- pilots -----------------------------------------------------------------------------
def sentiment(sim: SimThread, **extra: Any) -> dict[str, Any]:
    return {"base_url": sim.base_url, "quiet": True, "rpm": None, "tpm": None, **extra}


def test_a_pilot_then_the_full_run_sends_every_row_once(sim: SimThread, tmp_path: Path) -> None:
    job = ROOT / "jobs" / "sentiment.toml"
    out = tmp_path / "run"
    pilot = batchrun.run_job(job, **sentiment(sim, out_dir=out, limit=20))
    assert (pilot.status, pilot.exit_code, sim.stats.requests) == ("partial", 0, 20)
    summary = pilot.summary
    assert summary["pilot"]["rows"] == 20 and summary["pilot"]["input_rows"] == N_REVIEWS
    examples = summary["pilot"]["examples"]
    assert len(examples) == 3 and set(examples[0]["input"]) == {"product", "text"}
    assert examples[0]["parsed"]["sentiment"] in ("positive", "negative", "neutral")
    first = {x["custom_id"] for x in lines(out)}
    assert first == {f"rev-{i:04d}" for i in range(1, 21)}

    full = batchrun.run_job(job, **sentiment(sim, out_dir=out))
    assert full.status == "complete" and sim.stats.requests == N_REVIEWS
    ids = [x["custom_id"] for x in lines(out)]
    assert len(ids) == len(set(ids)) == N_REVIEWS  # every row once, the pilot's not again


def test_a_sample_is_the_same_rows_whatever_their_order() -> None:
    def picked(ids: list[str], seed: int) -> set[str]:
        picker = PilotPicker(sample=10, seed=seed)
        for row, custom_id in enumerate(ids, 1):
            picker.observe(Request(custom_id, {}, row), b"")
        chosen = picker.finish()
        return {i for row, i in enumerate(ids, 1) if chosen.wants(Request(i, {}, row))}

    ids = [f"r{i}" for i in range(200)]
    shuffled = random.Random(3).sample(ids, len(ids))
    assert len(picked(ids, 1)) == 10
    assert picked(ids, 1) == picked(shuffled, 1) == picked(ids, 1)
    assert picked(ids, 1) != picked(ids, 2)


def test_a_sample_run_sends_the_sample(sim: SimThread, tmp_path: Path) -> None:
    job = ROOT / "jobs" / "sentiment.toml"
    run = batchrun.run_job(job, **sentiment(sim, out_dir=tmp_path / "s", sample=25, seed=4))
    assert run.status == "partial" and sim.stats.requests == 25
    again = batchrun.run_job(job, **sentiment(sim, out_dir=tmp_path / "t", sample=25, seed=4))
    assert {x["custom_id"] for x in lines(tmp_path / "s")} == {
        x["custom_id"] for x in lines(tmp_path / "t")
    }
    assert again.status == "partial"


# -- paying once ------------------------------------------------------------------------
def test_the_cache_answers_a_new_run_directory_for_free(sim: SimThread, tmp_path: Path) -> None:
    job = ROOT / "jobs" / "sentiment.toml"
    cache = tmp_path / "cache"
    first = batchrun.run_job(job, **sentiment(sim, out_dir=tmp_path / "a", cache=str(cache)))
    assert first.status == "complete" and sim.stats.requests == N_REVIEWS
    second = batchrun.run_job(job, **sentiment(sim, out_dir=tmp_path / "b", cache=str(cache)))
    assert second.status == "complete" and sim.stats.requests == N_REVIEWS  # nothing sent
    summary = second.summary
    assert summary["reused"]["cache"] == N_REVIEWS
    assert summary["cost_usd"]["total"] == 0 and summary["saved_usd"] == pytest.approx(
        first.summary["cost_usd"]["total"]
    )
    assert all(x["batchrun"]["reused"] == "cache" for x in lines(tmp_path / "b"))
    before = {x["custom_id"]: x["response"]["body"] for x in lines(tmp_path / "a")}
    after = {x["custom_id"]: x["response"]["body"] for x in lines(tmp_path / "b")}
    assert before == after
    assert second.eval == first.eval
    status = CliRunner().invoke(cli, ["status", str(tmp_path / "b")])
    assert "reused      300 answers from the cache" in status.output


def test_a_sampled_request_is_not_cached_unless_asked(sim: SimThread, tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"t{i}"} for i in range(10)]
    common = {"prompt": "{text}", "id_column": "id", "model": "gpt-4o-mini", "quiet": True,
              "base_url": sim.base_url, "temperature": 0.7,
              "cache": str(tmp_path / "c")}  # fmt: skip
    batchrun.run(rows, tmp_path / "a", **common)
    batchrun.run(rows, tmp_path / "b", **common)
    assert sim.stats.requests == 20
    batchrun.run(rows, tmp_path / "c", cache_policy="all", **common)
    batchrun.run(rows, tmp_path / "d", cache_policy="all", **common)
    assert sim.stats.requests == 30


def test_two_processes_share_one_cache(sim: SimThread, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    job = ROOT / "jobs" / "sentiment.toml"
    args = ["-m", "batchrun", "run", "-j", str(job), "--base-url", sim.base_url, "-q",
            "--cache", str(cache)]  # fmt: skip
    procs = [
        subprocess.Popen([sys.executable, *args, "-o", str(tmp_path / f"p{i}")], cwd=tmp_path)
        for i in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert N_REVIEWS <= sim.stats.requests <= 2 * N_REVIEWS
    from batchrun._cache.store import ResponseCache

    with ResponseCache(cache / "responses.sqlite") as store:
        assert store.integrity_check() == "ok" and len(store) == N_REVIEWS
    third = batchrun.run_job(job, **sentiment(sim, out_dir=tmp_path / "p3", cache=str(cache)))
    sent = sim.stats.requests
    assert third.summary["reused"]["cache"] == N_REVIEWS and sim.stats.requests == sent


def duplicated_rows(n: int = 100, unique: int = 70) -> list[dict[str, Any]]:
    texts = [f"review number {i}" for i in range(unique)]
    pick = random.Random(7)
    return [
        {"id": f"r{i}", "text": texts[i] if i < unique else pick.choice(texts)} for i in range(n)
    ]


def test_identical_requests_of_a_run_are_sent_once(sim: SimThread, tmp_path: Path) -> None:
    rows = duplicated_rows()
    common = {"prompt": "Label: {text}", "id_column": "id", "model": "gpt-4o-mini",
              "quiet": True, "base_url": sim.base_url, "temperature": 0}  # fmt: skip
    run = batchrun.run(rows, tmp_path / "a", **common)
    assert run.status == "complete" and sim.stats.requests == 70  # 30% duplicates: 70% sent
    answers = {x["custom_id"]: x for x in lines(tmp_path / "a")}
    assert len(answers) == 100
    by_text: dict[str, set[str]] = {}
    for row in rows:
        line = answers[row["id"]]
        by_text.setdefault(row["text"], set()).add(json.dumps(line["response"]["body"]))
    assert all(len(bodies) == 1 for bodies in by_text.values())  # each text, one answer
    followers = [x for x in answers.values() if x["batchrun"].get("reused") == "run"]
    assert len(followers) == 30 and all(x["batchrun"]["same_as"] in answers for x in followers)
    assert run.summary["reused"]["run"] == 30
    # tokens are counted once: the copies' usage is saved, not spent
    spent = run.summary["usage"]["total_tokens"]
    saved = run.summary["reused"]["saved_usage"]["total_tokens"]
    assert spent + saved == sum(
        x["response"]["body"]["usage"]["total_tokens"] for x in answers.values()
    )

    # sampled requests are each a draw: all sent
    hot = batchrun.run(rows, tmp_path / "b", **{**common, "temperature": 0.9})
    assert hot.status == "complete" and sim.stats.requests == 170


def test_followers_of_rows_answered_earlier_are_not_sent(sim: SimThread, tmp_path: Path) -> None:
    rows = duplicated_rows()
    common = {"prompt": "Label: {text}", "id_column": "id", "model": "gpt-4o-mini",
              "quiet": True, "base_url": sim.base_url, "temperature": 0}  # fmt: skip
    # the first 70 rows are every text once: the pilot sends them all
    batchrun.run(rows, tmp_path / "a", limit=70, **common)
    assert sim.stats.requests == 70
    full = batchrun.run(rows, tmp_path / "a", **common)
    assert full.status == "complete" and sim.stats.requests == 70  # the 30 copies read back
    assert len({x["custom_id"] for x in lines(tmp_path / "a")}) == 100
    # a pilot whose rows include a copy but not its first: the copy is sent in its place
    late = [r for r in rows[70:]][:5]
    b = batchrun.run(late + rows[:70], tmp_path / "b", limit=5, **common)
    assert b.status == "partial" and sim.stats.requests == 70 + len({r["text"] for r in late})


# -- Jinja templates ----------------------------------------------------------------------
def test_a_jinja_template_with_conditions_loops_and_examples(
    sim: SimThread, tmp_path: Path
) -> None:
    examples = tmp_path / "shots.jsonl"
    examples.write_text(
        json.dumps({"text": "Loved it", "label": "positive"})
        + "\n"
        + json.dumps({"text": "Broke in a day", "label": "negative"})
        + "\n"
    )
    rows = [
        {"id": "a", "text": "Great", "tags": ["kitchen", "gift"], "urgent": True},
        {"id": "b", "text": "Meh", "tags": [], "urgent": False},
    ]
    template = (
        "{% for shot in examples %}Review: {{ shot.text }} -> {{ shot.label }}\n{% endfor %}"
        "Review: {{ text }}{% if tags %} (tags: {{ tags | join(', ') }}){% endif %}"
        "{% if urgent %} URGENT{% endif %}"
    )
    run = batchrun.run(
        rows, tmp_path / "j", prompt=template, examples=str(examples), id_column="id",
        model="gpt-4o-mini", base_url=sim.base_url, quiet=True,
    )  # fmt: skip
    assert run.status == "complete" and sim.stats.requests == 2
    sent = {b["messages"][-1]["content"] for b in sim.stats.bodies}
    shots = "Review: Loved it -> positive\nReview: Broke in a day -> negative\n"
    assert sent == {
        shots + "Review: Great (tags: kitchen, gift) URGENT",
        shots + "Review: Meh",
    }


def test_a_missing_jinja_variable_fails_before_anything_is_sent(
    sim: SimThread, tmp_path: Path
) -> None:
    rows = [{"id": "a", "text": "Great"}]
    with pytest.raises(InputError, match="lable"):
        batchrun.run(
            rows, tmp_path / "j", prompt="{{ text }} {{ lable }}", id_column="id",
            model="gpt-4o-mini", base_url=sim.base_url, quiet=True,
        )  # fmt: skip
    assert sim.stats.requests == 0
    with pytest.raises(ConfigError, match="line 1"):
        batchrun.run(rows, tmp_path / "k", prompt="{{ text }", model="m", base_url=sim.base_url)


def test_the_estimate_prices_what_a_run_would_send(tmp_path: Path) -> None:
    rows = duplicated_rows()
    common = {"prompt": "Label: {text}", "id_column": "id", "model": "gpt-4o-mini",
              "temperature": 0, "max_tokens": 20}  # fmt: skip
    assert batchrun.estimate(rows, **common).requests == 70  # copies are not paid for
    assert batchrun.estimate(rows, dedupe=False, **common).requests == 100
    assert batchrun.estimate(rows, limit=20, **common).requests == 20
    assert batchrun.estimate(rows, sample=10, **common).requests == 10
    # a pilot holding a copy but not its first: the copy is paid for
    late = rows[70:75]
    assert batchrun.estimate(late + rows[:70], limit=5, **common).requests == len(
        {r["text"] for r in late}
    )
    two = batchrun.estimate(rows, **{**common, "model": ["gpt-4o-mini", "gpt-4.1-mini"]})
    assert two.requests == 140
