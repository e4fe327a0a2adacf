"""No machine's directories in what is committed or printed (issue 24, item 7).

The example notebook's committed outputs showed ``/work/main/notebooks/...``: the
report printed the input's absolute path (run.json records it absolute, so a rerun
from elsewhere finds it). The text report now shows a recorded path relative to the
working directory when it lies inside it, as it shows the run directory as given,
and the notebook was executed again from its own directory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from batchrun._report.text import shown_path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "label_reviews.ipynb"
MACHINE_PATH = re.compile(
    r"(?<![\w.~])/(?:root|home|tmp|work|Users|var|private|mnt|opt|srv|usr|etc)/"
    r"|[A-Za-z]:\\\\(?:Users|Windows)"
)


def test_the_committed_notebook_names_no_machine_path() -> None:
    text = NOTEBOOK.read_text(encoding="utf-8")
    found = sorted({m.group(0) for m in MACHINE_PATH.finditer(text)})
    assert not found, f"{NOTEBOOK.name} holds machine paths: {found}"
    nb = json.loads(text)
    outputs = [o for cell in nb["cells"] for o in cell.get("outputs", [])]
    assert outputs, "the committed notebook keeps its outputs (the example shows them)"


def test_the_pattern_finds_what_it_must() -> None:
    for leak in ("input  /work/main/x", "/root/a", '"/home/me/n"', "C:\\\\Users\\\\me"):
        assert MACHINE_PATH.search(leak), leak
    for fine in ("batchrun-runs/rows-1/input.parquet", "http://127.0.0.1:8000/v1/chat"):
        assert not MACHINE_PATH.search(fine), fine


def test_a_recorded_path_inside_the_working_directory_is_shown_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "batchrun-runs" / "rows-1" / "input.parquet")
    assert shown_path(inside) == os.path.join("batchrun-runs", "rows-1", "input.parquet")
    outside = str(tmp_path.parent / "elsewhere.jsonl")
    assert shown_path(outside) == outside  # ../elsewhere.jsonl would say less
    assert shown_path(None) is None


def test_the_status_report_shows_the_input_as_the_run_directory_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchrun

    monkeypatch.chdir(tmp_path)
    rows = [{"id": "a", "text": "x"}]
    run = batchrun.run(
        rows, "runs/a", model="gpt-4o-mini", prompt="{text}", id_column="id",
        base_url="sim", quiet=True,
    )  # fmt: skip
    report = run.report()
    assert "input       runs/a/input.jsonl" in report
    assert str(tmp_path) not in report
