"""Bad input files and bad options: one line naming the file and the line or row,
a non-zero exit, no traceback, and nothing sent.

Every case runs the real CLI (click's CliRunner) against the fault server, which
counts what reaches it: a bad file must be refused before the first request.
``--skip-invalid`` instead sets bad rows aside in invalid.jsonl and runs the rest.
Handled inputs (BOM, CRLF, blank lines, a 10 MB line, ...) must simply work.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from batchrun._cli import cli
from tests.faultserver import FaultServer

pytest_plugins = ["tests.conftest_fault"]  # fault_server, shared_fault_server

GOOD: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def good(i: int) -> bytes:
    return line(
        {**GOOD, "custom_id": f"id-{i}", "messages": [{"role": "user", "content": f"m{i}"}]}
    )


def batch_line(**over: Any) -> bytes:
    row = {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": GOOD}
    row.update(over)
    return line(row)


def parquet(table: pa.Table) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        pq.write_table(table, path)

    return write


def parquet_bytes_edit(edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A valid request Parquet file, then ``edit`` applied to its bytes."""

    def write(path: Path) -> None:
        body = json.dumps(GOOD)
        table = pa.table({"custom_id": [f"r{i}" for i in range(5000)], "body": [body] * 5000})
        pq.write_table(table, path, compression="none")
        path.write_bytes(edit(path.read_bytes()))

    return write


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _corrupt_pages(raw: bytes) -> bytes:
    """Overwrite the data pages, keep header magic and footer: readable schema, bad data."""
    middle = bytes([0x5A]) * (len(raw) // 2)
    return raw[:1000] + middle + raw[1000 + len(middle) :]


def _flip_crc(data: bytes) -> bytes:
    raw = bytearray(data)
    raw[-6] ^= 0xFF
    return bytes(raw)


Content = bytes | Callable[[Path], None] | None


# id, file name, content, location the message must name (None: file-level), reason text
BAD_INPUTS: list[Any] = [
    ("not_json", "r.jsonl", b"this is not json\n", "line 1", "not valid JSON"),
    (
        "torn_last_line",
        "r.jsonl",
        good(1) + b'{"model": "m", "messages": [{"ro',
        "line 2",
        "not valid JSON",
    ),
    ("json_array", "r.jsonl", good(1) + b"[1, 2]\n", "line 2", "expected a JSON object, got list"),
    ("json_string", "r.jsonl", b'"hello"\n', "line 1", "expected a JSON object, got str"),
    ("json_number", "r.jsonl", b"42\n", "line 1", "got int"),
    ("json_null", "r.jsonl", b"null\n", "line 1", "got null"),
    (
        "missing_messages",
        "r.jsonl",
        good(1) + good(2) + line({"model": "m"}),
        "line 3",
        "no 'messages'",
    ),
    (
        "messages_not_list",
        "r.jsonl",
        line({**GOOD, "messages": "hi"}),
        "line 1",
        "'messages' must be a list",
    ),
    (
        "messages_object",
        "r.jsonl",
        line({**GOOD, "messages": {"role": "user"}}),
        "line 1",
        "'messages' must be a list",
    ),
    ("messages_empty", "r.jsonl", line({**GOOD, "messages": []}), "line 1", "'messages' is empty"),
    (
        "message_not_object",
        "r.jsonl",
        line({**GOOD, "messages": ["hi"]}),
        "line 1",
        "messages[0] must be an object",
    ),
    (
        "message_without_role",
        "r.jsonl",
        line({**GOOD, "messages": [{"content": "x"}]}),
        "line 1",
        "with a 'role'",
    ),
    (
        "url_legacy_completions",
        "r.jsonl",
        batch_line(url="/v1/completions"),
        "line 1",
        "url must be /v1/chat/completions, /v1/embeddings or /v1/responses",
    ),
    (
        "url_responses_with_a_chat_body",
        "r.jsonl",
        good(1) + batch_line(url="/v1/responses"),
        "line 2",
        "'messages' is a chat-completions field; the Responses API takes 'input'",
    ),
    (
        "url_embeddings_with_a_chat_body",
        "r.jsonl",
        batch_line(url="/v1/embeddings"),
        "line 1",
        "'messages' is not an embeddings field",
    ),
    ("method_get", "r.jsonl", batch_line(method="GET"), "line 1", "method must be POST"),
    ("method_not_string", "r.jsonl", batch_line(method=1), "line 1", "method must be POST"),
    ("body_not_object", "r.jsonl", batch_line(body=[1]), "line 1", "body must be a JSON object"),
    (
        "custom_id_int",
        "r.jsonl",
        line({**GOOD, "custom_id": 7}),
        "line 1",
        "custom_id must be a non-empty string",
    ),
    (
        "custom_id_empty",
        "r.jsonl",
        line({**GOOD, "custom_id": ""}),
        "line 1",
        "custom_id must be a non-empty string",
    ),
    (
        "custom_id_list",
        "r.jsonl",
        batch_line(custom_id=["a"]),
        "line 1",
        "custom_id must be a non-empty string",
    ),
    (
        "duplicate_ids",
        "r.jsonl",
        good(1) + good(2) + good(1),
        "line 3",
        "duplicate custom_id 'id-1' (first seen at line 1)",
    ),
    (
        "duplicate_of_default_id",
        "r.jsonl",
        line(GOOD) + line({**GOOD, "custom_id": "row-1"}),
        "line 2",
        "duplicate custom_id 'row-1'",
    ),
    ("model_missing", "r.jsonl", line({"messages": GOOD["messages"]}), "line 1", "no model"),
    ("model_not_string", "r.jsonl", line({**GOOD, "model": 4}), "line 1", "model must be a string"),
    (
        "non_utf8",
        "r.jsonl",
        b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}\n',
        "line 1",
        "not valid JSON",
    ),
    ("latin1_line_2", "r.jsonl", good(1) + b'{"model": "caf\xe9"}\n', "line 2", "not valid JSON"),
    (
        "utf16_file",
        "r.jsonl",
        "\ufeff".encode("utf-16-le") + json.dumps(GOOD).encode("utf-16-le"),
        "line 1",
        "not valid JSON",
    ),
    (
        "lone_surrogate",
        "r.jsonl",
        b'{"custom_id": "\\ud800", "model": "m", "messages": []}\n',
        "line 1",
        "not valid JSON",
    ),
    (
        "nan",
        "r.jsonl",
        b'{"model": "m", "temperature": NaN, "messages": []}\n',
        "line 1",
        "not valid JSON",
    ),
    (
        "nul_byte",
        "r.jsonl",
        json.dumps(GOOD).encode()[:-1] + b"\x00}\n",
        "line 1",
        "not valid JSON",
    ),
    ("too_deep_to_read", "r.jsonl", b"[" * 2000 + b"]" * 2000 + b"\n", "line 1", "not valid JSON"),
    pytest.param(
        "too_deep_to_send",
        "r.jsonl",
        line({**GOOD, "metadata": json.loads("[" * 600 + "]" * 600)}),
        "line 1",
        "",
        id="too_deep_to_send",
    ),
    ("binary_junk", "r.jsonl", bytes(range(256)) * 4, "line 1", "not valid JSON"),
    ("gzip_with_jsonl_name", "r.jsonl", gz(good(1)), "line 1", "not valid JSON"),
    ("empty_file", "r.jsonl", b"", None, "holds no requests"),
    ("only_blank_lines", "r.jsonl", b"\n\n   \n\r\n", None, "holds no requests"),
    ("only_bom", "r.jsonl", b"\xef\xbb\xbf", None, "holds no requests"),
    ("gz_not_gzip", "r.jsonl.gz", b"plain text, not gzip\n", None, "cannot read file"),
    ("gz_truncated", "r.jsonl.gz", gz(good(1) * 500)[:200], None, "cannot read file"),
    ("gz_bad_crc", "r.jsonl.gz", _flip_crc(gz(good(1))), None, "cannot read file"),
    ("gz_bad_json_inside", "r.jsonl.gz", gz(good(1) + b"{oops\n"), "line 2", "not valid JSON"),
    ("gz_empty", "r.jsonl.gz", gz(b""), None, "holds no requests"),
    (
        "parquet_random_bytes",
        "r.parquet",
        os.urandom(64) + b"PAR1",
        None,
        "not a readable Parquet file",
    ),
    ("parquet_empty_file", "r.parquet", b"", None, "not a readable Parquet file"),
    (
        "parquet_truncated",
        "r.parquet",
        parquet_bytes_edit(lambda raw: raw[:-100]),
        None,
        "not a readable Parquet file",
    ),
    pytest.param(
        "parquet_corrupt_pages",
        "r.parquet",
        parquet_bytes_edit(_corrupt_pages),
        "row",
        "corrupt Parquet data",
        id="parquet_corrupt_pages",
    ),
    (
        "parquet_no_body_column",
        "r.parquet",
        parquet(pa.table({"prompt": ["hi"], "id": ["a"]})),
        None,
        "needs a 'body' column (columns: prompt, id)",
    ),
    (
        "parquet_body_not_json",
        "r.parquet",
        parquet(pa.table({"body": [json.dumps(GOOD), "{not json", json.dumps(GOOD)]})),
        "row 2",
        "body is not valid JSON",
    ),
    (
        "parquet_body_int",
        "r.parquet",
        parquet(pa.table({"body": [1, 2]})),
        "row 1",
        "body must be a JSON object",
    ),
    (
        "parquet_body_json_list",
        "r.parquet",
        parquet(pa.table({"body": ["[1]"]})),
        "row 1",
        "body must be a JSON object",
    ),
    (
        "parquet_custom_id_int",
        "r.parquet",
        parquet(pa.table({"custom_id": [1], "body": [json.dumps(GOOD)]})),
        "row 1",
        "custom_id must be a non-empty string",
    ),
    (
        "parquet_missing_messages",
        "r.parquet",
        parquet(pa.table({"body": [json.dumps(GOOD), json.dumps({"model": "m"})]})),
        "row 2",
        "no 'messages'",
    ),
    (
        "parquet_struct_body_missing_messages",
        "r.parquet",
        parquet(
            pa.table(
                {"body": [{"model": "m", "messages": None}]},
                schema=pa.schema(
                    [("body", pa.struct([("model", pa.string()), ("messages", pa.string())]))]
                ),
            )
        ),
        "row 1",
        "no 'messages'",
    ),
    (
        "parquet_duplicate_ids",
        "r.parquet",
        parquet(pa.table({"custom_id": ["a", "b", "a"], "body": [json.dumps(GOOD)] * 3})),
        "row 3",
        "duplicate custom_id 'a' (first seen at row 1)",
    ),
    (
        "parquet_zero_rows",
        "r.parquet",
        parquet(pa.table({"body": pa.array([], pa.string())})),
        None,
        "holds no requests",
    ),
    (
        "parquet_url_wrong",
        "r.parquet",
        parquet(pa.table({"body": [json.dumps(GOOD)], "url": ["/v1/completions"]})),
        "row 1",
        "url must be /v1/chat/completions",
    ),
    ("missing_file", "r.jsonl", None, None, "no such file"),
]


