"""Pools through the Batch API (issue 26): rows split over the ``batch = true`` endpoints.

Two simulators on loopback are two providers, each with its own key and its own name
for the model; each counts what it was sent (its uploaded files) and what it billed
(rows its batches ran, online requests). Every test checks the run directory as a
user relies on it: every row once, each line naming the endpoint that answered it,
summary.json's ``endpoints`` equal to a recount of the lines, and each provider billed
only for its own rows, once. Polls are 20 ms apart; the deadline test runs on a fake
clock (its simulators never finish a batch on their own).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrun._api import cancel_run, make_runner
from batchrun._batch.client import BatchClient
from batchrun._batch.pool import BatchClients, BatchTakers, endpoint_for
from batchrun._batch.steps import read_ledger
from batchrun._batch.workdir import steps_path
from batchrun._output.journal import read_journal
from batchrun._output.ledger import ShardRecord
from batchrun._report.text import format_status, status_report
from batchrun._settings import DEFAULT_BASE_URL, Settings
from batchrun._values import Endpoint
from batchrun.errors import ConfigError
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests import test_batch_resume as resume
from tests.conftest import FakeTime
from tests.test_batch_api import assert_exactly_once, lines, settings, write_rows

KEYS = {"a": "sk-pool-a-0123456789abcdef", "b": "sk-pool-b-0123456789abcdef"}
PRICES = {"gpt-4o-mini": {"input": 1.0, "output": 2.0, "batch_multiplier": 0.5}}
B_PRICES = {"mini-b": {"input": 10.0, "output": 20.0, "batch_multiplier": 0.5}}


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("POOL_KEY_A", KEYS["a"])
    monkeypatch.setenv("POOL_KEY_B", KEYS["b"])
    return KEYS


def two_sims(batch: BatchConfig | None = None) -> tuple[SimThread, SimThread]:
    config = {"batch": batch} if batch is not None else {}
    return (
        SimThread(SimConfig(require_key=KEYS["a"], seed=1, **config)),
        SimThread(SimConfig(require_key=KEYS["b"], seed=2, **config)),
    )


def rows_and_sims(
    tmp_path: Path, n: int, batch: BatchConfig | None = None
) -> tuple[Path, Path, SimThread, SimThread]:
    """A test's ``n`` rows, its run directory, and its two providers."""
    return write_rows(tmp_path / "req.jsonl", n), tmp_path / "run", *two_sims(batch)


def pool_of(sim_a: SimThread, sim_b: SimThread, *, a: Any = None, b: Any = None) -> dict[str, Any]:
    """Two batch endpoints, each its own key and name for the model (``a``, ``b``:
    more keys of each)."""
    return {
        "a": {
            "base_url": sim_a.base_url,
            "api_key_env": "POOL_KEY_A",
            "models": {"gpt-4o-mini": "mini-a"},
            "batch": True,
            **(a or {}),
        },
        "b": {
            "base_url": sim_b.base_url,
            "api_key_env": "POOL_KEY_B",
            "models": {"gpt-4o-mini": "mini-b"},
            "prices": B_PRICES,
            "batch": True,
            **(b or {}),
        },
    }


def uploaded(sim: SimThread) -> list[dict[str, Any]]:
    """Every request line the simulator was sent in a batch input file."""
    return [
        json.loads(line)
        for f in sim.server.batches.files.listed("batch")
        for line in f.content.splitlines()
    ]


def billed(sim: SimThread) -> int:
    sim.advance_batches()
    stats = sim.snapshot()
    return int(stats["rows_processed"]) + int(stats["requests"])


def run(cfg: Settings, **injected: Any) -> Any:
    return anyio.run(make_runner(cfg, None, **injected).run)


def interrupted_after_submitting(cfg: Settings) -> list[ShardRecord]:
    """A pool's batch run Ctrl-C'd at its first wait (`tests.test_batch_resume`): every
    shard is created at its endpoint, none polled. Its open shards."""
    resume.interrupted_after_submitting(cfg)
    opened = read_ledger(steps_path(str(cfg.out_dir))).open_shards()
    assert {r.endpoint for r in opened} == {"a", "b"}
    return opened


