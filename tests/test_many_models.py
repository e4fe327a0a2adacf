"""Many models in one input: the input is read once (issue 24, item 7).

Each model's lane used to be its own pass over the input: 1,000 models x 20,000 rows
read the file 1,000 times (49 s) and held 1,000 files open, so under ``ulimit -n
1024`` the run died of ``Too many open files``. One pass now feeds every lane
(`batchrun._pacing.lanes.SharedRead`), and a lane waiting for its quota still never
holds up another: past its queue's bound it reads on by itself.

The runs here go through the real runner against an in-process transport (answers at
once), with the input's Source wrapped to count its passes and the process's open
files sampled as lines are written.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.runner import Runner
from batchrun._input.sources import Source
from batchrun._models import Outcome, Request
from batchrun._pacing import lanes as lanes_module
from batchrun._settings import Settings
from batchrun._values import Quota

ROWS = 20_000
MODELS = 1_000


def write_requests(path: Path, rows: int, models: list[str]) -> Path:
    with open(path, "w") as f:
        for i in range(rows):
            body = {
                "model": models[i % len(models)],
                "max_tokens": 4,
                "messages": [{"role": "user", "content": f"row {i}"}],
            }
            f.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
    return path


def answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
    )


class CountingSource(Source):
    """The run's input, counting its passes (a scan, and each pass of requests)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.request_passes = 0
        self.scans = 0

    def requests(self) -> Iterator[Request]:
        self.request_passes += 1
        return super().requests()

    def scan(self, *args: Any, **kwargs: Any) -> Any:
        self.scans += 1
        return super().scan(*args, **kwargs)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class FdSampler(RunHooks):
    def __init__(self) -> None:
        self.most = 0

    def on_written(self, state: RunState, batch: list[Outcome]) -> None:
        self.most = max(self.most, open_fds())


def run_once(inp: Path, out: Path, **extra: Any) -> tuple[Any, CountingSource, FdSampler, float]:
    cfg = Settings(
        input=str(inp),
        out_dir=str(out),
        base_url="http://models.test/v1",
        auth="none",
        quiet=True,
        write_parquet=False,
        concurrency=64,
        **extra,
    )
    source = CountingSource(str(inp))
    sampler = FdSampler()
    runner = Runner(cfg, transport=httpx.MockTransport(answer), source=source, hooks=sampler)
    started = time.process_time()
    result = anyio.run(runner.run)
    return result, source, sampler, time.process_time() - started


@pytest.fixture
def fd_limit_1024() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_a_thousand_models_read_the_input_once_with_flat_fds_and_in_time(
    tmp_path: Path, fd_limit_1024: None
) -> None:
    models = [f"model-{k:04d}" for k in range(MODELS)]
    many = write_requests(tmp_path / "many.jsonl", ROWS, models)
    one = write_requests(tmp_path / "one.jsonl", ROWS, ["model-0000"])
    before = open_fds()

    result, source, sampler, cpu_many = run_once(many, tmp_path / "many")
    assert result.exit_code == 0 and result.summary["requests"]["succeeded"] == ROWS
    assert source.scans == 1 and source.request_passes == 1  # one read to send, whatever the models
    assert sampler.most - before <= 8, f"{sampler.most - before} more files open during the run"
    lines = (tmp_path / "many" / "results.jsonl").read_text().splitlines()
    ids = [json.loads(x)["custom_id"] for x in lines]
    assert len(ids) == ROWS == len(set(ids))

    result, source, _, cpu_one = run_once(one, tmp_path / "one")
    assert result.exit_code == 0 and source.request_passes == 1
    assert cpu_many <= 1.5 * cpu_one, f"{cpu_many:.2f} s of CPU vs {cpu_one:.2f} s for one model"


def test_a_slow_model_leaves_the_shared_read_and_holds_up_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input sorted by model, the slow one first (6 requests a minute), queues of 8: the
    fast rows must not wait for the slow ones. The time is a fake clock: sleeping
    moves it, so the slow model's minutes pass at once."""
    monkeypatch.setattr(lanes_module, "TOTAL_BUFFER", 16)
    monkeypatch.setattr(lanes_module, "MIN_BUFFER", 8)
    inp = tmp_path / "sorted.jsonl"
    with open(inp, "w") as f:
        for i in range(80):
            model = "slow" if i < 40 else "fast"
            body = {
                "model": model,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": f"{i}"}],
            }
            f.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
    now = [0.0]

    def clock() -> float:
        return now[0]

    async def sleep(seconds: float) -> None:
        now[0] += max(seconds, 1e-3)
        await anyio.lowlevel.checkpoint()

    finished: list[tuple[float, str]] = []

    class When(RunHooks):
        def on_written(self, state: RunState, batch: list[Outcome]) -> None:
            finished.extend((now[0], o.custom_id) for o in batch)

    cfg = Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url="http://models.test/v1",
        auth="none",
        quiet=True,
        write_parquet=False,
        rpm=Quota(None, (("slow", 6.0),)),
        concurrency=4,
    )
    source = CountingSource(str(inp))
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(answer),
        source=source,
        clock=clock,
        sleep=sleep,
        wall_clock=clock,
        hooks=When(),
    )
    result = anyio.run(runner.run)
    assert result.summary["requests"]["succeeded"] == 80
    fast = [t for t, cid in finished if int(cid[1:]) >= 40]
    slow = [t for t, cid in finished if int(cid[1:]) < 40]
    assert len(fast) == 40 and len(slow) == 40
    assert max(fast) < 60.0, f"the fast rows waited for the slow model: last at {max(fast):.0f} s"
    assert max(slow) > 300.0  # 40 rows at 6 a minute
    assert source.request_passes == 2  # the shared read, and the slow lane's own
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ids = [json.loads(x)["custom_id"] for x in lines]
    assert sorted(ids) == sorted(f"r{i}" for i in range(80))  # each once


