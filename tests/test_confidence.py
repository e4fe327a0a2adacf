"""Confidence per answer (`batchrun._confidence`): from logprobs, agreement and the
model's own estimate, checked against hand-computed values; the setting in job files,
on the command line and in Python; the request fields; the confidence column of
results.parquet and the warning for an endpoint that returns no logprobs."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._confidence import (
    NO_ANSWER,
    NO_LABEL,
    NO_LOGPROBS,
    NO_SCORE,
    UNALIGNED,
    ConfidenceReader,
    json_field_span,
    label_span,
    majority,
    request_fields,
    self_score,
    span_probability,
    with_request_fields,
)
from batchrun._engine.hooks import CompositeHooks
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK
from batchrun._jobs.jobfile import load_job
from batchrun._jobs.outputs import DatasetOutputHooks
from batchrun._settings import Settings
from batchrun._templating.text import body_builder
from batchrun._values import Confidence, Evaluation, ResponseFormat
from batchrun.errors import ConfigError, RunDirError
from tests.conftest import FakeTime, completion

LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": list(LABELS)},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "reason"],
    "additionalProperties": False,
}


def tok(text: str, p: float, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"token": text, "logprob": math.log(p)}
    if top is not None:
        entry["top_logprobs"] = [{"token": t, "logprob": math.log(q)} for t, q in top]
    return entry


def response(content: str | None, tokens: list[dict[str, Any]] | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}}
    choice["logprobs"] = None if tokens is None else {"content": tokens, "refusal": None}
    return {"choices": [choice]}


# -- finding the label ---------------------------------------------------------------------
def test_json_field_span_finds_top_level_values_only() -> None:
    text = '{"why": "the \\"sentiment\\": no", "inner": {"sentiment": "x"}, "sentiment": "neg"}'
    start, end, value = json_field_span(text, "sentiment")  # type: ignore[misc]
    assert (text[start:end], value) == ("neg", "neg")
    assert json_field_span('{"n": 12.5, "ok": true}', "n")[2] == 12.5  # type: ignore[index]
    assert json_field_span('{"n": 12.5, "ok": true}', "ok")[2] is True  # type: ignore[index]
    assert json_field_span('{"a": 1}', "b") is None
    assert json_field_span("no json here", "a") is None
    assert json_field_span('{"a": "unterminated', "a") is None
    fenced = '```json\n{"label": "yes"}\n```'
    start, end, _ = json_field_span(fenced, "label")  # type: ignore[misc]
    assert fenced[start:end] == "yes"


def test_label_span_of_a_plain_answer_leaves_out_whitespace() -> None:
    assert label_span("  Yes \n", None) == (2, 5, "Yes")
    assert label_span("   ", None) is None
    assert label_span('{"n": 3}', "n") == (6, 7, "3")


# -- logprobs, by hand ------------------------------------------------------------------------
CONTENT = '{"sentiment":"positive"}'


def sentiment_tokens(top: list[tuple[str, float]] | None) -> list[dict[str, Any]]:
    return [
        tok('{"', 0.99),
        tok("sent", 1.0),
        tok("iment", 1.0),
        tok('":"', 0.98),
        tok("pos", 0.8, top),
        tok("itive", 0.9),
        tok('"}', 1.0),
    ]


def test_label_probability_is_the_product_of_its_tokens() -> None:
    start, end, label = label_span(CONTENT, "sentiment")  # type: ignore[misc]
    assert label == "positive"
    # 0.8 * 0.9: the structure's tokens around the label do not count
    assert span_probability(sentiment_tokens(None), CONTENT, start, end) == pytest.approx(0.72)


def test_normalised_over_the_labels_the_first_token_shows() -> None:
    top = [("pos", 0.8), ("neg", 0.1), ("neut", 0.05), ("Pos", 0.03), ("ne", 0.01)]
    start, end, label = label_span(CONTENT, "sentiment")  # type: ignore[misc]
    p = span_probability(sentiment_tokens(top), CONTENT, start, end, labels=LABELS, chosen=label)
    # "Pos" is no label, "ne" could start two: only neg (0.1) and neut (0.05) count
    assert p == pytest.approx(0.72 / (0.72 + 0.1 + 0.05))
    # no alternatives shown (top_logprobs 0): the raw probability, never 1.0
    bare = span_probability(sentiment_tokens([]), CONTENT, start, end, labels=LABELS, chosen=label)
    assert bare == pytest.approx(0.72)


def test_a_token_holding_the_opening_quote_compares_alternatives_after_it() -> None:
    tokens = [
        tok('{"sentiment', 1.0),
        tok('":"pos', 0.8, [('":"pos', 0.8), ('":"negative', 0.15), ('":"', 0.02), ("neg", 0.03)]),
        tok('itive"}', 0.9),
    ]
    start, end, label = label_span(CONTENT, "sentiment")  # type: ignore[misc]
    p = span_probability(tokens, CONTENT, start, end, labels=LABELS, chosen=label)
    # '":"negative' counts; '":"' starts no label, "neg" lacks the quote the token has;
    # "neutral" is not shown: it may hold up to the least shown (0.02), counted so
    assert p == pytest.approx(0.72 / (0.72 + 0.15 + 0.02))


def test_labels_the_alternatives_do_not_show_count_at_the_least_shown() -> None:
    """The engine's top k hid the rivals: the label is not read as sure (p / (p + 0))."""
    content = "negative"
    alternatives = [("negative", 0.1), ("The", 0.3), ("A", 0.2)]
    tokens = [tok("negative", 0.1, alternatives)]
    p = span_probability(tokens, content, 0, 8, labels=LABELS, chosen="negative")
    # positive and neutral unseen: each at most 0.1 (the least shown)
    assert p == pytest.approx(0.1 / (0.1 + 0.1 + 0.1))


