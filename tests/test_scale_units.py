"""The pure parts of a run on a cluster: the shard plan, spans of the input, leases.

No Ray here (tests/test_scale_ray.py runs a real local cluster): the plan is checked
against the files it splits, and the quota book against what one process's account
would allow.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun._input.sources import Source
from batchrun._pacing.account import ModelAccount
from batchrun._pacing.headers import RateLimitSnapshot
from batchrun._scale.budget import BudgetBook
from batchrun._scale.lease import (
    HIGH_RATE_LEASE,
    MAX_LEASE,
    LeasedAccounts,
    QuotaBook,
    RateLimitEvent,
    Report,
)
from batchrun._scale.shards import load_or_plan, plan_shards, split_lines


def _rows(n: int) -> list[dict[str, object]]:
    return [
        {"model": "m", "messages": [{"role": "user", "content": f"row {i} " + "x" * (i % 7)}]}
        for i in range(n)
    ]


def _ids(source: Source) -> list[tuple[str, int]]:
    return [(r.custom_id, r.row) for r in source.requests()]


def test_jsonl_shards_cover_every_row_once_with_the_whole_files_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in _rows(23)]
    lines.insert(5, "")  # a blank line still has a number
    path.write_text("\n".join(lines))  # and the last line has no newline
    plan = plan_shards(str(path), shard_rows=5, workers=2)
    assert [s.rows for s in plan.shards] == [5, 5, 5, 5, 4]
    seen = []
    for shard in plan.shards:
        seen += _ids(Source(str(path), span=shard.span))
    assert seen == _ids(Source(str(path)))
    assert plan_shards(str(path), shard_rows=5, workers=2) == plan  # deterministic


def test_a_shard_scan_hashes_the_ids_of_exactly_its_valid_requests(tmp_path: Path) -> None:
    """`scan_shard` hashes each valid request's id as the scan meets it (one pass):
    the same ids, in the same order, as a pass over the shard's requests."""
    from array import array

    from batchrun._scale.worker import ShardJob, scan_shard, stable_id_hash
    from batchrun._settings import Settings

    path = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in _rows(12)]
    lines[7] = '{"custom_id": "bad", "body": 3}'  # an invalid row, skipped
    path.write_text("\n".join(lines) + "\n")
    plan = plan_shards(str(path), shard_rows=5, workers=1)
    cfg = Settings(input=str(path), out_dir=str(tmp_path / "run"), skip_invalid=True)
    for shard in plan.shards:
        job = ShardJob(cfg, str(tmp_path / "run"), shard)
        scanned = scan_shard(job)
        wanted = array("Q", (stable_id_hash(i) for i, _ in _ids(job.source())))
        assert scanned.ids == wanted.tobytes() and scanned.total == len(wanted)
        assert scanned.invalid == (1 if shard.index == 1 else 0)


def test_shard_fingerprints_cover_only_their_own_bytes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(10)))
    plan = plan_shards(str(path), shard_rows=5, workers=1)
    first, second = (Source(str(path), span=s.span).fingerprint() for s in plan.shards)
    data = path.read_bytes()
    cut = plan.shards[1].span.start_byte
    path.write_bytes(data[:cut] + data[cut:].replace(b"row 7", b"row 8"))
    assert Source(str(path), span=plan.shards[0].span).fingerprint() == first
    assert Source(str(path), span=plan.shards[1].span).fingerprint() != second


def test_parquet_shards_are_whole_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.table({"body": [json.dumps(r) for r in _rows(50)]})
    pq.write_table(table, path, row_group_size=8)
    plan = plan_shards(str(path), shard_rows=20, workers=1)
    assert [(s.span.first_group, s.span.stop_group) for s in plan.shards] == [
        (0, 3),
        (3, 6),
        (6, 7),
    ]
    seen = []
    for shard in plan.shards:
        seen += _ids(Source(str(path), span=shard.span))
    assert seen == _ids(Source(str(path))) and len(seen) == 50


def test_gzip_shards_read_through(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in _rows(12)))
    plan = plan_shards(str(path), shard_rows=5, workers=1)
    seen = []
    for shard in plan.shards:
        seen += _ids(Source(str(path), span=shard.span))
    assert seen == _ids(Source(str(path)))


