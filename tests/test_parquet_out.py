"""results.parquet from hand-written run directories: the join, the types, the index."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun._jobs.jobfile import load_job
from batchrun._models import Attempt, Outcome, Request
from batchrun._output import parquet
from batchrun._output.lines import decode, encode
from batchrun._output.parquet import (
    ResultIndex,
    infer_jsonl_columns,
    result_values,
    write_results_parquet,
)
from batchrun._settings import Settings

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number"},
        "stars": {"type": "integer"},
        "sarcastic": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment"],
}


# -- helpers ---------------------------------------------------------------------------
def chat_body(content: str | None, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            },
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def success(custom_id: str, content: str | None, row: int = 0) -> bytes:
    req = Request(custom_id, {}, row)
    return encode(
        Outcome.success(
            req,
            status=200,
            request_id="req_1",
            body=chat_body(content),
            attempts=[Attempt(200, "ok")],
            latency_s=0.25,
        )
    )


def failure(custom_id: str, code: str = "invalid_request_error", message: str = "nope") -> bytes:
    req = Request(custom_id, {}, 0)
    return encode(
        Outcome.failure(
            req,
            code=code,
            message=message,
            status=400,
            attempts=[Attempt(400, code, message)],
            body={"error": {"message": message}},
        )
    )


def write_run(run_dir: Path, results: Sequence[bytes] = (), errors: Sequence[bytes] = ()) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.jsonl").write_bytes(b"".join(results))
    (run_dir / "errors.jsonl").write_bytes(b"".join(errors))


def job_cfg(
    tmp_path: Path,
    input_name: str,
    *,
    schema: dict[str, Any] | None = SCHEMA,
    eval_: str = "",
    id_column: str | None = "id",
    **overrides: Any,
) -> Settings:
    """A Settings from a real job file in tmp_path (prompt uses the {text} column)."""
    lines = [f'[input]\npath = "{input_name}"']
    if id_column:
        lines.append(f'id_column = "{id_column}"')
    lines.append('[request]\nmodel = "gpt-4o-mini"\n[prompt]\nuser = "Review: {text}"')
    if schema is not None:
        (tmp_path / "schema.json").write_bytes(orjson.dumps(schema))
        lines.append(
            '[response_format]\ntype = "json_schema"\nname = "s"\nschema_file = "schema.json"'
        )
    if eval_:
        lines.append(eval_)
    lines.append('[output]\ndir = "run"')
    (tmp_path / "job.toml").write_text("\n".join(lines) + "\n")
    return load_job(tmp_path / "job.toml").settings(**overrides)


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def read(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


# -- the index -------------------------------------------------------------------------
def test_index_last_line_wins_and_results_beat_errors(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        results=[
            success("b", "ok-b"),
            success("d", "first"),
            success("d", "second"),
            success("c", "torn")[:-7],
        ],  # a torn last line is not final
        errors=[failure("a", code="first"), failure("b"), failure("a", code="second")],
    )
    with ResultIndex.build(str(tmp_path)) as index:
        assert len(index) == 6
        found = index.lookup("a")
        assert found is not None and not found.ok and found.error is not None
        assert found.error["code"] == "second"
        found = index.lookup("b")
        assert found is not None and found.ok
        assert found.body["choices"][0]["message"]["content"] == "ok-b"
        assert index.lookup("d").body["choices"][0]["message"]["content"] == "second"  # type: ignore[union-attr]
        assert index.lookup("c") is None
        assert index.lookup("never") is None


def test_index_confirms_ids_on_a_hash_collision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parquet, "id_hash", lambda custom_id: 42)  # every id collides
    write_run(tmp_path, results=[success("x", "X"), success("y", "Y")], errors=[failure("z")])
    with ResultIndex.build(str(tmp_path)) as index:
        assert index.lookup("x").custom_id == "x"  # type: ignore[union-attr]
        assert index.lookup("y").custom_id == "y"  # type: ignore[union-attr]
        assert index.lookup("z").ok is False  # type: ignore[union-attr]
        assert index.lookup("w") is None


def test_index_of_an_empty_or_missing_run_dir(tmp_path: Path) -> None:
    with ResultIndex.build(str(tmp_path)) as index:
        assert len(index) == 0
        assert index.lookup("a") is None


# -- one line -> columns ---------------------------------------------------------------
def test_result_values_take_the_first_choice_and_usage_details() -> None:
    body = chat_body("first", reasoning_content="thought about it")
    body["choices"].append(
        {"index": 1, "message": {"content": "second"}, "finish_reason": "length"}
    )
    body["usage"].update(
        prompt_tokens_details={"cached_tokens": 4},
        completion_tokens_details={"reasoning_tokens": 3},
    )
    line = decode(
        encode(
            Outcome.success(
                Request("a", {}, 1),
                status=200,
                request_id="r",
                body=body,
                attempts=[Attempt(429, "rate_limited"), Attempt(200, "ok")],
                latency_s=1.5,
                ttft_s=0.2,
            )
        )
    )
    values = result_values(line)
    assert values == {
        "status": "succeeded",
        "status_code": 200,
        "model": "gpt-4o-mini",
        "content": "first",
        "reasoning_content": "thought about it",
        "finish_reason": "stop",
        "tool_calls": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cached_tokens": 4,
        "reasoning_tokens": 3,
        "latency_ms": 1500.0,
        "ttft_ms": 200.0,
        "attempts": 2,
        "error_code": None,
        "error_message": None,
    }


def test_result_values_tool_calls_as_json_text_and_failures() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    line = decode(success("a", None))
    line.body["choices"][0]["message"]["tool_calls"] = calls
    values = result_values(line)
    assert values["content"] is None
    assert orjson.loads(values["tool_calls"]) == calls

    values = result_values(decode(failure("b", "bad_request", "too long")))
    assert (
        values["status"],
        values["status_code"],
        values["error_code"],
        values["error_message"],
        values["attempts"],
    ) == ("failed", 400, "bad_request", "too long", 1)
    assert values["content"] is None and values["prompt_tokens"] is None


def test_result_values_of_a_weird_line_are_nulls_not_crashes() -> None:
    line = {
        "custom_id": "a",
        "response": {"status_code": "200", "body": {"choices": "x"}},
        "error": "bad",
        "batchrun": None,
    }
    values = result_values(decode(orjson.dumps(line)))
    assert values["status_code"] is None and values["content"] is None
    assert values["latency_ms"] is None and values["error_code"] is None
    assert values["attempts"] == 1  # no meta: an answer had at least its one attempt


# -- JSONL column types ----------------------------------------------------------------
def test_jsonl_column_kinds() -> None:
    rows = [
        {"b": True, "i": 1, "f": 1, "s": "x", "j": [1], "m": "a", "n": None, "big": 1},
        {"b": False, "i": 2, "f": 2.5, "s": None, "j": "str", "m": 3, "big": 2**70},
        "not an object",
    ]
    kinds = dict(infer_jsonl_columns(iter((n, "", r) for n, r in enumerate(rows, 1))))
    assert kinds == {
        "b": "bool",
        "i": "int",
        "f": "float",
        "s": "string",
        "j": "json",
        "m": "mixed",
        "n": "string",
        "big": "mixed",
    }


def test_jsonl_dataset_carries_typed_columns(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "text": "good", "score": 1, "ok": True, "tags": ["a"], "note": None, "misc": "x"},
        {"id": 2, "text": "bad", "score": 2.5, "ok": False, "tags": {"k": 1}, "misc": 7},
        {"id": 3, "text": "meh", "extra": "only here"},
    ]
    write_jsonl(tmp_path / "data.jsonl", rows)
    cfg = job_cfg(tmp_path, "data.jsonl", schema=None)
    write_run(Path(cfg.out_dir), results=[success("2", "fine")])
    out = os.path.join(cfg.out_dir, "results.parquet")
    report = write_results_parquet(cfg, out)
    table = pq.read_table(out)
    types = {f.name: f.type for f in table.schema}
    assert types["id"] == pa.int64() and types["score"] == pa.float64()
    assert types["ok"] == pa.bool_() and types["tags"] == pa.string()
    assert types["note"] == pa.string() and types["misc"] == pa.string()
    assert "parse_error" not in types  # no schema, no parsed columns
    got = table.to_pylist()
    assert [r["custom_id"] for r in got] == ["1", "2", "3"]
    assert [r["score"] for r in got] == [1.0, 2.5, None]
    assert [r["tags"] for r in got] == ['["a"]', '{"k":1}', None]
    assert [r["misc"] for r in got] == ["x", "7", None]
    assert [r["extra"] for r in got] == [None, None, "only here"]
    assert [r["status"] for r in got] == ["pending", "succeeded", "pending"]
    assert report.statuses == {"succeeded": 1, "failed": 0, "pending": 2, "invalid": 0}
    assert report.eval is None


# -- Parquet in -> Parquet out ---------------------------------------------------------
def test_parquet_dataset_in_parquet_out(tmp_path: Path) -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    table = pa.table(
        {
            "id": pa.array([10, 11, 12, 13, 14, 15], pa.int64()),
            "text": ["a", "b", "c", "d", "e", "f"],
            "weight": pa.array([0.5, None, 1.5, 2.0, 2.5, 3.0], pa.float32()),
            "seen": pa.array([when] * 6, pa.timestamp("ms", tz="UTC")),
            "tags": pa.array([["x"], [], None, ["y", "z"], ["x"], ["q"]], pa.list_(pa.string())),
            "label": ["positive", "negative", "neutral", "positive", "negative", "neutral"],
        }
    )
    pq.write_table(table, tmp_path / "data.parquet")
    cfg = job_cfg(
        tmp_path,
        "data.parquet",
        eval_='[eval]\nreference_column = "label"\ncompare = "json_field"\nfield = "sentiment"',
    )
    write_run(
        Path(cfg.out_dir),
        results=[
            success("12", "this is not JSON"),
            success(
                "10",
                '{"sentiment": "positive", "confidence": 0.9, "stars": 5,'
                ' "sarcastic": false, "tags": ["t"], "extra": 1}',
            ),
            success("13", '{"sentiment": "positive", "stars": "five"}'),  # wrong type
            success("15", '```json\n{"sentiment": "neutral", "stars": 3.0}\n```'),
        ],
        errors=[failure("11", "bad_request", "context too long")],
    )
    out = os.path.join(cfg.out_dir, "results.parquet")
    report = write_results_parquet(cfg, out)
    result = pq.read_table(out)
    types = {f.name: f.type for f in result.schema}
    # carried columns keep their Arrow types exactly
    for name in ("id", "text", "weight", "seen", "tags", "label"):
        assert types[name] == table.schema.field(name).type
    assert result.column_names[:8] == [
        "custom_id",
        "row",
        "id",
        "text",
        "weight",
        "seen",
        "tags",
        "label",
    ]
    assert types["confidence"] == pa.float64() and types["stars"] == pa.int64()
    assert types["sarcastic"] == pa.bool_() and types["sentiment"] == pa.string()
    rows = {r["custom_id"]: r for r in result.to_pylist()}
    # the input's "tags" column keeps its name; the parsed one is renamed
    assert report.renamed == {"parsed": {"tags": "out_tags"}}
    assert rows["10"]["tags"] == ["x"] and rows["10"]["out_tags"] == '["t"]'
    assert rows["10"]["seen"] == when
    assert (
        rows["10"]["sentiment"],
        rows["10"]["confidence"],
        rows["10"]["stars"],
        rows["10"]["sarcastic"],
        rows["10"]["parse_error"],
    ) == ("positive", 0.9, 5, False, None)
    assert rows["12"]["status"] == "succeeded" and rows["12"]["sentiment"] is None
    assert rows["12"]["parse_error"].startswith("invalid JSON")
    assert rows["12"]["content"] == "this is not JSON"
    assert rows["13"]["parse_error"] == "field 'stars': expected integer, got string"
    assert rows["15"]["stars"] == 3 and rows["15"]["confidence"] is None
    assert (
        rows["11"]["status"],
        rows["11"]["error_code"],
        rows["11"]["error_message"],
        rows["11"]["status_code"],
        rows["11"]["parse_error"],
    ) == ("failed", "bad_request", "context too long", 400, None)
    assert rows["14"]["status"] == "pending" and rows["14"]["content"] is None
    assert [r["row"] for r in result.to_pylist()] == [1, 2, 3, 4, 5, 6]
    # eval: 10 and 15 right, 11 failed (no prediction), 12 no JSON, 13 "positive" right
    # (the raw JSON field, though the row did not fit the schema); 14 pending: not scored
    ev = report.eval
    assert ev is not None
    assert (ev["n"], ev["correct"], ev["missing_predictions"], ev["pending"]) == (5, 3, 2, 1)
    assert ev["accuracy"] == pytest.approx(3 / 5)
    assert ev["confusion"]["negative"] == {"(none)": 1}
    meta = orjson.loads(result.schema.metadata[b"batchrun"])
    assert meta["renamed"] == {"parsed": {"tags": "out_tags"}} and meta["first_choice_only"] is True


def test_name_clashes_get_prefixes(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "data.jsonl",
        [
            {
                "id": "a",
                "text": "t",
                "status": "new",
                "content": "c",
                "input_status": 1,
                "parse_error": False,
            }
        ],
    )
    schema = {
        "properties": {
            "status": {"type": "string"},
            "text": {"type": "string"},
            "parse_error": {"type": "string"},
        }
    }
    cfg = job_cfg(tmp_path, "data.jsonl", schema=schema)
    write_run(
        Path(cfg.out_dir),
        results=[success("a", '{"status": "s", "text": "x", "parse_error": "p"}')],
    )
    out = os.path.join(cfg.out_dir, "results.parquet")
    report = write_results_parquet(cfg, out)
    row = read(out)[0]
    assert report.renamed == {
        "input": {
            "status": "input_status",
            "content": "input_content",
            "input_status": "input_input_status",
            "parse_error": "input_parse_error",
        },
        "parsed": {"status": "out_status", "text": "out_text", "parse_error": "out_parse_error"},
    }
    assert row["input_status"] == "new" and row["status"] == "succeeded"
    assert row["input_input_status"] == 1 and row["input_content"] == "c"
    assert (row["out_status"], row["out_text"], row["out_parse_error"]) == ("s", "x", "p")
    assert row["text"] == "t" and row["parse_error"] is None
    assert row["input_parse_error"] is False


def test_invalid_rows_are_listed_as_invalid(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "data.jsonl", [{"id": "a", "text": "t"}, {"id": "b"}, "oops", {"text": "no id"}]
    )
    with open(tmp_path / "data.jsonl", "ab") as f:
        f.write(b"{not json\n")
    cfg = job_cfg(tmp_path, "data.jsonl", skip_invalid=True)
    write_run(Path(cfg.out_dir), results=[success("a", '{"sentiment": "neutral"}')])
    out = os.path.join(cfg.out_dir, "results.parquet")
    report = write_results_parquet(cfg, out)
    rows = read(out)
    assert [(r["custom_id"], r["row"], r["status"]) for r in rows] == [
        ("a", 1, "succeeded"),
        ("b", 2, "invalid"),
        (None, 3, "invalid"),
        (None, 4, "invalid"),
        (None, 5, "invalid"),
    ]
    assert "text" in rows[1]["error_message"] and rows[1]["error_code"] == "invalid_input"
    assert "not valid JSON" in rows[4]["error_message"]
    assert report.statuses["invalid"] == 4


def test_plain_request_file_has_no_carried_columns(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    write_jsonl(
        tmp_path / "req.jsonl",
        [
            {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": body},
            {**body, "custom_id": "q2"},
            body,
        ],
    )
    cfg = Settings(input=str(tmp_path / "req.jsonl"), out_dir=str(tmp_path / "run"))
    write_run(tmp_path / "run", results=[success("row-3", "third"), success("q1", "first")])
    out = str(tmp_path / "run" / "results.parquet")
    report = write_results_parquet(cfg, out)
    rows = read(out)
    assert report.columns == ["custom_id", "row"] + [n for n, _ in parquet.RESULT_COLUMNS]
    assert [(r["custom_id"], r["status"], r["content"]) for r in rows] == [
        ("q1", "succeeded", "first"),
        ("q2", "pending", None),
        ("row-3", "succeeded", "third"),
    ]


# -- writing ---------------------------------------------------------------------------
def test_row_groups_and_the_same_schema_whatever_the_answers(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"id": i, "text": f"t{i}"} for i in range(10)])
    cfg = job_cfg(tmp_path, "data.jsonl")
    out = os.path.join(cfg.out_dir, "results.parquet")
    write_run(Path(cfg.out_dir))
    write_results_parquet(cfg, out, row_group_rows=3)
    before = pq.ParquetFile(out)
    assert before.metadata.num_row_groups == 4 and before.metadata.num_rows == 10
    write_run(
        Path(cfg.out_dir),
        results=[success(str(i), '{"sentiment": "positive", "stars": 4}') for i in range(10)],
    )
    write_results_parquet(cfg, out, row_group_rows=3)
    after = pq.ParquetFile(out)
    assert after.schema_arrow == before.schema_arrow
    assert read(out)[9]["stars"] == 4
    assert sorted(os.listdir(cfg.out_dir)) == ["errors.jsonl", "results.jsonl", "results.parquet"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"id": i, "text": f"t{i}"} for i in range(10)])
    cfg = job_cfg(tmp_path, "data.jsonl")
    write_run(Path(cfg.out_dir))
    out = os.path.join(cfg.out_dir, "results.parquet")
    write_results_parquet(cfg, out)
    calls = 0
    real_table = parquet._Pass.table

    def flaky(self: Any, items: Any, batch: Any) -> pa.Table:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk full")
        return real_table(self, items, batch)

    monkeypatch.setattr(parquet._Pass, "table", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_results_parquet(cfg, out, row_group_rows=4)
    assert len(read(out)) == 10  # the old file, whole
    assert not [n for n in os.listdir(cfg.out_dir) if n.startswith(".tmp")]


def test_without_a_path_it_only_evaluates(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "data.jsonl",
        [{"id": "a", "text": "t", "label": "yes"}, {"id": "b", "text": "u", "label": "no"}],
    )
    cfg = job_cfg(
        tmp_path,
        "data.jsonl",
        schema=None,
        eval_='[eval]\nreference_column = "label"\ncompare = "exact"',
    )
    write_run(Path(cfg.out_dir), results=[success("a", "Yes."), success("b", "yes")])
    report = write_results_parquet(cfg, None)
    assert report.path is None and not os.path.exists(os.path.join(cfg.out_dir, "results.parquet"))
    assert report.eval is not None and report.eval["accuracy"] == 0.5
    assert report.rows == 2
