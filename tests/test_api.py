"""The Python API (issue 15): `batchrun.run`, `arun`, `stream`, `estimate`, `open`,
`run_job`, against a loopback simulator that counts what it is sent.

Rows come as dicts, a pyarrow Table or RecordBatchReader, pandas and polars
DataFrames, a Hugging Face Dataset; a blocking `run` works inside a running event
loop and from another thread; errors are the `batchrun.errors` tree, never SystemExit.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun.sim import SimConfig, SimThread

ROOT = Path(__file__).resolve().parent.parent
ROWS = [{"id": f"r{i}", "text": f"review number {i}", "label": "positive"} for i in range(12)]


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


def settings(sim: SimThread, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "prompt": "Label: {text}",
        "id_column": "id",
        "base_url": sim.base_url,
        "auth": "none",
        "quiet": True,
        **extra,
    }


def contents(run: batchrun.Run) -> dict[str, str]:
    return {r["custom_id"]: r["content"] for r in run.results().to_pylist()}


def test_the_public_surface_is_curated() -> None:
    assert set(batchrun.__all__) >= {
        "run", "arun", "open", "stream", "estimate", "run_job", "Run", "Settings", "errors",
    }  # fmt: skip
    for name in batchrun.__all__:
        assert hasattr(batchrun, name), name


def test_implementation_modules_are_private() -> None:
    """httpx's way: every module but the documented public ones starts with ``_``."""
    import pkgutil

    public = {"errors", "ray", "sim", "__main__"}
    root = Path(batchrun.__file__).parent
    top = {m.name for m in pkgutil.iter_modules([str(root)])}
    assert public <= top | {"__main__"}
    assert {name for name in top if not name.startswith("_")} == public - {"__main__"}
    assert {"ray", "sim", "errors"} <= set(batchrun.__all__)