# -- the shared read itself ------------------------------------------------------------
class Input:
    """Requests in a given model order, read through `SharedRead`'s two kinds of pass;
    ``lag`` holds each examined request back that many requests (as the cache lookup
    holds a batch), to show late deliveries are not lost."""

    def __init__(self, models: list[str], lag: int = 0) -> None:
        self.requests = [
            Request(custom_id=f"r{i}", body={"model": m}, row=i + 1) for i, m in enumerate(models)
        ]
        self.lag = lag
        self.passes = 0

    def shared(self, skip: Any, cursor: lanes_module.Cursor) -> Iterator[Request]:
        self.passes += 1
        waiting: list[Request] = []
        for index, req in enumerate(self.requests):
            if skip(req.body["model"]):
                continue
            cursor.index = index
            waiting.append(req)
            if len(waiting) > self.lag:
                yield waiting.pop(0)
        yield from waiting

    def own(self, model: str, start: int) -> Iterator[Request]:
        self.passes += 1
        for req in self.requests[start:]:
            if req.body["model"] == model:
                yield req


def split_of(data: Input, models: list[str], clock: Any = lambda: 0.0, **kw: Any) -> Any:
    from batchrun._pacing.scheduler import Accounts

    return lanes_module.SharedRead(
        data.shared, data.own, models, Accounts(concurrency=4, clock=clock), clock=clock, **kw
    )


def drain(lane: Any) -> list[str]:
    got = []
    while (req := lane.peek()) is not None:
        got.append(req.custom_id)
        lane.head = None
    return got


def test_interleaved_models_are_read_once_each_lane_in_input_order() -> None:
    data = Input(["a", "b", "c"] * 50)
    split = split_of(data, ["a", "b", "c"], buffer=4)
    taken: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    while any(not lane.exhausted for lane in split.lanes):
        for lane in split.lanes:  # round robin, as the scheduler serves them
            req = lane.peek()
            if req is not None:
                taken[lane.model].append(req.custom_id)
                lane.head = None
    assert data.passes == 1 and split.reads == 1
    for k, model in enumerate("abc"):
        assert taken[model] == [f"r{i}" for i in range(k, 150, 3)]
    assert all(len(lane.queue) <= 4 for lane in split.lanes)


def test_a_full_queue_of_a_busy_lane_holds_the_read_back_without_a_second_pass() -> None:
    data = Input(["a"] * 30 + ["b"] * 5)
    split = split_of(data, ["a", "b"], buffer=4)
    a, b = split.lanes
    assert a.peek().custom_id == "r0"  # a's head: it is sending, not slow
    assert b.peek() is None and not b.exhausted  # a's queue filled: the read waits
    assert len(a.queue) == 4
    assert drain(a) == [f"r{i}" for i in range(30)]  # a reads on as it empties
    assert drain(b) == [f"r{i}" for i in range(30, 35)]
    assert a.peek() is None and b.peek() is None
    assert data.passes == 1 and a.exhausted and b.exhausted


@pytest.mark.parametrize("lag", [0, 3])
def test_a_slow_lane_leaves_and_every_request_arrives_once(lag: int) -> None:
    now = [0.0]
    data = Input(["slow", "fast"] * 3 + ["slow"] * 20 + ["fast"] * 10, lag=lag)
    split = split_of(data, ["fast", "slow"], clock=lambda: now[0], buffer=4)
    fast, slow = split.lanes
    assert slow.peek() is not None  # its head waits for its quota...
    now[0] += 5.0  # ...long enough to be slow
    got_fast = drain(fast)
    assert got_fast == [r.custom_id for r in data.requests if r.body["model"] == "fast"]
    got_slow = [slow.head.custom_id]
    slow.head = None
    got_slow += drain(slow)
    assert data.passes == 2 and split.reads == 2  # the shared read, and slow's own
    wanted = [r.custom_id for r in data.requests if r.body["model"] == "slow"]
    assert sorted(got_slow, key=lambda c: int(c[1:])) == wanted  # each once
    assert fast.peek() is None and slow.exhausted and fast.exhausted


def test_lanes_reading_by_themselves_are_capped() -> None:
    now = [0.0]
    models = [f"m{k}" for k in range(4)]
    data = Input(models * 6 + ["last"])
    split = split_of(data, [*models, "last"], clock=lambda: now[0], buffer=2, max_own_passes=2)
    for lane in split.lanes[:4]:
        assert lane.peek() is not None  # each has a head, waiting for its quota
    now[0] += 5.0  # every one of them slow now
    last = split.lanes[4]
    assert last.peek() is None  # m0 and m1 left the shared read; m2's full queue holds it
    assert split.own_open == 2 and split.lanes[0].own_start == 13
    assert split.lanes[2].own_start is None
    assert data.passes == 1  # an own pass opens when its lane reads it