def test_a_recorded_plan_is_kept_and_a_changed_input_refused(tmp_path: Path) -> None:
    from batchrun._output.summary import write_json_atomic
    from batchrun.errors import RunDirError

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(10)))
    run = tmp_path / "run"
    run.mkdir()
    plan, new = load_or_plan(str(run), str(path), 3, 1)
    assert new
    write_json_atomic(str(run / "shards.json"), plan.to_dict())
    again, new = load_or_plan(str(run), str(path), 7, 1)  # another --shard-rows
    assert again == plan and not new
    path.write_text(path.read_text() + json.dumps(_rows(1)[0]) + "\n")
    with pytest.raises(RunDirError, match="planned on"):
        load_or_plan(str(run), str(path), 3, 1)


def test_split_lines_pure() -> None:
    spans = split_lines([3, 4, 5], shard_rows=2)
    assert [(s.first_row, s.stop_row, s.start_byte, s.stop_byte) for s in spans] == [
        (1, 3, 0, 7),
        (3, 4, 7, 12),
    ]


# -- leases ------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _headers(limit: int, remaining: int, reset_s: float) -> RateLimitSnapshot:
    return RateLimitSnapshot(
        limit_requests=limit, remaining_requests=remaining, reset_requests_s=reset_s
    )


def test_the_book_never_grants_more_than_the_servers_bucket_holds() -> None:
    clock = Clock()
    book = QuotaBook(concurrency=64, clock=clock)
    probe = book.lease("a", "m", want=8, tokens_each=0, report=Report())
    assert probe.requests == 1  # slow start: one request in the whole cluster
    assert book.lease("b", "m", want=8, tokens_each=0, report=Report()).requests == 0
    # the probe's answer: 60 RPM, 10 left
    report = Report(snapshot=_headers(60, 10, 50.0), snapshot_lease=probe.lease_id, answered=1)
    granted = 0.0
    for worker in "abcd" * 5:
        grant = book.lease(worker, "m", want=8, tokens_each=0, report=report)
        report = Report()
        granted += grant.requests
    # 10 left, and a reserve of 1.3 (2 % of 60, plus 0.1) kept: 8 granted, however
    # many workers ask, and 2 left
    assert granted == 8
    wait = book.lease("a", "m", want=8, tokens_each=0, report=Report()).wait
    assert wait == pytest.approx(0.3)  # the refill (1/s) tops 2 up to 1 + the reserve
    clock.now += 10.0
    back = book.lease("a", "m", want=8, tokens_each=0, report=Report()).requests
    assert back == 8  # ten seconds: ten more, capped by the lease size
    # what a worker gives back can be granted again
    book.lease("b", "m", want=8, tokens_each=0, report=Report(returned_requests=8))
    assert book.lease("c", "m", want=8, tokens_each=0, report=Report()).requests >= 1


def test_a_lease_is_granted_in_one_step_as_one_at_a_time_would() -> None:
    """`ModelAccount.room` + `take_many` (a lease of thousands costs the book one step)
    grant what taking requests one by one while `delay` says 0 grants, and leave the
    buckets where it leaves them: user buckets and the header mirror, requests and
    tokens, at their edges."""
    import random

    def account(seed: int) -> ModelAccount:
        rng = random.Random(seed)
        acct = ModelAccount(
            "m",
            concurrency=8,
            rpm=rng.choice([None, 30, 600, 7_000]),
            tpm=rng.choice([None, 5_000, 90_000]),
        )
        acct.probing = False
        if rng.random() < 0.7:
            limit = rng.choice([60, 1_000, 50_000])
            acct.observe(_headers(limit, rng.randrange(limit + 1), rng.uniform(0.5, 60)), None, 0.0)
        if rng.random() < 0.5:
            acct.tokens.observe(200_000, rng.randrange(200_000), 30.0, 0.0)
        for _ in range(rng.randrange(50)):
            acct.take(rng.choice([0, 100]), 0.0)
        return acct

    for seed in range(300):
        tokens, now = (0, 100, 2_500)[seed % 3], 0.5
        one, many = account(seed), account(seed)
        one_by_one = 0
        while one_by_one < 500 and one.delay(tokens, now) <= 1e-6:
            one.take(tokens, now)
            one_by_one += 1
        granted = many.room(tokens, now, 500, 1e-6)
        assert granted == one_by_one, seed
        if granted:
            many.take_many(granted, tokens, now)
        for a, b in ((one.requests, many.requests), (one.tokens, many.tokens)):
            assert a.available(now) == pytest.approx(b.available(now)), seed
        for c, d in ((one.user_requests, many.user_requests), (one.user_tokens, many.user_tokens)):
            assert (c is None) == (d is None)
            if c is not None and d is not None:
                assert c.available(now) == pytest.approx(d.available(now)), seed


