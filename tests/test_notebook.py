"""The example notebook, run by a real Jupyter kernel (nbclient + ipykernel) against a
loopback simulator in this process, which counts what the kernel sends.

Running it labels and scores the example dataset; running it again resumes and sends
nothing; interrupting the kernel while a run goes drains it like Ctrl-C, and the cell
then fails with KeyboardInterrupt, so its next line (or the next cell) does not go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from batchrun.sim import SimConfig, SimThread

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "label_reviews.ipynb"
REVIEWS = 300


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimThread]:
    with SimThread(SimConfig(latency_ms=2)) as sim:
        monkeypatch.setenv("BATCHRUN_BASE_URL", sim.base_url)
        monkeypatch.setenv("BATCHRUN_REPO", str(ROOT))
        monkeypatch.setenv("BATCHRUN_RUNS", str(tmp_path / "runs"))
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        yield sim


def execute(path: Path, cwd: Path) -> Any:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def text_of(nb: Any) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text") or (output.get("data") or {}).get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.slow
def test_the_example_notebook_labels_then_resumes_without_sending(
    kernel_env: SimThread, tmp_path: Path
) -> None:
    first = text_of(execute(NOTEBOOK, tmp_path))
    assert kernel_env.stats.requests == REVIEWS
    assert f"complete: {REVIEWS} succeeded, 0 failed, 0 pending" in first
    assert "accuracy: " in first and f"over {REVIEWS} rows" in first
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "results.parquet").exists()

    second = text_of(execute(NOTEBOOK, tmp_path))
    assert kernel_env.stats.requests == REVIEWS  # re-executed: nothing sent, nothing paid
    assert f"complete: {REVIEWS} succeeded" in second
    assert [line for line in first.splitlines() if "accuracy" in line] == [
        line for line in second.splitlines() if "accuracy" in line
    ]
    assert list((tmp_path / "runs").iterdir()) == runs


@pytest.mark.slow
def test_interrupting_the_kernel_drains_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook's interrupt (SIGINT to the kernel) stops sending and writes what is in
    flight, as Ctrl-C does on the command line; then the cell fails with
    KeyboardInterrupt (its next line does not run), the Run reachable from it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, batchrun\n"
            "rows = [{'id': i, 'text': f'row {i}'} for i in range(2000)]\n"
            "run = batchrun.run(rows, 'runs/slow', model='gpt-4o-mini', prompt='{text}',\n"
            "                   id_column='id', concurrency=4, quiet=True,\n"
            "                   base_url=os.environ['BATCHRUN_BASE_URL'])\n"
            "print('NEXT LINE RAN', run.status)"
        ),
        # what a user does next: the Run is the interrupt's .run
        nbformat.v4.new_code_cell(
            "import sys\nprint('STATUS', sys.last_value.run.status, "
            "sys.last_value.run.summary['requests']['succeeded'])"
        ),
    ]
    with SimThread(SimConfig(latency_ms=50)) as slow:
        monkeypatch.setenv("BATCHRUN_BASE_URL", slow.base_url)
        client = NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(tmp_path)}},
        )

        def interrupt_once_running() -> None:
            deadline = time.monotonic() + 60
            while slow.stats.requests < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert client.km is not None
            import asyncio
            import inspect

            interrupted = client.km.interrupt_kernel()
            if inspect.isawaitable(interrupted):  # nbclient's manager is the async one
                asyncio.run(interrupted)

        with client.setup_kernel():
            timer = threading.Thread(target=interrupt_once_running)
            timer.start()
            client.execute_cell(nb.cells[0], 0)
            timer.join()
            sent_at_end = slow.stats.requests
            time.sleep(0.5)
            assert slow.stats.requests == sent_at_end  # nothing more after the drain
            client.execute_cell(nb.cells[1], 1)
    errors = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["KeyboardInterrupt"], nb.cells[0].outputs
    assert "rows answered and written" in errors[0].evalue
    output = text_of(nb)
    assert "NEXT LINE RAN" not in output, output
    assert sent_at_end < 400
    done = (tmp_path / "runs" / "slow" / "results.jsonl").read_text().count("\n")
    assert done == sent_at_end  # everything sent was answered and written
    assert f"STATUS interrupted {done}" in output, output
