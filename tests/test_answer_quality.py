"""Useless answers are not counted as success in silence (issue 13, item 6).

A 200 can carry an answer cut off at max_tokens, refused, filtered, empty or off
the schema. Each result line says so (``batchrun._output.quality``), summary.json counts
answers by quality per model, progress and the report warn as soon as a share is
unusable, a quality breaker stops a run whose first answers are mostly unusable,
and ``--retry-bad-answers`` sends just those rows again.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.parquet as pq
from click.testing import CliRunner

from batchrun._api import hooks_for as run_hooks
from batchrun._cli import cli
from batchrun._engine.hooks import CompositeHooks
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_ERROR, EXIT_OK
from batchrun._report.progress import ProgressHooks
from batchrun._settings import Settings
from batchrun._values import Evaluation, ResponseFormat
from tests.conftest import FakeTime, completion

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "jobs" / "schemas" / "sentiment.json").read_text())


def sentiment_job(tmp_path: Path, max_tokens: int, rows: int = 100, breaker: str = "") -> Path:
    data = ROOT / "jobs" / "data" / "reviews.jsonl"
    lines = data.read_text().splitlines()[:rows]
    (tmp_path / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(ROOT / "jobs" / "schemas" / "sentiment.json", tmp_path / "sentiment.json")
    job = tmp_path / "job.toml"
    job.write_text(
        f"""
[input]
path = "reviews.jsonl"
id_column = "id"
[endpoint]
base_url = "sim"
[request]
model = "gpt-4o-mini"
temperature = 0
max_tokens = {max_tokens}
[prompt]
user = "Review: {{text}}"
[response_format]
type = "json_schema"
name = "sentiment"
schema_file = "sentiment.json"
[limits]
concurrency = 4
{breaker}
[eval]
reference_column = "label"
compare = "json_field"
field = "sentiment"
"""
    )
    return job


def test_truncated_answers_stop_the_run_before_it_pays_for_the_rest(tmp_path: Path) -> None:
    job = sentiment_job(tmp_path, max_tokens=6)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "-j", str(job), "-o", str(out)])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "answers from gpt-4o-mini are truncated" in result.stderr
    assert "raise max_tokens (now 6)" in result.stderr
    assert "--retry-bad-answers" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "bad_answers"
    answered = summary["requests"]["succeeded"]
    assert 20 <= answered < 60  # stopped early: most rows were never paid for
    assert summary["quality"]["by_model"]["gpt-4o-mini"] == {"truncated": answered}
    assert summary["quality"]["finish_reasons"] == {"length": answered}
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {line["batchrun"]["quality"] for line in lines} == {"truncated"}


def test_without_the_breaker_every_bad_answer_is_counted_and_reported(tmp_path: Path) -> None:
    job = sentiment_job(tmp_path, max_tokens=6, rows=40, breaker="quality_breaker = 0")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "-j", str(job), "-o", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quality"]["by_model"]["gpt-4o-mini"] == {"truncated": 40}
    # the warning came while running, and again in the report
    assert result.stderr.count("40 answers (100.0%) from gpt-4o-mini are truncated") == 1
    assert "warning: " in result.stderr
    assert "answers     40: 40 truncated (finish reasons: length 40)" in result.stderr
    status = CliRunner().invoke(cli, ["status", str(out)])
    assert "answers     40: 40 truncated" in status.output
    assert "warning     40 of 40 answers" in status.output
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert all(r["finish_reason"] == "length" and r["parse_error"] for r in table)


def test_a_healthy_run_says_how_usable_its_answers_were(tmp_path: Path) -> None:
    job = sentiment_job(tmp_path, max_tokens=200, rows=30)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "-j", str(job), "-o", str(out)])
    assert result.exit_code == EXIT_OK, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["quality"]["by_model"]["gpt-4o-mini"] == {"ok": 30}
    assert "warning" not in result.stderr


def off_schema_then_good() -> Any:
    """First answer of each row is off the schema (an enum violation), later ones fit."""
    seen: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][-1]["content"]
        seen[text] = seen.get(text, 0) + 1
        label = "positive" if seen[text] > 1 else "upbeat"
        content = json.dumps({"sentiment": label, "confidence": 0.9, "reason": "r"})
        return httpx.Response(200, json=completion(content))

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def run_with(tmp_path: Path, handler: Any, **kw: Any) -> Any:
    rows = [{"id": i, "text": f"review {i}", "label": "positive"} for i in range(10)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Settings(
        input=str(tmp_path / "in.jsonl"),
        out_dir=str(tmp_path / "run"),
        base_url="http://t/v1",
        id_column="id",
        model="gpt-4o-mini",
        quiet=True,
        prompt="{text}",
        response_format=ResponseFormat("json_schema", "sentiment", SCHEMA),
        eval=Evaluation("label", "json_field", "sentiment"),
        **kw,
    )
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=run_hooks(cfg),
    )
    return anyio.run(runner.run)


def test_retry_bad_answers_sends_only_those_rows_again(tmp_path: Path) -> None:
    handler = off_schema_then_good()
    first = run_with(tmp_path, handler, quality_breaker=0)
    assert first.exit_code == EXIT_OK
    assert first.summary["quality"]["by_model"]["gpt-4o-mini"] == {"schema_error": 10}
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert "upbeat" in lines[0]["batchrun"]["quality_detail"]  # says what was wrong

    again = run_with(tmp_path, handler, retry_bad_answers=True)
    assert again.exit_code == EXIT_OK
    assert set(handler.seen.values()) == {2}  # each row sent exactly once more
    assert again.summary["requests"]["succeeded"] == 10
    assert again.summary["eval"]["accuracy"] == 1.0  # the parquet/eval use the new answers
    rows = pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    assert {r["sentiment"] for r in rows} == {"positive"}

    third = run_with(tmp_path, handler, retry_bad_answers=True)
    assert set(handler.seen.values()) == {2}  # nothing bad is left: nothing sent
    assert third.summary["requests"]["succeeded"] == 10


def test_progress_warns_once_per_problem_as_soon_as_it_shows(tmp_path: Path) -> None:
    rows = [{"id": i, "text": f"review {i}", "label": "positive"} for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def handler(request: httpx.Request) -> httpx.Response:
        body = completion("cut")
        body["choices"][0]["finish_reason"] = "length"
        return httpx.Response(200, json=body)

    cfg = Settings(
        input=str(tmp_path / "in.jsonl"),
        out_dir=str(tmp_path / "run"),
        base_url="http://t/v1",
        model="gpt-4o-mini",
        concurrency=2,
        quality_breaker=0,
        prompt="{text}",
    )
    stream = io.StringIO()
    progress = ProgressHooks(cfg, mode="plain", stream=stream, watchdog=False)
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=CompositeHooks(progress),
    )
    anyio.run(runner.run)
    out = stream.getvalue()
    assert out.count("batchrun: warning: ") == 1
    assert "are truncated" in out and "set a larger max_tokens" in out
