"""Rate limits over real loopback sockets: the runner, its pacing and a live server.

Short versions of the issue-3 and issue-14 acceptance checks (the long ones are in
scripts/bench_ratelimit.py and scripts/bench_pacing.py): a scripted 429 with
Retry-After: 2 whose headers say the quota is exhausted pauses every sender of that
model, an isolated one delays only its own request, injected 429/503s still give
every row exactly once, and a server quota is met with almost no 429s although
batchrun was given no limits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
from aiohttp import web

from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK
from batchrun._settings import Settings
from batchrun.sim import SimConfig, SimThread
from tests.conftest import body, completion, read_lines

MARK = "please-refuse-me-once"


class ScriptedServer:
    """A loopback chat endpoint that answers after ``latency`` seconds, except that the
    first request whose body holds `MARK` gets an immediate 429 with Retry-After: 2
    (with ``exhausted``, its headers say the request quota is used up).

    Records every arrival as (time.monotonic(), is_marked) -- the runner in this
    process uses the same clock.
    """

    def __init__(self, latency: float, *, exhausted: bool = True) -> None:
        self.latency = latency
        self.exhausted = exhausted
        self.arrivals: list[tuple[float, bool]] = []
        self.refused_at: float | None = None
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        raw = await request.read()
        marked = MARK.encode() in raw
        self.arrivals.append((time.monotonic(), marked))
        if marked and self.refused_at is None:
            self.refused_at = time.monotonic()
            return web.Response(
                status=429,
                body=orjson.dumps(
                    {
                        "error": {
                            "message": "slow down",
                            "type": "requests",
                            "code": "rate_limit_exceeded",
                        }
                    }
                ),
                content_type="application/json",
                headers={
                    "Retry-After": "2",
                    **(
                        {
                            "x-ratelimit-limit-requests": "600",
                            "x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "2s",
                        }
                        if self.exhausted
                        else {}
                    ),
                },
            )
        await asyncio.sleep(self.latency)
        return web.Response(body=orjson.dumps(completion()), content_type="application/json")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def run_batch(
    tmp_path: Path,
    base_url: str,
    rows: list[dict[str, Any]],
    *,
    max_sleep: float | None = None,
    **kw: Any,
) -> Runner:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    # the simulator's free-text answers outrun max_tokens=8: these tests are about
    # pacing, so the quality breaker (which would stop such a run) is off
    cfg = Settings(
        input=str(path),
        out_dir=str(tmp_path / "run"),
        base_url=base_url,
        auth="none",
        quality_breaker=0,
        **kw,
    )

    async def short_sleep(seconds: float) -> None:
        # caps hint-less backoffs (a 503 after five failures waits up to 30 s); the
        # pacer re-reads the clock after every sleep, so cooldowns still hold
        await anyio.sleep(seconds if max_sleep is None else min(seconds, max_sleep))

    runner = Runner(cfg, sleep=short_sleep)
    result = anyio.run(runner.run)
    assert result.exit_code == EXIT_OK, result.summary
    return runner


def test_an_exhausting_429_pauses_every_sender(tmp_path: Path) -> None:
    rows = [{"custom_id": f"r{i}", **body(MARK if i == 3 else f"row {i}")} for i in range(40)]
    with ScriptedServer(latency=0.05) as server:
        runner = run_batch(tmp_path, server.base_url, rows, concurrency=4)
    refused = server.refused_at
    assert refused is not None
    marked = [t for t, is_marked in server.arrivals if is_marked]
    assert len(marked) == 2
    assert marked[1] - refused >= 2.0  # the refused request waited out Retry-After
    # Requests already on the wire when the 429 left may still land in the first
    # few milliseconds (0.2 s of slack for a busy machine); after that, nothing
    # until the cooldown is over.
    during = [t for t, _ in server.arrivals if refused + 0.2 < t < refused + 2.0]
    assert during == []
    after = [t for t, _ in server.arrivals if t >= refused + 2.0]
    assert len(after) > 10  # and the pool came back
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 40
    assert runner.accounts.rate_limited == 1
    [account] = list(runner.accounts)
    assert account.stats.cooldown_s >= 2.0 and account.stats.isolated_429 == 0


def test_an_isolated_429_delays_only_its_own_request(tmp_path: Path) -> None:
    """Issue 14: a 429 that does not say the quota is exhausted (no headers showing it,
    no cluster of 429s) must not freeze everyone; its own request still honours its
    Retry-After."""
    rows = [{"custom_id": f"r{i}", **body(MARK if i == 3 else f"row {i}")} for i in range(60)]
    with ScriptedServer(latency=0.05, exhausted=False) as server:
        runner = run_batch(tmp_path, server.base_url, rows, concurrency=4)
    refused = server.refused_at
    assert refused is not None
    marked = [t for t, is_marked in server.arrivals if is_marked]
    assert len(marked) == 2 and marked[1] - refused >= 2.0
    during = [t for t, _ in server.arrivals if refused + 0.2 < t < refused + 2.0]
    assert len(during) > 10  # the others went on at full speed
    [account] = list(runner.accounts)
    assert account.stats.isolated_429 == 1 and account.stats.cooldown_s == 0.0


def test_injected_429_and_503_still_give_every_row_exactly_once(tmp_path: Path) -> None:
    n = 200
    rows = [{"custom_id": f"r{i}", **body(f"row {i}")} for i in range(n)]
    config = SimConfig(error_rates={429: 0.2, 503: 0.1}, retry_after=0.1, latency_ms=5, seed=7)
    with SimThread(config) as sim:
        runner = run_batch(tmp_path, sim.base_url, rows, max_attempts=12, max_sleep=0.3)
        stats = sim.snapshot()
    results = read_lines(tmp_path / "run" / "results.jsonl")
    ids = Counter(r["custom_id"] for r in results)
    assert set(ids) == {f"r{i}" for i in range(n)}
    assert set(ids.values()) == {1}
    assert read_lines(tmp_path / "run" / "errors.jsonl") == []
    assert stats["by_status"]["200"] == n
    assert stats["rate_limited"] > 0 and stats["by_status"]["503"] > 0
    assert runner.accounts.rate_limited == stats["rate_limited"]


def test_server_quota_is_met_without_client_limits(tmp_path: Path) -> None:
    # 600 rpm = a bucket of 600 refilling at 10/s: 650 requests need the burst and
    # then ~5 s of pacing at the refill rate, learned from the headers alone
    n, rpm = 650, 600
    rows = [{"custom_id": f"r{i}", **body(f"row {i}", max_tokens=8)} for i in range(n)]
    config = SimConfig(rpm=rpm, latency_ms=20, jitter_ms=10)
    with SimThread(config) as sim:
        started = time.monotonic()
        runner = run_batch(tmp_path, sim.base_url, rows)
        elapsed = time.monotonic() - started
        stats = sim.snapshot()
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == n
    assert stats["rate_limited"] <= 0.02 * n
    # it kept going at the refill rate: (n - bucket + margin) / rate, plus start-up
    # the quota allows at most bucket + rate * span; we got close to that, i.e. we
    # kept going at the refill rate after the burst instead of stalling
    arrivals = stats["arrivals"]
    span = arrivals[-1] - arrivals[0]
    assert n / (rpm + rpm / 60 * span) >= 0.9
    assert elapsed < span + 5.0
    [account] = list(runner.accounts)
    assert account.requests.limit == rpm


def test_a_slow_model_does_not_hold_up_a_fast_one(tmp_path: Path) -> None:
    """Issue 14, case 1, over real sockets: a 60-RPM model waiting for its quota (one
    request a second) mixed into 300 rows of a fast model must not slow the fast one."""
    rows = []
    for i in range(300):
        rows.append({"custom_id": f"f{i}", **body(f"fast {i}", model="fast", max_tokens=8)})
        if i % 50 == 0:
            rows.append({"custom_id": f"s{i}", **body(f"slow {i}", model="slow", max_tokens=8)})
    config = SimConfig(rpm=60_000, model_rpm={"slow": 60}, start_drained=True, latency_ms=5)
    with SimThread(config) as sim:
        runner = run_batch(tmp_path, sim.base_url, rows)
        stats = sim.snapshot()
    fast = sorted(stats["by_model"]["fast"]["arrivals"])
    slow = sorted(stats["by_model"]["slow"]["arrivals"])
    assert stats["by_model"]["fast"]["by_status"]["200"] == 300
    assert stats["by_model"]["slow"]["by_status"]["200"] == 6
    start = min(fast[0], slow[0])
    assert slow[-1] - start > 5.0  # one a second (after its reserve)
    # done while the slow model still waits for its refills: held up behind the slow
    # rows (one every 50 fast ones), the fast model would finish after the last of them
    # (a bound on the order, not on seconds: a loaded machine stretches only the fast)
    assert fast[-1] < slow[-2], (fast[-1] - start, [t - start for t in slow])
    assert stats["rate_limited"] <= 2  # at most each model's first, probing request
    by_model = runner.accounts.summary()["by_model"]
    assert by_model["slow"]["server_rpm"] == 60 and by_model["fast"]["server_rpm"] == 60_000


def test_a_drained_quota_is_paced_from_the_first_answer(tmp_path: Path) -> None:
    """Issue 14, case 2: from a used-up quota, one probing request learns the pace; the
    rest are not sent into 429s."""
    rows = [{"custom_id": f"r{i}", **body(f"row {i}", max_tokens=8)} for i in range(40)]
    with SimThread(SimConfig(rpm=600, start_drained=True, latency_ms=5)) as sim:
        run_batch(tmp_path, sim.base_url, rows, concurrency=64)
        stats = sim.snapshot()
    assert stats["rate_limited"] <= 1
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 40
    arrivals = sorted(stats["arrivals"])
    assert arrivals[-1] - arrivals[0] < 40 / 10 + 2.0  # the quota's pace plus its reserve
