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
    args += ["--require-key-env", "SIM_TEST_KEY"]
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
