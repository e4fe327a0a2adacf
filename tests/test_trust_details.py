"""The smaller trust fixes of issue 13: each one a way a user lost money or was misled.

Endpoint-wide 402/404 trip the breaker; bad input leaves no directory behind; waits
are not latency; budget messages say what helps; exit 4 names --retry-failed; the
status of a retried failure; a refused resume names only what changed; scoring
never needs a resend (``[eval]`` is not part of the fingerprint, ``batchrun eval``).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._engine.stops import EXIT_ERROR, EXIT_SOME_FAILED
from batchrun._jobs.jobfile import load_job
from batchrun.errors import RunDirError
from tests.conftest import completion
from tests.test_budget import run as budget_run
from tests.test_budget import setup as budget_setup
from tests.test_dataset_jobs import make_job, mock_handler
from tests.test_dataset_jobs import run as dataset_run
from tests.test_resume import Server, make_cfg, run, summary_of, write_rows


@pytest.mark.parametrize(("status", "code"), [(404, "model_not_found"), (402, "payment_required")])
def test_an_endpoint_wide_refusal_trips_the_breaker(tmp_path: Path, status: int, code: str) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 500)
    cfg = make_cfg(tmp_path, inp)
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        return httpx.Response(status, json={"error": {"message": "no", "code": code}})

    result = run(cfg, handler)  # type: ignore[arg-type]
    assert result.status == "endpoint_down" and result.exit_code == EXIT_ERROR
    assert len(sent) < 16 + 8  # the breaker's count, plus the requests in flight
    assert result.summary["requests"]["pending"] > 450


def test_bad_input_leaves_no_run_directory_behind(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    inp.write_text('{"model": "m", "messages": []}\n')
    out = tmp_path / "new-run"
    result = CliRunner().invoke(
        cli, ["run", str(inp), "-o", str(out), "--base-url", "http://127.0.0.1:9/v1"]
    )
    assert result.exit_code == 1
    assert "req.jsonl:line 1: 'messages' is empty" in result.stderr
    assert not out.exists()


def test_an_existing_directory_is_kept_when_the_input_is_bad(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    inp.write_text("not json\n")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    CliRunner().invoke(
        cli, ["run", str(inp), "-o", str(out), "--base-url", "http://127.0.0.1:9/v1"]
    )
    assert (out / "notes.txt").read_text() == "keep me"


def test_waiting_to_send_is_wait_ms_not_latency_ms(tmp_path: Path) -> None:
    """120 rows at --rpm against an instant server: every row but the first burst
    waits, and none of that waiting is reported as the server's latency."""
    inp = write_rows(tmp_path / "req.jsonl", 12)
    cfg = replace(make_cfg(tmp_path, inp), concurrency=1)

    def paced(request: httpx.Request) -> httpx.Response:
        headers = {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "60s",
        }
        return httpx.Response(200, json=completion("ok"), headers=headers)

    run(cfg, paced)  # type: ignore[arg-type]
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert all(line["batchrun"]["latency_ms"] == 0.0 for line in lines)  # instant server
    waits = sorted(line["batchrun"]["wait_ms"] for line in lines)
    assert waits[0] == 0.0 and waits[-1] >= 1000.0  # paced at 1 request/s
    status = CliRunner().invoke(cli, ["status", str(tmp_path / "run"), "--json"])
    report = json.loads(status.output)
    assert report["latency_ms"]["p50"] == 0.0


def test_the_budget_message_shows_real_figures_and_what_helps(tmp_path: Path) -> None:
    cfg = budget_setup(tmp_path, rows=30)
    result = budget_run(replace(cfg, max_cost=0.00002))
    message = next(n for n in result.notes if "budget cap reached" in n)
    assert "$0.0000;" not in message and "up to $0.0000" not in message
    worst = re.search(r"could cost up to \$([0-9]+\.[0-9]+)", message)
    assert worst is not None and float(worst.group(1)) > 0
    assert "Only a higher --max-cost continues" in message
    res = CliRunner().invoke(
        cli,
        [
            "run", cfg.input_path, "-o", str(tmp_path / "cli-run"), "--base-url", "sim",
            "--prices", str(cfg.prices), "--max-cost", "0.00001",
        ],
    )  # fmt: skip
    assert "only a higher --max-cost continues this run" in res.stderr
    assert "rerun the same command" not in res.stderr


