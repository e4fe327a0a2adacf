"""Every exception the public API raises is in the `batchrun.errors` tree (issue 25).

Each scenario is a mistake or a failure a user meets, driven through the public API
(`batchrun.run`, `arun`, `stream`, `run_job`, `open` and the `Run` it returns): bad
input, bad settings, a disk that refuses a directory or a file, a run directory whose
files are damaged, a Batch API that refuses the key. Each must raise a `BatchrunError`
of the named kind, never an ``OSError``, a pyarrow or JSON error, or an internal
exception. A run that has started and then cannot go on (an endpoint nobody listens
on) ends with a status instead, which `batchrun.run` returns.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import batchrun
from batchrun.errors import BatchApiError, BatchrunError, ConfigError, InputError, RunDirError
from batchrun.sim import SimConfig, SimThread

ROWS = [{"id": f"r{i}", "text": f"review {i}", "label": "positive"} for i in range(3)]
SIM_KEY = "sim-surface-key-0123456789"
WRONG_KEY = "sk-wrong-surface-key-0123456789"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Env:
    """What the scenarios share: a scratch directory, a regular file to put paths
    under, a finished run to damage, and the settings that reach the simulators."""

    tmp: Path
    blocker: Path
    sim: SimThread
    keyed_sim: SimThread
    numbers: Iterator[int]

    def fresh(self) -> str:
        return str(self.tmp / f"run-{next(self.numbers)}")

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "model": "gpt-4o-mini",
            "prompt": "Label: {text}",
            "id_column": "id",
            "base_url": self.sim.base_url,
            "auth": "none",
            "quiet": True,
            **extra,
        }

    def finished(self) -> batchrun.Run:
        run = batchrun.run(ROWS, self.fresh(), **self.settings())
        assert run.status == "complete"
        return run


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("surface")
    blocker = tmp / "a-file.txt"
    blocker.write_text("a regular file, not a directory\n")
    with SimThread(SimConfig()) as sim, SimThread(SimConfig(require_key=SIM_KEY)) as keyed:
        yield Env(tmp, blocker, sim, keyed, count())


# -- the scenarios: (expected error class, what the user does) ------------------------------


def bad_line(env: Env) -> Any:
    path = env.tmp / "bad-line.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    return batchrun.run(str(path), env.fresh(), **env.settings())


def missing_input(env: Env) -> Any:
    return batchrun.run(str(env.tmp / "nowhere.jsonl"), env.fresh(), **env.settings())


def unfillable_row(env: Env) -> Any:
    return batchrun.run([{"id": "a"}], env.fresh(), **env.settings())


def mixed_column(env: Env) -> Any:
    frame = pd.DataFrame({"id": ["a", "b"], "text": [1, "two"]})
    return batchrun.run(frame, env.fresh(), **env.settings())


def negative_rpm(env: Env) -> Any:
    return batchrun.run(ROWS, env.fresh(), **env.settings(rpm=-5))


def unknown_setting(env: Env) -> Any:
    return batchrun.run(ROWS, env.fresh(), **env.settings(modle="gpt-4o"))


def not_http(env: Env) -> Any:
    return batchrun.run(ROWS, env.fresh(), **env.settings(base_url="ftp://example.test"))


def job_not_toml(env: Env) -> Any:
    job = env.tmp / "job.toml"
    job.write_text("this = = is not toml\n")
    return batchrun.run_job(str(job))


def not_an_evaluation(env: Env) -> Any:
    return env.finished().evaluate({"reference_column": "label", "compare": "bogus"})


def run_dir_below_a_file(env: Env) -> Any:
    path = env.tmp / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return batchrun.run(str(path), str(env.blocker / "run"), **env.settings())


def rows_below_a_file(env: Env) -> Any:
    return batchrun.run(ROWS, str(env.blocker / "run"), **env.settings())


def rows_below_a_file_async(env: Env) -> Any:
    return asyncio.run(batchrun.arun(ROWS, str(env.blocker / "run"), **env.settings()))


def stream_below_a_file(env: Env) -> Any:
    return list(batchrun.stream(ROWS, str(env.blocker / "run"), **env.settings()))


def batch_below_a_file(env: Env) -> Any:
    return batchrun.run(ROWS, str(env.blocker / "run"), **env.settings(mode="batch"))


def cache_below_a_file(env: Env) -> Any:
    return batchrun.run(ROWS, env.fresh(), **env.settings(cache=str(env.blocker / "cache")))


def report_below_a_file(env: Env) -> Any:
    return env.finished().html_report(env.blocker / "report.html")


def not_a_run(env: Env) -> Any:
    return batchrun.open(str(env.tmp)).status


def damaged_errors_file(env: Env) -> Any:
    run = env.finished()
    (Path(run.run_dir) / "errors.jsonl").write_text('{"custom_id": "x", "error": {}}\n{torn\n')
    return run.errors()


def damaged_results_file(env: Env) -> Any:
    run = env.finished()
    (Path(run.run_dir) / "results.parquet").write_bytes(b"not parquet")
    return batchrun.open(run.run_dir).results()


def batch_api_refuses_the_key(env: Env) -> Any:
    key_file = env.tmp / "wrong.key"
    key_file.write_text(WRONG_KEY + "\n")
    chosen = env.settings(
        base_url=env.keyed_sim.base_url, auth="bearer", api_key_file=str(key_file), mode="batch"
    )
    return batchrun.run(ROWS, env.fresh(), **chosen)


SCENARIOS: dict[str, tuple[type[BatchrunError], Callable[[Env], Any]]] = {
    "a line of the input file that is not JSON": (InputError, bad_line),
    "an input file that does not exist": (InputError, missing_input),
    "a row the template cannot fill": (InputError, unfillable_row),
    "a DataFrame column Arrow cannot hold": (InputError, mixed_column),
    "a negative rpm": (ConfigError, negative_rpm),
    "a setting that does not exist": (ConfigError, unknown_setting),
    "a base URL that is not HTTP": (ConfigError, not_http),
    "a job file that is not TOML": (ConfigError, job_not_toml),
    "an evaluation with an unknown compare": (ConfigError, not_an_evaluation),
    "a run directory below a regular file": (RunDirError, run_dir_below_a_file),
    "rows whose run directory is below a regular file": (RunDirError, rows_below_a_file),
    "the same through arun": (RunDirError, rows_below_a_file_async),
    "the same through stream": (RunDirError, stream_below_a_file),
    "the same through the Batch API": (RunDirError, batch_below_a_file),
    "a cache directory below a regular file": (ConfigError, cache_below_a_file),
    "a report path below a regular file": (RunDirError, report_below_a_file),
    "a directory that holds no run": (RunDirError, not_a_run),
    "an errors.jsonl with a damaged line": (RunDirError, damaged_errors_file),
    "a results.parquet that is damaged": (RunDirError, damaged_results_file),
    "a Batch API that refuses the key (401)": (BatchApiError, batch_api_refuses_the_key),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_each_failure_raises_a_batchrun_error(env: Env, name: str) -> None:
    expected, scenario = SCENARIOS[name]
    with pytest.raises(Exception) as raised:  # noqa: B017 - the class is what is tested
        scenario(env)
    exc = raised.value
    assert isinstance(exc, BatchrunError), f"{name}: {type(exc).__module__}.{exc!r}"
    assert isinstance(exc, expected), f"{name}: {exc!r}"
    assert str(exc).strip(), name
    assert WRONG_KEY not in str(exc)


def test_a_batch_api_refusal_says_which_call_and_why(env: Env) -> None:
    with pytest.raises(BatchApiError) as raised:
        batch_api_refuses_the_key(env)
    assert raised.value.status == 401 and not raised.value.retryable
    assert str(raised.value).startswith("upload: HTTP 401")


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_an_endpoint_nobody_listens_on_ends_the_run_with_a_status(env: Env, mode: str) -> None:
    chosen = env.settings(base_url=f"http://127.0.0.1:{closed_port()}/v1", mode=mode)
    run = batchrun.run(ROWS, env.fresh(), **chosen, poll_interval=0.01)
    assert run.status == "endpoint_down" and run.exit_code != 0
    assert run.summary["requests"]["pending"] == len(ROWS)