def make_input(tmp_path: Path, name: str, content: Content) -> Path:
    path = tmp_path / name
    if callable(content):
        content(path)
    elif content is not None:
        path.write_bytes(content)
    return path


def run_cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env or {"BATCHRUN_DEBUG": None})


def run_args(path: Path | str, out: Path, base_url: str, *extra: str) -> list[str]:
    return ["run", str(path), "-o", str(out), "--base-url", base_url, "--auth", "none", *extra]


def assert_one_line_error(result: Result, *must_contain: str) -> str:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, BaseException) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    message = result.stderr.strip()
    assert message.startswith("Error: "), result.output
    assert "\n" not in message, f"not one line:\n{message}"
    for text in must_contain:
        assert text in message, f"{text!r} not in {message!r}"
    return message


def assert_usage_error(result: Result, *must_contain: str) -> None:
    """An option's value failed its check: click's usage error, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Invalid value for "), result.stderr
    for text in must_contain:
        assert text in last, f"{text!r} not in {last!r}"


def assert_no_output_lines(out: Path) -> None:
    for name in ("results.jsonl", "errors.jsonl"):
        path = out / name
        assert not path.exists() or path.stat().st_size == 0, f"{name} has content"


@pytest.mark.parametrize(
    ("case", "name", "content", "where", "reason"),
    [pytest.param(*c, id=c[0]) if type(c) is tuple else c for c in BAD_INPUTS],
)
def test_bad_input_is_one_line_and_nothing_is_sent(
    fault_server: FaultServer,
    tmp_path: Path,
    case: str,
    name: str,
    content: Content,
    where: str | None,
    reason: str,
) -> None:
    path = make_input(tmp_path, name, content)
    out = tmp_path / "run"
    result = run_cli(run_args(path, out, fault_server.base_url))
    expected = [str(path), reason] + ([f"{path}:{where}"] if where else [])
    assert_one_line_error(result, *expected)
    assert result.exit_code == 1
    assert fault_server.requests == 0, "a request was sent for a bad input file"
    assert_no_output_lines(out)


def test_directory_as_input(fault_server: FaultServer, tmp_path: Path) -> None:
    folder = tmp_path / "requests.jsonl"
    folder.mkdir()
    result = run_cli(run_args(folder, tmp_path / "run", fault_server.base_url))
    assert_one_line_error(result, str(folder), "is a directory")
    assert fault_server.requests == 0


def test_file_level_errors_name_no_fake_line(fault_server: FaultServer, tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    result = run_cli(run_args(path, tmp_path / "run", fault_server.base_url))
    message = assert_one_line_error(result, str(path))
    assert message == f"Error: {path}: no such file"


def test_estimate_reports_bad_input_the_same_way(tmp_path: Path) -> None:
    path = make_input(tmp_path, "r.jsonl", good(1) + b"[1]\n")
    result = run_cli(["estimate", str(path)])
    assert_one_line_error(result, f"{path}:line 2", "expected a JSON object")


def test_debug_env_shows_the_traceback(tmp_path: Path) -> None:
    path = make_input(tmp_path, "r.jsonl", good(1) + b"not json\n")
    args = run_args(path, tmp_path / "run", "http://127.0.0.1:9/v1")
    env = {**os.environ, "BATCHRUN_DEBUG": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "InputError" in proc.stderr and f"{path}:line 2" in proc.stderr
    # without it, the same failure is one line (CliRunner runs the same code in-process)
    result = run_cli(args)
    assert_one_line_error(result, f"{path}:line 2: not valid JSON")


# -- handled, not errors ---------------------------------------------------------------

HANDLED: list[Any] = [
    ("bom", "r.jsonl", b"\xef\xbb\xbf" + good(1) + good(2), 2),
    ("crlf", "r.jsonl", good(1).replace(b"\n", b"\r\n") + good(2).replace(b"\n", b"\r\n"), 2),
    ("bom_and_crlf", "r.jsonl", b"\xef\xbb\xbf" + good(1).replace(b"\n", b"\r\n"), 1),
    ("blank_lines", "r.jsonl", b"\n" + good(1) + b"\n   \n\t\n" + good(2) + b"\n\n", 2),
    ("no_final_newline", "r.jsonl", good(1) + good(2).rstrip(b"\n"), 2),
    pytest.param(
        "huge_line_10mb",
        "r.jsonl",
        line(
            {
                **GOOD,
                "custom_id": "big",
                # a model of no known context window: 10 MB are not checked against one
                "model": "self-hosted-model",
                "messages": [{"role": "user", "content": "y" * 10_000_000}],
            }
        )
        + good(2),
        2,
        id="huge_line_10mb",
    ),
    (
        "lowercase_post_and_short_url",
        "r.jsonl",
        batch_line(method="post", url="/chat/completions"),
        1,
    ),
    ("bare_body_with_custom_id", "r.jsonl", line({**GOOD, "custom_id": "x"}), 1),
    (
        "non_ascii_ids_and_content",
        "r.jsonl",
        line({**GOOD, "custom_id": "ключ-🙂", "messages": [{"role": "user", "content": "日本語"}]}),
        1,
    ),
    ("gzip", "r.jsonl.gz", gz(good(1) + good(2)), 2),
    ("ndjson_name", "r.ndjson", good(1), 1),
]


@pytest.mark.parametrize(
    ("case", "name", "content", "rows"),
    [pytest.param(*h, id=h[0]) if type(h) is tuple else h for h in HANDLED],
)
def test_handled_inputs_run(
    fault_server: FaultServer, tmp_path: Path, case: str, name: str, content: bytes, rows: int
) -> None:
    path = make_input(tmp_path, name, content)
    out = tmp_path / "run"
    result = run_cli(run_args(path, out, fault_server.base_url, "-q"))
    assert result.exit_code == 0, result.output
    assert fault_server.requests == rows
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == rows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["succeeded"] == rows and summary["requests"]["invalid"] == 0


# -- --skip-invalid ----------------------------------------------------------------------


def test_skip_invalid_sets_bad_rows_aside_and_runs_the_rest(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    content = (
        good(1)
        + b"not json\n"
        + good(2)
        + b"[1, 2]\n"
        + line({"model": "m"})
        + batch_line(url="/v1/completions")
        + good(3)
        + line({**GOOD, "custom_id": 9})
        + b'{"torn": '
    )
    path = make_input(tmp_path, "r.jsonl", content)
    out = tmp_path / "run"
    result = run_cli(run_args(path, out, fault_server.base_url, "-q", "--skip-invalid"))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert fault_server.requests == 3
    done = sorted(
        json.loads(x)["custom_id"] for x in (out / "results.jsonl").read_text().splitlines()
    )
    assert done == ["id-1", "id-2", "id-3"]
    invalid = [json.loads(x) for x in (out / "invalid.jsonl").read_text().splitlines()]
    assert [(r["row"], r["where"]) for r in invalid] == [
        (2, "line 2"),
        (4, "line 4"),
        (5, "line 5"),
        (6, "line 6"),
        (8, "line 8"),
        (9, "line 9"),
    ]
    reasons = [r["reason"] for r in invalid]
    assert "not valid JSON" in reasons[0]
    assert reasons[1] == "expected a JSON object, got list"
    assert reasons[2] == "body has no 'messages'"
    assert "url must be /v1/chat/completions" in reasons[3]
    assert "custom_id must be a non-empty string" in reasons[4]
    assert "not valid JSON" in reasons[5]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] == {
        "total": 3,
        "succeeded": 3,
        "failed": 0,
        "pending": 0,
        "invalid": 6,
    }
    # a rerun sends nothing and rewrites invalid.jsonl rather than appending to it
    again = run_cli(run_args(path, out, fault_server.base_url, "-q", "--skip-invalid"))
    assert again.exit_code == 0, again.output
    assert fault_server.requests == 3
    assert len((out / "invalid.jsonl").read_text().splitlines()) == 6


def test_skip_invalid_parquet_rows(fault_server: FaultServer, tmp_path: Path) -> None:
    table = pa.table(
        {
            "custom_id": ["a", "b", "c"],
            "body": [json.dumps(GOOD), "{nope", json.dumps({"model": "m"})],
        }
    )
    path = make_input(tmp_path, "r.parquet", parquet(table))
    out = tmp_path / "run"
    result = run_cli(run_args(path, out, fault_server.base_url, "-q", "--skip-invalid"))
    assert result.exit_code == 0, result.output
    assert fault_server.requests == 1
    invalid = [json.loads(x) for x in (out / "invalid.jsonl").read_text().splitlines()]
    assert [r["where"] for r in invalid] == ["row 2", "row 3"]


def test_skip_invalid_does_not_hide_file_level_errors(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    path = make_input(tmp_path, "r.jsonl.gz", b"not gzip at all")
    result = run_cli(run_args(path, tmp_path / "run", fault_server.base_url, "--skip-invalid"))
    assert_one_line_error(result, str(path), "cannot read file")
    assert fault_server.requests == 0


def test_skip_invalid_still_refuses_duplicate_ids(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    """A duplicate id is not a bad row but an ambiguous file: which one is meant?"""
    path = make_input(tmp_path, "r.jsonl", good(1) + b"junk\n" + good(1))
    result = run_cli(run_args(path, tmp_path / "run", fault_server.base_url, "--skip-invalid"))
    assert_one_line_error(result, f"{path}:line 3", "duplicate custom_id 'id-1'")
    assert fault_server.requests == 0


def test_skip_invalid_with_no_valid_row_fails(fault_server: FaultServer, tmp_path: Path) -> None:
    path = make_input(tmp_path, "r.jsonl", b"junk\n[1]\n")
    out = tmp_path / "run"
    result = run_cli(run_args(path, out, fault_server.base_url, "-q", "--skip-invalid"))
    assert_one_line_error(result, str(path), "invalid")
    assert len((out / "invalid.jsonl").read_text().splitlines()) == 2


# -- option and job-file errors --------------------------------------------------------

ARG_ERRORS: list[tuple[str, list[str], int, str]] = [
    ("auth_bogus", ["--auth", "bogus"], 2, "Invalid value for '--auth'"),
    ("concurrency_zero", ["-c", "0"], 2, "Invalid value for '-c' / '--concurrency'"),
    ("concurrency_word", ["-c", "many"], 2, "must be a positive integer (got 'many')"),
    ("rpm_negative", ["--rpm", "-5"], 2, "Invalid value for '--rpm'"),
    ("tpm_zero", ["--tpm", "0"], 2, "Invalid value for '--tpm'"),
    ("timeout_zero", ["--timeout", "0"], 2, "Invalid value for '--timeout'"),
    ("max_attempts_zero", ["--max-attempts", "0"], 2, "Invalid value for '--max-attempts'"),
    ("max_cost_negative", ["--max-cost", "-1"], 2, "Invalid value for '--max-cost'"),
    (
        "max_response_bytes_tiny",
        ["--max-response-bytes", "10"],
        2,
        "Invalid value for '--max-response-bytes'",
    ),
    ("unknown_option", ["--turbo"], 2, "No such option '--turbo'"),
    (
        "base_url_no_scheme",
        ["--base-url", "example.com/v1"],
        2,
        "'example.com/v1' must start with http:// or https://",
    ),
    ("base_url_ftp", ["--base-url", "ftp://example.com/v1"], 2, "must start with http://"),
    ("header_without_colon", ["-H", "X-Thing"], 2, "header 'X-Thing' must look like 'Name: value'"),
]


@pytest.mark.parametrize(
    ("case", "extra", "code", "text"), ARG_ERRORS, ids=[a[0] for a in ARG_ERRORS]
)
def test_option_errors_are_clear(
    fault_server: FaultServer, tmp_path: Path, case: str, extra: list[str], code: int, text: str
) -> None:
    path = make_input(tmp_path, "r.jsonl", good(1))
    out = tmp_path / "run"
    args = [
        "run",
        str(path),
        "-o",
        str(out),
        "--base-url",
        fault_server.base_url,
        "--auth",
        "none",
        *extra,
    ]
    result = run_cli(args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert text in result.stderr
    if code == 1:  # our own checks: exactly one line
        assert result.stderr.strip().count("\n") == 0
    assert fault_server.requests == 0
    assert not out.exists(), "the run directory was created for a bad option"


def test_base_url_from_environment_is_checked(fault_server: FaultServer, tmp_path: Path) -> None:
    path = make_input(tmp_path, "r.jsonl", good(1))
    result = CliRunner().invoke(
        cli,
        ["run", str(path), "-o", str(tmp_path / "run"), "--auth", "none"],
        env={"OPENAI_BASE_URL": "localhost:8000/v1"},
    )
    assert_usage_error(result, "Invalid value for '--base-url'", "'localhost:8000/v1' must start")


@pytest.mark.parametrize("url", ["http://", "https:///v1", "http://exa mple.com/v1"])
def test_base_url_without_host_is_refused_up_front(
    fault_server: FaultServer, tmp_path: Path, url: str
) -> None:
    path = make_input(tmp_path, "r.jsonl", good(1))
    out = tmp_path / "run"
    result = run_cli(
        [
            "run",
            str(path),
            "-o",
            str(out),
            "--base-url",
            url,
            "--auth",
            "none",
            "--max-attempts",
            "1",
        ]
    )
    assert_usage_error(result, "Invalid value for '--base-url'", repr(url))
    assert not out.exists()


def test_missing_input_and_out_are_clear(tmp_path: Path) -> None:
    # usage errors (issue 24 item 7): exit 2, click's usage line, then the one line
    result = run_cli(["run", "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no INPUT given" in result.stderr.strip().splitlines()[-1]
    path = make_input(tmp_path, "r.jsonl", good(1))
    result = run_cli(["run", str(path)])
    assert result.exit_code == 2
    assert "no run directory given: -o DIR" in result.stderr.strip().splitlines()[-1]


def write_job(tmp_path: Path, text: str) -> Path:
    make_input(tmp_path, "r.jsonl", good(1))
    job = tmp_path / "job.toml"
    job.write_text(text)
    return job


def test_job_file_with_unknown_keys_lists_each_problem(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path,
        f"""
