"""Pacing's arithmetic and its waits, on virtual time (nothing here sleeps for real).

`VirtualTime` moves its clock only when every task is blocked, straight to the
earliest sleeper's wake-up time, so "no acquire completes before t" is checked
exactly and instantly.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import anyio
import pytest

from batchrun._models import Request
from batchrun._pacing.account import CLUSTER_MIN, PROBE_SECONDS, ModelAccount
from batchrun._pacing.buckets import Bucket, QuotaMirror
from batchrun._pacing.headers import RateLimitSnapshot, parse_ratelimit_headers
from batchrun._pacing.retry import retry_after_seconds
from batchrun._pacing.scheduler import Accounts, Lane, Scheduler, Stopped, last_send

NOW_UNIX = 1_700_000_000.0


class VirtualTime:
    """An injectable clock + sleep; `run` drives time forward while tasks wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._count, event))
        self._count += 1
        await event.wait()

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        async def drive() -> None:
            done = anyio.Event()

            async def body() -> None:
                await main()
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(body)
                idle = 0
                while True:
                    await _let_everyone_run()
                    if done.is_set():
                        break
                    if not self._sleepers:
                        # a finished task's group may not have noticed yet
                        idle += 1
                        assert idle < 100, "deadlock: every task waits and nobody sleeps"
                        continue
                    idle = 0
                    when, _, event = heapq.heappop(self._sleepers)
                    self.now = max(self.now, when)
                    event.set()

        anyio.run(drive)


