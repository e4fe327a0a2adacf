"""The command line's edges (issue 24, item 7): exit codes, help, `batchrun cancel`.

* A usage error (the command line itself is wrong: no INPUT, no -o, no RUN_DIR, an
  unknown option, a value not of its option's form) exits 2, click's convention and
  the README's table; what the command line names but cannot use (a bad input file, a
  job file that does not check) exits 1.
* `batchrun --help` shows every command's summary whole, and no option shows ``TEXT``
  for a number (nor for a file, a column or a name).
* `batchrun cancel` says what it cancelled, kept and left pending in a few lines, not
  the whole run report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import click
import pytest
from click.testing import CliRunner

from batchrun._batch.driver import BatchDriver
from batchrun._cli import cli
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._models import Outcome
from batchrun._settings import Settings
from batchrun.sim import BatchConfig, SimConfig, SimThread


def invoke(*args: str, **kw: Any) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="batchrun", **kw)


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    path = tmp_path / "req.jsonl"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    path.write_text(json.dumps(body) + "\n")
    return path


# -- exit codes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run"], "no INPUT given"),
        (["run", "-o", "runs/x", "--base-url", "sim"], "no INPUT given"),
        (["run", "{input}"], "no run directory given: -o DIR"),
        (["run", "{input}", "-o", "runs/x", "--no-such-option"], "No such option"),
        (["run", "{input}", "-o", "runs/x", "--concurrency", "abc"], "--concurrency"),
        (["run", "{input}", "-o", "runs/x", "--max-cost", "lots"], "--max-cost"),
        (["run", "-j", "{job}", "-o", "runs/x"], "no INPUT given"),
        (["estimate"], "no INPUT given"),
        (["status"], "Missing argument 'RUN_DIR'"),
        (["cancel"], "Missing argument 'RUN_DIR'"),
        (["eval"], "Missing argument 'RUN_DIR'"),
        (["prices"], "name a MODEL"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], says: str, requests_file: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text('[request]\nmodel = "gpt-4o-mini"\n')
    filled = [a.format(input=requests_file, job=job) for a in args]
    result = invoke(*filled)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Usage: batchrun" in result.output  # click's usage line, with the message
    assert not (tmp_path / "runs").exists()


def test_what_the_command_line_names_but_cannot_use_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    result = invoke("run", str(bad), "-o", str(tmp_path / "r"), "--base-url", "sim")
    assert result.exit_code == 1 and "line 1: not valid JSON" in result.output
    job = tmp_path / "job.toml"
    job.write_text("concurrency = -3\n")
    result = invoke("run", str(bad), "-j", str(job), "-o", str(tmp_path / "r"))
    assert result.exit_code == 1 and "concurrency" in result.output


# -- help ------------------------------------------------------------------------------
def test_the_command_list_shows_every_summary_whole() -> None:
    from batchrun._cli import _Group

    result = invoke("--help", terminal_width=80)
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1]
    assert "..." not in commands  # click's cut of a summary too long for its line
    flat = " ".join(commands.split())
    group = cli
    assert isinstance(group, _Group)
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        if name in group.lazy_help:
            summary = group.lazy_help[name]
        else:
            command = group.get_command(ctx, name)
            assert command is not None and command.short_help, name
            summary = command.short_help
        assert f"{name} {summary}" in flat, name


COMMANDS = ("run", "estimate", "status", "cancel", "eval", "prices", "sim")
TEXTUAL = {("run", "--stop"), ("estimate", "--stop")}
"""Options whose value is free text (a stop sequence): TEXT says it right."""


@pytest.mark.parametrize("command", COMMANDS)
def test_no_option_shows_a_text_placeholder_for_a_number(command: str) -> None:
    result = invoke(command, "-h", terminal_width=200)
    assert result.exit_code == 0
    shown = set()
    for line in result.output.splitlines():
        match = re.match(r"\s+(?:-\w, )?(--[\w-]+)(?:, --[\w-]+)? TEXT\b", line)
        if match:
            shown.add((command, match.group(1)))
    assert shown <= TEXTUAL, sorted(shown - TEXTUAL)


def test_numeric_settings_show_a_numeric_placeholder() -> None:
    from batchrun._cli.options import _metavar

    for name, spec in Settings.specs():
        if spec.flags and spec.check is not None and spec.kind not in ("flag", "toggle"):
            default = getattr(Settings(), name)
            if isinstance(default, int | float) and not isinstance(default, bool):
                assert _metavar(spec) not in (None, "TEXT"), name


# -- cancel ----------------------------------------------------------------------------
class StopAfterFirstWrite(RunHooks):
    """A Ctrl-C as soon as the first rows are written: the other batches go on."""

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        return "SIGINT"


@pytest.fixture
def slow_batches() -> Iterator[SimThread]:
    with SimThread(SimConfig(batch=BatchConfig(rows_per_second=30, cancel_delay=0.05))) as sim:
        yield sim


def test_cancel_says_what_it_cancelled_in_a_few_lines(
    tmp_path: Path, slow_batches: SimThread
) -> None:
    inp = tmp_path / "req.jsonl"
    with open(inp, "w") as f:
        for i in range(120):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    out = tmp_path / "run"
    cfg = Settings(
        input=str(inp),
        out_dir=str(out),
        base_url=slow_batches.base_url,
        mode="batch",
        poll_interval=0.02,
        batch_max_requests=50,
        quality_breaker=0,  # the three batches at once
        write_parquet=False,
        quiet=False,  # recorded: the cancel must still not print the run's report
    )
    first = anyio.run(BatchDriver(cfg, hooks=StopAfterFirstWrite()).run)
    assert first.exit_code == 130
    done_before = len((out / "results.jsonl").read_text().splitlines())

    result = invoke("cancel", str(out))
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) <= 5, result.output
    text = "\n".join(lines)
    assert "requests    " not in text and "tokens      " not in text  # no status report
    assert "progress every" not in text and "files" not in lines
    assert re.search(r"cancelled 2 batches at the provider: batch_\w+, batch_\w+", text), text
    done = len((out / "results.jsonl").read_text().splitlines())
    kept = done - done_before
    assert f"kept the {kept} rows they had finished ({kept} answered)" in text
    assert f"{done} of 120 rows are done" in text
    assert f"{120 - done} rows pending: rerun the run to send them" in text

    again = invoke("cancel", str(out))
    assert again.exit_code == 0
    assert "no batch was running at the provider: nothing to cancel" in again.output
    assert "requests    " not in again.output