def assert_endpoints_are_a_recount(
    out: Path, summary: dict[str, Any], prices: dict[str, tuple[float, float]] | None = None
) -> None:
    """summary.json's ``endpoints`` is what a recount of the files gives, and each
    endpoint's cost is its lines' tokens at its own batch prices (``prices``: per
    million input and output tokens, online; None: the tests' `PRICES` and `B_PRICES`)."""
    recounted = read_journal(str(out), from_checkpoint=False).tally.by_endpoint
    rows = summary["endpoints"]
    assert {n: e.to_dict() for n, e in recounted.items()} == {
        n: {k: v for k, v in r.items() if k not in ("breaker", "breaker_trips", "cost_usd")}
        for n, r in rows.items()
        if n in recounted
    }
    assert all(rows[n]["requests"] == 0 for n in rows if n not in recounted)
    per_million = prices or {"a": (1.0, 2.0), "b": (10.0, 20.0)}  # online; batch: half
    cost: Counter[str] = Counter()
    for line in lines(out / "results.jsonl"):
        meta = line["batchrun"]
        usage = line["response"]["body"]["usage"]
        price_in, price_out = per_million[meta["route"][-1]]
        paid = usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
        cost[meta["route"][-1]] += paid / 1e6 * (0.5 if meta.get("via") == "batch" else 1.0)
    assert cost
    for name, usd in cost.items():
        assert rows[name]["cost_usd"] == pytest.approx(usd, rel=1e-6, abs=1e-9)


# -- pure: who takes a row ----------------------------------------------------------------


def test_rows_split_by_weight_and_a_row_always_goes_to_the_same_endpoint() -> None:
    a, b = Endpoint("a", "https://a/v1"), Endpoint("b", "https://b/v1", weight=2.0)
    picked = Counter(endpoint_for(f"id-{i}", [a, b]).name for i in range(3000))
    assert picked["b"] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert all(
        endpoint_for(f"id-{i}", [a, b]) == endpoint_for(f"id-{i}", [b, a]) for i in range(50)
    )
    takers = BatchTakers([a, Endpoint("c", "https://c/v1", batch=True, models=(("m", "m"),))])
    assert [e.name for e in takers.of("m")] == ["c"] and takers.of("n") == []
    with pytest.raises(ConfigError, match="no endpoint that takes batches .* 'n'"):
        takers.refuse_unserved({"m", "n"})
    # a journal's open shard at an endpoint the pool no longer declares: refused
    clients = BatchClients({"a": BatchClient(base_url="http://a.test/v1")})
    clients.refuse_unknown([ShardRecord(1, endpoint="a")])
    with pytest.raises(ConfigError, match="open batches at endpoint 'gone'"):
        clients.refuse_unknown([ShardRecord(1, endpoint="a"), ShardRecord(2, endpoint="gone")])


def test_a_model_no_batch_endpoint_serves_is_refused_before_anything_is_sent(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 6, models=("gpt-4o-mini", "gpt-4.1"))
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    # both serve gpt-4o-mini only (each by its own name); the input asks for gpt-4.1 too
    endpoints = {
        name: {
            "base_url": f"http://{name}.test/v1",
            "auth": "none",
            "batch": True,
            "models": {"gpt-4o-mini": f"mini-{name}"},
        }
        for name in ("a", "b")
    }
    cfg = settings(inp, tmp_path / "run", DEFAULT_BASE_URL, endpoints=endpoints)
    with pytest.raises(ConfigError, match="serves the model 'gpt-4.1'"):
        run(cfg, transport=httpx.MockTransport(handler))
    assert sent == []
    # named in the settings: refused with the other problems, before any run
    cfg = settings(inp, tmp_path / "run2", DEFAULT_BASE_URL, endpoints=endpoints, model="gpt-4.1")
    problems = cfg.problems()
    assert any("no endpoint that takes batches (batch = true) serves" in p for p in problems)


# -- the whole path over two providers ---------------------------------------------------------


