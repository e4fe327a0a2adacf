"""Progress while a run goes (batchrun._report.progress): live display, plain log lines, --quiet."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console

from batchrun._cli import cli
from batchrun._engine.hooks import CompositeHooks, RunHooks, RunState
from batchrun._engine.runner import Runner
from batchrun._output.summary import Counts
from batchrun._output.tally import Tally
from batchrun._report.progress import (
    ProgressHooks,
    RateMeter,
    Snapshot,
    format_line,
    make_hooks,
    pick_mode,
    render_snapshot,
)
from batchrun._settings import Settings
from tests.conftest import FakeTime, body, completion

LINE = re.compile(
    r"^batchrun: (?P<done>[\d,]+)/(?P<total>[\d,]+) \((?P<pct>[\d.]+)%\) \| "
    r"[\d,.]+ req/s, [\d,]+ tok/s \| in flight \d+(/\d+)? \| retries \d+, 429s \d+ \| "
    r"failed \d+ \| cost (\$[\d.]+|n/a) \| elapsed \S+( s)? \| ETA \S+( s)?$"
)


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_runner(total: int = 1000, cost: float | None = None) -> Any:
    """The run-state figures progress reads (`batchrun._engine.hooks.RunState`), and
    nothing else."""
    return SimpleNamespace(
        counts=Counts(total=total),
        tally=Tally(),
        in_flight=0,
        rate_limited=0,
        concurrency_limit=None,
        stop_reason=None,
        figures={} if cost is None else {"cost_usd": cost},
        max_tokens=None,
        run_dir="/nonexistent",
    )


def cfg_for(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(input=str(tmp_path / "in.jsonl"), out_dir=str(tmp_path / "run"), **kw)


# ------------------------------------------------------------------ figures


def test_rate_meter_measures_over_the_recent_window() -> None:
    meter = RateMeter(window=30.0)
    assert meter.add(0.0, 0, 0) == (0.0, 0.0)
    for t in range(1, 61):  # 1 req/s for a minute ...
        meter.add(float(t), t, 10 * t)
    for t in range(61, 91):  # ... then 5 req/s
        req, tok = meter.add(float(t), 60 + 5 * (t - 60), 600 + 50 * (t - 60))
    assert req == 5.0 and tok == 50.0  # the old, slow minute has left the window
    assert len(meter.samples) <= 32


def test_snapshot_reads_the_runner_and_counts_retries_as_they_happen() -> None:
    clock = StepClock()
    runner = fake_runner(total=200, cost=0.0123)
    runner.counts.succeeded = 40  # done by an earlier process of this run
    runner.tally.retries, runner.tally.rate_limited = 5, 2
    hooks = ProgressHooks(cfg_for(Path("/nonexistent")), mode="quiet", clock=clock)
    state = hooks.progress
    state.start(runner)
    for _ in range(3):  # retries of requests still in flight
        hooks.on_retry(runner, None)
    runner.rate_limited = 3
    clock.now += 10
    runner.counts.succeeded, runner.counts.failed = 58, 2
    runner.tally.usage.total.total_tokens = 5000
    runner.in_flight = 7
    snap = state.snapshot(runner)
    assert (snap.done, snap.total, snap.pending) == (60, 200, 140)
    assert snap.percent == 30.0
    assert snap.requests_per_s == 2.0  # 20 finished in 10 s (the 40 before do not count)
    assert snap.tokens_per_s == 500.0
    assert snap.retries == 8 and snap.rate_limited == 5
    assert snap.in_flight == 7 and snap.cost_usd == 0.0123
    assert snap.eta_s == 70.0
    line = format_line(snap)
    assert LINE.match(line), line
    assert line == (
        "batchrun: 60/200 (30.0%) | 2.00 req/s, 500 tok/s | in flight 7 | retries 8, 429s 5 "
        "| failed 2 | cost $0.0123 | elapsed 10.0 s | ETA 0:01:10"
    )


def test_unknown_cost_and_eta_show_as_such() -> None:
    snap = Snapshot(0, 10, 0, 0, 4, 0, 0, 0, 0.0, 0.0, 3.0, None)
    assert snap.eta_s is None
    assert "cost n/a" in format_line(snap) and "ETA -" in format_line(snap)
    stopping = Snapshot(10, 10, 10, 0, 0, 0, 0, 0, 1.0, 1.0, 3.0, None, stopping="SIGINT")
    assert stopping.eta_s == 0.0 and format_line(stopping).endswith("| stopping (SIGINT)")


# ------------------------------------------------------------ live display


def recording_console() -> Console:
    return Console(record=True, width=120, file=io.StringIO(), force_terminal=True)


def test_live_display_shows_every_figure() -> None:
    snap = Snapshot(
        done=412,
        total=1000,
        succeeded=409,
        failed=3,
        in_flight=64,
        retries=17,
        rate_limited=12,
        tokens=812_345,
        requests_per_s=12.25,
        tokens_per_s=4567.0,
        elapsed_s=33.6,
        cost_usd=0.0123,
        concurrency_limit=64,
    )
    console = recording_console()
    console.print(render_snapshot(snap))
    text = console.export_text(clear=False)
    assert "━" in text  # the bar
    for needle in (
        "412/1,000",
        "41.2%",
        "ETA 48.0 s",
        "elapsed 33.6 s",
        "12.25 req/s",
        "4,567 tok/s",
        "in flight 64/64",
        "retries 17",
        "429s 12",
        "failed 3",
        "cost $0.0123",
    ):
        assert needle in text, (needle, text)
    assert len(text.splitlines()) == 2  # compact: a bar line and a figures line
    svg = console.export_svg(title="batchrun")
    assert svg.startswith("<svg") and "req/s" in svg and "429s" in svg


def test_live_display_without_cost_says_na() -> None:
    console = recording_console()
    console.print(render_snapshot(Snapshot(0, 5, 0, 0, 1, 0, 0, 0, 0.0, 0.0, 0.0, None)))
    text = console.export_text()
    assert "cost n/a" in text and "ETA -" in text and "0/5" in text


def write_input(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"custom_id": f"r{i}", **body(f"q{i}")}) + "\n" for i in range(n))
    )
    return path


def run_with(cfg: Settings, hooks: RunHooks, handler: Any = None) -> Any:
    def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=completion("a", prompt=7, completion_tokens=3))

    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(handler or ok),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=hooks,
    )
    return anyio.run(runner.run)


def test_live_mode_on_a_real_run_ends_on_the_final_frame_and_the_report(tmp_path: Path) -> None:
    write_input(tmp_path, 5)
    cfg = cfg_for(tmp_path, base_url="http://t/v1", concurrency=2)
    console = recording_console()
    hooks = ProgressHooks(cfg, mode="live", console=console, stream=console.file)
    result = run_with(cfg, hooks)
    assert result.exit_code == 0
    text = console.export_text()
    assert "5/5" in text and "100.0%" in text and "in flight 0/2" in text
    assert "latency     p50" in text and "5 succeeded, 0 failed, 0 pending of 5" in text
    assert text.rstrip().endswith(f"results in {cfg.out_dir}")
    assert hooks._live is None  # stopped: the terminal is ours again


# -------------------------------------------------------------- plain lines


def test_plain_lines_on_a_non_tty_real_run(tmp_path: Path) -> None:
    write_input(tmp_path, 30)
    cfg = cfg_for(tmp_path, base_url="http://t/v1", concurrency=3, progress_interval=5.0)
    stream = io.StringIO()
    assert pick_mode(cfg, Console(file=stream)) == "plain"  # a StringIO is no terminal

    class TickingClock(StepClock):
        def __call__(self) -> float:  # every look at the clock moves it 1 s on
            self.now += 1.0
            return self.now

    hooks = ProgressHooks(cfg, mode="plain", stream=stream, clock=TickingClock(), watchdog=False)
    result = run_with(cfg, hooks)
    assert result.exit_code == 0
    out = stream.getvalue()
    assert "\x1b" not in out  # no colours or cursor moves in a log
    lines = out.splitlines()
    assert lines[0] == f"batchrun: 30 requests -> {cfg.out_dir}; progress every 5 s"
    progress = [line for line in lines if LINE.match(line)]
    assert len(progress) == hooks.lines_written >= 1
    assert progress[-1].startswith("batchrun: 30/30 (100.0%)")
    done = [int(LINE.match(line)["done"]) for line in progress]  # type: ignore[index]
    assert done == sorted(done)
    report_at = lines.index(next(line for line in lines if line.startswith("run ")))
    assert lines[report_at - 1] == progress[-1]  # last progress line, then the report
    assert any(line.startswith("latency     p50") for line in lines)
    assert lines[-1].startswith("batchrun: complete: 30 succeeded, 0 failed, 0 pending of 30;")


def test_plain_lines_come_at_a_fixed_rate_not_per_write(tmp_path: Path) -> None:
    clock = StepClock()
    stream = io.StringIO()
    cfg = cfg_for(tmp_path, progress_interval=10.0)
    hooks = ProgressHooks(cfg, mode="plain", stream=stream, clock=clock, watchdog=False)
    runner = fake_runner(total=500)
    hooks.on_start(runner)
    for _ in range(200):  # many write batches within one interval: no line
        runner.counts.succeeded += 1
        hooks.on_written(runner, [])
    assert hooks.lines_written == 0
    clock.now += 10.0
    for _ in range(200):
        hooks.on_written(runner, [])
    assert hooks.lines_written == 1
    clock.now += 9.9
    hooks.on_written(runner, [])
    assert hooks.lines_written == 1
    clock.now += 0.1
    hooks.on_written(runner, [])
    assert hooks.lines_written == 2
    assert stream.getvalue().splitlines()[-1].startswith("batchrun: 200/500 (40.0%)")


def test_watchdog_logs_a_run_that_writes_nothing(tmp_path: Path) -> None:
    """A run stalled on 429s still says it is alive: the thread checks the clock."""
    clock = StepClock()
    stream = io.StringIO()
    cfg = cfg_for(tmp_path, progress_interval=10.0)
    waits: list[float] = []

    def fake_wait(seconds: float) -> bool:  # stands in for Event.wait: time passes
        waits.append(seconds)
        clock.now += seconds
        return len(waits) > 3  # "stop" after three intervals

    hooks = ProgressHooks(cfg, mode="plain", stream=stream, clock=clock, wait=fake_wait)
    runner = fake_runner(total=10)
    runner.in_flight = 4
    runner.rate_limited = 9
    hooks.on_start(runner)
    assert hooks._thread is not None
    hooks._thread.join(timeout=10)
    assert waits == [10.0] * 4 and hooks.lines_written == 3
    lines = stream.getvalue().splitlines()[1:]
    assert all("in flight 4 | retries 0, 429s 9" in line for line in lines)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pick_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TTY_INTERACTIVE", "TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    cfg = cfg_for(tmp_path)
    assert pick_mode(cfg, Console(file=FakeTTY())) == "live"
    assert pick_mode(cfg, Console(file=io.StringIO())) == "plain"
    assert pick_mode(cfg_for(tmp_path, quiet=True), Console(file=FakeTTY())) == "quiet"
    # CI often sets FORCE_COLOR: colours maybe, but no cursor dance in a log
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert pick_mode(cfg, Console(file=io.StringIO())) == "plain"
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert pick_mode(cfg, Console(file=FakeTTY())) == "plain"
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    assert pick_mode(cfg, Console(file=io.StringIO())) == "live"
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    assert pick_mode(cfg, Console(file=FakeTTY())) == "plain"


def test_make_hooks_picks_plain_for_a_pipe_and_stops_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    write_input(tmp_path, 3)
    cfg = cfg_for(tmp_path, base_url="http://t/v1")
    hooks = make_hooks(cfg)
    assert isinstance(hooks, ProgressHooks) and hooks.mode == "plain"
    run_with(cfg, hooks)
    assert hooks._thread is None and "batchrun: 3/3 (100.0%)" in stderr.getvalue()
    assert make_hooks(cfg_for(tmp_path, quiet=True)).mode == "quiet"  # type: ignore[attr-defined]


# --------------------------------------------------- stop, resume hint, quiet


class StopAfterFirst(RunHooks):
    def on_written(self, state: RunState, batch: list[Any]) -> str | None:
        return "SIGINT"


async def slow_ok(request: httpx.Request) -> httpx.Response:
    # real time passes per request, as on a network, so a stop after the first
    # group commit leaves rows pending
    await anyio.sleep(0.01)
    return httpx.Response(200, json=completion("a", prompt=7, completion_tokens=3))


def test_interrupted_run_says_so_and_how_to_resume(tmp_path: Path) -> None:
    write_input(tmp_path, 20)
    cfg = cfg_for(tmp_path, base_url="http://t/v1", concurrency=1, drain_timeout=7)
    stream = io.StringIO()
    hooks = ProgressHooks(cfg, mode="plain", stream=stream, watchdog=False)
    result = run_with(cfg, CompositeHooks(StopAfterFirst(), hooks), slow_ok)
    assert result.status == "interrupted"
    out = stream.getvalue()
    assert "batchrun: SIGINT: no new requests; waiting up to 7 s for those in flight" in out
    assert "(incomplete; status: interrupted)" in out
    assert out.splitlines()[-1] == "batchrun: rerun the same command to resume"


def test_quiet_prints_only_the_stop_message(tmp_path: Path) -> None:
    write_input(tmp_path, 20)
    cfg = cfg_for(tmp_path, base_url="http://t/v1", concurrency=1, quiet=True)
    stream = io.StringIO()
    hooks = ProgressHooks(cfg, mode="quiet", stream=stream)
    run_with(cfg, CompositeHooks(StopAfterFirst(), hooks), slow_ok)
    assert stream.getvalue().startswith("batchrun: SIGINT: no new requests")
    assert len(stream.getvalue().splitlines()) == 1


def test_cli_quiet_prints_nothing_but_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    path = write_input(tmp_path, 6)
    out_dir = tmp_path / "run"
    args = ["run", str(path), "-o", str(out_dir), "--base-url", "sim", "-c", "3"]
    quiet = CliRunner().invoke(cli, [*args, "--quiet"], catch_exceptions=False)
    assert quiet.exit_code == 0
    assert quiet.output == ""  # stdout and stderr together
    assert len((out_dir / "results.jsonl").read_text().splitlines()) == 6

    missing = CliRunner().invoke(
        cli,
        ["run", str(tmp_path / "nope.jsonl"), "-o", str(out_dir), "--base-url", "sim", "--quiet"],
    )
    assert missing.exit_code != 0
    assert "nope.jsonl" in missing.stderr and missing.stdout == ""

    loud = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "run2")], catch_exceptions=False)
    assert loud.exit_code == 0 and loud.stdout == ""  # progress and report go to stderr
    assert "\x1b" not in loud.stderr
    assert any(LINE.match(line) for line in loud.stderr.splitlines())
    assert "batchrun: 6/6 (100.0%)" in loud.stderr
    assert "latency     p50" in loud.stderr and "batch API" in loud.stderr
