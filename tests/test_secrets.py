"""The API key never leaves the environment: not in results, errors, summary, run.json,
invalid.jsonl, logs, tracebacks or --help. Runs use a recognisable key against a
simulator that *requires* it (so auth is really exercised), then every file under
the run directory and everything printed is scanned for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchrun._cli import cli
from batchrun.sim import SimConfig, SimThread
from tests.faultserver import FaultServer

pytest_plugins = ["tests.conftest_fault"]  # fault_server, shared_fault_server

KEY = "sk-TESTSECRET-9f8e7d6c5b4a"
WRONG_KEY = "sk-WRONGSECRET-1a2b3c4d5e6f"
# pieces a partial echo ("sk-TEST...5b4a", a masked key) would still show
FRAGMENTS = ("TESTSECRET", "WRONGSECRET", "9f8e7d6c5b4a", "1a2b3c4d5e6f")
COMMANDS = [[], ["run"], ["status"], ["estimate"], ["sim"]]


@pytest.fixture(scope="module")
def shared_keyed_sim() -> Iterator[SimThread]:
    config = SimConfig(
        require_key=KEY,
        fail_first={"bad-row": [400], "flaky-row": [429], "doomed-row": [503] * 10},
        retry_after=0.01,
    )
    with SimThread(config) as sim:
        yield sim


@pytest.fixture
def keyed_sim(shared_keyed_sim: SimThread) -> SimThread:
    """The simulator with its scripted attempt counts cleared (each test sees the faults)."""
    shared_keyed_sim.server.reset()
    return shared_keyed_sim


def assert_clean(text: str | bytes, where: str) -> None:
    data = text.encode() if isinstance(text, str) else text
    for fragment in FRAGMENTS:
        assert fragment.encode() not in data, f"key fragment {fragment!r} found in {where}"


def scan_tree(root: Path) -> list[Path]:
    """Every file under ``root`` (hidden temp files too), each checked for the key."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        assert_clean(path.read_bytes(), str(path))
    return files


def scan_result(result: Result, where: str) -> None:
    assert_clean(result.stdout, f"{where} stdout")
    assert_clean(result.stderr, f"{where} stderr")
    if result.exc_info is not None:
        import traceback

        assert_clean("".join(traceback.format_exception(*result.exc_info)), f"{where} traceback")


def write_requests(path: Path) -> Path:
    rows = [
        {
            "custom_id": name,
            "model": "gpt-4o-mini",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": name}],
        }
        for name in ("good-row", "bad-row", "flaky-row", "doomed-row", "other-row")
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "junk line\n")
    return path


def invoke(
    args: list[str], key_var: str = "OPENAI_API_KEY", key: str = KEY, **env: str | None
) -> Result:
    return CliRunner().invoke(cli, args, env={key_var: key, "BATCHRUN_DEBUG": None, **env})


def test_a_full_run_leaks_the_key_nowhere(keyed_sim: SimThread, tmp_path: Path) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    args = [
        "run",
        str(inp),
        "-o",
        str(out),
        "--base-url",
        keyed_sim.base_url,
        "--skip-invalid",
        "--max-attempts",
        "2",
        "-c",
        "4",
    ]
    result = invoke(args)
    scan_result(result, "run")
    assert result.exit_code == 4, result.output  # some rows failed for good
    # auth was really used: the simulator refuses requests without the key
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["custom_id"] for r in results} == {"good-row", "flaky-row", "other-row"}
    errors = {
        json.loads(x)["custom_id"]: json.loads(x)
        for x in (out / "errors.jsonl").read_text().splitlines()
    }
    assert errors["bad-row"]["response"]["status_code"] == 400
    assert errors["doomed-row"]["error"]["code"]
    files = {p.name for p in scan_tree(out)}
    assert {"results.jsonl", "errors.jsonl", "summary.json", "run.json", "invalid.jsonl"} <= files

    # a resume, status (text and JSON), and a --retry-failed pass
    for extra in ([], ["--retry-failed"]):
        again = invoke(args + extra)
        scan_result(again, f"rerun {extra}")
    for status_args in (["status", str(out)], ["status", str(out), "--json"]):
        status = invoke(status_args)
        scan_result(status, "status")
        assert status.exit_code in (0, 1)
    scan_tree(out)


def test_a_wrong_key_gives_401_records_without_the_key(
    keyed_sim: SimThread, tmp_path: Path
) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    result = invoke(
        ["run", str(inp), "-o", str(out), "--base-url", keyed_sim.base_url, "--skip-invalid"],
        key=WRONG_KEY,
    )
    scan_result(result, "wrong-key run")
    assert result.exit_code == 4
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 5
    assert {e["response"]["status_code"] for e in errors} == {401}
    assert {e["error"]["code"] for e in errors} == {"invalid_api_key"}
    assert all(e["batchrun"]["attempts"] == 1 for e in errors)  # 401 is final
    scan_tree(out)


