"""Dataset jobs end to end: Runner + DatasetOutputHooks -> results.parquet + eval in summary.json.

Requests go to httpx.MockTransport handlers (answers known exactly) or to the built-in
simulator on loopback (the example job files).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun._engine.hooks import CompositeHooks, RunHooks, RunState
from batchrun._engine.runner import Runner
from batchrun._engine.stops import RunResult
from batchrun._jobs.jobfile import load_job
from batchrun._jobs.outputs import DatasetOutputHooks, finish_dataset_run
from batchrun._labels import normalize_answer
from batchrun._models import Outcome
from batchrun._settings import Settings
from batchrun.sim import SimConfig, SimThread

JOBS = Path(__file__).resolve().parent.parent / "jobs"
LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": list(LABELS)},
        "confidence": {"type": "number"},
        "stars": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment", "confidence", "stars"],
}
N_ROWS = 30


# -- the fixture dataset and its scripted answers ----------------------------------------
def label_of(i: int) -> str:
    return LABELS[i % 3]


def plan(i: int) -> str:
    """What the mock server does for review i: fail, garble, answer wrong, or right."""
    if i % 10 == 3:
        return "400"
    if i % 10 == 7:
        return "not_json"
    if i % 5 == 1:
        return "wrong"
    return "right"


def expected_score() -> tuple[int, int, int]:
    """(n, correct, without prediction) over the fixture, from the plan."""
    n = N_ROWS
    correct = sum(plan(i) == "right" for i in range(N_ROWS))
    missing = sum(plan(i) in ("400", "not_json") for i in range(N_ROWS))
    return n, correct, missing


def make_dataset(tmp_path: Path) -> Path:
    table = pa.table(
        {
            "review_id": pa.array([1000 + i for i in range(N_ROWS)], pa.int64()),
            "text": [f"review #{i}" for i in range(N_ROWS)],
            "price": pa.array([i * 1.25 for i in range(N_ROWS)], pa.float64()),
            "verified": [i % 2 == 0 for i in range(N_ROWS)],
            "label": [label_of(i) for i in range(N_ROWS)],
        }
    )
    path = tmp_path / "reviews.parquet"
    pq.write_table(table, path, row_group_size=7)
    return path


def make_job(tmp_path: Path) -> Settings:
    make_dataset(tmp_path)
    (tmp_path / "schema.json").write_bytes(orjson.dumps(SCHEMA))
    (tmp_path / "job.toml").write_text(
        """
[input]
path = "reviews.parquet"
id_column = "review_id"

[endpoint]
base_url = "http://mock.test/v1"
auth = "none"

[request]
model = "gpt-4o-mini"
temperature = 0

[prompt]
system = "Label the sentiment."
user = "{text}"

[response_format]
type = "json_schema"
name = "sentiment"
schema_file = "schema.json"
strict = true

[limits]
concurrency = 4

[retry]
max_attempts = 2

[output]
dir = "run"

