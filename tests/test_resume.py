"""Resume is exactly-once: what a run directory holds is never sent or written again.

In-process: `Runner` over httpx.MockTransport with an injected clock (no waits).
A run is interrupted realistically by a hook that returns "SIGINT" from ``on_written``
after a few lines were written (what the signal handler does), so the directory
holds a real checkpoint, real lines and pending rows. A crash mid-write is
simulated by appending part of a line. A few CLI tests run `batchrun run` and
`batchrun status` through Click's CliRunner against a loopback simulator.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK, EXIT_SIGINT, EXIT_SOME_FAILED, RunResult
from batchrun._models import Attempt, Outcome, Request
from batchrun._output.journal import read_journal
from batchrun._output.lines import custom_id_of, encode
from batchrun._settings import Settings
from batchrun.errors import RunDirError
from tests.conftest import FakeTime, body, completion

Handler = Callable[[httpx.Request], httpx.Response]


# -- helpers ------------------------------------------------------------------------
class StopAfter(RunHooks):
    """Acts like a Ctrl-C once ``n`` lines have been written."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.written = 0

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        self.written += len(batch)
        return "SIGINT" if self.written >= self.n else None


class Server:
    """A scripted chat-completions endpoint that counts what it was sent.

    ``script[text]`` lists the statuses for successive attempts of the row whose
    message is ``text`` (then 200 for ever). Usage differs per row and per model
    so a wrong recount cannot pass by accident.
    """

    def __init__(self, script: dict[str, list[int]] | None = None) -> None:
        self.script = script or {}
        self.sent: Counter[str] = Counter()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        text = str(payload["messages"][0]["content"])
        self.sent[text] += 1
        steps = self.script.get(text, [])
        status = steps[self.sent[text] - 1] if self.sent[text] <= len(steps) else 200
        if status != 200:
            return httpx.Response(status, json={"error": {"message": f"scripted {status}"}})
        n = int(text.rsplit("-", 1)[-1])
        return httpx.Response(
            200,
            json=completion(text, model=payload["model"], prompt=10 + n, completion_tokens=n % 7),
        )

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def write_rows(path: Path, n: int, *, models: tuple[str, ...] = ("gpt-4o-mini",)) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            row = {"custom_id": f"id-{i}", "body": body(f"q-{i}", model=models[i % len(models)])}
            f.write(json.dumps(row) + "\n")
    return path


def make_cfg(tmp_path: Path, inp: Path, **kw: Any) -> Settings:
    return Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        **kw,
    )


def run(cfg: Settings, server: Server, hooks: RunHooks | None = None) -> RunResult:
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(server),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=hooks,
    )
    result: RunResult = anyio.run(runner.run)
    return result