def test_rows_as_dicts_run_and_a_rerun_sends_nothing(
    sim: SimThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = batchrun.run(ROWS, **settings(sim))
    assert first.status == "complete" and first.exit_code == 0
    assert sim.stats.requests == 12
    assert Path(first.run_dir).parent.name == "batchrun-runs"  # derived: no out_dir given
    table = first.results()
    assert table.num_rows == 12 and {"id", "text", "label", "content"} <= set(table.column_names)
    again = batchrun.run(ROWS, **settings(sim))
    assert again.run_dir == first.run_dir  # the same cell, re-run: the same directory
    assert sim.stats.requests == 12  # and nothing paid twice
    changed = batchrun.run(ROWS, **settings(sim, prompt="Sentiment of: {text}"))
    assert changed.run_dir != first.run_dir  # another prompt, another directory
    assert sim.stats.requests == 24


def arrow_inputs() -> list[tuple[str, Any]]:
    import datasets
    import pandas as pd
    import polars as pl

    table = pa.Table.from_pylist(ROWS)
    return [
        ("pyarrow.Table", table),
        ("RecordBatchReader", pa.RecordBatchReader.from_batches(table.schema, table.to_batches())),
        ("pandas", pd.DataFrame(ROWS)),
        ("polars", pl.DataFrame(ROWS)),
        ("datasets", datasets.Dataset.from_list(ROWS)),
    ]


def test_every_kind_of_rows_gives_the_same_answers(sim: SimThread, tmp_path: Path) -> None:
    reference = batchrun.run(ROWS, tmp_path / "dicts", **settings(sim))
    expected = contents(reference)
    assert len(expected) == 12
    for name, data in arrow_inputs():
        run = batchrun.run(data, tmp_path / name, **settings(sim))
        assert run.status == "complete", name
        assert contents(run) == expected, name
        assert (Path(run.run_dir) / "input.parquet").exists(), name  # streamed to disk


def test_request_bodies_need_no_prompt(sim: SimThread, tmp_path: Path) -> None:
    bodies = [
        {
            "custom_id": f"b{i}",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
        }
        for i in range(3)
    ]
    run = batchrun.run(bodies, tmp_path / "run", base_url=sim.base_url, auth="none", quiet=True)
    assert run.summary["requests"]["succeeded"] == 3
    assert sorted(run.results().column("custom_id").to_pylist()) == ["b0", "b1", "b2"]


def test_run_works_inside_a_running_event_loop(sim: SimThread, tmp_path: Path) -> None:
    async def notebook_cell() -> batchrun.Run:
        asyncio.get_running_loop()  # as in Jupyter: a loop is already running
        return batchrun.run(ROWS, tmp_path / "run", **settings(sim))

    run = asyncio.run(notebook_cell())
    assert run.status == "complete" and sim.stats.requests == 12


def test_run_works_from_another_thread(sim: SimThread, tmp_path: Path) -> None:
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["run"] = batchrun.run(ROWS, tmp_path / "run", **settings(sim))
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            box["error"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert "error" not in box, box.get("error")
    assert box["run"].status == "complete"


def test_arun_is_the_async_twin(sim: SimThread, tmp_path: Path) -> None:
    async def main() -> batchrun.Run:
        return await batchrun.arun(ROWS, tmp_path / "run", **settings(sim))

    run = asyncio.run(main())
    assert run.exit_code == 0 and run.summary["requests"]["succeeded"] == 12


def test_stream_yields_each_outcome_once_it_is_written(sim: SimThread, tmp_path: Path) -> None:
    async def consume() -> list[Any]:
        seen = []
        async for outcome in batchrun.stream(ROWS, tmp_path / "run", **settings(sim)):
            results = (tmp_path / "run" / "results.jsonl").read_text()
            assert f'"custom_id":"{outcome.custom_id}"' in results  # on disk first
            seen.append(outcome)
        return seen

    outcomes = asyncio.run(consume())
    assert sorted(o.custom_id for o in outcomes) == sorted(r["id"] for r in ROWS)
    assert all(o.ok for o in outcomes)


def test_leaving_a_stream_early_stops_the_run(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"t{i}"} for i in range(400)]
    with SimThread(SimConfig(latency_ms=30)) as slow:

        async def first_few() -> int:
            stream = batchrun.stream(rows, tmp_path / "run", **settings(slow, concurrency=4))
            taken = 0
            async for _ in stream:
                taken += 1
                if taken == 5:
                    break
            await stream.aclose()
            return taken

        assert asyncio.run(first_few()) == 5
        sent = slow.stats.requests
    assert sent < 100  # stopped, not run to the end
    assert batchrun.open(tmp_path / "run").summary["requests"]["pending"] > 0


def test_estimate_sends_nothing(sim: SimThread) -> None:
    report = batchrun.estimate(ROWS, model="gpt-4o-mini", prompt="Label: {text}", id_column="id")
    assert report.models["gpt-4o-mini"].requests == 12
    assert sim.stats.requests == 0


def test_open_reads_any_run_directory(sim: SimThread, tmp_path: Path) -> None:
    batchrun.run(ROWS, tmp_path / "run", **settings(sim))
    run = batchrun.open(tmp_path / "run")
    assert run.status == "complete" and run.exit_code is None
    assert run.summary["requests"]["succeeded"] == 12
    assert run.to_pandas().shape[0] == 12
    assert run.errors().num_rows == 0
    assert "complete" in run.report() and "complete" in repr(run)
    with pytest.raises(batchrun.RunDirError, match="no run.json"):
        batchrun.open(tmp_path)


def test_run_job_with_overrides(sim: SimThread, tmp_path: Path) -> None:
    run = batchrun.run_job(
        ROOT / "jobs" / "sentiment.toml",
        base_url=sim.base_url,
        out_dir=tmp_path / "sentiment",
        concurrency=8,
        max_cost=None,
        quiet=True,
    )
    assert run.status == "complete" and run.eval is not None
    assert run.eval["n"] == run.summary["requests"]["succeeded"]
    options = json.loads((tmp_path / "sentiment" / "run.json").read_text())["options"]
    assert options["concurrency"] == 8


def test_a_pydantic_model_gives_typed_columns(sim: SimThread, tmp_path: Path) -> None:
    from typing import Literal

    from pydantic import BaseModel

    class Sentiment(BaseModel):
        sentiment: Literal["positive", "negative", "neutral"]
        confidence: float

    run = batchrun.run(
        ROWS,
        tmp_path / "run",
        **settings(sim, system="You label sentiment.", response_format=Sentiment, max_tokens=120),
    )
    schema = run.results().schema
    assert schema.field("sentiment").type == pa.string()
    assert schema.field("confidence").type == pa.float64()
    assert all(r["parse_error"] is None for r in run.results().to_pylist())


def test_a_prompt_function_is_fingerprinted_by_its_source(sim: SimThread, tmp_path: Path) -> None:
    def ask(row: dict[str, Any]) -> str:
        return f"Label: {row['text']}"

    def ask_differently(row: dict[str, Any]) -> str:
        return f"What is the sentiment of: {row['text']}"

    run = batchrun.run(ROWS, tmp_path / "run", **settings(sim, prompt=ask))
    assert run.status == "complete"
    recorded = json.loads((Path(run.run_dir) / "run.json").read_text())["request_options"]
    assert recorded["prompt"].startswith("<function ")
    with pytest.raises(batchrun.RunDirError, match="option prompt"):
        batchrun.run(ROWS, tmp_path / "run", **settings(sim, prompt=ask_differently))


def test_errors_are_the_batchrun_tree_never_system_exit(tmp_path: Path) -> None:
    with pytest.raises(batchrun.ConfigError, match="concurrncy=: no such setting"):
        batchrun.run(ROWS, tmp_path / "a", concurrncy=3)
    with pytest.raises(batchrun.ConfigError, match="concurrency=: must be a positive integer"):
        batchrun.run(ROWS, tmp_path / "a", concurrency=0)
    with pytest.raises(batchrun.InputError, match="no such file"):
        batchrun.run(tmp_path / "missing.jsonl", tmp_path / "b", model="m", base_url="sim")
    with pytest.raises(batchrun.ConfigError, match="is not set"):
        batchrun.run(ROWS, tmp_path / "c", prompt="{text}", model="m", api_key_env="NOPE_KEY")


def test_the_same_job_gives_the_same_results_three_ways(tmp_path: Path) -> None:
    """CLI options, a TOML job file and the Python API fill the same settings: the same
    ids, bodies, usage and totals."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "rows.jsonl"\nid_column = "id"\n'
        '[request]\nmodel = "gpt-4o-mini"\ntemperature = 0\nmax_tokens = 40\n'
        '[prompt]\nuser = "Label: {text}"\n[endpoint]\nauth = "none"\n'
    )
    with SimThread(SimConfig()) as server:
        url = server.base_url
        cli = subprocess.run(
            [
                sys.executable, "-m", "batchrun", "run", "-j", str(job),
                "-o", str(tmp_path / "via-cli"), "--base-url", url, "-q",
            ],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        by_job = batchrun.run_job(job, out_dir=tmp_path / "via-job", base_url=url, quiet=True)
        by_api = batchrun.run(
            str(data),
            tmp_path / "via-api",
            id_column="id",
            model="gpt-4o-mini",
            temperature=0,
            max_tokens=40,
            prompt="Label: {text}",
            base_url=url,
            auth="none",
            quiet=True,
        )

    def facts(run_dir: Path) -> tuple[Any, ...]:
        lines = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
        by_id = {x["custom_id"]: x for x in lines}
        summary = json.loads((run_dir / "summary.json").read_text())
        return (
            {i: x["batchrun"]["body_hash"] for i, x in by_id.items()},
            {i: x["response"]["body"]["usage"] for i, x in by_id.items()},
            summary["requests"],
            summary["usage"],
            json.loads((run_dir / "run.json").read_text())["request_options"],
        )

    via_cli = facts(tmp_path / "via-cli")
    assert facts(Path(by_job.run_dir)) == via_cli
    assert facts(Path(by_api.run_dir)) == via_cli
    assert pq.read_table(tmp_path / "via-cli" / "results.parquet").num_rows == 12


def test_hooks_see_a_read_only_state_and_can_stop_the_run(sim: SimThread, tmp_path: Path) -> None:
    seen: list[int] = []

    class StopAfterFive(batchrun.RunHooks):
        def on_written(self, state: batchrun.RunState, batch: list[batchrun.Outcome]) -> str | None:
            seen.extend(1 for o in batch if o.ok)
            with pytest.raises(AttributeError):
                state.counts = None  # type: ignore[misc]
            return "enough" if state.counts.succeeded >= 5 else None

    run = batchrun.run(
        ROWS, tmp_path / "hooked", hooks=StopAfterFive(), **settings(sim, concurrency=1)
    )
    assert run.status == "interrupted" and run.summary["stop_reason"] == "enough"
    assert 5 <= len(seen) < 12
    assert sim.stats.requests == len(seen)  # nothing sent after the stop


def test_serve_shows_the_live_page_while_the_run_goes(
    sim: SimThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import urllib.request

    pages: list[dict[str, Any]] = []

    class LookAtThePage(batchrun.RunHooks):
        def on_written(self, state: batchrun.RunState, batch: list[batchrun.Outcome]) -> None:
            if not pages:
                url = capsys.readouterr().err.split("live report at ")[1].split()[0]
                pages.append({"url": url})
                with urllib.request.urlopen(url, timeout=10) as response:
                    pages[0]["page"] = response.read()

    run = batchrun.run(
        ROWS, tmp_path / "served", serve=True, hooks=LookAtThePage(), **settings(sim)
    )
    assert run.status == "complete"
    assert pages[0]["url"].startswith("http://127.0.0.1:") and b"batchrun" in pages[0]["page"]
    with pytest.raises(OSError):  # the page goes with the run
        urllib.request.urlopen(pages[0]["url"], timeout=5)
    report = Path(run.html_report())
    assert report == tmp_path / "served" / "report.html" and report.read_bytes().startswith(b"<!")
    with run.serve() as url:
        page, _, token = url.partition("?")
        with urllib.request.urlopen(f"{page}data.json?{token}", timeout=10) as response:
            assert json.loads(response.read())["requests"]["succeeded"] == 12