@pytest.mark.parametrize(
    "auth",
    [
        ["--auth", "raw"],
        ["--auth-header", "api-key"],
        ["-H", f"Authorization: Bearer {KEY}", "--auth", "none"],
    ],
)
def test_other_auth_styles_leak_nothing(
    keyed_sim: SimThread, tmp_path: Path, auth: list[str]
) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    result = invoke(
        [
            "run",
            str(inp),
            "-o",
            str(out),
            "--base-url",
            keyed_sim.base_url,
            "--skip-invalid",
            "--max-attempts",
            "2",
            *auth,
        ]
    )
    scan_result(result, f"run {auth}")
    assert result.exit_code == 4, result.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 3  # the key got through
    scan_tree(out)
    run_info = json.loads((out / "run.json").read_text())
    if auth[0] == "-H":
        assert run_info["options"]["headers"] == [["Authorization", "***"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_never_shows_the_key(command: list[str]) -> None:
    result = invoke([*command, "--help"], OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert result.exit_code == 0, result.output
    scan_result(result, f"{command} --help")


def test_key_from_another_variable_and_from_a_job_file(
    keyed_sim: SimThread, tmp_path: Path
) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    key_file = tmp_path / "secret.key"
    key_file.write_text(KEY + "\n")
    job = tmp_path / "job.toml"
    job.write_text(f"""
[input]
path = "requests.jsonl"
[endpoint]
base_url = "{keyed_sim.base_url}"
api_key_file = "secret.key"
[retry]
max_attempts = 2
[output]
dir = "run-file"
""")
    result = CliRunner().invoke(
        cli,
        ["run", "-j", str(job), "--skip-invalid"],
        env={"OPENAI_API_KEY": None, "BATCHRUN_DEBUG": None},
    )
    scan_result(result, "job run")
    assert result.exit_code == 4, result.output
    assert len((tmp_path / "run-file" / "results.jsonl").read_text().splitlines()) == 3
    run_info = (tmp_path / "run-file" / "run.json").read_text()
    assert "secret.key" in run_info  # the path is recorded, never the contents
    scan_tree(tmp_path / "run-file")

    keyed_sim.server.reset()
    result = invoke(
        [
            "run",
            str(inp),
            "-o",
            str(tmp_path / "run-env"),
            "--base-url",
            keyed_sim.base_url,
            "--skip-invalid",
            "--api-key-env",
            "MY_LLM_KEY",
            "--max-attempts",
            "2",
        ],
        key_var="MY_LLM_KEY",
        OPENAI_API_KEY=None,
    )
    scan_result(result, "--api-key-env run")
    assert result.exit_code == 4, result.output
    assert "MY_LLM_KEY" in (tmp_path / "run-env" / "run.json").read_text()
    scan_tree(tmp_path / "run-env")


@pytest.mark.parametrize(
    ("case", "toml"),
    [
        ("api_key_in_endpoint", f'[endpoint]\napi_key = "{KEY}"\n'),
        ("token_top_level", f'token = "{KEY}"\n'),
        ("bearer_header", f'[endpoint]\nheaders = {{ Authorization = "Bearer {KEY}" }}\n'),
        ("api_key_header", f'[endpoint]\nheaders = {{ "api-key" = "{KEY}" }}\n'),
        ("key_in_request_field", f'[request]\nuser = "{KEY}"\n'),
        ("key_in_prompt", f'[prompt]\nuser = "use {KEY} for {{text}}"\n'),
    ],
)
def test_job_file_with_a_literal_key_is_refused_without_echoing_it(
    fault_server: FaultServer, tmp_path: Path, case: str, toml: str
) -> None:
    (tmp_path / "requests.jsonl").write_text(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}) + "\n"
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[input]\npath = "requests.jsonl"\n[output]\ndir = "run"\n{toml}'.replace(
            "[endpoint]\n", f'[endpoint]\nbase_url = "{fault_server.base_url}"\n'
        )
    )
    result = invoke(["run", "-j", str(job)], OPENAI_API_KEY=None)
    scan_result(result, case)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(job) in result.stderr
    assert "api_key_env" in result.stderr  # points at the right way to give a key
    assert fault_server.requests == 0
    assert not (tmp_path / "run").exists()


def test_missing_key_message_names_the_variable_not_a_value(tmp_path: Path) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    result = invoke(
        [
            "run",
            str(inp),
            "-o",
            str(tmp_path / "run"),
            "--base-url",
            "https://api.example.invalid/v1",
        ],
        OPENAI_API_KEY=None,
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: environment variable OPENAI_API_KEY is not set "
        "(set it, name another with --api-key-env, or use --auth none)"
    )


