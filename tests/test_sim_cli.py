"""`batchrun sim` as a user runs it: a real process, a real port, a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from batchrun.sim.cli import sim_command

LAUNCH = "from batchrun.sim.cli import sim_command; sim_command()"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sim_process_serves_and_stops_on_signal(sig: signal.Signals) -> None:
    env = {**os.environ, "SIM_TEST_KEY": "sk-cli-test"}
    args = ["--port", "0", "--error-rate", "503=0", "--rpm", "100", "--seed", "3"]
    args += ["--require-key-env", "SIM_TEST_KEY", "--batch-script", "retrieve:503"]
    args += ["--batch-fate", "fail"]
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "batchrun sim listening on "
        assert line.startswith(prefix + "http://127.0.0.1:") and line.endswith("/v1")
        base_url = line.removeprefix(prefix)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        denied = httpx.post(base_url + "/chat/completions", json=body)
        assert denied.status_code == 401
        ok = httpx.post(
            base_url + "/chat/completions",
            json=body,
            headers={"Authorization": "Bearer sk-cli-test"},
        )
        assert ok.status_code == 200
        assert ok.headers["x-ratelimit-remaining-requests"] == "99"
        auth = {"Authorization": "Bearer sk-cli-test"}
        line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}'
        upload = httpx.post(
            base_url + "/files",
            headers=auth,
            files={"file": ("in.jsonl", line)},
            data={"purpose": "batch"},
        )
        assert upload.status_code == 200
        batch = {
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch_id = httpx.post(base_url + "/batches", headers=auth, json=batch).json()["id"]
        assert httpx.get(f"{base_url}/batches/{batch_id}", headers=auth).status_code == 503
        failed = httpx.get(f"{base_url}/batches/{batch_id}", headers=auth).json()
        assert failed["status"] == "failed"  # the --batch-fate
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "sk-cli-test" not in err


def test_bad_error_rate_is_a_clear_error() -> None:
    result = CliRunner().invoke(sim_command, ["--error-rate", "429"])
    assert result.exit_code != 0
    assert "STATUS=P" in result.output


def test_rates_over_one_are_refused() -> None:
    result = CliRunner().invoke(sim_command, ["--error-rate", "429=0.8", "--error-rate", "500=0.5"])
    assert result.exit_code == 1
    assert "more than 1" in result.output


def test_missing_key_env_is_refused() -> None:
    result = CliRunner().invoke(
        sim_command,
        ["--require-key-env", "BATCHRUN_SIM_SURELY_UNSET"],
        env={"BATCHRUN_SIM_SURELY_UNSET": None},
    )
    assert result.exit_code == 1
    assert "BATCHRUN_SIM_SURELY_UNSET" in result.output


def test_help_lists_options() -> None:
    result = CliRunner().invoke(sim_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--latency-ms", "--error-rate", "--rpm", "--truncate-rate", "--seed"):
        assert option in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-fault", "upload:503"], "OP:STEP=P"),
        (["--batch-script", "retrieve"], "OP:STEP[,STEP...]"),
        (["--batch-fault", "nowhere:503=0.1"], "unknown API operation"),
        (["--batch-script", "upload:explode"], "bad API fault step"),
        (["--batch-row-error-rate", "2"], "row_error_rate"),
        (["--batch-fate", "explode"], "explode"),
    ],
)
def test_bad_batch_options_are_clear_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim_command, args)
    assert result.exit_code != 0
    assert message in result.output


def test_help_lists_batch_options() -> None:
    result = CliRunner().invoke(sim_command, ["--help"])
    for option in ("--batch-rows-per-second", "--batch-fault", "--batch-fate", "--batch-window"):
        assert option in result.output