async def _let_everyone_run() -> None:
    """Let every ready task run until it blocks (anyio's wait_all_tasks_blocked polls
    every 0.1 s of real time; a few scheduler passes are enough here)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


def snap(**fields: float) -> RateLimitSnapshot:
    return RateLimitSnapshot(**{k: v for k, v in fields.items()})  # type: ignore[arg-type]


# --- QuotaMirror -------------------------------------------------------------------


def test_mirror_without_headers_never_delays() -> None:
    mirror = QuotaMirror()
    assert mirror.available(5.0) == float("inf")
    assert mirror.delay(10**9, 5.0) == 0.0
    mirror.spend(5, 5.0)  # nothing known: nothing to debit
    assert mirror.limit is None


def test_observe_reads_the_refill_rate_from_the_reset_time() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=600, reset_s=30.0, now=10.0)
    assert mirror.rate == pytest.approx(20.0)
    assert mirror.available(10.0) == 600
    assert mirror.available(11.5) == pytest.approx(630)
    assert mirror.available(1000.0) == 1200  # never above the limit


def test_nearly_full_bucket_keeps_a_sane_rate() -> None:
    # 1199 of 1200 left with "5ms" to full would read as 200 requests/s
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=1199, reset_s=0.005, now=0.0)
    assert mirror.rate == pytest.approx(20.0)  # per-minute default
    mirror.observe(limit=1200, remaining=600, reset_s=60.0, now=1.0)
    assert mirror.rate == pytest.approx(10.0)
    mirror.observe(limit=1200, remaining=1195, reset_s=0.01, now=2.0)
    assert mirror.rate == pytest.approx(10.0)  # keeps the last good measurement


def test_a_rounded_down_remaining_is_refined_by_the_reset() -> None:
    # a 6-RPM quota with 0.9 of a request left reads "remaining: 0"; the reset (51 s to
    # full at 0.1/s) says where in [0, 1) it really is: 10 s of a request is not lost
    mirror = QuotaMirror()
    mirror.observe(limit=6, remaining=0, reset_s=51.0, now=0.0)
    assert mirror.rate == pytest.approx(0.1)  # per minute, not 6/51
    assert mirror.available(0.0) == pytest.approx(0.9)
    assert mirror.delay(1, 0.0) == pytest.approx((1 + mirror.margin() - 0.9) / 0.1)


def test_margin_and_delay() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=30, reset_s=58.5, now=0.0)  # 20/s
    assert mirror.margin() == pytest.approx(24.1)  # 0.1 + 2% of 1200
    assert mirror.delay(1, 0.0) == 0.0  # 30 >= 1 + 24.1
    mirror.spend(10, 0.0)  # 20 left
    assert mirror.delay(1, 0.0) == pytest.approx((25.1 - 20) / 20)
    assert mirror.delay(1, 0.3) == pytest.approx(0.0)


def test_cost_larger_than_the_bucket_waits_for_a_full_bucket() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1000, remaining=0, reset_s=60.0, now=0.0)
    wait = mirror.delay(50_000, 0.0)
    assert wait == pytest.approx(60.0)  # refill to 1000 at 1000/60 per second


def test_first_snapshot_assumes_everything_sent_since_was_admitted() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=1199, reset_s=0.05, now=0.2, spent_since=63, age=0.2)
    assert mirror.available(0.2) == 1199 - 63


def test_stale_snapshot_cannot_raise_the_account_beyond_what_we_spent() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=100, reset_s=55.0, now=0.0)
    mirror.spend(50, 0.0)  # 50 left
    # an old request's answer arrives late: 90 left when it was admitted, but we
    # have sent 60 since it left, 1 s ago
    mirror.observe(limit=1200, remaining=90, reset_s=55.5, now=0.0, spent_since=60, age=1.0)
    assert mirror.available(0.0) == pytest.approx(50)


def test_snapshot_below_the_account_lowers_it() -> None:
    # someone else uses the same key: the server has less than we think
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=500, reset_s=35.0, now=0.0)
    mirror.observe(limit=1200, remaining=100, reset_s=55.0, now=1.0, spent_since=0, age=0.1)
    assert mirror.available(1.0) == pytest.approx(100 + 20 * 0.1)


def test_snapshot_above_the_account_repairs_drift() -> None:
    # we debited requests the server refused (429s): the account drifted low
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=100, reset_s=55.0, now=0.0)
    mirror.spend(100, 0.0)
    mirror.observe(limit=1200, remaining=80, reset_s=56.0, now=0.0, spent_since=5, age=0.2)
    assert mirror.available(0.0) == pytest.approx(75)


def test_a_new_limit_starts_the_account_afresh() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=10, reset_s=59.5, now=0.0)
    mirror.observe(limit=5000, remaining=4000, reset_s=12.0, now=0.0, spent_since=3, age=0.1)
    assert mirror.limit == 5000
    assert mirror.available(0.0) == 3997


def test_zero_limit_is_ignored() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=0, remaining=0, reset_s=1.0, now=0.0)
    assert mirror.limit is None


# --- Bucket: the user's --rpm / --tpm --------------------------------------------------


def test_a_user_bucket_starts_full_and_refills_per_minute() -> None:
    bucket = Bucket(120)  # --rpm 120: a burst of 120, then 2 a second
    assert bucket.delay(120, 0.0) == 0.0
    bucket.spend(120, 0.0)
    assert bucket.delay(1, 0.0) == pytest.approx(0.5)
    assert bucket.delay(1, 0.5) == pytest.approx(0.0)
    assert bucket.delay(1000, 0.0) == pytest.approx(60.0)  # more than it holds: a full bucket
    bucket.refund(30, 0.0)
    assert bucket.available(0.0) == pytest.approx(30)


# --- ModelAccount: one model's concurrency, slow start and 429s ------------------------


def answered(account: ModelAccount, now: float = 0.0) -> ModelAccount:
    account.answered(had_headers=False, now=now)
    return account


def exhausted_snapshot() -> RateLimitSnapshot:
    return snap(limit_requests=600, remaining_requests=0, reset_requests_s=60.0)


def test_slow_start_sends_one_until_the_first_answer() -> None:
    account = ModelAccount("m", concurrency=64, now=0.0)
    assert account.probing and account.size == 1
    account.take(0, 0.0)
    assert not account.has_room(0.5)
    account.release(ok=True)
    account.answered(had_headers=False, now=0.6)  # this server sends no headers: go
    assert account.size == 64 and account.has_room(0.6)


def test_headers_end_the_slow_start_and_set_the_pace() -> None:
    account = ModelAccount("m", concurrency=64, now=0.0)
    account.observe(exhausted_snapshot(), None, 0.2)  # a drained quota's first 429
    assert not account.probing
    assert account.delay(0, 0.2) > 1.0  # the mirror now paces the model


def test_a_slow_first_answer_does_not_hold_the_run() -> None:
    account = ModelAccount("m", concurrency=64, now=0.0)
    account.take(0, 0.0)
    assert not account.has_room(PROBE_SECONDS - 0.01)
    assert account.has_room(PROBE_SECONDS)  # a long generation: go after a second
    assert account.size == 64


def test_aimd_halves_on_an_exhausting_429_at_most_once_per_second() -> None:
    account = answered(ModelAccount("m", concurrency=64))
    for now in (1.0, 1.5):  # one burst of 429s is one signal
        account.rate_limited(None, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=now)
    assert account.size == 32
    account.rate_limited(None, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=2.1)
    assert account.size == 16


def test_aimd_grows_by_one_per_window_of_successes() -> None:
    account = answered(ModelAccount("m", concurrency=6))
    account.rate_limited(None, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=0.0)
    assert account.size == 3
    for _ in range(4):  # +1/limit each: 3 -> 3.33 -> 3.63 -> 3.91 -> 4.16
        account.take(0, 1.0)
        account.release(ok=True)
    assert account.size == 4
    for _ in range(100):
        account.take(0, 1.0)
        account.release(ok=True)
    assert account.size == 6  # never above --concurrency


def test_an_isolated_429_changes_nothing_shared() -> None:
    account = answered(ModelAccount("m", concurrency=64))
    shared = account.rate_limited(2.0, explicit=True, tokens=0, snapshot=None, now=1.0)
    assert shared is False
    assert account.cooldown_until < 0 and account.size == 64
    assert account.stats.isolated_429 == 1 and account.stats.rate_limited == 1
    # headers that show room left say the same
    room = snap(limit_requests=600, remaining_requests=400, reset_requests_s=20.0)
    assert account.rate_limited(2.0, explicit=True, tokens=0, snapshot=room, now=1.0) is False


def test_429s_that_cluster_pause_the_model() -> None:
    account = answered(ModelAccount("m", concurrency=64))
    for _ in range(17):
        account.answered(had_headers=False, now=0.0)
    verdicts = [
        account.rate_limited(1.0, explicit=True, tokens=0, snapshot=None, now=1.0)
        for _ in range(CLUSTER_MIN)
    ]
    assert verdicts == [False] * (CLUSTER_MIN - 1) + [True]
    assert account.cooldown_until == pytest.approx(2.0)


def test_reset_header_hint_pauses_only_as_long_as_one_request_needs() -> None:
    # OpenAI's reset header is the time until the bucket is *full*: 60 s here, where
    # one request refills in 1 s. The shared pause follows the header account.
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "60s",
    }
    snapshot = parse_ratelimit_headers(headers)
    account = answered(ModelAccount("m", concurrency=8))
    account.observe(snapshot, None, 0.0)
    account.rate_limited(60.0, explicit=False, tokens=0, snapshot=snapshot, now=0.0)
    assert 1.0 <= account.cooldown_until <= 5.0  # one request plus the margin, not 60 s
    explicit = answered(ModelAccount("m", concurrency=8))
    explicit.rate_limited(60.0, explicit=True, tokens=0, snapshot=snapshot, now=0.0)
    assert explicit.cooldown_until == 60.0  # Retry-After is obeyed as given


def test_overlapping_cooldowns_extend_never_shorten() -> None:
    account = answered(ModelAccount("m", concurrency=2))
    for hint in (3.0, 1.0):
        account.rate_limited(hint, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=0.0)
    assert account.cooldown_until == 3.0 and account.stats.cooldown_s == pytest.approx(3.0)


def test_settle_tokens_refunds_the_user_bucket_only() -> None:
    account = answered(ModelAccount("m", concurrency=4, tpm=1000))
    account.observe(
        snap(limit_tokens=100_000, remaining_tokens=50_000, reset_tokens_s=30.0), None, 0.0
    )
    account.take(600, 0.0)
    assert account.user_tokens is not None
    assert account.user_tokens.delay(500, 0.0) > 0
    mirror_before = account.tokens.available(0.0)
    account.settle_tokens(600, 100, 0.0)  # estimate was max_tokens; usage came back smaller
    assert account.user_tokens.delay(500, 0.0) == 0.0
    assert account.user_tokens.delay(950, 0.0) > 0  # 100 still held
    # the server keeps what it charged up front: the mirror is not refunded
    assert account.tokens.available(0.0) < mirror_before + 100
    account.settle_tokens(100, None, 0.0)  # usage unknown: nothing to give back
    account.settle_tokens(100, 300, 0.0)  # more than estimated: nothing to give back


# --- the Scheduler: lanes over accounts, on virtual time -------------------------------


def requests_for(model: str, n: int, est: int = 0) -> list[Request]:
    return [
        Request(f"{model}-{i}", {"model": model, "messages": [], "est": est}, i + 1)
        for i in range(n)
    ]


class Harness:
    """Accounts, a scheduler over one lane per model, and senders that record when
    each request was let through (they hold it ``hold`` seconds, then release)."""

    def __init__(
        self,
        vt: VirtualTime,
        lanes: dict[str, list[Request]],
        *,
        concurrency: int = 8,
        probing: bool = False,
        **limits: object,
    ) -> None:
        self.vt = vt
        self.accounts = Accounts(concurrency=concurrency, clock=vt.clock, **limits)  # type: ignore[arg-type]
        for model in lanes:
            if not probing:
                self.accounts[model].answered(had_headers=False, now=0.0)
        self.scheduler = Scheduler(
            self.accounts,
            [Lane(iter(reqs), vt.clock) for reqs in lanes.values()],
            estimate=lambda r: int(r.body["est"]),
            sleep=vt.sleep,
        )
        self.sent: list[tuple[str, float]] = []

    async def sender(self, hold: float = 0.0) -> None:
        while (ticket := await self.scheduler.next()) is not None:
            self.sent.append((ticket.request.custom_id, self.vt.now))
            if hold:
                await self.vt.sleep(hold)
            self.scheduler.release(ticket.account, ok=True)

    def times(self, prefix: str) -> list[float]:
        return [t for cid, t in self.sent if cid.startswith(prefix)]


def run_senders(
    h: Harness, n: int, hold: float = 0.0, before: Callable[[], Awaitable[None]] | None = None
) -> None:
    async def main() -> None:
        if before is not None:
            await before()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(h.sender, hold)

    h.vt.run(main)


def test_an_exhausting_cooldown_holds_every_sender_of_that_model() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 6)})

    async def before() -> None:
        await vt.sleep(1.0)
        h.accounts["m"].rate_limited(
            2.0, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=1.0
        )
        assert h.accounts["m"].size == 4  # halved

    run_senders(h, 6, before=before)
    assert len(h.sent) == 6 and min(t for _, t in h.sent) >= 3.0


def test_a_model_waiting_for_its_quota_holds_up_no_other_model() -> None:
    """Issue 14, case 1: a 6-RPM model mixed with a fast one must not slow the fast one."""
    vt = VirtualTime()
    h = Harness(
        vt, {"slow": requests_for("slow", 5), "fast": requests_for("fast", 200)}, concurrency=4
    )
    h.accounts["slow"].observe(
        snap(limit_requests=6, remaining_requests=0, reset_requests_s=60.0), None, 0.0
    )
    run_senders(h, 4, hold=0.01)
    fast = h.times("fast")
    assert len(fast) == 200 and max(fast) < 1.0  # 4 at a time, 10 ms each: 0.5 s
    slow = h.times("slow")
    assert len(slow) == 5 and min(slow) >= 10.0  # one per 10 s, after the margin


def test_mirror_paces_senders_at_the_refill_rate() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 21)}, concurrency=64)
    # 600 rpm = 10/s, bucket nearly empty: 1 request + a margin of 12.1, 0.9 above it
    h.accounts["m"].observe(
        snap(limit_requests=600, remaining_requests=14, reset_requests_s=58.6), None, 0.0
    )
    run_senders(h, 21)
    done_at = [t for _, t in h.sent]
    assert done_at[0] == 0.0  # one was left above the margin
    assert done_at[1] == pytest.approx(0.01)  # the next one waits for its last 0.1
    assert done_at[-1] == pytest.approx(1.91)  # then 10 per second
    gaps = [b - a for a, b in zip(done_at[1:], done_at[2:], strict=False)]
    assert all(g == pytest.approx(0.1) for g in gaps)
    assert h.accounts["m"].stats.header_waits == 20


def test_token_mirror_paces_by_estimated_tokens() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 3, est=500)}, concurrency=64)
    account = h.accounts["m"]
    assert not account.needs_token_estimates
    # 60k tpm = 1000/s; 1200.1 = 0.1 + 2% of 60k left: nothing above the margin
    account.observe(
        snap(limit_tokens=60_000, remaining_tokens=1200.1, reset_tokens_s=58.799), None, 0.0
    )
    assert account.needs_token_estimates
    run_senders(h, 1)
    assert [t for _, t in h.sent] == [pytest.approx(x, abs=1e-3) for x in (0.5, 1.0, 1.5)]


def test_user_quotas_apply_per_model() -> None:
    vt = VirtualTime()
    h = Harness(
        vt,
        {"a": requests_for("a", 4), "b": requests_for("b", 4)},
        rpm=120,
        by_model={"b": (60.0, None)},
    )
    h.accounts["a"].user_requests.spend(120, 0.0)  # type: ignore[union-attr]
    h.accounts["b"].user_requests.spend(60, 0.0)  # type: ignore[union-attr]
    run_senders(h, 2)
    assert h.times("a") == [pytest.approx(0.5 * i) for i in range(1, 5)]
    assert h.times("b") == [pytest.approx(1.0 * i) for i in range(1, 5)]


def test_slow_start_lets_one_through_until_an_answer() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 10)}, probing=True)

    async def first_answer_at_half_a_second() -> None:
        ticket = await h.scheduler.next()
        assert ticket is not None
        await vt.sleep(0.5)
        ticket.account.answered(had_headers=False, now=vt.now)
        h.scheduler.release(ticket.account, ok=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first_answer_at_half_a_second)
            await vt.sleep(0.1)
            for _ in range(9):
                tg.start_soon(h.sender)

    vt.run(main)
    assert [t for _, t in h.sent] == [0.5] * 9  # nobody went while the first was out


def test_stop_wakes_every_waiting_sender_and_nothing_goes_after_it() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 50)})
    h.accounts["m"].observe(
        snap(limit_requests=60, remaining_requests=0, reset_requests_s=60.0), None, 0.0
    )
    ended: list[float] = []

    async def sender() -> None:
        await h.sender()
        ended.append(vt.now)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(sender)
            await vt.sleep(5.0)
            h.scheduler.stop()

    vt.run(main)
    assert len(ended) == 4 and max(ended) == pytest.approx(5.0)
    assert all(t <= 5.0 for _, t in h.sent)

    async def retry() -> None:
        with pytest.raises(Stopped):
            await h.scheduler.wait_for(h.accounts["m"], 0)

    vt.run(retry)


def test_a_retry_waits_for_its_model_only() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"a": [], "b": []})
    h.accounts["a"].rate_limited(
        3.0, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=0.0
    )
    done: dict[str, float] = {}

    async def retry(model: str) -> None:
        await h.scheduler.wait_for(h.accounts[model], 0)
        done[model] = vt.now

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(retry, "a")
            tg.start_soon(retry, "b")

    vt.run(main)
    assert done == {"a": pytest.approx(3.0), "b": 0.0}


def test_a_retry_in_the_slow_start_waits_for_its_end_not_for_ever() -> None:
    """Under --max-cost a request may hold the slow start's one slot while it waits for
    the budget's room, and that room may be what a retry holds: the retry must get its
    turn when the slow start ends (a run with unreadable 200s under a cap hung here)."""
    from batchrun._pacing.account import PROBE_SECONDS

    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 1)}, probing=True)
    done: list[float] = []

    async def main() -> None:
        held = await h.scheduler.next()  # never released: waiting for the budget
        assert held is not None
        await h.scheduler.wait_for(h.accounts["m"], 0)  # the retry of another request
        done.append(vt.now)

    vt.run(main)
    assert done == [pytest.approx(PROBE_SECONDS)]


def test_observe_knows_which_send_a_response_answers() -> None:
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 10)}, concurrency=64)
    account = h.accounts["m"]

    async def main() -> None:
        first = await h.scheduler.next()
        assert first is not None
        mark = last_send.get()
        for _ in range(9):
            assert await h.scheduler.next() is not None
        # the server had 1000 left when it admitted the first; the 9 sent after it
        # may have been admitted since
        account.observe(
            snap(limit_requests=1200, remaining_requests=1000, reset_requests_s=10.0), mark, vt.now
        )

    vt.run(main)
    assert account.requests.available(vt.now) == 991


def test_summary_reports_pacing_per_model_and_in_all() -> None:
    accounts = Accounts(concurrency=16, clock=lambda: 0.0)
    for model in ("a", "b"):
        answered(accounts[model])
    accounts["a"].observe(
        snap(
            limit_requests=500, remaining_requests=400, limit_tokens=90_000, remaining_tokens=80_000
        ),
        None,
        0.0,
    )
    accounts["a"].rate_limited(1.5, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=0.0)
    summary = accounts.summary()
    assert summary["concurrency_limit"] == 16  # 8 + 16, capped by --concurrency
    assert summary["rate_limited_seen"] == 1 and summary["cooldown_s"] == 1.5
    assert summary["by_model"]["a"]["server_rpm"] == 500
    assert summary["by_model"]["a"]["concurrency_limit"] == 8
    assert summary["by_model"]["b"]["server_rpm"] is None


# --- every header format: the refused request's own wait, and whether the model pauses --


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW_UNIX + seconds_from_now, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "wait", "pauses"),
    [
        ({"retry-after-ms": "1500"}, 1.5, False),
        ({"Retry-After": "2"}, 2.0, False),
        ({"Retry-After": "0.25"}, 0.25, False),
        ({"Retry-After": http_date(3)}, 3.0, False),
        ({"retry-after-ms": "700", "Retry-After": "5"}, 0.7, False),  # ms wins
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "20ms",
            },
            1.5,
            True,
        ),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0.5s"}, 60.5, True),
        ({"x-ratelimit-reset-tokens": "250ms"}, 0.25, False),  # a 429 with budget left
        (
            {"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "6m0s"},
            300.0,
            True,
        ),
    ],
)
def test_every_hint_format(headers: dict[str, str], wait: float, pauses: bool) -> None:
    """The hint is what the refused request waits (retry.py); the model pauses only
    when the headers say its quota is exhausted."""
    hint = retry_after_seconds(headers, NOW_UNIX, rate_limited=True)
    assert hint == pytest.approx(wait)  # 300 s: retry.py's max_wait
    account = answered(ModelAccount("m", concurrency=8))
    snapshot = parse_ratelimit_headers(headers)
    shared = account.rate_limited(hint, explicit=True, tokens=0, snapshot=snapshot, now=1.0)
    assert shared is pauses
    if pauses:
        assert account.cooldown_until == pytest.approx(1.0 + wait)
    else:
        assert account.cooldown_until < 0


def test_429_without_any_hint_does_not_pause_the_model() -> None:
    assert retry_after_seconds({}, NOW_UNIX, rate_limited=True) is None
    account = answered(ModelAccount("m", concurrency=8))
    account.rate_limited(None, explicit=True, tokens=0, snapshot=exhausted_snapshot(), now=0.0)
    assert account.cooldown_until < 0 and account.size == 4  # the retry policy backs off


def test_openai_header_set_drives_the_mirror() -> None:
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "57s",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149000",
        "x-ratelimit-reset-tokens": "400ms",
    }
    vt = VirtualTime()
    h = Harness(vt, {"m": requests_for("m", 2, est=100)})
    account = h.accounts["m"]
    account.observe(parse_ratelimit_headers(headers), None, 0.0)
    assert account.requests.rate == pytest.approx(1.0)
    assert account.tokens.limit == 150_000
    run_senders(h, 1)
    # 3 left, margin 1.3: the first goes now, the next one waits 0.3 s for its share
    assert [t for _, t in h.sent] == [0.0, pytest.approx(0.3)]
