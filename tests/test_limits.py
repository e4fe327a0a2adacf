"""The pacer's arithmetic and its waits, on virtual time (nothing here sleeps for real).

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

from batchrun.limits import AdaptiveLimit, Pacer, QuotaMirror
from batchrun.ratelimit_headers import RateLimitSnapshot, parse_ratelimit_headers
from batchrun.retry import retry_after_seconds

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


def test_margin_and_delay() -> None:
    mirror = QuotaMirror()
    mirror.observe(limit=1200, remaining=30, reset_s=58.5, now=0.0)  # 20/s
    assert mirror.margin() == pytest.approx(25.0)  # 1 + 2% of 1200
    assert mirror.delay(1, 0.0) == 0.0  # 30 >= 1 + 25
    mirror.spend(10, 0.0)  # 20 left
    assert mirror.delay(1, 0.0) == pytest.approx((26 - 20) / 20)
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


# --- AdaptiveLimit -----------------------------------------------------------------


def test_aimd_halves_at_most_once_per_second() -> None:
    clock = [0.0]
    slots = AdaptiveLimit(64, clock=lambda: clock[0])
    slots.decrease()
    assert slots.size == 32
    clock[0] = 0.5
    slots.decrease()  # same burst of 429s
    assert slots.size == 32
    clock[0] = 1.0
    slots.decrease()
    assert slots.size == 16
    for step in range(10):
        clock[0] = 2.0 + step
        slots.decrease()
    assert slots.size == 1  # never below one


def test_aimd_grows_by_one_per_window_of_successes() -> None:
    clock = [0.0]
    slots = AdaptiveLimit(6, clock=lambda: clock[0])
    slots.decrease()
    assert slots.size == 3
    for _ in range(3):  # 3 -> 3.33 -> 3.63 -> 3.91
        slots.increase()
    assert slots.size == 3
    slots.increase()  # -> 4.16: one more slot after a window of ~3 successes
    assert slots.size == 4
    for _ in range(100):
        slots.increase()
    assert slots.size == 6  # back to --concurrency, not beyond


def test_slots_are_handed_over_in_order() -> None:
    order: list[int] = []

    async def main() -> None:
        slots = AdaptiveLimit(2, clock=lambda: 0.0)
        await slots.acquire()
        await slots.acquire()

        async def waiter(n: int) -> None:
            await slots.acquire()
            order.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(waiter, n)
                await anyio.wait_all_tasks_blocked()
            assert slots.waiting == 3
            slots.release()
            await anyio.wait_all_tasks_blocked()
            assert order == [0]
            slots.release()
            slots.release()
        assert order == [0, 1, 2]
        assert slots.in_use == 2

    anyio.run(main)


def test_growth_wakes_waiters() -> None:
    async def main() -> None:
        clock = [0.0]
        slots = AdaptiveLimit(4, clock=lambda: clock[0])
        slots.decrease()  # 2
        await slots.acquire()
        await slots.acquire()
        got: list[int] = []

        async def waiter(n: int) -> None:
            await slots.acquire()
            got.append(n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, 1)
            tg.start_soon(waiter, 2)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            while slots.size < 3:
                slots.increase()
            await anyio.wait_all_tasks_blocked()
            assert got == [1]
            tg.cancel_scope.cancel()
        assert slots.in_use == 3

    anyio.run(main)


def test_cancelled_waiter_leaves_the_queue() -> None:
    async def main() -> None:
        slots = AdaptiveLimit(1, clock=lambda: 0.0)
        await slots.acquire()
        got: list[str] = []

        async def waiter(name: str, scope_box: list[anyio.CancelScope]) -> None:
            with anyio.CancelScope() as scope:
                scope_box.append(scope)
                await slots.acquire()
                got.append(name)

        boxes: list[list[anyio.CancelScope]] = [[], []]
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "a", boxes[0])
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "b", boxes[1])
            await anyio.wait_all_tasks_blocked()
            boxes[0][0].cancel()
            await anyio.wait_all_tasks_blocked()
            assert slots.waiting == 1
            slots.release()
        assert got == ["b"]  # the slot went to the live waiter
        assert slots.in_use == 1

    anyio.run(main)


def test_waiter_cancelled_after_the_handover_passes_the_slot_on() -> None:
    async def main() -> None:
        slots = AdaptiveLimit(1, clock=lambda: 0.0)
        await slots.acquire()
        got: list[str] = []
        scopes: dict[str, anyio.CancelScope] = {}

        async def waiter(name: str) -> None:
            with anyio.CancelScope() as scope:
                scopes[name] = scope
                await slots.acquire()
                got.append(name)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "a")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "b")
            await anyio.wait_all_tasks_blocked()
            scopes["a"].cancel()  # "a" is cancelled, but has not run yet ...
            slots.release()  # ... when the slot is handed to it
        assert got == ["b"]
        assert slots.in_use == 1

    anyio.run(main)


# --- Pacer: cooldown, mirror, settle -------------------------------------------------


def test_cooldown_is_shared_by_every_sender() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=8, clock=vt.clock, sleep=vt.sleep)
    done_at: list[float] = []

    async def sender() -> None:
        await pacer.acquire()
        done_at.append(vt.now)
        pacer.release(ok=True)

    async def main() -> None:
        await vt.sleep(1.0)
        pacer.rate_limited(2.0)  # at t=1: nobody may go before t=3
        assert pacer.concurrency_limit == 4  # halved
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(sender)

    vt.run(main)
    assert len(done_at) == 6
    assert min(done_at) >= 3.0
    assert pacer.stats.rate_limited == 1
    assert pacer.stats.cooldown_s == pytest.approx(2.0)


def test_cooldown_reaches_senders_already_waiting_for_the_mirror() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=8, clock=vt.clock, sleep=vt.sleep)
    pacer.observe(snap(limit_requests=60, remaining_requests=2, reset_requests_s=58.0))
    done_at: list[float] = []

    async def sender() -> None:
        await pacer.acquire()
        done_at.append(vt.now)
        pacer.release(ok=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)  # mirror: 2 left, needs 1 + 2.2 -> waits 1.2 s
            await vt.sleep(0.1)
            pacer.rate_limited(5.0)  # cooldown until 5.1

    vt.run(main)
    assert done_at == [pytest.approx(5.1)]


def test_overlapping_cooldowns_extend_never_shorten() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=2, clock=vt.clock, sleep=vt.sleep)
    done_at: list[float] = []

    async def main() -> None:
        pacer.rate_limited(3.0)
        pacer.rate_limited(1.0)  # a shorter hint does not cut the pause
        await pacer.acquire()
        done_at.append(vt.now)

    vt.run(main)
    assert done_at == [3.0]
    assert pacer.stats.cooldown_s == pytest.approx(3.0)


def test_429_without_hint_only_shrinks_concurrency() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=10, clock=vt.clock, sleep=vt.sleep)
    pacer.rate_limited(None)
    assert pacer.concurrency_limit == 5
    assert pacer.cooldown_until < 0  # no shared pause: the retry policy backs off

    async def main() -> None:
        await pacer.acquire()

    vt.run(main)
    assert vt.now == 0.0


def test_mirror_paces_senders_at_the_refill_rate() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=64, clock=vt.clock, sleep=vt.sleep)
    # 600 rpm = 10/s, bucket nearly empty: 13 = 1 + 2% margin ... +1 left
    pacer.observe(snap(limit_requests=600, remaining_requests=14, reset_requests_s=58.6))
    done_at: list[float] = []

    async def sender() -> None:
        await pacer.acquire()
        done_at.append(vt.now)
        pacer.release(ok=True)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(21):
                tg.start_soon(sender)

    vt.run(main)
    assert done_at[0] == 0.0  # one was left above the margin
    assert done_at[-1] == pytest.approx(2.0)  # then 10 per second
    gaps = [b - a for a, b in zip(done_at[1:], done_at[2:], strict=False)]
    assert all(g == pytest.approx(0.1) for g in gaps)
    assert pacer.stats.header_waits == 20


def test_token_mirror_paces_by_estimated_tokens() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=64, clock=vt.clock, sleep=vt.sleep)
    assert not pacer.needs_token_estimates
    # 60k tpm = 1000/s; 1201 = 1 + 2% of 60k left: nothing above the margin
    pacer.observe(snap(limit_tokens=60_000, remaining_tokens=1201, reset_tokens_s=58.799))
    assert pacer.needs_token_estimates
    done_at: list[float] = []

    async def main() -> None:
        for _ in range(3):
            await pacer.acquire(500)
            done_at.append(vt.now)
            pacer.release(ok=True)

    vt.run(main)
    assert done_at == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]


def test_observe_knows_which_send_a_response_answers() -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=64, clock=vt.clock, sleep=vt.sleep)

    async def main() -> None:
        first_sent = anyio.Event()
        others_sent = anyio.Event()

        async def first() -> None:
            await pacer.acquire()
            first_sent.set()
            await others_sent.wait()
            pacer.release(ok=True)
            # the server had 1000 left when it admitted this one; the 9 sent
            # after it may have been admitted since
            pacer.observe(snap(limit_requests=1200, remaining_requests=1000, reset_requests_s=10.0))

        async def others() -> None:
            await first_sent.wait()
            for _ in range(9):
                await pacer.acquire()
            others_sent.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(others)

    vt.run(main)
    assert pacer.requests.available(vt.now) == 991


def test_settle_tokens_refunds_the_user_bucket_only() -> None:
    async def main() -> None:
        pacer = Pacer(concurrency=4, tpm=1000)
        pacer.observe(snap(limit_tokens=100_000, remaining_tokens=50_000, reset_tokens_s=30.0))
        assert pacer.tpm is not None
        await pacer.acquire(600)
        pacer.release(ok=True)
        assert not pacer.tpm.has_capacity(500)
        mirror_before = pacer.tokens.available(pacer.clock())
        pacer.settle_tokens(600, 100)  # estimate was max_tokens; usage came back smaller
        assert pacer.tpm.has_capacity(500)
        assert not pacer.tpm.has_capacity(950)  # 100 still held
        # the server keeps what it charged up front: the mirror is not refunded
        assert pacer.tokens.available(pacer.clock()) < mirror_before + 100
        pacer.settle_tokens(100, None)  # usage unknown: nothing to give back
        pacer.settle_tokens(100, 300)  # more than estimated: nothing to give back
        assert pacer.tpm.has_capacity(500)

    anyio.run(main)


def test_settle_tokens_without_tpm_is_harmless() -> None:
    pacer = Pacer(concurrency=4)
    pacer.settle_tokens(600, 100)
    assert pacer.tokens.limit is None


def test_summary_reports_current_pacing() -> None:
    pacer = Pacer(concurrency=16, clock=lambda: 0.0)
    pacer.observe(
        snap(
            limit_requests=500, remaining_requests=400, limit_tokens=90_000, remaining_tokens=80_000
        )
    )
    pacer.rate_limited(1.5)
    summary = pacer.summary()
    assert summary["concurrency_limit"] == 8
    assert summary["rate_limited_seen"] == 1
    assert summary["cooldown_s"] == 1.5
    assert summary["server_rpm"] == 500
    assert summary["server_tpm"] == 90_000


# --- every header format, from a response's headers to a paused pool ------------------


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW_UNIX + seconds_from_now, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.25"}, 0.25),
        ({"Retry-After": http_date(3)}, 3.0),
        ({"retry-after-ms": "700", "Retry-After": "5"}, 0.7),  # ms wins
        (
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "900",
                "x-ratelimit-reset-tokens": "20ms",
            },
            1.5,
        ),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0.5s"}, 60.5),
        ({"x-ratelimit-reset-tokens": "250ms"}, 0.25),  # a 429 with budget left
        ({"X-RateLimit-Remaining-Requests": "0", "X-RateLimit-Reset-Requests": "6m0s"}, 300.0),
    ],
)
def test_every_hint_format_pauses_the_whole_pool(headers: dict[str, str], pause: float) -> None:
    vt = VirtualTime()
    pacer = Pacer(concurrency=8, clock=vt.clock, sleep=vt.sleep)
    done_at: list[float] = []

    async def sender() -> None:
        await pacer.acquire()
        done_at.append(vt.now)

    async def main() -> None:
        await vt.sleep(1.0)
        pacer.observe(parse_ratelimit_headers(headers))
        pacer.rate_limited(retry_after_seconds(headers, NOW_UNIX, rate_limited=True))
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(sender)

    vt.run(main)
    assert min(done_at) == pytest.approx(1.0 + pause)  # 300 s: retry.py's max_wait


def test_429_without_any_hint_does_not_pause_the_pool() -> None:
    assert retry_after_seconds({}, NOW_UNIX, rate_limited=True) is None
    vt = VirtualTime()
    pacer = Pacer(concurrency=8, clock=vt.clock, sleep=vt.sleep)
    pacer.rate_limited(retry_after_seconds({}, NOW_UNIX, rate_limited=True))

    async def main() -> None:
        await pacer.acquire()

    vt.run(main)
    assert vt.now == 0.0 and pacer.concurrency_limit == 4


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
    pacer = Pacer(concurrency=8, clock=vt.clock, sleep=vt.sleep)
    pacer.observe(parse_ratelimit_headers(headers))
    assert pacer.requests.rate == pytest.approx(1.0)
    assert pacer.tokens.limit == 150_000
    done_at: list[float] = []

    async def main() -> None:
        for _ in range(2):
            await pacer.acquire(100)
            done_at.append(vt.now)

    vt.run(main)
    # 3 left, margin 2.2: the first has to wait 0.2 s, the next one 1 s more
    assert done_at == [pytest.approx(0.2), pytest.approx(1.2)]


def test_reset_header_hint_pauses_only_as_long_as_one_request_needs() -> None:
    # OpenAI's reset header is the time until the bucket is *full*: 60 s here, where
    # one request refills in 1 s. The shared pause follows the header account.
    now = [0.0]
    pacer = Pacer(concurrency=8, clock=lambda: now[0])
    pacer.observe(
        parse_ratelimit_headers(
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "60s",
            }
        )
    )
    pacer.rate_limited(60.0, explicit=False)
    pause = pacer.cooldown_until - now[0]
    assert 1.0 <= pause <= 5.0  # one request plus the safety margin, not 60 s
    explicit = Pacer(concurrency=8, clock=lambda: now[0])
    explicit.rate_limited(60.0, explicit=True)  # Retry-After is obeyed as given
    assert explicit.cooldown_until - now[0] == 60.0