def test_tokens_are_placed_by_their_bytes() -> None:
    content = "café"
    tokens = [
        {"token": "caf\\xc3", "logprob": math.log(0.5), "bytes": [99, 97, 102, 195]},
        {"token": "\\xa9", "logprob": math.log(0.5), "bytes": [169]},
        {"token": "<|eot_id|>", "logprob": 0.0, "bytes": list(b"<|eot_id|>")},
    ]
    assert span_probability(tokens, content, 0, 4) == pytest.approx(0.25)
    assert span_probability(tokens, content, 3, 4) == pytest.approx(0.25)  # é spans both


def test_tokens_that_do_not_spell_the_answer_give_none() -> None:
    assert span_probability([tok("no", 0.9)], "yes", 0, 3) is None
    broken = [{"token": "yes", "logprob": None}]
    assert span_probability(broken, "yes", 0, 3) is None


# -- one response ------------------------------------------------------------------------------
def test_reader_never_gives_an_answer_without_logprobs_a_confidence() -> None:
    reader = ConfidenceReader("logprobs", label_field="sentiment", labels=LABELS)
    scored = reader.read(response(CONTENT, None))
    assert (scored.confidence, scored.label, scored.missing) == (None, "positive", NO_LOGPROBS)
    assert reader.read(response("not json", sentiment_tokens(None))).missing == NO_LABEL
    assert reader.read(response(None, [])).missing == NO_ANSWER
    assert reader.read({"choices": []}).missing == NO_ANSWER
    assert reader.read(response(CONTENT, [tok("x", 0.5)])).missing == UNALIGNED
    good = reader.read(response(CONTENT, sentiment_tokens(None)))
    assert good.confidence == pytest.approx(0.72) and good.missing is None