def test_debug_tracebacks_do_not_show_the_key(keyed_sim: SimThread, tmp_path: Path) -> None:
    """BATCHRUN_DEBUG=1 prints tracebacks; none of them may carry the key."""
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    base = [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--base-url",
        keyed_sim.base_url,
        "-q",
        "--max-attempts",
        "2",
    ]
    first = invoke([*base[3:], "--skip-invalid"], BATCHRUN_DEBUG="1")
    scan_result(first, "debug run")
    assert first.exit_code == 4, first.output
    # the same directory with another model: refused with a RunDirError traceback
    env = {**os.environ, "OPENAI_API_KEY": KEY, "BATCHRUN_DEBUG": "1"}
    second = subprocess.run(
        [*base, "--skip-invalid", "--model", "other"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert second.returncode != 0
    assert "Traceback" in second.stderr and "RunDirError" in second.stderr
    assert_clean(second.stdout + second.stderr, "debug traceback")
    scan_tree(out)


def test_a_server_echoing_the_key_does_not_put_it_in_errors(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    fault_server.script("echo", "echo_auth:401")
    inp = tmp_path / "requests.jsonl"
    inp.write_text(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "echo"}]}) + "\n"
    )
    out = tmp_path / "run"
    result = invoke(["run", str(inp), "-o", str(out), "--base-url", fault_server.base_url])
    assert fault_server.auth_seen == [f"Bearer {KEY}"]  # the key was sent, and echoed back
    scan_result(result, "echo run")
    scan_tree(out)


def test_key_like_header_value_is_redacted_whatever_the_name(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    inp = tmp_path / "requests.jsonl"
    inp.write_text(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}) + "\n"
    )
    out = tmp_path / "run"
    result = invoke(
        [
            "run",
            str(inp),
            "-o",
            str(out),
            "--base-url",
            fault_server.base_url,
            "--auth",
            "none",
            "-H",
            f"X-Relay-Credential: {KEY}",
        ]
    )
    assert result.exit_code == 0, result.output
    scan_tree(out)


@pytest.mark.parametrize("bad_key", [KEY + "\u2019", KEY + "\nX-Injected: 1", KEY + "\r"])
def test_a_malformed_key_is_a_clear_config_error(
    fault_server: FaultServer, tmp_path: Path, bad_key: str
) -> None:
    inp = tmp_path / "requests.jsonl"
    inp.write_text(
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}) + "\n"
    )
    result = invoke(
        ["run", str(inp), "-o", str(tmp_path / "run"), "--base-url", fault_server.base_url],
        key=bad_key,
    )
    scan_result(result, "malformed key run")
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message
    assert "OPENAI_API_KEY" in message
    assert fault_server.requests == 0


ECHO_MODES = (
    "sse_error",
    "sse_text",
    "sse_torn",
    "location",
    "request_id",
    "escaped",
    "long",
    "plain",
    "nonjson200",
)


def scan_parquet(path: Path) -> None:
    """Parquet compresses its pages: scan the decoded values, not the bytes."""
    import pyarrow.parquet as pq

    assert_clean(json.dumps(pq.read_table(path).to_pylist(), default=str), str(path))


def test_a_key_echoed_every_way_reaches_no_byte_written(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    """Issue 13, item 7: SSE error events, non-JSON SSE chunks, a torn stream's partial
    body, a redirect's Location, x-request-id, JSON-escaped and truncated echoes,
    non-JSON error and 200 bodies: the key is in none of the files, lines or logs."""
    rows = []
    for mode in ECHO_MODES:
        fault_server.script(mode, f"echo:{mode}", f"echo:{mode}")
        rows.append(
            {
                "custom_id": mode,
                "model": "m",
                "stream": mode.startswith("sse_"),
                "messages": [{"role": "user", "content": mode}],
            }
        )
    inp = tmp_path / "requests.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    result = invoke(
        [
            "run",
            str(inp),
            "-o",
            str(out),
            "--base-url",
            fault_server.base_url,
            "--max-attempts",
            "2",
        ]
    )
    assert result.exit_code in (0, 4), result.output
    assert {k for k, _ in fault_server.played} == set(ECHO_MODES)  # every echo was played
    assert all(seen == f"Bearer {KEY}" for seen in fault_server.auth_seen)
    scan_result(result, "echo run")
    files = scan_tree(out)
    assert out / "errors.jsonl" in files and out / "results.jsonl" in files
    scan_parquet(out / "results.parquet")
    status = invoke(["status", str(out)])
    scan_result(status, "status")
    # the echoes were really written, only masked
    written = (out / "errors.jsonl").read_text() + (out / "results.jsonl").read_text()
    assert written.count("***") >= len(ECHO_MODES) - 1
