"""The simulator's labelling skill (`batchrun.sim.skill`, `batchrun.sim.logprobs`): known
accuracy per model, and probabilities that are calibrated whichever way batchrun reads
them (logprobs, agreement, the self-reported field); streams and plain answers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._confidence import ConfidenceReader, span_probability
from batchrun._jobs.calibration import expected_calibration_error
from batchrun.sim.config import LABELLING_MODELS, SimConfig, Skill
from batchrun.sim.content import completion_object, make_reply
from batchrun.sim.skill import gold_from_messages

LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": list(LABELS)},
        "confidence": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "confidence", "reason"],
    "additionalProperties": False,
}
SKILLS = SimConfig().skills


def ask(i: int, gold: str, model: str = "weak", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Label the sentiment."},
            {"role": "user", "content": f"Review {i}: it was fine I guess\n[gold: {gold}]"},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": SCHEMA, "strict": True},
        },
        "logprobs": True,
        "top_logprobs": 5,
        **extra,
    }


def answers(model: str, count: int, **extra: Any) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(7)
    out = []
    for i in range(count):
        gold = rng.choice(LABELS)
        reply = make_reply(ask(i, gold, model, **extra), 0, (8, 40), SKILLS)
        out.append((gold, completion_object(reply, f"c{i}", model, 0, "fp")))
    return out


READER = ConfidenceReader("logprobs", label_field="sentiment", labels=LABELS)


def test_the_weak_model_is_sure_on_its_share_and_calibrated_there() -> None:
    scored = [(gold, READER.read(body)) for gold, body in answers("weak", 2000, temperature=0)]
    assert all(s.confidence is not None for _, s in scored)
    sure = [(gold, s) for gold, s in scored if s.confidence > 0.8]  # type: ignore[operator]
    unsure = [(gold, s) for gold, s in scored if s.confidence <= 0.8]  # type: ignore[operator]
    assert len(sure) / 2000 == pytest.approx(0.7, abs=0.03)
    mean = sum(s.confidence for _, s in sure) / len(sure)  # type: ignore[misc]
    accuracy = sum(s.label == gold for gold, s in sure) / len(sure)
    assert mean == pytest.approx(0.97, abs=0.005)
    assert accuracy == pytest.approx(mean, abs=0.02)
    # elsewhere it guesses: one in three, and says so
    guess = sum(s.label == gold for gold, s in unsure) / len(unsure)
    assert guess == pytest.approx(1 / 3, abs=0.05)
    assert {round(s.confidence, 6) for _, s in unsure} == {round(1 / 3, 6)}  # type: ignore[arg-type]


def test_the_strong_model_is_right_as_configured() -> None:
    scored = [(gold, READER.read(body)) for gold, body in answers("strong", 2000, temperature=0)]
    accuracy = sum(s.label == gold for gold, s in scored) / 2000
    assert accuracy == pytest.approx(LABELLING_MODELS["strong"].accuracy(3), abs=0.02)
    assert LABELLING_MODELS["strong"].accuracy(3) == pytest.approx(0.95)
    confidences = [s.confidence for _, s in scored]
    right = [s.label == gold for gold, s in scored]
    assert expected_calibration_error(confidences, right) < 0.03  # type: ignore[arg-type]


def test_sampled_answers_and_the_self_reported_field_are_calibrated_too() -> None:
    sampled = answers("weak", 2000, temperature=1)
    scored = [(gold, READER.read(body)) for gold, body in sampled]
    confidences = [s.confidence for _, s in scored]
    right = [s.label == gold for gold, s in scored]
    assert expected_calibration_error(confidences, right) < 0.03  # type: ignore[arg-type]
    # sampling sometimes gives a label the model holds unlikely: less accurate than greedy
    assert sum(right) / 2000 < LABELLING_MODELS["weak"].accuracy(3)
    own = ConfidenceReader("self", label_field="sentiment", score_field="confidence")
    for (_, body), (_, logprob) in zip(sampled[:200], scored[:200], strict=True):
        assert own.read(body).confidence == pytest.approx(logprob.confidence, abs=0.006)


def test_agreement_between_samples_tracks_the_belief() -> None:
    reader = ConfidenceReader("agreement", label_field="sentiment")
    shares, right = [], []
    for gold, body in answers("weak", 400, temperature=1, n=9):
        scored = reader.read(body)
        assert len(body["choices"]) == 9
        shares.append(scored.confidence)
        right.append(scored.label == gold)
    sure = [r for s, r in zip(shares, right, strict=True) if s >= 0.8]  # type: ignore[operator]
    assert 0.55 < len(sure) / 400 < 0.8
    assert sum(sure) / len(sure) > 0.93


def test_the_same_text_gets_the_same_answer_and_the_marker_is_read() -> None:
    body = ask(1, "negative", temperature=0)
    one = make_reply(body, 0, (8, 40), SKILLS)
    assert one == make_reply(body, 0, (8, 40), SKILLS)
    assert gold_from_messages(body["messages"], LABELS) == "negative"
    marked = [{"role": "user", "content": "x [GOLD: Neutral] y"}]
    assert gold_from_messages(marked, LABELS) == "neutral"
    assert gold_from_messages([{"role": "user", "content": "[gold: maybe]"}], LABELS) is None
    # without a marker the truth is made up but stays with the text
    plain = {**body, "messages": [{"role": "user", "content": "Review: a chair"}]}
    first = make_reply(plain, 0, (8, 40), SKILLS).choices[0].content
    assert make_reply(plain, 0, (8, 40), SKILLS).choices[0].content == first


def test_plain_answers_and_models_without_a_skill() -> None:
    body = {
        "model": "weak",
        "messages": [{"role": "user", "content": "Label: ok [gold: neutral]"}],
        "logprobs": True,
        "top_logprobs": 3,
        "temperature": 0,
    }
    choice = make_reply(body, 0, (8, 40), SKILLS).choices[0]
    assert choice.content in LABELS
    assert choice.logprobs is not None
    reader = ConfidenceReader("logprobs", labels=LABELS)
    scored = reader.read(
        completion_object(make_reply(body, 0, (8, 40), SKILLS), "c", "weak", 0, "")
    )
    assert scored.label == choice.content and 0 < scored.confidence <= 1  # type: ignore[operator]
    # any model gets logprobs that spell its answer when it asks for them
    other = make_reply({**body, "model": "gpt-4o-mini"}, 0, (8, 40), SKILLS).choices[0]
    assert other.content is not None and other.logprobs is not None
    spelled = b"".join(bytes(t["bytes"]) for t in other.logprobs)
    assert spelled == other.content.encode()
    assert span_probability(list(other.logprobs), other.content, 0, len(other.content)) > 0
    # and none when it does not ask
    assert make_reply({**body, "logprobs": False}, 0, (8, 40), SKILLS).choices[0].logprobs is None


def test_a_skill_says_what_it_is() -> None:
    assert Skill(sure_share=0.7, right_when_sure=0.97).accuracy(3) == pytest.approx(0.779)
    with pytest.raises(ValueError, match="sure_share"):
        Skill(sure_share=1.5)
    with pytest.raises(ValueError, match="skills must map"):
        SimConfig(skills={"m": 0.9})  # type: ignore[dict-item]


def test_streamed_answers_carry_the_same_logprobs(tmp_path: Any) -> None:
    rows = [{"id": f"r{i}", "text": f"review {i}", "label": LABELS[i % 3]} for i in range(30)]
    common: dict[str, Any] = dict(
        model="weak",
        base_url="sim",
        id_column="id",
        prompt="Review: {text}\n[gold: {label}]",
        response_format=SCHEMA,
        temperature=0,
        confidence="logprobs",
        quiet=True,
    )
    batchrun.run(rows, tmp_path / "plain", **common)
    batchrun.run(rows, tmp_path / "streamed", stream=True, **common)
    plain = pq.read_table(tmp_path / "plain" / "results.parquet").to_pylist()
    streamed = pq.read_table(tmp_path / "streamed" / "results.parquet").to_pylist()
    assert [r["confidence"] for r in streamed] == pytest.approx([r["confidence"] for r in plain])
    assert [r["content"] for r in streamed] == [r["content"] for r in plain]
    line = json.loads((tmp_path / "streamed" / "results.jsonl").read_text().splitlines()[0])
    assert line["response"]["body"]["choices"][0]["logprobs"]["content"]


def test_the_sim_command_takes_skills() -> None:
    from click.testing import CliRunner

    from batchrun.sim.cli import _parse_skills, sim_command

    skills = _parse_skills(("cheap=0.6,0.95", "weak=0.5,0.9,0.5"))
    assert skills["cheap"] == Skill(sure_share=0.6, right_when_sure=0.95)
    assert (
        skills["weak"].right_when_unsure == 0.5 and skills["strong"] == LABELLING_MODELS["strong"]
    )
    out = CliRunner().invoke(sim_command, ["--skill", "cheap=0.6"])
    assert out.exit_code == 2 and "expected MODEL=SURE,RIGHT[,UNSURE]" in out.output
    out = CliRunner().invoke(sim_command, ["--skill", "cheap=1.6,0.9"])
    assert out.exit_code == 2 and "sure_share must be between 0 and 1" in out.output


ROOT = Path(__file__).resolve().parent.parent


def test_the_labelled_reviews_are_the_script_s() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_reviews", ROOT / "jobs/data/make_reviews.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.make_reviews(module.LABELLED_COUNT, module.LABELLED_SEED)
    written = (ROOT / "jobs/data/labelled_reviews.jsonl").read_text(encoding="utf-8")
    assert written == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert len(rows) == 1000 and len({r["text"] for r in rows}) == 1000
    assert {r["label"] for r in rows} == set(LABELS)


def test_the_confidence_job_runs_offline(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from batchrun._cli import cli

    out = tmp_path / "run"
    job = str(ROOT / "jobs" / "confidence.toml")
    result = CliRunner().invoke(cli, ["run", "-j", job, "-o", str(out), "--limit", "300", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["confidence"]["scored"] == 300
    calibration = summary["eval"]["calibration"]
    assert calibration["rows"] == 300 and calibration["ece"] < 0.05
    found = CliRunner().invoke(cli, ["eval", str(out), "--target-accuracy", "0.95", "--json"])
    threshold = json.loads(found.output)["calibration"]["threshold"]
    assert threshold["accuracy"] >= 0.95 and 0.6 < threshold["coverage"] < 0.8
