"""The run-directory reader (batchrun._output.rundir): crafted directories of every kind.

An online run, a Batch API run (batch/steps.jsonl and batch/state.json), a run on a
cluster (shards.json and shards/NNNNN/), a killed run with its lock file, a torn last
line and a directory that is not a run, each read by `RunDir` and by everything built
on it (`batchrun status`, the HTML report's data, `batchrun.open`). The last test scans
the imports: the reports know no driver, the cluster's sum knows no report.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._models import Attempt, Outcome, Request
from batchrun._output.lines import encode
from batchrun._output.rundir import RunDir
from batchrun._output.summary import Counts, build_summary
from batchrun._output.tally import Tally
from batchrun._report.text import format_status, run_report, status_report
from batchrun._runfiles import RunDirLock
from batchrun.errors import RunDirError
from tests.conftest import body, completion


def _answer(cid: str, row: int, prompt: int = 10, latency_s: float = 0.1) -> Outcome:
    return Outcome.success(
        Request(cid, body(), row=row),
        status=200,
        request_id=None,
        body=completion(prompt=prompt, completion_tokens=2),
        attempts=[Attempt(429, "rate_limited"), Attempt(200, "ok")],
        latency_s=latency_s,
    )


def _failure(cid: str, row: int, code: str = "bad_thing") -> Outcome:
    return Outcome.failure(
        Request(cid, body(), row=row),
        code=code,
        message="no",
        attempts=[Attempt(400, code)],
        status=400,
        latency_s=0.5,
    )


def _write_run(
    directory: Path,
    answers: list[Outcome],
    failures: list[Outcome],
    *,
    rows: int,
    summary: str | None = "checkpoint",
    extra_info: dict[str, Any] | None = None,
) -> None:
    """A run directory as the runner leaves it: run.json, the lines and (``summary``)
    a summary.json whose checkpoint covers every line ("checkpoint"), one written
    before the last answer ("stale", as a live run's), or none (None)."""
    directory.mkdir(parents=True)
    info = {"input_path": "/data/in.jsonl", "input_rows": rows, "options": {}}
    (directory / "run.json").write_text(json.dumps({**info, **(extra_info or {})}))
    results = b"".join(encode(o) for o in answers)
    errors = b"".join(encode(o) for o in failures)
    (directory / "results.jsonl").write_bytes(results)
    (directory / "errors.jsonl").write_bytes(errors)
    if summary is None:
        return
    counted = answers if summary == "checkpoint" else answers[:-1]
    tally = Tally()
    for outcome in [*counted, *failures]:
        tally.count_outcome(outcome)
    doc = build_summary(
        status="running" if summary == "stale" else "complete",
        input_path="/data/in.jsonl",
        counts=Counts(total=rows, succeeded=len(counted), failed=len(failures)),
        tally=tally,
        failed_codes=[str((f.error or {}).get("code")) for f in failures],
        elapsed_s=2.0,
        results_bytes=len(b"".join(encode(o) for o in counted)),
        errors_bytes=len(errors),
    )
    (directory / "summary.json").write_text(json.dumps(doc))


# ------------------------------------------------------------------------- online


def test_an_online_run_is_counted_from_its_lines_and_its_checkpoint(tmp_path: Path) -> None:
    answers = [_answer(f"a{i}", i + 1, prompt=10 + i) for i in range(4)]
    failures = [_failure("f0", 9)]
    _write_run(tmp_path / "run", answers, failures, rows=6)
    run = RunDir.open(tmp_path / "run")
    counted = run.counts()
    assert counted.requests == {
        "total": 6,
        "succeeded": 4,
        "failed": 1,
        "pending": 1,
        "invalid": 0,
    }
    assert counted.error_codes == {"bad_thing": 1}
    figures = counted.figures()
    assert figures["usage"]["prompt_tokens"] == 10 + 11 + 12 + 13
    assert figures["retries"] == 4 and figures["rate_limited"] == 4
    # the same figures when no checkpoint is trusted
    assert run.counts(from_checkpoints=False).requests == counted.requests
    assert run.counts(from_checkpoints=False).figures() == figures
    assert run.status() == "complete" and run.holder() is None
    assert not run.sharded and run.shards() == [] and run.batches() is None
    assert [o.custom_id for o in run.outcomes()] == ["a0", "a1", "a2", "a3", "f0"]
    assert [o.custom_id for o in run.outcomes(answers=False)] == ["f0"]
    assert [Path(f["path"]).name for f in run.files()] == [
        "results.jsonl",
        "errors.jsonl",
        "summary.json",
        "run.json",
    ]
    snap = run.snapshot()
    assert snap.requests == counted.requests and snap.figures == figures
    assert snap.by_mode == {"online": 4, "online_failed": 1}
    assert snap.shards is None and snap.batches is None


def test_a_live_runs_lines_written_after_its_checkpoint_are_counted(tmp_path: Path) -> None:
    answers = [_answer(f"a{i}", i + 1) for i in range(3)]
    _write_run(tmp_path / "run", answers, [], rows=5, summary="stale")
    run = RunDir(tmp_path / "run")
    summary = run.summary()
    assert summary["requests"]["succeeded"] == 2  # the checkpoint is one answer behind
    counted = run.counts()
    assert counted.requests["succeeded"] == 3 and counted.requests["pending"] == 2
    assert counted.figures()["usage"]["prompt_tokens"] == 30


def test_the_end_of_run_report_equals_status_from_the_files(tmp_path: Path) -> None:
    """One builder: the report from the runner's own summary and the report rebuilt
    from the directory are the same dict."""
    _write_run(tmp_path / "run", [_answer("a", 1), _answer("b", 2)], [_failure("c", 3)], rows=3)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    final = run_report(str(tmp_path / "run"), summary=summary)
    assert status_report(str(tmp_path / "run")) == final
    assert final["shards"] is None and final["batch"] is None


# ------------------------------------------------------------------- Batch API


def _steps(*lines: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_a_batch_run_is_described_from_its_step_journal_and_state(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_run(out, [_answer("a0", 1)], [], rows=7)
    (out / "batch").mkdir()
    (out / "batch" / "steps.jsonl").write_bytes(
        _steps(
            {"step": "run", "run_id": "r1", "at": 1.0},
            {"step": "planned", "shard": 1, "model": "m", "rows": 1, "attempt": 1},
            {"step": "created", "shard": 1, "batch_id": "batch_1", "at": 10.0},
            {"step": "done", "shard": 1, "status": "completed", "completed": 1, "failed": 0},
            {"step": "planned", "shard": 2, "model": "m", "rows": 6, "attempt": 1},
            {"step": "upload", "shard": 2},
            {"step": "uploaded", "shard": 2, "file_id": "file-2"},
            {"step": "create", "shard": 2, "file_id": "file-2", "at": 20.0},
            {"step": "created", "shard": 2, "batch_id": "batch_2", "at": 21.0},
        )
        + b'{"step":"cancel","sha'  # a torn last line: never relied on
    )
    (out / "batch" / "state.json").write_text(
        json.dumps(
            {
                "run_id": "r1",
                "updated_at": 30.0,
                "pid": 1,
                "shards": [
                    {"shard": "s000002", "status": "in_progress", "completed": 4, "failed": 1}
                ],
            }
        )
    )
    run = RunDir.open(out)
    batches = run.batches()
    assert batches is not None
    assert batches["shards_done"] == 1 and batches["run_id"] == "r1"
    [open_one] = batches["open"]
    assert open_one["batch_id"] == "batch_2" and open_one["status"] == "in_progress"
    assert (open_one["completed"], open_one["failed"], open_one["rows"]) == (4, 1, 6)
    assert batches["at_provider"] == {"answered": 4, "failed": 1}
    history = run.batch_history()
    assert history is not None and history["batches"] == 2 and history["open"] == 1
    assert history["by_status"] == {"completed": 1, "in_progress": 1}

    report = status_report(str(out))
    assert report["batch"] == batches and report["at_provider"] == 4
    text = format_status(report)
    assert "batches     1 open, 1 done" in text
    assert "s000002  in_progress  4 done, 1 failed of 6" in text
    assert "(4 of the pending answered inside running batches" in text


# --------------------------------------------------------------- on a cluster


def _write_sharded(out: Path) -> None:
    """Three shards planned; two have run (the second one still writing), the third has
    not started. The top directory has the driver's run.json and its last summary."""
    out.mkdir()
    plan = {
        "version": 1,
        "input_path": "/data/in.jsonl",
        "kind": "jsonl",
        "size": 100,
        "shard_rows": 3,
        "shards": [{"index": i, "first_row": 1 + 3 * i, "stop_row": 4 + 3 * i} for i in range(3)],
    }
    (out / "shards.json").write_text(json.dumps(plan))
    info = {"input_path": "/data/in.jsonl", "input_rows": 9, "options": {}, "sharded": {}}
    (out / "run.json").write_text(json.dumps(info))
    (out / "summary.json").write_text(json.dumps({"status": "running", "elapsed_s": 4.0}))
    shards = out / "shards"
    _write_run(
        shards / "00000",
        [_answer("r1", 1, prompt=5), _answer("r2", 2, prompt=6)],
        [_failure("r3", 3, code="too_long")],
        rows=3,
    )
    _write_run(shards / "00001", [_answer("r4", 4, prompt=7)], [], rows=3, summary="stale")
    parts = out / "results.parquet"
    parts.mkdir()
    (parts / "part-0.parquet").write_bytes(b"x" * 10)
    (parts / ".part-1.parquet.tmp").write_bytes(b"y" * 99)  # hidden: not counted


def test_a_sharded_run_is_its_shards_added_up(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_sharded(out)
    run = RunDir.open(out)
    assert run.sharded
    assert [Path(s.path).name for s in run.shards()] == ["00000", "00001", "00002"]
    counted = run.counts()
    assert counted.requests == {
        "total": 9,
        "succeeded": 3,
        "failed": 1,
        "pending": 5,
        "invalid": 0,
    }
    assert counted.error_codes == {"too_long": 1}
    assert counted.figures()["usage"]["prompt_tokens"] == 5 + 6 + 7
    assert run.counts(from_checkpoints=False).requests == counted.requests
    assert sorted(o.custom_id for o in run.outcomes()) == ["r1", "r2", "r3", "r4"]
    assert run.status() == "stopped"  # says running, and nobody holds the lock

    report = status_report(str(out))
    assert report["requests"] == counted.requests
    assert report["latency_ms"]["count"] == 3  # answers of every shard
    assert report["shards"] == {"total": 3, "complete": 1, "shard_rows": 3}
    assert report["by_mode"] == {"online": 3, "online_failed": 1}
    files = {Path(f["path"]).name: f["bytes"] for f in report["files"]}
    assert files["results.parquet"] == 10  # the directory of parts, hidden ones left out
    text = format_status(report)
    assert "shards      1 of 3 complete (3 rows each)" in text
    assert "3 succeeded, 1 failed, 5 pending of 9" in text

    # batchrun.open and the HTML report's data read the same shards
    opened = batchrun.open(out)
    assert opened.status == "stopped"
    assert opened.errors().column("custom_id").to_pylist() == ["r3"]
    from batchrun._report.html.data import build_page_data

    page = build_page_data(str(out))
    assert page["requests"] == counted.requests
    assert page["latency"]["wire"]["count"] == 3


def test_the_cluster_recount_trusts_no_checkpoint(tmp_path: Path) -> None:
    from batchrun._scale.aggregate import recount

    out = tmp_path / "run"
    _write_sharded(out)
    # a shard summary that lies about its totals: the recount reads the lines
    lie = out / "shards" / "00000" / "summary.json"
    doc = json.loads(lie.read_text())
    doc["journal"]["tally"]["usage"]["prompt_tokens"] = 999
    lie.write_text(json.dumps(doc))
    counted = recount(str(out))
    assert counted["usage"]["prompt_tokens"] == 5 + 6 + 7
    assert counted["requests"]["succeeded"] == 3
    assert counted["error_codes"] == {"too_long": 1}
    assert "by_mode" not in counted  # the summary's keys, nothing else


# ------------------------------------------------------- killed, torn, not a run


def test_a_killed_run_is_stopped_and_a_live_one_names_its_pid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_run(out, [_answer("a", 1), _answer("b", 2)], [], rows=4, summary="stale")
    (out / ".lock").write_text("999999\n")  # left by a killed process: nobody holds it
    run = RunDir.open(out)
    assert run.holder() is None and run.status() == "stopped"
    assert status_report(str(out))["status"] == "stopped"
    assert batchrun.open(out).status == "stopped"
    with RunDirLock(str(out)):
        assert run.holder() == os.getpid()
        assert run.status() == "running"
        report = status_report(str(out))
        assert report["running_pid"] == os.getpid() and report["status"] == "running"
        assert f"status: running, pid {os.getpid()}" in format_status(report)
        assert batchrun.open(out).status == "running"
    assert [Path(f["path"]).name for f in run.files()].count(".lock") == 0


def test_a_torn_last_line_is_skipped_and_left_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_run(out, [_answer("a", 1), _answer("b", 2)], [_failure("c", 3)], rows=4)
    results = out / "results.jsonl"
    torn = results.read_bytes() + encode(_answer("d", 4))[:40]
    results.write_bytes(torn)
    run = RunDir.open(out)
    assert [o.custom_id for o in run.outcomes()] == ["a", "b", "c"]
    assert run.counts().requests["succeeded"] == 2
    assert status_report(str(out))["latency_ms"]["count"] == 2
    assert results.read_bytes() == torn  # read-only: nothing repaired


def test_a_line_that_is_not_json_names_its_file_and_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_run(out, [], [_failure("c", 3)], rows=2, summary=None)
    errors = out / "errors.jsonl"
    errors.write_bytes(errors.read_bytes() + b"not json\n")
    with pytest.raises(RunDirError, match=r"errors\.jsonl:line 2: not valid JSON"):
        list(RunDir.open(out).outcomes())
    with pytest.raises(RunDirError, match=r"errors\.jsonl:line 2: not valid JSON"):
        batchrun.open(out).errors()


def test_a_directory_that_is_not_a_run_is_refused_saying_why(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run directory"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match=r"no run\.json \(is this a batchrun run directory"):
        RunDir.open(tmp_path)
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"run\.json: unreadable"):
        RunDir.open(tmp_path)
    with pytest.raises(RunDirError, match=r"run\.json: unreadable"):
        batchrun.open(tmp_path)
    status = CliRunner().invoke(cli, ["status", str(tmp_path / "nope")])
    assert status.exit_code != 0 and "no such run directory" in status.output
    # a plan that cannot be read says so, for status and the report alike
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "shards.json").write_text('{"shards": 3}')
    with pytest.raises(RunDirError, match=r"shards\.json: unreadable shard plan"):
        status_report(str(tmp_path))


def test_nothing_in_a_run_directory_changes_when_it_is_read(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _write_sharded(out)

    def tree() -> dict[str, tuple[int, int]]:
        return {
            os.path.relpath(os.path.join(d, n), out): (
                os.stat(os.path.join(d, n)).st_size,
                os.stat(os.path.join(d, n)).st_mtime_ns,
            )
            for d, _, names in os.walk(out)
            for n in names
        }

    before = tree()
    status_report(str(out))
    RunDir(out).counts(from_checkpoints=False)
    assert tree() == before


# -------------------------------------------------------------------- layers


def _imports(path: Path, module: str) -> set[str]:
    """Every batchrun module ``path`` imports, at any depth (function-level ones too),
    leaving out `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = module.split(".")
                package = package if path.name == "__init__.py" else package[:-1]
                base = ".".join([*package[: len(package) - node.level + 1], node.module])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("batchrun")}


def _package_imports() -> dict[str, set[str]]:
    import batchrun as package

    root = Path(package.__file__).parent
    graph = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        graph[name] = _imports(path, name)
    return graph


def test_the_reports_know_no_driver_and_the_cluster_sum_no_report() -> None:
    graph = _package_imports()

    def within(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    report = {m: deps for m, deps in graph.items() if within(m, "batchrun._report")}
    assert report, "the report package was not found"
    for module, deps in report.items():
        wrong = {d for d in deps if within(d, "batchrun._batch") or within(d, "batchrun._scale")}
        assert not wrong, f"{module} imports {sorted(wrong)}"
    aggregate = graph["batchrun._scale.aggregate"]
    assert not {d for d in aggregate if within(d, "batchrun._report")}, sorted(aggregate)
    # no module of scale/ imports a private name of report/
    for module, deps in graph.items():
        if within(module, "batchrun._scale"):
            private = {
                d
                for d in deps
                if within(d, "batchrun._report") and "._" in d.removeprefix("batchrun._report")
            }
            assert not private, f"{module} imports {sorted(private)}"
    # the reader sits below every one of its users
    for reader in ("batchrun._output.rundir", "batchrun._output.ledger"):
        upward = {
            d
            for d in graph[reader]
            for above in ("report", "scale", "batch", "_api", "cli", "jobs", "cost")
            if within(d, f"batchrun.{above}")
        }
        assert not upward, f"{reader} imports {sorted(upward)}"
        assert not {d for d in graph[reader] if within(d, "batchrun._engine")} - {
            "batchrun._runfiles",
            "batchrun._runfiles.holder",
        }