def test_a_high_quota_gets_larger_leases_and_the_worker_asks_for_them() -> None:
    book = QuotaBook(concurrency=4096, rpm=3_000_000, clock=lambda: 0.0)  # 50,000/s
    small = QuotaBook(concurrency=4096, rpm=60_000, clock=lambda: 0.0)  # 1,000/s
    for b in (book, small):
        b.lease("x", "m", want=1, tokens_each=0, report=Report(answered=1))  # slow start
    assert small.lease("w", "m", want=10_000, tokens_each=0, report=Report()).requests == MAX_LEASE
    accounts = LeasedAccounts(concurrency=4096, wake=lambda: None)
    account = accounts["m"]
    asked = []
    for _ in range(16):  # each lease spent before the next: the worker doubles its ask
        want, report = account.start_request(0.0)
        asked.append(want)
        account.refill(book.lease("w", "m", want=want, tokens_each=0, report=report), 0.0)
        while account.delay(0, 0.0) == 0.0:
            account.take(0, 0.0)
    assert asked[:4] == [1, 1, 2, 4] and max(asked) == 2_500 <= HIGH_RATE_LEASE  # 0.05 s of it


def test_a_model_without_quota_gets_time_slices() -> None:
    clock = Clock()
    book = QuotaBook(concurrency=8, clock=clock)
    probe = book.lease("a", "m", want=1, tokens_each=0, report=Report())
    grant = book.lease("a", "m", want=1, tokens_each=0, report=Report(answered=1))
    assert probe.requests == 1 and math.isinf(grant.requests) and grant.seconds > 0
    assert book.leases == 2


def test_an_exhausting_429_pauses_every_worker_and_halves_their_concurrency() -> None:
    clock = Clock()
    book = QuotaBook(concurrency=16, clock=clock)
    book.lease("a", "m", want=1, tokens_each=0, report=Report(answered=1))
    event = RateLimitEvent(2.0, True, 0, _headers(60, 0, 30.0), None)
    grant = book.lease("a", "m", want=4, tokens_each=0, report=Report(rate_limited=[event]))
    other = book.lease("b", "m", want=4, tokens_each=0, report=Report())
    assert grant.requests == 0 and other.requests == 0
    assert other.wait == pytest.approx(2.0) and other.limit == 8.0


def test_a_leased_account_spends_its_lease_and_asks_ahead() -> None:
    wakes = []
    accounts = LeasedAccounts(concurrency=4, wake=lambda: wakes.append(1))
    account = accounts["m"]
    assert account.delay(0, now=0.0) > 0 and wakes  # nothing leased yet: ask
    want, report = account.start_request(0.0)
    book = QuotaBook(concurrency=4, rpm=600, clock=lambda: 0.0)
    book.lease("x", "m", want=1, tokens_each=0, report=Report(answered=1))  # end slow start
    account.refill(book.lease("w", "m", want=4, tokens_each=0, report=report), now=0.0)
    assert account.delay(0, now=0.0) == 0.0
    mark = account.take(0, now=0.0)
    assert mark.lease_id is not None and account.in_flight == 1
    account.release(ok=True)
    assert account.take_report().ok == 1
    # a lease that expires unused goes back with the next report
    _, report = account.start_request(now=10.0)
    assert report.returned_requests == 3  # four granted, one taken
    assert account.delay(0, now=10.0) > 0