def test_exit_4_says_how_to_retry_and_status_forgets_retried_failures(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 10)
    out = tmp_path / "run"
    failing = Server({f"q-{i}": [400] for i in range(3)})
    result = run(make_cfg(tmp_path, inp), failing)
    assert result.exit_code == EXIT_SOME_FAILED
    assert any("rerun with --retry-failed" in n for n in result.notes)
    status = CliRunner().invoke(cli, ["status", str(out)])
    assert "errors      3 rows failing now" in status.output

    healed = run(replace(make_cfg(tmp_path, inp), retry_failed=True), Server())
    assert healed.exit_code == 0
    assert summary_of(out)["error_codes"] == {}
    status = CliRunner().invoke(cli, ["status", str(out)])
    assert "errors " not in status.output
    assert "10 succeeded, 0 failed" in status.output


def test_a_refused_resume_names_only_what_changed(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    dataset_run(cfg, mock_handler())
    changed = replace(cfg, prompt="Text: {text}")
    with pytest.raises(RunDirError) as info:
        dataset_run(changed, mock_handler())
    message = str(info.value)
    assert "option prompt[1].content: '{text}' -> 'Text: {text}'" in message
    assert "response_format" not in message and "Label the sentiment" not in message
    assert message.count("->") == 1


def test_changing_only_the_evaluation_needs_no_force_and_sends_nothing(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    first = dataset_run(cfg, mock_handler())
    before = first.summary["eval"]
    assert before["field"] == "sentiment"
    calls = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500)

    assert cfg.eval is not None
    rescored = replace(cfg, eval=replace(cfg.eval, normalize=False))
    again = dataset_run(rescored, counting)
    assert calls == []
    assert again.summary["eval"]["normalize"] is False


def test_batchrun_eval_rescores_a_finished_run_without_sending(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    result = dataset_run(cfg, mock_handler())
    accuracy = result.summary["eval"]["accuracy"]
    out = cfg.out_dir

    same = CliRunner().invoke(cli, ["eval", out, "--json"], catch_exceptions=False)
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["accuracy"] == accuracy

    other = CliRunner().invoke(
        cli, ["eval", out, "--reference-column", "review_id"], catch_exceptions=False
    )
    assert other.exit_code == 0, other.output
    assert other.stdout.startswith("accuracy 0.000")
    summary = orjson.loads(Path(out, "summary.json").read_bytes())
    assert summary["eval"]["reference_column"] == "review_id"
    assert list(summary)[-1] == "journal"

    job = load_job(tmp_path / "job.toml")
    assert job.values["eval"] is not None
    back = CliRunner().invoke(cli, ["eval", out, "-j", str(tmp_path / "job.toml")])
    assert back.exit_code == 0 and f"accuracy {accuracy:.3f}" in back.stdout


def test_batchrun_eval_refuses_a_run_without_a_reference(tmp_path: Path) -> None:
    cfg = make_job(tmp_path)
    dataset_run(replace(cfg, eval=None), mock_handler())
    res = CliRunner().invoke(cli, ["eval", cfg.out_dir])
    assert res.exit_code == 1 and "has no [eval]" in res.stderr


def test_an_eval_column_the_input_lacks_is_refused_before_sending(tmp_path: Path) -> None:
    from batchrun.errors import ConfigError

    cfg = make_job(tmp_path)
    assert cfg.eval is not None
    wrong = replace(cfg, eval=replace(cfg.eval, reference_column="labels"))
    calls = []

    def counting(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500)

    with pytest.raises(ConfigError, match=r"reference_column 'labels' is not a column of .*"):
        dataset_run(wrong, counting)
    assert calls == []
    assert not Path(cfg.out_dir).exists()


def test_a_null_template_value_is_an_invalid_row_not_an_empty_prompt(tmp_path: Path) -> None:
    rows = [{"id": 1, "text": "fine"}, {"id": 2, "text": None}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "in.jsonl"\nid_column = "id"\n[endpoint]\nbase_url = "sim"\n'
        '[request]\nmodel = "gpt-4o-mini"\n[prompt]\nuser = "Review: {text}"\n'
    )
    refused = CliRunner().invoke(cli, ["run", "-j", str(job), "-o", str(tmp_path / "a")])
    assert refused.exit_code == 1
    assert "in.jsonl:line 2: template placeholder {text}: column 'text' is null" in refused.stderr
    skipped = CliRunner().invoke(
        cli, ["run", "-j", str(job), "-o", str(tmp_path / "b"), "--skip-invalid", "-q"]
    )
    assert skipped.exit_code == 0
    invalid = [json.loads(x) for x in (tmp_path / "b" / "invalid.jsonl").read_text().splitlines()]
    assert [r["row"] for r in invalid] == [2]