def test_agreement_is_the_majority_share_and_picks_its_first_choice() -> None:
    assert majority(["b", "a", "a", None, "b"]) == ("b", 0.4, 0)
    assert majority([None, None]) == (None, 0.0, 0)
    contents = [
        '{"s": "no"}',
        '{"s": "Yes"}',
        "garbled",
        '{"s": "yes."}',
        '{"s": "no"}',
        '{"s": "yes"}',
    ]
    body = {"choices": [{"index": i, "message": {"content": c}} for i, c in enumerate(contents)]}
    scored = ConfidenceReader("agreement", label_field="s").read(body)
    # "Yes", "yes." and "yes" are one label (normalised): 3 of 6 answers
    assert (scored.confidence, scored.label, scored.choice) == (0.5, "Yes", 1)
    none = {"choices": [{"message": {"content": "x"}}]}
    assert ConfidenceReader("agreement", label_field="s").read(none).missing == NO_LABEL


def test_self_reported_confidence_is_read_and_scaled() -> None:
    assert [self_score(v) for v in (0.3, 1, 87, "0.9", "75%", -2, 250, "high", True)] == [
        0.3, 1.0, 0.87, 0.9, 0.75, 0.0, 1.0, None, None,
    ]  # fmt: skip
    reader = ConfidenceReader("self", label_field="label", score_field="confidence")
    scored = reader.read(response('{"label": "a", "confidence": 92}', None))
    assert (scored.confidence, scored.label) == (0.92, "a")
    assert reader.read(response('{"label": "a"}', None)).missing == NO_SCORE


# -- the request side --------------------------------------------------------------------------
def test_request_fields_fill_what_the_job_leaves_out() -> None:
    assert request_fields(Confidence("logprobs")) == {"logprobs": True, "top_logprobs": 5}
    assert request_fields(Confidence("logprobs", top_logprobs=0)) == {"logprobs": True}
    assert request_fields(Confidence("agreement", samples=3)) == {"n": 3}
    assert request_fields(Confidence("self")) == {}
    # the job's own top_logprobs wins
    assert with_request_fields({"top_logprobs": 2}, Confidence("logprobs")) == {
        "top_logprobs": 2,
        "logprobs": True,
    }
    cfg = Settings.build(
        input="x.jsonl", model="m", prompt="{text}", confidence="logprobs", temperature=0
    )
    body = body_builder(cfg)({"text": "hi"}, "line 1")  # type: ignore[misc]
    assert (body["logprobs"], body["top_logprobs"], body["temperature"]) == (True, 5, 0)


# -- the setting ---------------------------------------------------------------------------------
def test_the_setting_from_python_a_job_file_and_the_command_line(tmp_path: Path) -> None:
    assert Settings.build(confidence="self").confidence == Confidence("self")
    spec = Settings.build(confidence={"method": "logprobs", "labels": ["a", "b"]}).confidence
    assert spec == Confidence("logprobs", labels=("a", "b"))
    with pytest.raises(
        ConfigError, match=r"confidence=.method: must be one of .*did you mean 'logprobs'"
    ):
        Settings.build(confidence="logprob")
    with pytest.raises(ConfigError, match=r"top_logprobs: must be a whole number from 0 to 20"):
        Settings.build(confidence={"method": "logprobs", "top_logprobs": 50})
    (tmp_path / "rows.jsonl").write_text('{"text": "hi"}\n')
    job = tmp_path / "job.toml"
    job.write_text(
        'confidence = "agreement"\n[input]\npath = "rows.jsonl"\n[prompt]\nuser = "{text}"\n'
        '[request]\nmodel = "m"\ntemperature = 1\n'
    )
    assert load_job(job).values["confidence"] == Confidence("agreement")
    job.write_text(
        '[input]\npath = "rows.jsonl"\n[prompt]\nuser = "{text}"\n[request]\nmodel = "m"\n'
        '[confidence]\nmethod = "logprobs"\ntop_logprob = 3\n'
    )
    with pytest.raises(
        ConfigError, match=r"confidence.top_logprob: unknown key \(did you mean 'top_logprobs'"
    ):
        load_job(job)
    # on the command line, over the job file's table (a dry run sends nothing)
    job.write_text(
        '[input]\npath = "rows.jsonl"\n[prompt]\nuser = "{text}"\n[request]\nmodel = "m"\n'
        '[confidence]\nmethod = "logprobs"\n'
    )
    out = CliRunner().invoke(
        cli,
        ["run", "-j", str(job), "--confidence-top-logprobs", "7", "-o", str(tmp_path / "r"),
         "--base-url", "sim", "--dry-run"],
        catch_exceptions=False,
    )  # fmt: skip
    assert out.exit_code == 0, out.output


