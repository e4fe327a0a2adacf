"""Every file of a run directory gets its mode from the umask (issue 24, item 7).

Files written through a temporary file (summary.json, run.json, results.parquet,
report.html) came out 0600 (mkstemp's mode) beside a 0644 results.jsonl, and the rows
of a DataFrame were copied in 0600. One rule now, as open() has it: 0666 less the
umask, so 0644 under umask 022 and 0600 under 077, for every file batchrun makes in a
run directory: online, with --skip-invalid, through the Batch API (batch/), rows held
in memory, the HTML report.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import batchrun
from batchrun._runfiles import file_mode
from batchrun.sim import SimConfig, SimThread

ROWS = [{"id": f"r{i}", "text": f"review {i}"} for i in range(8)] + [{"id": "bad", "text": None}]


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_file_mode_follows_the_umask(umask: int) -> None:
    assert file_mode() == 0o666 & ~umask


def test_every_file_of_a_run_directory_has_the_umask_mode(
    sim: SimThread, tmp_path: Path, umask: int
) -> None:
    online = tmp_path / "online"
    run = batchrun.run(
        ROWS,
        online,
        model="gpt-4o-mini",
        prompt="Label: {text}",
        id_column="id",
        base_url=sim.base_url,
        auth="none",
        quiet=True,
        skip_invalid=True,
    )
    assert run.status == "complete"
    run.html_report()
    batch = tmp_path / "batch"
    batchrun.run(
        ROWS[:8],
        batch,
        model="gpt-4o-mini",
        prompt="Label: {text}",
        id_column="id",
        base_url="sim",
        mode="batch",
        poll_interval=0.02,
        quiet=True,
    )
    found = {**{f"online/{k}": v for k, v in modes(online).items()}}
    found.update({f"batch/{k}": v for k, v in modes(batch).items()})
    for name in (
        "online/results.jsonl",
        "online/errors.jsonl",
        "online/summary.json",
        "online/run.json",
        "online/results.parquet",
        "online/invalid.jsonl",
        "online/input.jsonl",
        "online/report.html",
        "online/.lock",
        "batch/batch/steps.jsonl",
    ):
        assert name in found, sorted(found)
    assert any(k.startswith("batch/batch/") and k != "batch/batch/steps.jsonl" for k in found)
    wanted = 0o666 & ~umask
    wrong = {k: oct(v) for k, v in found.items() if v != wanted}
    assert not wrong, f"umask {umask:03o}: want {wanted:o} for every file, got {wrong}"
