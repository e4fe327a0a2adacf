"""One request's way to an answer: admission, the attempts, the outcome.

`Sender.process` takes a scheduler `Ticket` (the request, already paced for its first
attempt) through the hooks' admission (the budget), the first attempt bare and the
retries through tenacity (`batchrun._pacing.retry`'s policy), each retry paced again
by the scheduler, and turns the result into an `Outcome` with its attempts, timings
and answer quality. `Breaker` is the pure rule that stops a run whose requests all
fail the same way; a run whose endpoint cannot be connected to at all (DNS, refused,
TLS) before it ever answered stops sooner, by `batchrun._pacing.retry.ends_the_run`,
its rows left pending.

    sender = Sender(client, scheduler, hooks, state, ...)
    outcome = await sender.process(ticket)   # None: never sent (a stop came first)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson

from batchrun._engine.failover import Abandon, Where, routed_attempts
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._ids import body_hash
from batchrun._models import Attempt, BilledUnread, Outcome, Request
from batchrun._output.quality import OK, classify_answer
from batchrun._output.usage import model_of, usage_of
from batchrun._pacing.headers import get_header, parse_ratelimit_headers
from batchrun._pacing.retry import (
    Reachability,
    describe_attempt,
    endpoint_down_note,
    is_retryable,
    make_retrying,
    retry_after_seconds,
    wait_seconds,
)
from batchrun._pacing.scheduler import Scheduler, Stopped, Ticket, last_send, model_of_request
from batchrun._pacing.tokens import answer_ceiling
from batchrun._transport.client import ChatClient, Reply
from batchrun._transport.responses import error_envelope
from batchrun.errors import (
    EndpointUnreachable,
    RateLimited,
    RequestError,
    StopRun,
    UnusableAnswer,
)

if TYPE_CHECKING:
    from batchrun._pacing.pool import Pool

BREAKER_MIN = 16
"""Requests in a row that must exhaust their attempts before the run stops."""

Sleep = Callable[[float], Awaitable[None]]


class Live(Protocol):
    """The figures a sender keeps up to date while the run goes (the engine's
    `batchrun._engine.state.RunFacts`; progress displays and hooks read them)."""

    in_flight: int
    max_tokens: int | None


class Breaker:
    """When request after request runs out of attempts on retryable errors
    (connection refused, timeouts, 5xx), the endpoint is down; when they fail on the
    key, the account or the model (401, 402, 403, 404, insufficient_quota), every
    other row would too. Going on would mark the rest of the input failed; the run
    stops instead, and the rows written as failed come back with --retry-failed.

    >>> b = Breaker(after=2)
    >>> gone = RequestError("no such model", code="model_not_found", status=404)
    >>> b.failed(gone) is None
    True
    >>> b.failed(gone)[:36]
    'stopping: the last 2 requests all fa'
    """

    def __init__(self, after: int) -> None:
        self.after = after
        self._in_a_row = 0

    def answered(self) -> None:
        self._in_a_row = 0

    def failed(self, exc: RequestError) -> str | None:
        """A request failed for good; the message that stops the run, or None."""
        if not (is_retryable(exc) or about_the_endpoint(exc)):
            self._in_a_row = 0
            return None
        self._in_a_row += 1
        if self._in_a_row != self.after:
            return None
        return (
            f"stopping: the last {self.after} requests all failed "
            f"({exc.code}: {exc.message[:120]}); is the endpoint down, or the key, "
            "model or quota wrong? Rerun with --retry-failed once it is fixed"
        )


def about_the_endpoint(exc: RequestError) -> bool:
    """A failure no other row can escape: the key, the permissions, the account's
    credit or quota, a model the endpoint does not serve."""
    return exc.status in (401, 402, 403, 404) or exc.code == "insufficient_quota"


class NoRoom(Exception):
    """The retry of an answer paid for but unreadable was not admitted (the budget has
    no room for it now, or the run is stopping): the row fails with that answer."""

    def __init__(self, billed: RequestError, why: str) -> None:
        super().__init__(why)
        self.billed = billed


def billed_unread(body: dict[str, Any], attempts: int) -> BilledUnread:
    """The `BilledUnread` of ``attempts`` answered with a 200 that could not be read:
    one attempt's worst case is the prompt's tokens (counted offline) and the
    completion ceiling the body sets."""
    from batchrun._pacing.tokens import completion_ceiling, prompt_tokens

    return BilledUnread(attempts, prompt_tokens(body), completion_ceiling(body))


class Sender:
    """Sends requests for one run. Everything it needs is given; what it has to say
    back (a stop, a note) goes through ``stop(reason, note)``."""

    def __init__(
        self,
        client: ChatClient,
        scheduler: Scheduler,
        hooks: RunHooks,
        state: RunState,
        *,
        live: Live,
        stopping: anyio.Event,
        stop: Callable[[str, str | None], None],
        max_attempts: int,
        validator: Any,
        breaker: Breaker,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        sleep: Sleep,
    ) -> None:
        self.client = client
        self.scheduler = scheduler
        self.hooks = hooks
        self.state = state
        self.live = live
        self.stopping = stopping
        self.stop = stop
        self.max_attempts = max_attempts
        self.validator = validator
        self.breaker = breaker
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        self.max_tokens: int | None = None
        """max_tokens of the first request sent (0: none set), for quality messages."""
        self.reach = Reachability()
        """Whether the endpoint has answered yet (`batchrun._pacing.retry.ends_the_run`)."""
        self.pool: Pool | None = None
        """A pool of endpoints (`pooled`): each request goes where its ticket says,
        a retry where `batchrun._engine.failover` says."""
        self.clients: dict[str, ChatClient] = {}
        self.warn: Callable[[str], None] = lambda _: None

    def pooled(
        self, pool: Pool, clients: dict[str, ChatClient], *, warn: Callable[[str], None]
    ) -> None:
        """Send over ``pool`` (each endpoint its own client); ``warn`` says, once, that
        an endpoint was taken out of it."""
        self.pool, self.clients, self.warn = pool, clients, warn

    async def process(self, ticket: Ticket) -> Outcome | None:
        """The outcome of one request, or None when it was not sent after all."""
        req, tokens = ticket.request, ticket.tokens
        account = ticket.account
        scheduler = self.scheduler
        try:
            await self.hooks.admit(self.state, req)
        except (Stopped, StopRun) as exc:
            self._unsent(ticket)  # charged, never sent
            if isinstance(exc, StopRun):
                self.stop(exc.reason, str(exc))
            else:
                self.hooks.after_request(self.state, req, tokens, None)
            return None
        if self.stopping.is_set():
            self._unsent(ticket)
            self.hooks.after_request(self.state, req, tokens, None)
            return None
        body = req.body
        payload = orjson.dumps(body)
        sent_hash = body_hash(payload)
        attempts: list[Attempt] = []
        wire = [0.0]  # seconds on the wire, all attempts
        refusals = [0]  # attempts that could not connect at all
        paced = [True]  # the first attempt was paced by the scheduler
        last_billed: list[RequestError | None] = [None]  # the last attempt, if paid for
        where = Where(ticket.member, account)  # in a pool: where the next attempt goes
        model = "" if ticket.member is None else model_of_request(req)

        def record_failure(exc: BaseException | None) -> None:
            if exc is not None:
                attempts.append(describe_attempt(exc))
            self.hooks.on_retry(self.state, exc)

        async def attempt_once() -> Reply:
            if paced[0]:
                paced[0] = False
            else:
                paid = last_billed[0]
                # a retry left for the resume; but an answer paid for is written (failed
                # with it) so that what it cost is counted
                leave = Abandon() if paid is None else NoRoom(paid, "the run is stopping")
                if self.stopping.is_set():
                    raise leave
                if paid is not None and not self.hooks.readmit(self.state, req):
                    # under --max-cost the retry needs room for another worst case
                    raise NoRoom(paid, "--max-cost leaves no room for another attempt")
                try:
                    if where.member is None:
                        await scheduler.wait_for(where.account, tokens)
                    else:
                        where.member, where.account = await scheduler.wait_for_route(
                            model, tokens, avoid=where.avoid, avoid_until=where.avoid_until
                        )
                except Stopped:
                    raise leave from None
                if self.stopping.is_set():
                    scheduler.release(where.account, ok=False)
                    if where.member is not None:
                        where.member.breaker.abandoned()
                    raise leave
            account = where.account
            member = where.member
            client, sent_body, sent_payload = self.client, body, payload
            if member is not None:
                client = self.clients[member.name]
                where.went(member)
                remote = member.model_name(model)
                if remote != model:  # its name for the model (a deployment, an alias)
                    sent_body = {**body, "model": remote}
                    sent_payload = orjson.dumps(sent_body)
            ok = answered = False
            self.live.in_flight += 1
            sent_at = self.clock()
            number = self.reach.sending()
            try:
                reply = await client.send(sent_body, sent_payload, req.api)
                ok = True
            except RequestError as exc:
                last_billed[0] = exc if exc.billed else None
                answered = exc.status is not None
                if isinstance(exc, EndpointUnreachable) and member is None:
                    refusals[0] += 1
                    self._stop_if_unreachable(exc, number, refusals[0])
                if exc.billed and any(a.billed for a in attempts):
                    # an unreadable answer was paid for once already: do not pay again
                    kept = ", the raw answer is kept" if exc.body is not None else ""
                    final = UnusableAnswer(
                        f"{exc.message} (twice; not retried again{kept})",
                        # too large says what to change; anything else is unreadable
                        code=exc.code if exc.code == "response_too_large" else "unreadable_answer",
                        status=exc.status,
                        headers=exc.headers,
                        body=exc.body,
                        request_id=exc.request_id,
                    )
                    final.billed = True
                    raise final from exc
                now = self.clock()
                snapshot = parse_ratelimit_headers(exc.headers)
                account.observe(snapshot, last_send.get(), now)
                if isinstance(exc, RateLimited):
                    headers = exc.headers
                    account.rate_limited(
                        retry_after_seconds(headers, rate_limited=True),
                        explicit=get_header(headers, "retry-after-ms") is not None
                        or get_header(headers, "retry-after") is not None,
                        tokens=tokens,
                        snapshot=snapshot,
                        now=now,
                    )
                raise
            finally:
                self.reach.landed(number, answered=ok or answered)
                wire[0] += self.clock() - sent_at
                self.live.in_flight -= 1
                scheduler.release(account, ok=ok)
            now = self.clock()
            snapshot = parse_ratelimit_headers(reply.headers)
            account.observe(snapshot, last_send.get(), now)
            account.answered(had_headers=snapshot is not None, now=now)
            if member is not None:
                member.breaker.succeeded()
            return reply

        failed: RequestError | None = None
        try:
            if where.member is None:
                reply = await self._attempts(attempt_once, record_failure)
            else:
                reply = await routed_attempts(
                    self, where, model, tokens, attempt_once, record_failure
                )
        except Abandon:
            self.hooks.after_request(self.state, req, tokens, None)  # gives back its reservation
            return None
        except NoRoom as no_room:
            failed = no_room.billed  # its attempt is in ``attempts`` already
            failed.message += f" (not retried: {no_room})"
        except RequestError as last:
            if isinstance(last, EndpointUnreachable) and not self.reach.reached:
                # never connected, nothing sent: the row stays pending for the rerun
                self.hooks.after_request(self.state, req, tokens, None)
                return None
            attempts.append(describe_attempt(last))
            failed = last
        billed = sum(1 for a in attempts if a.billed) if attempts else 0
        if failed is not None:
            if not billed:
                # (an answer paid for keeps its reservation until its line is counted)
                self.hooks.after_request(self.state, req, tokens, None)
            outcome = self._failure(req, failed, attempts, wire[0], ticket.since, sent_hash)
            if billed:
                self._mark_billed(outcome, body, billed)
            where.mark(outcome)
            return outcome
        self.breaker.answered()
        attempts.append(Attempt(reply.status, "ok"))
        account = where.account
        if tokens:
            usage = usage_of(reply.body)
            account.settle_tokens(
                tokens, None if usage is None else usage.total_tokens, self.clock()
            )
        self.hooks.after_request(self.state, req, tokens, reply.body)
        total = self.clock() - ticket.since
        verdict = classify_answer(reply.body, self.validator, req.api, req.body)
        outcome = Outcome.success(
            req,
            status=reply.status,
            request_id=reply.request_id,
            body=reply.body,
            attempts=attempts,
            latency_s=wire[0],
            ttft_s=reply.ttft_s,
            wait_s=max(0.0, total - wire[0]),
            body_hash=sent_hash,
        )
        outcome.finished_at = self.wall_clock()
        asked = body.get("model")
        if isinstance(asked, str) and asked and model_of(reply.body, None) != asked:
            outcome.asked_model = asked  # what prices an answer naming another
        if billed:
            self._mark_billed(outcome, body, billed)
        if verdict.category != OK:
            outcome.quality = verdict.category
            if verdict.detail:
                outcome.quality_detail = verdict.detail
        where.mark(outcome)
        if self.max_tokens is None:
            ceiling = answer_ceiling(body)
            self.max_tokens = self.live.max_tokens = ceiling[1] if ceiling is not None else 0
        return outcome

    def _unsent(self, ticket: Ticket) -> None:
        """A ticket charged to its account but never sent after all."""
        self.scheduler.release(ticket.account, ok=False)
        if ticket.member is not None:
            ticket.member.breaker.abandoned()

    def _failure(
        self,
        req: Request,
        exc: RequestError,
        attempts: list[Attempt],
        wire: float,
        since: float,
        sent_hash: str,
    ) -> Outcome:
        """The outcome of a request that failed for good (and what the breaker says)."""
        message = self.breaker.failed(exc)
        if message is not None:
            self.stop("endpoint_down", message)
        total = self.clock() - since
        outcome = Outcome.failure(
            req,
            code=exc.code,
            message=exc.message,
            attempts=attempts,
            status=exc.status,
            request_id=exc.request_id,
            body=exc.body if exc.status is not None else None,
            latency_s=wire,
            wait_s=max(0.0, total - wire),
            body_hash=sent_hash,
        )
        outcome.finished_at = self.wall_clock()
        envelope = error_envelope(exc.body)
        if envelope is not None and outcome.error is not None:
            # the envelope's type and param say what to fix; keep them next to code
            outcome.error["type"] = envelope["type"]
            outcome.error["param"] = envelope["param"]
        return outcome

    @staticmethod
    def _mark_billed(outcome: Outcome, body: dict[str, Any], billed: int) -> None:
        """Say on the line that ``billed`` attempts were paid for but unreadable: the
        cost counts them at their worst case, as the model asked for."""
        outcome.billed_unread = billed_unread(body, billed)
        asked = body.get("model")
        if isinstance(asked, str) and asked:
            outcome.asked_model = asked

    def _stop_if_unreachable(self, exc: EndpointUnreachable, number: int, refusals: int) -> None:
        """No connection at all: when `ends_the_run` says so, stop the run (endpoint_down)
        and leave this request pending (`Abandon`); else it is retried as usual."""
        if self.reach.stops(exc, number, refusals=refusals, max_attempts=self.max_attempts):
            self.stop("endpoint_down", endpoint_down_note(exc))
            raise Abandon() from exc

    async def _attempts(
        self,
        attempt_once: Callable[[], Awaitable[Reply]],
        record_failure: Callable[[BaseException | None], None],
    ) -> Reply:
        """The first attempt bare, tenacity (batchrun._pacing.retry's policy) after a failure.

        Most requests succeed at once; building a tenacity controller for each would
        cost ~25 us of CPU a request on the hot path for nothing.
        """
        try:
            return await attempt_once()
        except RequestError as exc:
            if self.max_attempts <= 1 or not is_retryable(exc):
                raise
            first = exc
        record_failure(first)
        # reset headers are the pacer's business (it knows what the next request
        # needs); the retry itself waits only for Retry-After or the backoff
        await self.retry_sleep(wait_seconds(first, 1, use_reset=False))

        def on_retry(state: Any) -> None:
            record_failure(state.outcome.exception() if state.outcome else None)

        retrying = make_retrying(
            self.max_attempts, self.retry_sleep, on_retry, attempts_made=1, use_reset=False
        )
        reply: Reply = await retrying(attempt_once)
        return reply

    async def retry_sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the run is stopping (the retry is left)."""
        if self.stopping.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def wake() -> None:
                await self.stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wake)
            await self.sleep(seconds)
            tg.cancel_scope.cancel()


__all__ = ["BREAKER_MIN", "Breaker", "Live", "Sender", "about_the_endpoint"]
