"""A run refused before it sends anything leaves nothing behind (issue 24, item 7).

Rows held in memory are written into the run directory before the run takes it; when
the run is then refused (a bad row, a missing key, an option that cannot work, a
Ctrl-C while the input is checked) the directory it made, with the copy of the rows,
is removed again, as the README promises for a directory the run made itself. A
directory that existed keeps everything it held; one whose run started keeps it all;
the rows --skip-invalid set aside stay for the user to read.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun.errors import ConfigError, InputError, RunDirError
from batchrun.sim import SimConfig, SimThread

ROWS = [{"id": f"r{i}", "text": f"review {i}"} for i in range(6)]


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where derived run directories go (BATCHRUN_RUNS), not made yet."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("BATCHRUN_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    return runs


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


def test_a_bad_row_leaves_no_directory_and_no_copy(sim: SimThread, home: Path) -> None:
    with pytest.raises(InputError, match="no column 'nope'"):
        batchrun.run(ROWS, **settings(sim, prompt="Label: {nope}"))
    assert not home.exists()  # neither rows-<hash>/ nor the runs home made for it
    assert sim.stats.requests == 0


def test_a_missing_key_leaves_no_directory(home: Path) -> None:
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        batchrun.run(
            ROWS,
            model="gpt-4o-mini",
            prompt="Label: {text}",
            base_url="https://api.example.com/v1",
            api_key_env="NO_SUCH_KEY_VAR",
            quiet=True,
        )
    assert not home.exists()


def test_an_option_refused_by_the_runner_leaves_no_directory(sim: SimThread, home: Path) -> None:
    with pytest.raises(ConfigError, match="--deadline needs --batch-api"):
        batchrun.run(ROWS, **settings(sim, deadline=60.0))
    assert not home.exists()


def test_a_given_directory_is_removed_and_an_existing_parent_kept(
    sim: SimThread, tmp_path: Path
) -> None:
    out = tmp_path / "given" / "run"
    with pytest.raises(InputError):
        batchrun.run(ROWS, out, **settings(sim, prompt="Label: {nope}"))
    assert not (tmp_path / "given").exists()  # both levels were made for it
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("the user's")
    with pytest.raises(InputError):
        batchrun.run(ROWS, tmp_path / "kept" / "run", **settings(sim, prompt="Label: {nope}"))
    assert sorted(os.listdir(tmp_path / "kept")) == ["mine.txt"]


def test_an_existing_empty_directory_stays_but_loses_the_copy(
    sim: SimThread, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    with pytest.raises(InputError):
        batchrun.run(ROWS, out, **settings(sim, prompt="Label: {nope}"))
    assert out.is_dir()
    assert not [n for n in os.listdir(out) if n.startswith("input")]


def test_a_refused_resume_keeps_the_earlier_run_whole(sim: SimThread, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = batchrun.run(ROWS, out, **settings(sim))
    assert first.status == "complete"
    before = sorted(os.listdir(out))
    other = [{**row, "text": row["text"] + "!"} for row in ROWS]
    with pytest.raises(RunDirError, match="started with other rows"):
        batchrun.run(other, out, **settings(sim))
    assert sorted(os.listdir(out)) == before
    assert batchrun.open(out).results().num_rows == len(ROWS)


def test_rows_set_aside_by_skip_invalid_stay(sim: SimThread, home: Path) -> None:
    rows = [{"id": "a", "text": None}]  # every row bad: the run is refused
    with pytest.raises(InputError, match="no valid request"):
        batchrun.run(rows, **settings(sim, skip_invalid=True))
    (run_dir,) = home.iterdir()
    assert (run_dir / "invalid.jsonl").stat().st_size > 0
    assert not [n for n in os.listdir(run_dir) if n.startswith("input")]  # the copy goes


def test_a_run_that_started_keeps_its_directory(sim: SimThread, home: Path) -> None:
    run = batchrun.run(ROWS, **settings(sim))
    assert Path(run.run_dir).is_dir() and run.results().num_rows == len(ROWS)


def test_arun_and_stream_leave_nothing_either(sim: SimThread, home: Path) -> None:
    with pytest.raises(InputError):
        asyncio.run(batchrun.arun(ROWS, **settings(sim, prompt="Label: {nope}")))
    assert not home.exists()

    async def consume() -> None:
        async for _ in batchrun.stream(ROWS, **settings(sim, prompt="Label: {nope}")):
            pass

    with pytest.raises(InputError):
        asyncio.run(consume())
    assert not home.exists()


def test_estimate_leaves_no_copy_in_the_temp_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    batchrun.estimate(ROWS, model="gpt-4o-mini", prompt="Label: {text}", id_column="id")
    with pytest.raises(InputError):
        batchrun.estimate(ROWS, model="gpt-4o-mini", prompt="Label: {nope}")
    assert os.listdir(temp) == []