def test_a_pool_has_one_account_per_endpoint_and_model_in_the_book() -> None:
    """Each endpoint's account has its own limits and its own headers; a worker's
    view of an endpoint leases under that account's name, through one lease client."""
    clock = Clock()
    book = QuotaBook(
        concurrency=64,
        endpoints={"a": {"concurrency": 4, "rpm": 600}, "b": {"concurrency": 2, "rpm": 60}},
        clock=clock,
    )
    wakes: list[int] = []
    leased = LeasedAccounts(concurrency=64, wake=lambda: wakes.append(1))
    on_a = leased.endpoint("a", concurrency=4)["m"]
    on_b = leased.endpoint("b", concurrency=2)["m"]
    assert (on_a.model, on_a.key, on_b.key) == ("m", "a:m", "b:m")
    assert leased.leased() == [on_a, on_b]  # one lease client supplies both
    # slow start per account: each endpoint's one probe, granted apart
    probe_a = book.lease("w1", on_a.key, want=8, tokens_each=0, report=Report())
    probe_b = book.lease("w2", on_b.key, want=8, tokens_each=0, report=Report())
    assert probe_a.requests == 1 and probe_b.requests == 1
    assert (probe_a.limit, probe_b.limit) == (4.0, 2.0)  # each its own concurrency
    # b's headers (60 RPM, 2 left) bound b's account only
    seen_b = Report(snapshot=_headers(60, 2, 50.0), snapshot_lease=probe_b.lease_id, answered=1)
    granted_b = sum(
        book.lease(w, "b:m", want=8, tokens_each=0, report=seen_b if i == 0 else Report()).requests
        for i, w in enumerate("wxyz")
    )
    granted_a = book.lease("w1", "a:m", want=8, tokens_each=0, report=Report(answered=1)).requests
    assert granted_b <= 1 and granted_a == 8  # a's quota (600 RPM) is untouched by b's
    paced = book.summary()["by_endpoint"]
    assert list(paced) == ["a", "b"] and paced["b"]["server_rpm"] == 60
    assert paced["a"]["server_rpm"] is None  # no header from a yet
    assert "breaker" not in paced["a"]  # each worker's own, summed from the shards


def test_budget_book_never_lets_the_cluster_past_the_cap() -> None:
    book = BudgetBook(cap=1.0)
    shares = [book.reserve(w, amount=0.3, worst=0.1)[0] for w in "abcd"]
    assert sum(shares) <= 1.0 and shares[-1] == pytest.approx(0.1)
    assert book.reserve("e", amount=0.3, worst=0.1) == (0.0, False)  # wait for settles
    book.settle("a", spent=0.25, released=0.3)
    book.settle("b", spent=0.3, released=0.3)
    book.settle("c", spent=0.3, released=0.3)
    assert book.reserve("e", amount=0.3, worst=0.2) == (0.0, True)  # spent leaves no room