def test_a_confidence_that_cannot_work_is_refused_before_sending(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "hi"}\n')
    base = {"prompt": "{text}", "model": "m", "base_url": "sim", "quiet": True}
    two_enums = {
        "type": "object",
        "properties": {"a": {"enum": ["x", "y"]}, "b": {"enum": ["u", "v"]}},
    }
    cases = [
        ({"response_format": two_enums, "confidence": "logprobs"}, "say which field holds"),
        (
            {"response_format": SCHEMA, "confidence": {"method": "logprobs", "label_field": "x"}},
            "'x' is not a property",
        ),
        ({"confidence": "logprobs", "logprobs": False}, "request.logprobs is false"),
        ({"confidence": "agreement", "temperature": 0}, "a temperature above 0"),
        ({"confidence": "self"}, "needs a JSON answer"),
        ({"response_format": SCHEMA, "confidence": "self"}, "which number field"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=message):
            batchrun.run(rows, tmp_path / "out", **base, **extra)
        assert not (tmp_path / "out" / "results.jsonl").exists()


# -- through a run ------------------------------------------------------------------------------
def run_mock(tmp_path: Path, handler: Any, **kw: Any) -> tuple[Any, str]:
    rows = [{"id": f"r{i}", "text": f"review {i}", "label": "positive"} for i in range(6)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Settings(
        input=str(tmp_path / "in.jsonl"),
        out_dir=str(tmp_path / "run"),
        base_url="http://labels.test/v1",
        id_column="id",
        model="m",
        prompt="{text}",
        quality_breaker=0,
        response_format=ResponseFormat("json_schema", "sentiment", SCHEMA),
        eval=Evaluation("label", "json_field", "sentiment"),
        **kw,
    )
    err = io.StringIO()
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=CompositeHooks(DatasetOutputHooks(cfg, err=err)),
    )
    return anyio.run(runner.run), err.getvalue()


def test_an_endpoint_without_logprobs_is_named_not_given_one(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json=completion('{"sentiment":"positive","reason":"r"}', "m"))

    result, err = run_mock(tmp_path, handler, confidence=Confidence("logprobs", top_logprobs=3))
    assert result.exit_code == EXIT_OK
    assert {(b["logprobs"], b["top_logprobs"]) for b in sent} == {(True, 3)}
    # said once, at the first answer, not after paying for every row
    assert err.count("without logprobs") == 1
    assert "http://labels.test/v1 answered r" in err
    block = result.summary["confidence"]
    assert block["scored"] == 0
    assert block["missing"] == {NO_LOGPROBS: 6}
    assert block["without_logprobs"] == {"http://labels.test/v1": 6}
    assert "6 answers came without logprobs (6 from http://labels.test/v1)" in block["warning"]
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert table.column("confidence").to_pylist() == [None] * 6
    assert "calibration" not in result.summary["eval"]  # nothing to calibrate


def test_agreement_takes_the_majority_answer_as_the_rows(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        assert sent["n"] == 4
        body = completion("x", "m")
        labels = ["negative", "positive", "positive", "neutral"]
        body["choices"] = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": json.dumps({"sentiment": s, "reason": str(i)}),
                },
                "finish_reason": "stop",
            }
            for i, s in enumerate(labels)
        ]
        return httpx.Response(200, json=body)

    result, _ = run_mock(
        tmp_path, handler, confidence=Confidence("agreement", samples=4), request={"temperature": 1}
    )
    rows = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert {(r["sentiment"], r["confidence"], r["reason"]) for r in rows} == {
        ("positive", 0.5, "1")
    }
    assert result.summary["eval"]["accuracy"] == 1.0  # scored on the majority's answer
    assert result.summary["eval"]["calibration"]["rows"] == 6