def test_rows_split_over_two_providers_each_paid_once_with_its_key_and_model_name(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    n = 80
    inp, out, a, b = rows_and_sims(tmp_path, n)
    seen: dict[int | None, set[tuple[str, str | None]]] = {}

    class Recording(httpx.AsyncHTTPTransport):
        """The real wire, noting who each call presents itself as, by port."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            who = (request.headers.get("authorization", ""), request.headers.get("x-region"))
            seen.setdefault(request.url.port, set()).add(who)
            return await super().handle_async_request(request)

    with a, b:
        cfg = settings(
            inp,
            out,
            DEFAULT_BASE_URL,
            keep_remote_files=True,  # what each was sent stays to read
            endpoints=pool_of(a, b, b={"headers": {"x-region": "eu"}}),
            prices=PRICES,
            batch_max_requests=25,
        )
        result = run(cfg, transport=Recording())
        ports = {"a": httpx.URL(a.base_url).port, "b": httpx.URL(b.base_url).port}
        sent = {"a": uploaded(a), "b": uploaded(b)}
        paid = {"a": billed(a), "b": billed(b)}
        stats = {"a": a.snapshot(), "b": b.snapshot()}
    assert result.exit_code == 0, result.notes
    ok, _ = assert_exactly_once(out, n)
    # each provider was sent only its rows, under its name for the model, once each
    ids = {name: [r["custom_id"] for r in rows] for name, rows in sent.items()}
    assert ids["a"] and ids["b"] and not set(ids["a"]) & set(ids["b"])
    assert sorted(ids["a"] + ids["b"]) == sorted(f"id-{i}" for i in range(n))
    assert {r["body"]["model"] for r in sent["a"]} == {"mini-a"}
    assert {r["body"]["model"] for r in sent["b"]} == {"mini-b"}
    assert paid == {"a": len(ids["a"]), "b": len(ids["b"])}  # server-side: billed once
    assert stats["a"]["requests"] == stats["b"]["requests"] == 0  # nothing online
    # every call (upload, create, retrieve, download, delete) with its endpoint's key
    # and headers, and only those
    assert seen == {
        ports["a"]: {(f"Bearer {keys['a']}", None)},
        ports["b"]: {(f"Bearer {keys['b']}", "eu")},
    }
    # each line names the endpoint that answered it
    written = lines(out / "results.jsonl")
    for line in written:
        meta = line["batchrun"]
        name = meta["route"][-1]
        assert meta["via"] == "batch" and meta["route"] == [name]
        assert line["custom_id"] in ids[name]
        assert meta["endpoint"] == (a.base_url if name == "a" else b.base_url).rstrip("/")
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["endpoints"]
    assert {name: rows[name]["answered"] for name in "ab"} == {
        name: len(ids[name]) for name in "ab"
    }
    assert_endpoints_are_a_recount(out, summary)
    assert summary["cost_usd"]["total"] == pytest.approx(
        rows["a"]["cost_usd"] + rows["b"]["cost_usd"]
    )
    # each shard was created once, at one endpoint, named in the journal
    ledger = read_ledger(steps_path(str(out)))
    assert {r.endpoint for r in ledger.shards.values()} == {"a", "b"}
    created = Counter(stats["a"]["batches_by_metadata"]["batchrun_shard"]) + Counter(
        stats["b"]["batches_by_metadata"]["batchrun_shard"]
    )
    assert created and max(created.values()) == 1
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert all(k.encode() not in data for k in keys.values()), path


def test_an_interrupted_pool_resumes_and_no_provider_runs_a_row_twice(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    n = 60
    inp, out, a, b = rows_and_sims(tmp_path, n, BatchConfig(rows_per_second=400))
    with a, b:
        # every shard at once (no opening batch for the quality breaker)
        cfg = settings(
            inp,
            out,
            DEFAULT_BASE_URL,
            keep_remote_files=True,  # what each was sent stays to read
            endpoints=pool_of(a, b),
            batch_max_requests=20,
            quality_breaker=0,
            prices=PRICES,
        )
        interrupted_after_submitting(cfg)
        shown = format_status(status_report(str(out)))  # each open batch at its endpoint
        assert " at a  " in shown and " at b  " in shown, shown
        created = a.snapshot()["batches_created"] + b.snapshot()["batches_created"]
        second = run(cfg)
        sent = {"a": uploaded(a), "b": uploaded(b)}
        paid = billed(a) + billed(b)
        again = a.snapshot()["batches_created"] + b.snapshot()["batches_created"]
    assert second.exit_code == 0, second.notes
    assert_exactly_once(out, n)
    assert again == created  # the rerun polled the open batches, submitted nothing
    assert paid == n  # every row billed once, across both providers and processes
    every = [r["custom_id"] for rows in sent.values() for r in rows]
    assert len(every) == len(set(every)) == n
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["endpoints"][name]["answered"] for name in "ab") == n
    assert_endpoints_are_a_recount(out, summary)


def test_the_deadline_sends_the_open_rows_online_across_the_whole_pool(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    n = 40
    # the batches never run a row on their own: the deadline must move them
    inp, out, a, b = rows_and_sims(
        tmp_path, n, BatchConfig(rows_per_second=0.001, cancel_delay=0.0)
    )
    fake = FakeTime()
    with a, b:
        # two requests in flight each: the online part spreads over both
        endpoints = pool_of(a, b, a={"concurrency": 2}, b={"concurrency": 2})
        cfg = settings(
            inp,
            out,
            DEFAULT_BASE_URL,
            keep_remote_files=True,  # what each was sent stays to read
            endpoints=endpoints,
            deadline=60.0,
            poll_interval=1.0,
            quality_breaker=0,
            prices=PRICES,
        )
        result = run(cfg, clock=fake.clock, sleep=fake.sleep)
        online = {"a": a.snapshot()["requests"], "b": b.snapshot()["requests"]}
        paid = billed(a) + billed(b)
        sent = {"a": uploaded(a), "b": uploaded(b)}
    assert result.exit_code == 0, result.notes
    assert any("deadline" in note for note in result.notes), result.notes
    assert_exactly_once(out, n)
    written = lines(out / "results.jsonl")
    via = Counter(line["batchrun"].get("via", "online") for line in written)
    assert via["online"] == n - via["batch"] and via["online"] > 0
    assert online["a"] > 0 and online["b"] > 0  # the pool's routing, over both
    assert sum(online.values()) == via["online"]
    assert paid == n
    assert sent["a"] and sent["b"]  # both had batches before the deadline
    for line in written:
        assert line["batchrun"]["route"][-1] in ("a", "b")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert sum(summary["endpoints"][name]["answered"] for name in "ab") == n
    assert_endpoints_are_a_recount(out, summary)


@pytest.fixture
def sims() -> Iterator[tuple[SimThread, SimThread]]:
    a, b = two_sims()
    with a, b:
        yield a, b


def test_max_cost_holds_across_a_batch_pool(
    tmp_path: Path, keys: dict[str, str], sims: tuple[SimThread, SimThread]
) -> None:
    a, b = sims
    inp = write_rows(tmp_path / "req.jsonl", 30)
    out = tmp_path / "run"
    # each row's worst case at b (the dearer): 200 completion tokens at $10/M = $0.001
    cap = 0.004
    cfg = settings(
        inp,
        out,
        DEFAULT_BASE_URL,
        endpoints=pool_of(a, b),
        prices=PRICES,
        max_cost=cap,
        batch_max_requests=2,
        quality_breaker=0,
    )
    result = run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["cost_usd"]["total"] <= cap
    assert summary["requests"]["pending"] == 0 or result.summary["stop_reason"] == "budget"
    assert_endpoints_are_a_recount(out, summary)


# -- offline, from the command line: the simulator pool, killed and resumed -----------------


@pytest.mark.slow
def test_the_sim_batch_pool_example_killed_after_a_create_resumes_exactly_once(
    tmp_path: Path,
) -> None:
    jobs = Path(__file__).resolve().parent.parent / "jobs"
    out = tmp_path / "run"
    n = 60  # the example's first 60 reviews (a pilot, --limit, would run online)
    reviews = (jobs / "data" / "reviews.jsonl").read_text().splitlines()[:n]
    inp = tmp_path / "reviews.jsonl"
    inp.write_text("\n".join(reviews) + "\n")
    expected = {json.loads(line)["id"] for line in reviews}
    command = [
        "run", str(inp), "-j", str(jobs / "batch-pool.toml"), "-o", str(out),
        "--batch-max-requests", "10",
        "--poll-interval", "0.05", "--quality-breaker", "0", "-q", "--no-parquet",
    ]  # fmt: skip
    killed = resume.batchrun_cli(tmp_path, *command, die_after="created")
    assert killed.returncode == -9, killed.stderr
    opened = read_ledger(steps_path(str(out))).open_shards()
    assert opened and opened[0].batch_id is not None and opened[0].endpoint in ("us", "eu")
    rerun = resume.batchrun_cli(tmp_path, *command)
    assert rerun.returncode == 0, rerun.stderr
    written = [line["custom_id"] for line in lines(out / "results.jsonl")]
    assert len(written) == len(set(written)) and set(written) == expected
    assert not lines(out / "errors.jsonl")
    answered: Counter[str] = Counter()
    for name in ("us", "eu"):  # each simulator kept its batches in the run directory
        log = [
            json.loads(x)
            for x in (out / "batch" / f"sim-{name}" / "log.jsonl").read_text().splitlines()
        ]
        creates = Counter(op["metadata"]["batchrun_shard"] for op in log if op["op"] == "create")
        assert creates and max(creates.values()) == 1, creates  # no shard created twice
        ended = [op["batch"] for op in log if op["op"] == "ended"]
        assert len(ended) == len(creates)
        answered[name] = sum(b["request_counts"]["completed"] for b in ended)
    assert sum(answered.values()) == n  # every row run once, by one of them
    assert not (out / "batch" / "sim-relay").exists()  # online only: no batch there
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary["endpoints"][k]["answered"] for k in ("us", "eu")} == dict(answered)
    assert summary["endpoints"]["relay"]["requests"] == 0
    # gpt-4o-mini's own batch prices at both (eu's name for it has none)
    mini = (0.15, 0.6)
    assert_endpoints_are_a_recount(out, summary, prices={"us": mini, "eu": mini})


def test_an_online_rerun_takes_in_the_pools_ended_batches_and_sends_only_the_rest(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    n = 80
    # at each provider the first batch answers every row, the second expires half done
    inp, out, a, b = rows_and_sims(
        tmp_path, n, BatchConfig(fates=("ok", "expire"), expire_fraction=0.5)
    )
    with a, b:
        common = {"endpoints": pool_of(a, b), "prices": PRICES, "keep_remote_files": True}
        cfg = settings(
            inp, out, DEFAULT_BASE_URL, batch_max_requests=10, quality_breaker=0, **common
        )
        interrupted_after_submitting(cfg)
        result = run(settings(inp, out, DEFAULT_BASE_URL, mode="online", **common))
        paid = billed(a) + billed(b)
        online = a.snapshot()["requests"] + b.snapshot()["requests"]
    assert result.exit_code == 0, result.notes
    assert_exactly_once(out, n)
    assert paid == n  # every row paid once, by one provider, across both processes
    via = Counter(line["batchrun"].get("via", "online") for line in lines(out / "results.jsonl"))
    assert via["batch"] > 0 and via["online"] == online > 0
    summary = json.loads((out / "summary.json").read_text())
    # each endpoint's cost: its batch rows at batch prices, its online rows at online ones
    assert_endpoints_are_a_recount(out, summary)
    assert not read_ledger(steps_path(str(out))).open_shards()


def test_cancel_cancels_each_endpoints_batches_with_its_key_and_a_rerun_sends_the_rest(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    n = 60
    # the batches run 10 rows a second: cancelled part way
    inp, out, a, b = rows_and_sims(tmp_path, n, BatchConfig(rows_per_second=10, cancel_delay=0.05))
    with a, b:
        common = {"endpoints": pool_of(a, b), "prices": PRICES, "keep_remote_files": True}
        cfg = settings(
            inp, out, DEFAULT_BASE_URL, batch_max_requests=20, quality_breaker=0, **common
        )
        opened = interrupted_after_submitting(cfg)
        cancelled = cancel_run(str(out))
        assert cancelled.exit_code == 0, cancelled.notes
        listed = {"a": a.server.batches.listed(), "b": b.server.batches.listed()}
        cancels = {
            "a": a.snapshot()["api_calls"]["cancel"],
            "b": b.snapshot()["api_calls"]["cancel"],
        }
        assert not read_ledger(steps_path(str(out))).open_shards()
        again = run(cfg)
        paid = billed(a) + billed(b)
    assert again.exit_code == 0, again.notes
    assert_exactly_once(out, n)
    assert paid == n  # the rows a cancelled batch never ran went again, once
    # each endpoint's batches were cancelled there, by its own client (a wrong key is a
    # 401, which would have failed the cancel), and every one of them ended
    for name in ("a", "b"):
        mine = {r.batch_id for r in opened if r.endpoint == name}
        statuses = {x.id: x.status for x in listed[name]}
        assert mine and cancels[name] > 0, (name, cancels)
        assert all(statuses[batch] in ("cancelled", "completed") for batch in mine), statuses
    assert_endpoints_are_a_recount(out, json.loads((out / "summary.json").read_text()))


def test_the_estimate_of_a_batch_pool_splits_by_weight_over_its_batch_endpoints() -> None:
    from batchrun._cost.estimate import estimate_settings
    from batchrun._jobs.jobfile import load_job

    settings = load_job(Path(__file__).resolve().parent.parent / "jobs" / "batch-pool.toml")
    report = estimate_settings(settings.settings())
    assert report.pool is not None and report.pool.via_batch
    shares = report.pool.endpoints
    assert list(shares) == ["us", "eu"]  # relay takes no batches
    assert (shares["us"].rows, shares["eu"].rows) == (200, 100)
    model = report.models["gpt-4o-mini"]
    assert shares["us"].cost_low + shares["eu"].cost_low == pytest.approx(model.batch_low)
    assert report.pool.minutes is None  # a batch has no per-minute pace