# -- Ray is optional ----------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_and_help_never_import_ray() -> None:
    done = _python(
        "import sys, batchrun, batchrun.ray, batchrun._scale\n"
        "from click.testing import CliRunner\n"
        "from batchrun._cli import cli\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(cli, ['run', '--help']).exit_code == 0\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_ray_the_flag_says_how_to_install_it(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(3)))
    done = _python(
        "import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
        "sys.argv = ['batchrun', 'run', sys.argv[1], '-o', sys.argv[2], '--ray',\n"
        "            '--base-url', 'http://127.0.0.1:9/v1']\n"
        "from batchrun._cli import main; main()\n".replace("sys.argv[1]", repr(str(path))).replace(
            "sys.argv[2]", repr(str(tmp_path / "run"))
        )
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: --ray needs Ray: pip install 'batchrun[ray]'"
    ]
    assert not (tmp_path / "run").exists()


def test_the_ray_settings_are_declared_once(tmp_path: Path) -> None:
    """--ray [ADDRESS], [scale] in a job file, ray= in Python; none of them is part of
    the resume fingerprint (the same rows are sent however they are spread)."""
    from click.testing import CliRunner

    from batchrun._api import settings_for
    from batchrun._cli.options import given_settings, setting_options
    from batchrun._settings import Settings
    from batchrun.errors import ConfigError

    (tmp_path / "in.jsonl").write_text(json.dumps(_rows(1)[0]) + "\n")
    job = tmp_path / "job.toml"
    job.write_text('[input]\npath = "in.jsonl"\n[scale]\nray = true\nworkers = 3\n')
    assert (settings_for(job=str(job)).ray, settings_for(job=str(job)).workers) == ("local", 3)
    assert settings_for("in.jsonl", ray="auto").ray == "auto"
    with pytest.raises(ConfigError, match="ray=: must be ray://HOST:PORT"):
        settings_for("in.jsonl", ray="http://head")
    import click

    seen: dict[str, object] = {}

    @click.command()
    @setting_options
    def command(**options: object) -> None:
        seen.update(given_settings(options))

    for argv, want in (
        (["--ray"], "local"),
        (["--ray", "ray://head:10001"], "ray://head:10001"),
        (["--ray", "10.0.0.5:6379", "--shard-rows", "500"], "10.0.0.5:6379"),
    ):
        seen.clear()
        assert CliRunner().invoke(command, argv).exit_code == 0
        assert seen["ray"] == want
    plain = Settings.build(input="in.jsonl").fingerprint()
    assert (
        Settings.build(input="in.jsonl", ray=True, workers=4, shard_rows=9).fingerprint() == plain
    )


class _Method:
    def __init__(self, fn: object) -> None:
        self.fn = fn

    def remote(self, *args: object) -> object:
        return self.fn(*args)  # type: ignore[operator]


class _Service:
    """The quota actor's methods, called in this process (`LeaseClient`'s ``get`` is the
    identity): the lease thread's logic without Ray."""

    def __init__(self, book: QuotaBook, broken: bool = False) -> None:
        def lease(worker: str, model: str, want: int, tokens: int, report: Report) -> object:
            if broken:
                raise ConnectionError("actor died")
            return book.lease(worker, model, want=want, tokens_each=tokens, report=report)

        self.lease = _Method(lease)
        self.report = _Method(lambda worker, model, report: book.apply(worker, model, report))


def test_the_lease_thread_keeps_a_worker_supplied_and_stops_it_when_told() -> None:
    import threading

    from batchrun._scale.quota import LeaseClient

    book = QuotaBook(concurrency=4)
    stopped: list[str] = []
    told = threading.Event()

    def on_stop(reason: str) -> None:
        stopped.append(reason)
        told.set()

    client = LeaseClient(
        _Service(book), "w", concurrency=4, on_stop=on_stop, get=lambda ref: ref
    ).start()
    try:
        account = client.accounts["m"]
        deadline = time.monotonic() + 30
        while account.delay(0, time.monotonic()) > 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # the thread asks the book for the slow start's lease
        assert account.delay(0, time.monotonic()) == 0.0
        book.stop("SIGINT")
        account.take(0, time.monotonic())
        account.release(ok=True)
        while account.delay(0, time.monotonic()) == 0.0 and time.monotonic() < deadline:
            time.sleep(0.005)  # the probe's one request is spent: the next ask hears "stop"
        assert told.wait(30) and stopped == ["SIGINT"]
    finally:
        client.close()


def test_a_worker_whose_quota_actor_is_gone_stops() -> None:
    import threading

    from batchrun._scale.quota import LeaseClient

    told = threading.Event()
    client = LeaseClient(
        _Service(QuotaBook(concurrency=4), broken=True),
        "w",
        concurrency=4,
        on_stop=lambda reason: told.set(),
        get=lambda ref: ref,
    ).start()
    try:
        account = client.accounts["m"]
        deadline = time.monotonic() + 30
        while not told.is_set() and time.monotonic() < deadline:
            account.delay(0, time.monotonic())  # the scheduler keeps asking
            time.sleep(0.01)
        assert told.is_set() and client.errors
    finally:
        client.close()


def test_ray_refuses_what_it_does_not_run(tmp_path: Path) -> None:
    from batchrun._api import make_runner
    from batchrun._settings import Settings
    from batchrun.errors import ConfigError

    base = {"input": "in.jsonl", "out_dir": str(tmp_path / "run"), "ray": True}
    with pytest.raises(ConfigError, match="pilot"):
        make_runner(Settings.build(**base, limit=10), None)
    with pytest.raises(ConfigError, match="cannot be combined with mode='batch'"):
        make_runner(Settings.build(**base, mode="batch"), None)
    remote = {**base, "ray": "ray://head:10001", "cache": str(tmp_path / "cache")}
    with pytest.raises(ConfigError, match="cache= with ray='ray://head:10001'"):
        make_runner(Settings.build(**remote), None)