colour = "blue"
[input]
path = "r.jsonl"
[endpoint]
base_url = "{fault_server.base_url}"
auth = "none"
[retry]
max_attemps = 3
[limits]
concurrency = -4
[output]
dir = "run"
[bogus]
x = 1
""",
    )
    result = run_cli(["run", "-j", str(job)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: ")
    problems = [ln.removeprefix("Error: ") for ln in lines]
    assert all(p.startswith(f"{job}: ") for p in problems), problems
    text = "\n".join(problems)
    assert "colour: unknown section or key" in text
    assert "retry.max_attemps: unknown key (did you mean 'max_attempts'?)" in text
    assert "limits.concurrency" in text and "-4" in text
    assert "bogus" in text
    assert len(problems) >= 4
    assert fault_server.requests == 0
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        ("not_toml", "[input\npath = ", "not valid TOML"),
        ("auth_bogus", '[input]\npath = "r.jsonl"\n[endpoint]\nauth = "bogus"\n', "endpoint.auth"),
        (
            "base_url_no_scheme",
            '[input]\npath = "r.jsonl"\n[endpoint]\nbase_url = "api.x.com/v1"\n',
            "endpoint.base_url",
        ),
        ("rpm_negative", '[input]\npath = "r.jsonl"\n[limits]\nrpm = -5\n', "limits.rpm"),
        ("wrong_type", '[input]\npath = "r.jsonl"\n[retry]\ntimeout = "soon"\n', "retry.timeout"),
        ("input_missing", '[input]\npath = "nope.jsonl"\n', "nope.jsonl"),
    ],
)
def test_job_file_errors_are_clear(tmp_path: Path, case: str, text: str, expected: str) -> None:
    job = write_job(tmp_path, text)
    result = run_cli(["run", "-j", str(job), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(job) in result.stderr or "nope.jsonl" in result.stderr
    assert expected in result.stderr


def test_missing_job_file(tmp_path: Path) -> None:
    result = run_cli(["run", "-j", str(tmp_path / "nope.toml")])
    assert_one_line_error(result, f"{tmp_path / 'nope.toml'}: job file not found")


def test_status_of_a_directory_that_is_no_run(tmp_path: Path) -> None:
    result = run_cli(["status", str(tmp_path)])
    assert_one_line_error(result, str(tmp_path), "is this a batchrun run directory?")
    (tmp_path / "summary.json").write_text("{torn")
    result = run_cli(["status", str(tmp_path)])
    assert "Traceback" not in result.output
    assert result.exit_code != 0
