"""Reading request files: both formats, both row forms, ids, duplicates, bad rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun._input.sources import Source
from batchrun.errors import InputError
from tests.conftest import body


def test_bare_bodies_get_row_ids_and_batch_lines_keep_theirs(write_jsonl) -> None:
    path = write_jsonl(
        [
            body("a"),
            {
                "custom_id": "x-1",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body("b"),
            },
            {**body("c"), "custom_id": "bare-id"},
        ]
    )
    src = Source(str(path))
    scan = src.scan()
    reqs = list(src.requests())
    assert scan.total == 3
    assert [r.custom_id for r in reqs] == ["row-1", "x-1", "bare-id"]
    assert "custom_id" not in reqs[2].body  # taken out of the body before sending
    assert reqs[1].body == body("b")


def test_row_ids_follow_line_numbers_and_are_stable(write_jsonl) -> None:
    path = write_jsonl([body("a"), body("b")])
    first = [r.custom_id for r in Source(str(path)).requests()]
    again = [r.custom_id for r in Source(str(path)).requests()]
    assert first == again == ["row-1", "row-2"]


def test_default_model_fills_rows_without_one(write_jsonl) -> None:
    path = write_jsonl([body("a", model=None), body("b", model="other")])
    reqs = list(Source(str(path), default_model="m-default").requests())
    assert [r.body["model"] for r in reqs] == ["m-default", "other"]


def test_missing_model_without_default_names_the_line(write_jsonl) -> None:
    path = write_jsonl([body("a"), body("b", model=None)])
    with pytest.raises(InputError) as err:
        Source(str(path)).scan()
    assert str(err.value).startswith(f"{path}:line 2:")
    assert "--model" in str(err.value)


def test_duplicate_ids_rejected_naming_the_first_duplicate(write_jsonl) -> None:
    path = write_jsonl(
        [
            {**body(), "custom_id": "a"},
            {**body(), "custom_id": "b"},
            {**body(), "custom_id": "b"},
            {**body(), "custom_id": "a"},
        ]
    )
    with pytest.raises(InputError) as err:
        Source(str(path)).scan()
    assert "duplicate custom_id 'b'" in str(err.value)
    assert "line 3" in str(err.value) and "line 2" in str(err.value)


def test_gzip_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(body("a")) + "\n" + json.dumps(body("b")) + "\n")
    assert [r.custom_id for r in Source(str(path)).requests()] == ["row-1", "row-2"]


def test_parquet_with_json_string_bodies(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    table = pa.table(
        {
            "custom_id": ["p1", None],
            "body": [json.dumps(body("a")), json.dumps(body("b"))],
        }
    )
    pq.write_table(table, path)
    src = Source(str(path))
    assert src.scan().total == 2
    reqs = list(src.requests())
    assert [r.custom_id for r in reqs] == ["p1", "row-2"]
    assert reqs[0].body == body("a")


def test_parquet_with_struct_bodies_drops_absent_fields(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    rows = [body("a", max_tokens=5), body("b")]  # second row has no max_tokens
    pq.write_table(pa.table({"body": pa.array(rows)}), path)
    reqs = list(Source(str(path)).requests())
    assert reqs[0].body["max_tokens"] == 5
    assert "max_tokens" not in reqs[1].body
    assert reqs[1].body["messages"] == [{"role": "user", "content": "b"}]


def test_parquet_without_body_column(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": ["a"]}), path)
    with pytest.raises(InputError, match="needs a 'body' column"):
        Source(str(path)).scan()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"text"', "expected a JSON object, got str"),
        ('{"model": "m"}', "body has no 'messages'"),
        ('{"model": "m", "messages": "hi"}', "'messages' must be a list"),
        ('{"model": "m", "messages": []}', "'messages' is empty"),
        (
            '{"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}',
            "method must be POST",
        ),
        (
            '{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}',
            "url must be /v1/chat/completions, /v1/embeddings or /v1/responses",
        ),
        (
            '{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}',
            "body has no 'input' (the text to embed)",
        ),
    ],
)
def test_bad_rows_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(body()) + "\n" + line + "\n")
    with pytest.raises(InputError) as err:
        Source(str(path)).scan()
    assert str(err.value).startswith(f"{path}:line 2: ")
    assert message in str(err.value)


def test_bom_crlf_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(body("a")).encode()
        + b"\r\n\r\n"
        + json.dumps(body("b")).encode()
        + b"\r\n"
    )
    reqs = list(Source(str(path)).requests())
    assert [r.custom_id for r in reqs] == ["row-1", "row-3"]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="holds no requests"):
        Source(str(empty)).scan()
    with pytest.raises(InputError, match="no such file"):
        Source(str(tmp_path / "nope.jsonl")).scan()
    with pytest.raises(InputError, match="the files hold no requests"):
        Source(str(tmp_path)).scan()  # a directory is an input: its one file is empty
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="is a directory with no input files"):
        Source(str(tmp_path / "none")).scan()


def test_skip_invalid_reports_rows_aside(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(body("a")) + "\nnot json\n" + json.dumps(body("b")) + "\n")
    src = Source(str(path), skip_invalid=True)
    sink_path = tmp_path / "invalid.jsonl"
    with open(sink_path, "wb") as sink:
        scan = src.scan(sink)
    assert (scan.total, scan.invalid) == (2, 1)
    bad = [json.loads(x) for x in sink_path.read_text().splitlines()]
    assert bad[0]["row"] == 2 and "not valid JSON" in bad[0]["reason"]
    assert [r.custom_id for r in src.requests()] == ["row-1", "row-3"]


def test_fingerprint_changes_with_content(write_jsonl) -> None:
    path = write_jsonl([body("a")])
    before = Source(str(path)).fingerprint()
    path.write_text(json.dumps(body("b")) + "\n")
    assert Source(str(path)).fingerprint() != before
