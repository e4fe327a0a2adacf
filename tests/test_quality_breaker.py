"""The quality breaker judges the whole run, soundly, in every mode (issue 31).

It judges every answer paid for under the run's request settings, earlier processes'
included (`batchrun._output.breaker.QualityBreaker`), by one rule (a lower Wilson bound
over ``--quality-breaker``, `batchrun._output.quality.breaker_trips`, tested as a plain
function in tests/test_quality.py). Here: its state, what run.json and the tally keep
of it, and runs online (a scripted `httpx.MockTransport`, injected time) and through
the Batch API (the simulator on loopback). The kill -9 loop is in tests/test_kill.py.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx

from batchrun._api import make_runner
from batchrun._batch.driver import BatchDriver
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.runinfo import not_judged_answers, write_run_info
from batchrun._engine.runner import Runner
from batchrun._engine.stops import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SIGINT,
    RunResult,
    exit_code,
    final_status,
)
from batchrun._models import Outcome
from batchrun._output.breaker import OPENING_ANSWERS, QualityBreaker, stop_note
from batchrun._output.journal import read_journal
from batchrun._output.quality import OK, TRUNCATED, QualityCounts, Verdict
from batchrun._output.tally import Tally
from batchrun._settings import Settings
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests.conftest import FakeTime, completion
from tests.test_batch_api import ids as batch_ids
from tests.test_batch_api import settings as batch_settings

MODEL = "gpt-4o-mini"


def counts(**per_model: dict[str, int]) -> QualityCounts:
    return QualityCounts({m: Counter(c) for m, c in per_model.items()})


# -- the state ---------------------------------------------------------------------------
def test_the_breaker_resumes_from_the_paid_answers_of_these_settings() -> None:
    paid = counts(m={OK: 40, TRUNCATED: 70}, n={OK: 5})
    not_judged = counts(m={TRUNCATED: 60})  # paid for before a --force changed max_tokens
    breaker = QualityBreaker.resume(0.8, paid, not_judged)
    assert breaker.judged.by_model == {"m": Counter({OK: 40, TRUNCATED: 10}), "n": Counter({OK: 5})}
    assert breaker.earlier == 55
    assert breaker.not_judged is not_judged  # kept for run.json
    assert breaker.judge() is None
    for _ in range(200):  # a bad stretch of 200 after them: 210 of 250, over 79.8 %
        breaker.add(Verdict(TRUNCATED, "length"), "m")
    assert breaker.judge() is None
    for _ in range(30):  # 240 of 280: over 81.9 % with 95 % confidence
        breaker.add(Verdict(TRUNCATED, "length"), "m")
    alert = breaker.judge(counts(m={OK: 40, TRUNCATED: 300}), max_tokens=16)
    assert alert is not None and (alert.bad, alert.answers) == (240, 280)
    assert "of the run's 340" in alert.message
    assert stop_note(alert).endswith(
        "; then rerun with --retry-bad-answers (--quality-breaker 0 turns this check off)"
    )
    breaker.threshold = 0  # --quality-breaker 0
    assert breaker.judge() is None


def test_the_opening_judgement_asks_for_fifty_answers_per_model() -> None:
    breaker = QualityBreaker(0.8)
    assert breaker.opening() and breaker.opening(2)
    for _ in range(OPENING_ANSWERS):
        breaker.add(Verdict(OK, "stop"), "m")
    assert not breaker.opening() and breaker.opening(2)
    assert not QualityBreaker(0).opening()  # off: no opening judgement


def test_the_tally_keeps_paid_answers_apart_from_reused_ones() -> None:
    tally = Tally()
    cut = completion("cut")
    cut["choices"][0]["finish_reason"] = "length"
    tally.count(True, cut, [200], quality=TRUNCATED)
    tally.count(True, completion(), [200])
    tally.count(True, cut, [], quality=TRUNCATED, reused="run")
    tally.count(True, completion(), [], reused="cache")
    tally.count(False, None, [500], error_code="server_error")
    assert tally.quality.by_model == {MODEL: Counter({TRUNCATED: 2, OK: 2})}
    assert tally.paid_quality.by_model == {MODEL: Counter({TRUNCATED: 1, OK: 1})}
    again = Tally.from_state(json.loads(json.dumps(tally.to_state())))
    assert again.paid_quality == tally.paid_quality


def test_run_json_records_what_the_breaker_does_not_judge(tmp_path: Path) -> None:
    path = str(tmp_path / "run.json")
    cfg = Settings(input="in.jsonl", out_dir=str(tmp_path), request={"max_tokens": 6})
    paid = counts(m={TRUNCATED: 30})
    assert not_judged_answers(path, cfg, "f1", paid) == QualityCounts()  # a new run: all judged
    info: dict[str, Any] = {"rows": 30, "outside_input": {}, "changed_rows": 0}
    write_run_info(path, cfg, fingerprint="f1", **info, not_judged=counts(m={TRUNCATED: 10}))
    # the same input and request options: what run.json recorded, whatever was paid since
    assert not_judged_answers(path, cfg, "f1", paid) == counts(m={TRUNCATED: 10})
    # --force with another max_tokens, or another input: none of the answers is judged
    other = replace(cfg, request={"max_tokens": 200}, force=True)
    assert not_judged_answers(path, other, "f1", paid) == paid
    assert not_judged_answers(path, cfg, "f2", paid) == paid
    Path(path).write_text("{not json")
    assert not_judged_answers(path, cfg, "f1", paid) == paid


def test_a_checkpoint_of_an_older_batchrun_is_recounted_for_the_breaker(tmp_path: Path) -> None:
    result = online_run(tmp_path, rows=30, bad=lambda i: i < 10, quality_breaker=0)
    assert result.exit_code == EXIT_OK
    summary_path = tmp_path / "run" / "summary.json"
    summary = json.loads(summary_path.read_text())
    assert summary["journal"]["tally"]["paid_quality"]["by_model"][MODEL] == {
        TRUNCATED: 10,
        OK: 20,
    }
    del summary["journal"]["tally"]["paid_quality"]  # as an older batchrun wrote it
    summary_path.write_text(json.dumps(summary))
    journal = read_journal(str(tmp_path / "run"))
    assert journal.tally.paid_quality.by_model == {MODEL: Counter({TRUNCATED: 10, OK: 20})}


# -- online ------------------------------------------------------------------------------
def rows_file(tmp_path: Path, rows: int, *, max_tokens: int = 16, copies: int = 1) -> Path:
    path = tmp_path / "in.jsonl"
    with open(path, "w") as f:
        for copy in range(copies):
            for i in range(rows):
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"q-{i}"}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                f.write(json.dumps({"custom_id": f"id-{copy * rows + i}", "body": body}) + "\n")
    return path


class Server:
    """Answers ``q-N`` truncated when ``bad(N, sent)`` (``sent``: requests so far)."""

    def __init__(self, bad: Any) -> None:
        self.bad = bad
        self.sent = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        row = int(re.sub(r"\D", "", body["messages"][-1]["content"]))
        self.sent += 1
        answer = completion(f"answer {row}")
        if self.bad(row, self.sent):
            answer["choices"][0]["finish_reason"] = "length"
        return httpx.Response(200, json=answer)


class StopAfter(RunHooks):
    """A Ctrl-C once ``lines`` lines are written (an earlier process that ended)."""

    def __init__(self, lines: int) -> None:
        self.lines = lines

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        return "SIGINT" if state.counts.succeeded >= self.lines else None


def online_run(
    tmp_path: Path,
    *,
    rows: int,
    bad: Any,
    server: Server | None = None,
    hooks: RunHooks | None = None,
    max_tokens: int = 16,
    copies: int = 1,
    **kw: Any,
) -> RunResult:
    cfg = Settings(
        input=str(rows_file(tmp_path, rows, max_tokens=max_tokens, copies=copies)),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        quiet=True,
        write_parquet=False,
        **kw,
    )
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(server or Server(lambda row, sent: bad(row))),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=hooks,
    )
    result: RunResult = anyio.run(runner.run)
    return result


def lines_of(tmp_path: Path) -> list[dict[str, Any]]:
    text = (tmp_path / "run" / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_95_percent_truncated_stops_within_its_first_50_paid_answers_online(
    tmp_path: Path,
) -> None:
    server = Server(lambda row, sent: row % 20 != 0)  # one answer in twenty is whole
    result = online_run(tmp_path, rows=400, bad=None, server=server)
    assert (result.exit_code, result.status) == (EXIT_ERROR, "bad_answers")
    assert result.summary["stop_reason"] == "bad_answers"
    paid = len(lines_of(tmp_path))
    assert server.sent == paid <= 50
    [note] = [n for n in result.notes if n.startswith("stopping:")]
    bad = result.summary["quality"]["by_model"][MODEL][TRUNCATED]
    assert note.startswith(f"stopping: {bad} of {paid} answers from {MODEL} are truncated")
    assert f"of the {paid} judged (at least " in note and "over --quality-breaker 0.8" in note
    assert "raise max_tokens (now 16)" in note


def test_a_resumed_run_whose_answers_were_fine_is_not_stopped_by_a_bad_stretch_of_25(
    tmp_path: Path,
) -> None:
    first = online_run(tmp_path, rows=200, bad=lambda row: False, hooks=StopAfter(40))
    assert first.exit_code == EXIT_SIGINT
    answered = first.summary["requests"]["succeeded"]
    assert 40 <= answered < 60
    # the next process's first 25 answers are all truncated, then fine again
    server = Server(lambda row, sent: sent <= 25)
    again = online_run(tmp_path, rows=200, bad=None, server=server)
    assert (again.exit_code, again.status) == (EXIT_OK, "complete"), again.notes
    assert server.sent == 200 - answered
    assert again.summary["quality"]["by_model"][MODEL] == {TRUNCATED: 25, OK: 175}
    # the same 25 at the start of a new run: nothing vouches for it, and it stops
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    stopped = online_run(fresh, rows=200, bad=None, server=Server(lambda row, sent: sent <= 25))
    assert stopped.status == "bad_answers"


def test_a_run_whose_earlier_answers_trip_the_breaker_sends_nothing_more(tmp_path: Path) -> None:
    first = online_run(
        tmp_path,
        rows=100,
        bad=lambda row: True,
        max_tokens=5,
        hooks=StopAfter(30),
        quality_breaker=0,
    )
    assert first.exit_code == EXIT_SIGINT
    server = Server(lambda row, sent: True)
    again = online_run(tmp_path, rows=100, bad=None, server=server, max_tokens=5)
    assert (again.exit_code, again.status) == (EXIT_ERROR, "bad_answers")
    assert server.sent == 0  # judged on what the run holds, before sending
    [note] = [n for n in again.notes if n.startswith("stopping:")]
    assert "raise max_tokens (now 5)" in note  # the input's, though nothing was sent
    # the fix: another max_tokens (--force); the answers to the old requests are not
    # judged any more, and stay out of the judgement in every later process
    good = Server(lambda row, sent: False)
    fixed = online_run(
        tmp_path, rows=100, bad=None, server=good, max_tokens=200, force=True, hooks=StopAfter(20)
    )
    assert fixed.exit_code == EXIT_SIGINT
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    held = first.summary["requests"]["succeeded"]
    assert info["quality_breaker"]["not_judged"]["by_model"] == {MODEL: {TRUNCATED: held}}
    done = online_run(tmp_path, rows=100, bad=None, server=good, max_tokens=200)
    assert (done.exit_code, done.status) == (EXIT_OK, "complete"), done.notes


def test_answers_reused_from_identical_requests_are_not_judged(tmp_path: Path) -> None:
    # 15 requests, each under 10 ids, all truncated: 15 paid answers, 135 reused
    server = Server(lambda row, sent: True)
    first = online_run(tmp_path, rows=15, copies=10, bad=None, server=server, hooks=StopAfter(60))
    assert first.exit_code == EXIT_SIGINT

    class Judged(RunHooks):
        def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
            self.seen = state.judged_quality.to_state()["by_model"]
            return None

    hook = Judged()
    again = online_run(tmp_path, rows=15, copies=10, bad=None, server=server, hooks=hook)
    assert (again.exit_code, again.status) == (EXIT_OK, "complete"), again.notes
    assert server.sent == 15
    assert hook.seen == {MODEL: {TRUNCATED: 15}}  # what hooks see the breaker judge
    assert again.summary["reused"]["run"] == 135
    assert again.summary["quality"]["by_model"][MODEL] == {TRUNCATED: 150}
    judged = again.summary["journal"]["tally"]["paid_quality"]["by_model"][MODEL]
    assert judged == {TRUNCATED: 15}  # under 20: too few to judge


# -- through the Batch API ---------------------------------------------------------------
def batch_rows(path: Path, rows: int, bad: Any) -> Path:
    with open(path, "w") as f:
        for i in range(rows):
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 5 if bad(i) else 200,  # the simulator answers 8+ words
            }
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return path


def run_batch(cfg: Settings, hooks: RunHooks | None = None) -> Any:
    runner = BatchDriver(cfg, hooks=hooks) if hooks is not None else make_runner(cfg, None)
    return anyio.run(runner.run)


def test_95_percent_truncated_stops_within_its_first_50_paid_answers_in_batch_mode(
    tmp_path: Path,
) -> None:
    inp = batch_rows(tmp_path / "in.jsonl", 400, bad=lambda i: i % 20 != 19)
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        result = run_batch(batch_settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert (result.exit_code, result.status) == (EXIT_ERROR, "bad_answers")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "bad_answers" and summary["requests"]["pending"] == 350
    assert stats["batches_created"] == 1  # the opening batch: the rest never went
    ids = batch_ids(out / "results.jsonl")
    assert sorted(ids) == sorted(f"id-{i}" for i in range(50))
    assert summary["quality"]["by_model"][MODEL] == {TRUNCATED: 48, OK: 2}
    [note] = [n for n in result.notes if n.startswith("stopping:")]
    assert note.startswith(f"stopping: 48 of 50 answers from {MODEL} are truncated")
    assert "raise max_tokens (now 5)" in note


def test_a_batch_run_passes_its_opening_judgement_once(tmp_path: Path) -> None:
    inp = batch_rows(tmp_path / "in.jsonl", 300, bad=lambda i: i % 2 == 1)  # half cut off
    out = tmp_path / "run"

    class StopAtOnce(RunHooks):
        def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
            return "SIGINT"

    with SimThread(SimConfig()) as sim:
        first = run_batch(batch_settings(inp, out, sim.base_url), StopAtOnce())
        assert first.exit_code == EXIT_SIGINT
        assert len(batch_ids(out / "results.jsonl")) == OPENING_ANSWERS  # the opening batch, alone
        # a resumed run that passed it sends the rest at once, and ends complete
        again = run_batch(batch_settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert (again.exit_code, again.status) == (EXIT_OK, "complete"), again.notes
    assert stats["batches_created"] == 2
    assert sorted(batch_ids(out / "results.jsonl")) == sorted(f"id-{i}" for i in range(300))


def test_a_batch_run_whose_answers_trip_the_breaker_cancels_its_open_batches(
    tmp_path: Path,
) -> None:
    inp = batch_rows(tmp_path / "in.jsonl", 250, bad=lambda i: True)
    out = tmp_path / "run"
    # shards of 100, 100 and 50 rows at 50 rows a second: the small one ends first
    config = SimConfig(batch=BatchConfig(rows_per_second=50, cancel_delay=0.05))

    class StopAtOnce(RunHooks):
        def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
            return "SIGINT"

    with SimThread(config) as sim:
        cfg = batch_settings(inp, out, sim.base_url, batch_max_requests=100)
        first = run_batch(replace(cfg, quality_breaker=0), StopAtOnce())
        assert first.exit_code == EXIT_SIGINT
        assert len(batch_ids(out / "results.jsonl")) == 50  # two batches of 100 still running
        again = run_batch(cfg)
        stats = sim.snapshot()
    assert (again.exit_code, again.status) == (EXIT_ERROR, "bad_answers")
    assert stats["batches_created"] == 3  # nothing submitted after the trip
    ids = batch_ids(out / "results.jsonl")
    assert len(ids) == len(set(ids)) and 50 <= len(ids) < 250  # what they finished, once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch"]["open_shards"] == 0  # cancelled, ended, taken in
    assert summary["requests"]["pending"] == 250 - len(ids)


def test_batch_bookkeeping_names_the_breaker_stop_as_online() -> None:
    assert final_status("bad_answers", pending=3) == "bad_answers"
    assert exit_code("bad_answers", cancel_only=False, pending=3, failed=0) == EXIT_ERROR