def test_confidence_column_against_the_logprobs_of_the_simulator(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"review {i}", "label": LABELS[i % 3]} for i in range(60)]
    run = batchrun.run(
        rows,
        tmp_path / "run",
        model="weak",
        base_url="sim",
        id_column="id",
        prompt="Review: {text}\n[gold: {label}]",
        response_format=SCHEMA,
        temperature=0,
        confidence="logprobs",
        eval={"reference_column": "label", "compare": "json_field", "field": "sentiment"},
        quiet=True,
    )
    assert run.exit_code == EXIT_OK
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    lines = {
        line["custom_id"]: line
        for line in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())
    }
    for row in table:
        # by hand: the token holding the label's first byte, normalised over the
        # labels its top_logprobs list
        choice = lines[row["custom_id"]]["response"]["body"]["choices"][0]
        content = choice["message"]["content"]
        at = content.index('"sentiment":"') + len('"sentiment":"')
        pos, label_tokens = 0, []
        for entry in choice["logprobs"]["content"]:
            piece = bytes(entry["bytes"])
            if pos + len(piece) > at and pos < at + len(row["sentiment"]):
                label_tokens.append(entry)
            pos += len(piece)
        p = math.exp(sum(t["logprob"] for t in label_tokens))
        shown = [
            math.exp(t["logprob"])
            for t in label_tokens[0]["top_logprobs"]
            if t["token"] in LABELS and t["token"] != row["sentiment"]
        ]
        assert row["confidence"] == pytest.approx(p / (p + sum(shown)))
    assert run.summary["confidence"]["scored"] == 60
    calibration = run.summary["eval"]["calibration"]
    assert calibration["rows"] == 60 and len(calibration["bins"]) == 10


def test_the_engine_check_script_agrees_on_the_simulator() -> None:
    import subprocess
    import sys

    from batchrun.sim import SimConfig, SimThread

    script = Path(__file__).resolve().parent.parent / "scripts" / "check_llama_logprobs.py"
    with SimThread(SimConfig()) as sim:
        for extra in ([], ["--plain"]):
            done = subprocess.run(
                [sys.executable, str(script), sim.base_url, "--model", "weak", *extra],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.count("equal") == 2 and "DIFFERENT" not in done.stdout
            assert "exp(label token logprob) =" in done.stdout


def test_a_request_file_gets_confidences_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    lines = [
        {"custom_id": f"q{i}", "body": {"model": "weak", "temperature": 0,
                                        "messages": [{"role": "user", "content": f"label {i}"}]}}
        for i in range(5)
    ]  # fmt: skip
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    first = batchrun.run(path, tmp_path / "run", base_url="sim", confidence="logprobs", quiet=True)
    assert first.exit_code == EXIT_OK
    table = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert all(0 < r["confidence"] <= 1 and r["content"] in LABELS for r in table)
    sent = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all(x["response"]["body"]["choices"][0]["logprobs"] for x in sent)
    again = batchrun.run(path, tmp_path / "run", base_url="sim", confidence="logprobs", quiet=True)
    assert again.summary["requests"]["succeeded"] == 5
    assert len((tmp_path / "run" / "results.jsonl").read_text().splitlines()) == 5  # none sent
    # asking for another confidence changes what is sent: refused without --force
    with pytest.raises(RunDirError, match="option confidence.method: .logprobs. -> .agreement."):
        batchrun.run(path, tmp_path / "run", base_url="sim", confidence="agreement", quiet=True)