def lines_of(path: Path) -> list[dict[str, Any]]:
    """Every line, parsed; fails on a line without its newline (torn)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a torn line"
    return [json.loads(line) for line in data.splitlines()]


def ids_of(path: Path) -> list[str]:
    return [r["custom_id"] for r in lines_of(path)]


def summary_of(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def recount(run_dir: Path) -> dict[str, Any]:
    """Totals rebuilt from results.jsonl / errors.jsonl alone, independently of batchrun."""
    by_model: dict[str, Counter[str]] = {}
    retries = rate_limited = 0
    for rec in lines_of(run_dir / "results.jsonl"):
        resp_body = rec["response"]["body"]
        usage = resp_body["usage"]
        c = by_model.setdefault(resp_body["model"], Counter())
        c["prompt_tokens"] += usage["prompt_tokens"]
        c["completion_tokens"] += usage["completion_tokens"]
        c["total_tokens"] += usage["total_tokens"]
        statuses = rec["batchrun"].get("statuses") or [rec["response"]["status_code"]]
        retries += len(statuses) - 1
        rate_limited += statuses.count(429)
    for rec in lines_of(run_dir / "errors.jsonl"):
        statuses = [a["status"] for a in rec["error"]["attempts"]]
        retries += len(statuses) - 1
        rate_limited += statuses.count(429)
    total = Counter[str]()
    for c in by_model.values():
        total.update(c)
    return {
        "by_model": {m: dict(c) for m, c in by_model.items()},
        "total": dict(total),
        "retries": retries,
        "rate_limited": rate_limited,
        "succeeded": len(set(ids_of(run_dir / "results.jsonl"))),
    }


def assert_summary_matches_recount(run_dir: Path) -> None:
    summary = summary_of(run_dir)
    counted = recount(run_dir)
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: summary["usage"][k] for k in keys} == {k: counted["total"].get(k, 0) for k in keys}
    assert {m: {k: u[k] for k in keys} for m, u in summary["by_model"].items()} == counted[
        "by_model"
    ]
    assert summary["retries"] == counted["retries"]
    assert summary["rate_limited"] == counted["rate_limited"]
    assert summary["requests"]["succeeded"] == counted["succeeded"]


def interrupted_run(
    tmp_path: Path, n: int = 40, stop_after: int = 6, **kw: Any
) -> tuple[Settings, Server, RunResult]:
    """A run stopped part-way (as by Ctrl-C): a checkpoint, some lines, pending rows."""
    inp = write_rows(tmp_path / "req.jsonl", n, models=("gpt-4o-mini", "gpt-4o"))
    cfg = make_cfg(tmp_path, inp, **kw)
    server = Server()
    result = run(cfg, server, StopAfter(stop_after))
    assert result.exit_code == EXIT_SIGINT
    done = len(ids_of(tmp_path / "run" / "results.jsonl"))
    assert 0 < done < n, "the interruption should leave both done and pending rows"
    return cfg, server, result


def torn_half(custom_id: str, row: int, *, ok: bool = True) -> bytes:
    """The first half of the line a crash would have torn while writing ``custom_id``."""
    req = Request(custom_id, {}, row)
    if ok:
        outcome = Outcome.success(
            req, status=200, request_id="req_x", body=completion("torn"), attempts=[]
        )
    else:
        outcome = Outcome.failure(req, code="http_400", message="bad", attempts=[], status=400)
    line = encode(outcome)
    return line[: len(line) // 2]


# -- resume without resending -------------------------------------------------------
def test_rerun_of_a_complete_run_sends_nothing(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 25)
    cfg = make_cfg(tmp_path, inp)
    server = Server()
    assert run(cfg, server).exit_code == EXIT_OK
    assert server.total == 25
    before = (tmp_path / "run" / "results.jsonl").read_bytes()

    again = Server()
    result = run(cfg, again)
    assert result.exit_code == EXIT_OK
    assert again.total == 0
    assert (tmp_path / "run" / "results.jsonl").read_bytes() == before
    assert summary_of(tmp_path / "run")["requests"]["succeeded"] == 25


def test_interrupted_run_resumes_and_sends_only_pending_rows(tmp_path: Path) -> None:
    cfg, first, _ = interrupted_run(tmp_path, n=40)
    run_dir = tmp_path / "run"
    done_before = set(ids_of(run_dir / "results.jsonl"))
    results_before = (run_dir / "results.jsonl").read_bytes()

    second = Server()
    result = run(cfg, second)
    assert result.exit_code == EXIT_OK
    # nothing already written was sent again, every pending row was sent once
    sent_ids = {f"id-{t.rsplit('-', 1)[1]}" for t in second.sent}
    assert sent_ids.isdisjoint(done_before)
    assert set(second.sent.values()) == {1}
    assert second.total == 40 - len(done_before)
    ids = ids_of(run_dir / "results.jsonl")
    assert sorted(ids) == sorted(f"id-{i}" for i in range(40))  # exactly one line per id
    assert (run_dir / "results.jsonl").read_bytes().startswith(results_before)
    summary = summary_of(run_dir)
    assert summary["status"] == "complete"
    assert summary["requests"]["succeeded"] == 40 and summary["requests"]["pending"] == 0


def test_summary_after_several_resumes_equals_a_recount(tmp_path: Path) -> None:
    """Usage per model, retries and 429s cover every process, not just the last one."""
    n = 60
    inp = write_rows(tmp_path / "req.jsonl", n, models=("gpt-4o-mini", "gpt-4o"))
    cfg = make_cfg(tmp_path, inp, max_attempts=3)
    script = {f"q-{i}": [429, 200] for i in range(0, n, 5)}  # retries to count
    script.update({f"q-{i}": [400] for i in range(3, n, 11)})  # final failures
    run_dir = tmp_path / "run"
    processes = 0
    for stop_after in (5, 9, 13):
        result = run(cfg, Server(script), StopAfter(stop_after))
        processes += 1
        assert result.exit_code == EXIT_SIGINT
        assert_summary_matches_recount(run_dir)
    result = run(cfg, Server(script))
    assert result.exit_code == EXIT_SOME_FAILED
    assert_summary_matches_recount(run_dir)
    summary = summary_of(run_dir)
    failed = len(range(3, n, 11))
    assert summary["requests"] == {
        "total": n,
        "succeeded": n - failed,
        "failed": failed,
        "pending": 0,
        "invalid": 0,
    }
    assert summary["retries"] > 0 and summary["rate_limited"] > 0
    assert set(summary["by_model"]) == {"gpt-4o-mini", "gpt-4o"}
    assert sorted(ids_of(run_dir / "results.jsonl") + ids_of(run_dir / "errors.jsonl")) == sorted(
        f"id-{i}" for i in range(n)
    )


def test_checkpoint_and_full_reparse_agree(tmp_path: Path) -> None:
    """The fast path (summary.json's byte offsets) must give what a full parse gives."""
    interrupted_run(tmp_path, n=40, stop_after=10)
    run_dir = tmp_path / "run"
    # more lines after the checkpoint: as if a process wrote them and was then killed
    fast = read_journal(str(run_dir))
    assert fast.results_bytes == (run_dir / "results.jsonl").stat().st_size
    (run_dir / "summary.json").unlink()
    slow = read_journal(str(run_dir))
    assert fast.done == slow.done and fast.failed == slow.failed
    assert fast.tally.to_state() == slow.tally.to_state()


# -- torn last lines ----------------------------------------------------------------
@pytest.mark.parametrize("cut", ["half", "no_newline"])
def test_torn_last_result_line_is_cut_and_that_row_sent_again(tmp_path: Path, cut: str) -> None:
    cfg, _, _ = interrupted_run(tmp_path, n=30)
    run_dir = tmp_path / "run"
    results = run_dir / "results.jsonl"
    intact = results.read_bytes()
    done = set(ids_of(results))
    victim = next(f"id-{i}" for i in range(30) if f"id-{i}" not in done)
    row = int(victim.split("-")[1]) + 1
    if cut == "half":
        tail = torn_half(victim, row)
    else:  # the whole JSON made it to disk, the newline did not
        tail = encode(
            Outcome.success(
                Request(victim, {}, row),
                status=200,
                request_id=None,
                body=completion("torn"),
                attempts=[Attempt(200, "ok")],
            )
        )[:-1]
    with open(results, "ab") as f:
        f.write(tail)

    server = Server()
    result = run(cfg, server)
    assert result.exit_code == EXIT_OK
    assert server.sent[f"q-{victim.split('-')[1]}"] == 1  # the torn row was sent again
    after = results.read_bytes()
    assert after.startswith(intact)  # no earlier byte changed; only the torn tail went
    assert tail not in after
    ids = ids_of(results)
    assert sorted(ids) == sorted(f"id-{i}" for i in range(30))
    assert any("torn" in note for note in result.notes)
    assert_summary_matches_recount(run_dir)


def test_torn_last_error_line_is_cut_and_that_row_sent_again(tmp_path: Path) -> None:
    n = 30
    script = {f"q-{i}": [400] * 10 for i in range(0, n, 3)}
    inp = write_rows(tmp_path / "req.jsonl", n)
    cfg = make_cfg(tmp_path, inp)
    assert run(cfg, Server(script), StopAfter(8)).exit_code == EXIT_SIGINT
    run_dir = tmp_path / "run"
    results, errors = run_dir / "results.jsonl", run_dir / "errors.jsonl"
    finished = set(ids_of(results)) | set(ids_of(errors))
    victim_n = next(i for i in range(0, n, 3) if f"id-{i}" not in finished)
    victim = f"id-{victim_n}"
    intact_errors, intact_results = errors.read_bytes(), results.read_bytes()
    with open(errors, "ab") as f:
        f.write(torn_half(victim, victim_n + 1, ok=False))

    server = Server(script)
    result = run(cfg, server)
    assert result.exit_code == EXIT_SOME_FAILED
    assert server.sent[f"q-{victim_n}"] == 1
    assert errors.read_bytes().startswith(intact_errors)
    assert results.read_bytes().startswith(intact_results)
    assert sorted(ids_of(errors)) == sorted(f"id-{i}" for i in range(0, n, 3))
    assert sorted(ids_of(results)) == sorted(f"id-{i}" for i in range(n) if i % 3)
    assert summary_of(run_dir)["requests"]["failed"] == len(range(0, n, 3))


def test_torn_line_without_a_checkpoint(tmp_path: Path) -> None:
    """summary.json lost too (killed before the first checkpoint): full parse, same result."""
    cfg, _, _ = interrupted_run(tmp_path, n=30)
    run_dir = tmp_path / "run"
    (run_dir / "summary.json").unlink()
    done = set(ids_of(run_dir / "results.jsonl"))
    victim_n = next(i for i in range(30) if f"id-{i}" not in done)
    with open(run_dir / "results.jsonl", "ab") as f:
        f.write(torn_half(f"id-{victim_n}", victim_n + 1))
    server = Server()
    assert run(cfg, server).exit_code == EXIT_OK
    assert server.total == 30 - len(done)
    assert sorted(ids_of(run_dir / "results.jsonl")) == sorted(f"id-{i}" for i in range(30))
    assert_summary_matches_recount(run_dir)


# -- what the run was started with ---------------------------------------------------
def test_run_json_records_input_fingerprint_and_options_without_secrets(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 3)
    cfg = make_cfg(tmp_path, inp, headers=(("X-Api-Key", "sk-secret-123"), ("X-Team", "blue")))
    run(cfg, Server())
    raw = (tmp_path / "run" / "run.json").read_text()
    info = json.loads(raw)
    assert info["input_path"] == os.path.abspath(inp)
    assert info["input_fingerprint"] and info["batchrun_version"]
    assert info["options"]["concurrency"] == 4
    assert "sk-secret-123" not in raw
    assert ["X-Team", "blue"] in info["options"]["headers"]


def test_changed_input_is_refused_then_accepted_with_force(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 10)
    cfg = make_cfg(tmp_path, inp)
    run(cfg, Server())
    run_dir = tmp_path / "run"
    results_before = (run_dir / "results.jsonl").read_bytes()
    write_rows(inp, 14)  # same path, four rows more

    server = Server()
    with pytest.raises(RunDirError) as info:
        run(cfg, server)
    message = str(info.value)
    assert "input file differs" in message and "--force" in message
    assert server.total == 0
    assert (run_dir / "results.jsonl").read_bytes() == results_before

    result = run(replace(cfg, force=True), server)
    assert result.exit_code == EXIT_OK
    assert server.total == 4  # the ten rows already done are still not resent
    assert sorted(ids_of(run_dir / "results.jsonl")) == sorted(f"id-{i}" for i in range(14))


def test_counts_after_force_are_against_the_new_input(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 10)
    cfg = make_cfg(tmp_path, inp)
    run(cfg, Server())
    with open(inp, "w") as f:  # forty other ids
        for i in range(40):
            f.write(json.dumps({"custom_id": f"new-{i}", "body": body(f"q-{i}")}) + "\n")
    run(replace(cfg, force=True, concurrency=1), Server(), StopAfter(2))
    run_dir = tmp_path / "run"
    new_done = sum(1 for cid in ids_of(run_dir / "results.jsonl") if cid.startswith("new-"))
    assert 0 < new_done < 40
    requests = summary_of(run_dir)["requests"]
    assert requests["succeeded"] == new_done and requests["pending"] == 40 - new_done
    report = json.loads(CliRunner().invoke(cli, ["status", str(run_dir), "--json"]).output)
    assert report["complete"] is False and report["requests"]["pending"] == 40 - new_done


def test_changed_model_option_is_refused(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    inp.write_text("".join(json.dumps(body(f"q-{i}", model=None)) + "\n" for i in range(5)))
    cfg = make_cfg(tmp_path, inp, model="gpt-4o-mini")
    run(cfg, Server(), StopAfter(2))
    server = Server()
    with pytest.raises(RunDirError, match=r"option model: 'gpt-4o-mini' -> 'gpt-4o'"):
        run(replace(cfg, model="gpt-4o"), server)
    assert server.total == 0
    # the same options resume fine
    assert run(cfg, server).exit_code == EXIT_OK


def test_changed_input_is_refused_by_the_cli_with_one_line(tmp_path: Path, sim: Any) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 5)
    out = tmp_path / "run"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "--auth", "none", "-q"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    write_rows(inp, 6)
    refused = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert refused.exit_code == 1
    assert "input file differs" in refused.output and "--force" in refused.output
    assert "Traceback" not in refused.output
    forced = CliRunner().invoke(cli, [*args, "--force"], catch_exceptions=False)
    assert forced.exit_code == 0, forced.output
    assert sim.stats.requests == 6


# -- --retry-failed -------------------------------------------------------------------
def test_retry_failed(tmp_path: Path) -> None:
    n = 20
    bad = [f"q-{i}" for i in (2, 7, 11)]
    script = {text: [400] for text in bad}  # fails on the first run only
    inp = write_rows(tmp_path / "req.jsonl", n)
    cfg = make_cfg(tmp_path, inp)
    run_dir = tmp_path / "run"
    server = Server(script)
    first = run(cfg, server)
    assert first.exit_code == EXIT_SOME_FAILED
    assert sorted(ids_of(run_dir / "errors.jsonl")) == ["id-11", "id-2", "id-7"]
    assert summary_of(run_dir)["requests"]["failed"] == 3
    errors_before = (run_dir / "errors.jsonl").read_bytes()

    # a plain rerun leaves failures alone
    before = server.total
    assert run(cfg, server).exit_code == EXIT_SOME_FAILED
    assert server.total == before

    result = run(replace(cfg, retry_failed=True), server)
    assert result.exit_code == EXIT_OK
    assert server.total == before + 3
    assert all(server.sent[text] == 2 for text in bad)
    assert sorted(ids_of(run_dir / "results.jsonl")) == sorted(f"id-{i}" for i in range(n))
    assert (run_dir / "errors.jsonl").read_bytes() == errors_before  # history is kept
    summary = summary_of(run_dir)
    assert summary["requests"]["failed"] == 0 and summary["requests"]["succeeded"] == n
    assert summary["status"] == "complete"
    state = read_journal(str(run_dir))
    assert not state.failed and len(state.done) == n

    # and a later resume (from the files) still agrees that nothing failed
    again = Server()
    assert run(cfg, again).exit_code == EXIT_OK
    assert again.total == 0


def test_retry_failed_that_fails_again_stays_failed_once(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 6)
    cfg = make_cfg(tmp_path, inp)
    script = {"q-4": [400, 400]}
    server = Server(script)
    run(cfg, server)
    result = run(replace(cfg, retry_failed=True), server)
    assert result.exit_code == EXIT_SOME_FAILED
    assert server.sent["q-4"] == 2 and server.total == 7
    summary = summary_of(tmp_path / "run")
    assert summary["requests"]["failed"] == 1 and summary["requests"]["succeeded"] == 5


# -- ids that need escaping in JSON ---------------------------------------------------
TRICKY_IDS = ["dir\\file-1", "tab\there-2", "new\nline-3", "ctl\x01-4", 'quote"d-5', "ü-6"]


def test_custom_id_of_round_trips_ids_that_need_escaping() -> None:
    for cid in TRICKY_IDS:
        line = encode(
            Outcome.success(Request(cid, {}, 1), status=200, request_id=None, body={}, attempts=[])
        )
        assert custom_id_of(line) == cid


def test_resume_does_not_resend_ids_that_need_escaping(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    inp.write_text(
        "".join(
            json.dumps({"custom_id": cid, "body": body(f"q-{i}")}) + "\n"
            for i, cid in enumerate(TRICKY_IDS)
        )
    )
    cfg = make_cfg(tmp_path, inp)
    assert run(cfg, Server()).exit_code == EXIT_OK
    again = Server()
    assert run(cfg, again).exit_code == EXIT_OK
    assert again.total == 0
    assert sorted(ids_of(tmp_path / "run" / "results.jsonl")) == sorted(TRICKY_IDS)


# -- batchrun status ------------------------------------------------------------------
def test_status_on_incomplete_and_complete_runs(tmp_path: Path) -> None:
    cfg, _, _ = interrupted_run(tmp_path, n=40)
    run_dir = tmp_path / "run"
    done = len(ids_of(run_dir / "results.jsonl"))
    tokens = recount(run_dir)["total"]["total_tokens"]
    # a torn line (a run killed mid-write, or still writing): status counts without it
    with open(run_dir / "results.jsonl", "ab") as f:
        f.write(torn_half("id-999", 1000))
    files_before = {p.name: p.read_bytes() for p in run_dir.iterdir()}

    human = CliRunner().invoke(cli, ["status", str(run_dir)], catch_exceptions=False)
    assert human.exit_code == 1
    assert "(incomplete" in human.output
    assert f"{done} " in human.output and f"{40 - done} pending" in human.output
    js = CliRunner().invoke(cli, ["status", str(run_dir), "--json"], catch_exceptions=False)
    assert js.exit_code == 1
    report = json.loads(js.output)
    assert report["complete"] is False
    assert report["requests"]["total"] == 40
    assert report["requests"]["succeeded"] == done
    assert report["requests"]["failed"] == 0
    assert report["requests"]["pending"] == 40 - done
    assert report["usage"]["total_tokens"] == tokens
    # status is read-only: the torn tail is not repaired by it
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files_before

    run(cfg, Server())
    human = CliRunner().invoke(cli, ["status", str(run_dir)], catch_exceptions=False)
    assert human.exit_code == 0
    assert "(complete" in human.output and "(incomplete" not in human.output
    js = CliRunner().invoke(cli, ["status", str(run_dir), "--json"], catch_exceptions=False)
    assert js.exit_code == 0
    report = json.loads(js.output)
    assert report["complete"] is True
    assert report["requests"]["succeeded"] == 40 and report["requests"]["pending"] == 0
    counted = recount(run_dir)
    assert report["usage"]["prompt_tokens"] == counted["total"]["prompt_tokens"]
    assert {m: u["total_tokens"] for m, u in report["by_model"].items()} == {
        m: c["total_tokens"] for m, c in counted["by_model"].items()
    }


def test_status_counts_failures_and_complete_with_failures_exits_0(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 8)
    cfg = make_cfg(tmp_path, inp)
    run(cfg, Server({"q-3": [400]}))
    js = CliRunner().invoke(cli, ["status", str(tmp_path / "run"), "--json"])
    report = json.loads(js.output)
    assert js.exit_code == 0 and report["complete"] is True
    assert report["requests"]["failed"] == 1 and report["requests"]["succeeded"] == 7


def test_status_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 1
    assert "run.json" in result.output and "Traceback" not in result.output


# -- the CLI end to end, against the simulator -----------------------------------------
@pytest.fixture
def sim() -> Iterator[Any]:
    from batchrun.sim import SimConfig, SimThread

    with SimThread(SimConfig()) as server:
        yield server


def test_cli_rerun_resumes_without_resending(tmp_path: Path, sim: Any) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 30)
    out = tmp_path / "run"
    args = ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "--auth", "none", "-q"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert sim.stats.requests == 30
    # drop the last ten lines, as if they had never been written
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(b"".join(lines[:20]))
    (out / "summary.json").unlink()

    second = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert sim.stats.requests == 40  # exactly the ten missing rows
    assert sorted(ids_of(out / "results.jsonl")) == sorted(f"id-{i}" for i in range(30))
    assert_summary_matches_recount(out)