[eval]
reference_column = "label"
compare = "json_field"
field = "sentiment"
"""
    )
    return load_job(tmp_path / "job.toml").settings()


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }


Handler = Callable[[httpx.Request], httpx.Response]


def mock_handler(fail: Callable[[int], bool] = lambda i: plan(i) == "400") -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        i = int(body["messages"][-1]["content"].removeprefix("review #"))
        if fail(i):
            return httpx.Response(
                400,
                json={
                    "error": {
                        "message": f"review {i} is not allowed",
                        "type": "invalid_request_error",
                        "code": "not_allowed",
                    }
                },
            )
        what = plan(i)
        if what == "not_json":
            return httpx.Response(200, json=completion("I think it is positive"))
        label = label_of(i) if what in ("right", "400") else label_of(i + 1)  # 400: once allowed
        answer = {"sentiment": label, "confidence": i / 100, "stars": i % 5 + 1, "tags": [str(i)]}
        return httpx.Response(200, json=completion(orjson.dumps(answer).decode()))

    return handle


def run(
    cfg: Settings,
    handler: Handler | None = None,
    *extra_hooks: RunHooks,
    err: io.StringIO | None = None,
) -> RunResult:
    hooks = CompositeHooks(*extra_hooks, DatasetOutputHooks(cfg, err=err or io.StringIO()))
    transport = httpx.MockTransport(handler) if handler is not None else None
    return anyio.run(Runner(cfg, transport=transport, hooks=hooks).run)


def parquet_rows(cfg: Settings) -> list[dict[str, Any]]:
    return pq.read_table(os.path.join(cfg.out_dir, "results.parquet")).to_pylist()


def summary_of(cfg: Settings) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(Path(cfg.out_dir, "summary.json").read_bytes())
    return data


# -- tests -----------------------------------------------------------------------------
def test_parquet_in_parquet_out_with_known_accuracy(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    err = io.StringIO()
    result = run(cfg, mock_handler(), err=err)
    assert result.status == "complete"

    table = pq.read_table(os.path.join(cfg.out_dir, "results.parquet"))
    types = {f.name: f.type for f in table.schema}
    assert table.column_names[:7] == [
        "custom_id",
        "row",
        "review_id",
        "text",
        "price",
        "verified",
        "label",
    ]
    assert (types["review_id"], types["price"], types["verified"]) == (
        pa.int64(),
        pa.float64(),
        pa.bool_(),
    )
    assert (types["sentiment"], types["confidence"], types["stars"], types["tags"]) == (
        pa.string(),
        pa.float64(),
        pa.int64(),
        pa.string(),
    )
    rows = table.to_pylist()
    assert [r["review_id"] for r in rows] == [1000 + i for i in range(N_ROWS)]  # input order
    for i, r in enumerate(rows):
        assert r["custom_id"] == str(1000 + i) and r["row"] == i + 1
        what = plan(i)
        if what == "400":
            assert (r["status"], r["status_code"], r["error_code"]) == (
                "failed",
                400,
                "not_allowed",
            )
            assert "is not allowed" in r["error_message"]
            assert r["sentiment"] is None and r["parse_error"] is None
        elif what == "not_json":
            assert r["status"] == "succeeded" and r["content"] == "I think it is positive"
            assert r["sentiment"] is None and r["parse_error"].startswith("invalid JSON")
        else:
            assert r["status"] == "succeeded" and r["parse_error"] is None
            assert (r["confidence"], r["stars"], r["tags"]) == (i / 100, i % 5 + 1, f'["{i}"]')
            assert r["sentiment"] == (label_of(i) if what == "right" else label_of(i + 1))
            assert (r["prompt_tokens"], r["completion_tokens"], r["attempts"]) == (12, 8, 1)
            assert r["latency_ms"] is not None

    n, correct, missing = expected_score()
    ev = result.summary["eval"]
    assert (ev["n"], ev["correct"], ev["missing_predictions"]) == (n, correct, missing)
    assert ev["accuracy"] == pytest.approx(correct / n)
    assert sum(ev["confusion"]["positive"].values()) == N_ROWS // 3
    # the same figures on disk, next to the runner's own totals
    summary = summary_of(cfg)
    assert summary["eval"] == ev and summary["requests"]["failed"] == 3
    assert summary["parquet"]["rows"] == N_ROWS
    assert summary["parquet"]["statuses"] == {
        "succeeded": 27,
        "failed": 3,
        "pending": 0,
        "invalid": 0,
    }
    assert list(summary)[-1] == "journal"
    assert f"accuracy {correct / n:.3f} [" in err.getvalue()
    assert f"] ({correct}/{n} correct" in err.getvalue()


def test_retry_failed_resume_lists_every_row_once(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    run(cfg, mock_handler())
    first = parquet_rows(cfg)
    assert [r["status"] for r in first].count("failed") == 3

    resumed = replace(cfg, retry_failed=True)
    result = run(resumed, mock_handler(fail=lambda i: False))
    assert result.status == "complete"
    rows = parquet_rows(cfg)
    assert [r["custom_id"] for r in rows] == [str(1000 + i) for i in range(N_ROWS)]
    assert {r["status"] for r in rows} == {"succeeded"}
    # the failures are still in errors.jsonl; results.jsonl wins
    assert Path(cfg.out_dir, "errors.jsonl").read_bytes().count(b"\n") == 3
    retried = [r for i, r in enumerate(rows) if plan(i) == "400"]
    assert all(r["error_code"] is None and r["sentiment"] is not None for r in retried)
    n, correct, _ = expected_score()
    ev = result.summary["eval"]
    assert ev["n"] == N_ROWS and ev["correct"] == correct + 3  # the retried ones answer right


class StopAfterFirstWrite(RunHooks):
    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        return "SIGINT"


def test_interrupted_run_shows_pending_rows_then_resumes(tmp_path: Path) -> None:
    cfg = replace(make_job(tmp_path), concurrency=1)
    result = run(cfg, mock_handler(), StopAfterFirstWrite())
    assert result.status == "interrupted"
    rows = parquet_rows(cfg)
    done = Path(cfg.out_dir, "results.jsonl").read_bytes().count(b"\n") + Path(
        cfg.out_dir, "errors.jsonl"
    ).read_bytes().count(b"\n")
    assert 0 < done < N_ROWS
    statuses = [r["status"] for r in rows]
    assert len(rows) == N_ROWS and statuses.count("pending") == N_ROWS - done
    assert (
        result.summary["eval"]["n"] == done and result.summary["eval"]["pending"] == N_ROWS - done
    )

    result = run(cfg, mock_handler())
    assert result.status == "complete"
    rows = parquet_rows(cfg)
    assert [r["custom_id"] for r in rows] == [str(1000 + i) for i in range(N_ROWS)]
    assert "pending" not in {r["status"] for r in rows}
    n, correct, missing = expected_score()
    assert (result.summary["eval"]["n"], result.summary["eval"]["correct"]) == (n, correct)


def test_crash_with_torn_results_then_resume(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    run(cfg, mock_handler(fail=lambda i: False))
    results = Path(cfg.out_dir, "results.jsonl")
    lines = results.read_bytes().splitlines(keepends=True)
    assert len(lines) == N_ROWS
    # a crash: only 12 lines made it, the 13th is torn, summary.json is from earlier
    results.write_bytes(b"".join(lines[:12]) + lines[12][:40])
    Path(cfg.out_dir, "summary.json").unlink()
    out = finish_dataset_run(cfg)
    assert out["parquet"]["statuses"]["succeeded"] == 12
    assert out["parquet"]["statuses"]["pending"] == N_ROWS - 12
    kept = {orjson.loads(line)["custom_id"] for line in lines[:12]}
    for r in parquet_rows(cfg):
        assert (r["status"] == "succeeded") == (r["custom_id"] in kept)

    result = run(cfg, mock_handler(fail=lambda i: False))
    assert result.status == "complete"
    rows = parquet_rows(cfg)
    assert len(rows) == N_ROWS and len({r["custom_id"] for r in rows}) == N_ROWS
    assert {r["status"] for r in rows} == {"succeeded"}
    assert results.read_bytes().count(b"\n") == N_ROWS  # the torn line was cut, not kept


def test_no_parquet_still_evaluates_and_quiet_prints_nothing(tmp_path: Path) -> None:
    cfg = replace(make_job(tmp_path), write_parquet=False, quiet=True)
    err = io.StringIO()
    result = run(cfg, mock_handler(), err=err)
    assert not os.path.exists(os.path.join(cfg.out_dir, "results.parquet"))
    summary = summary_of(cfg)
    assert summary["parquet"] is None
    assert summary["eval"]["n"] == N_ROWS and summary["eval"] == result.summary["eval"]
    assert err.getvalue() == ""


def test_a_parquet_failure_is_a_note_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrun._jobs.outputs as dataset_output

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dataset_output, "write_results_parquet", broken)
    cfg = make_job(tmp_path)
    result = run(cfg, mock_handler())
    assert result.status == "complete"
    assert any("results.parquet" in note and "No space" in note for note in result.notes)
    assert "No space left" in summary_of(cfg)["parquet"]["error"]


def test_eval_qa_job_against_the_simulator(tmp_path: Path) -> None:
    job = load_job(JOBS / "eval_qa.toml")
    cfg = job.settings()
    with SimThread(SimConfig()) as sim:
        cfg = replace(cfg, base_url=sim.base_url, out_dir=str(tmp_path / "run"), rpm=None)
        result = run(cfg)
    assert result.status == "complete"
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    source = pq.read_table(JOBS / "data" / "qa.parquet")
    for name in source.column_names:  # every input column, same type, same values
        assert table.schema.field(name).type == source.schema.field(name).type
        assert table.column(name).to_pylist() == source.column(name).to_pylist()
    rows = table.to_pylist()
    assert len(rows) == source.num_rows == 100
    assert {r["status"] for r in rows} == {"succeeded"}
    assert "parse_error" not in table.column_names  # no schema: no parsed columns
    correct = sum(normalize_answer(r["content"]) == normalize_answer(r["answer"]) for r in rows)
    ev = summary_of(cfg)["eval"]
    assert (ev["n"], ev["correct"], ev["compare"]) == (100, correct, "exact")
    assert ev["categorical"] is False  # 100 distinct answers: no confusion table


def test_plain_request_job_against_the_simulator(tmp_path: Path) -> None:
    job = load_job(JOBS / "requests.toml")
    cfg = job.settings()
    with SimThread(SimConfig()) as sim:
        cfg = replace(cfg, base_url=sim.base_url, out_dir=str(tmp_path / "run"), write_parquet=True)
        result = run(cfg)
    assert result.status == "complete" and result.summary["eval"] is None
    rows = parquet_rows(cfg)
    ids = [
        orjson.loads(line)["custom_id"]
        for line in (JOBS / "requests.jsonl").read_bytes().splitlines()
    ]
    assert [r["custom_id"] for r in rows] == ids
    assert all(r["status"] == "succeeded" and r["total_tokens"] for r in rows)
    calls = [r for r in rows if r["finish_reason"] == "tool_calls"]
    assert calls and all(orjson.loads(r["tool_calls"])[0]["type"] == "function" for r in calls)
