"""One request's attempts over a pool of endpoints: failover and the breakers.

In a pool (`batchrun._pacing.pool`), a request's first attempt goes where the
scheduler routed it (the endpoint that could take it soonest). When an attempt
fails, the endpoint's breaker hears of it (`EndpointBreaker.failed`: a 401, 402,
403 or ``insufficient_quota`` takes the endpoint out for the run, said once through
``warn``; five retryable failures in a row open it for a cool-down), and
`batchrun._pacing.routing.retry_route` says whether the next attempt moves: to
another endpoint serving the model when one can take it no later (after a 429:
sooner), else it may go back after its back-off. Either way the retry is routed
when it may go (`Scheduler.wait_for_route`: the soonest endpoint then, the one it
failed on left out when it moved), so it never waits on a cooling endpoint while
another has room. Every attempt, wherever it went, counts against the
same ``--max-attempts``. When no endpoint is left for the request's model
(`batchrun._pacing.circuit.stranded`) the run stops (``endpoint_down``) and the
request stays pending for a rerun.

    reply = await routed_attempts(sender, where, model, tokens, attempt_once, record)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchrun._models import Outcome
from batchrun._pacing.circuit import stop_note
from batchrun._pacing.retry import is_retryable, wait_seconds
from batchrun._pacing.routing import retry_route
from batchrun.errors import RequestError

if TYPE_CHECKING:
    from batchrun._engine.attempt import Sender
    from batchrun._pacing.account import ModelAccount
    from batchrun._pacing.pool import Member
    from batchrun._transport.client import Reply


class Abandon(Exception):
    """A retry that would start after a stop was requested: leave it for the resume."""


@dataclass(slots=True)
class Where:
    """Where a request's next attempt goes (``member`` None: the run's one
    endpoint), the account it is paced by, and the endpoints its attempts went to."""

    member: Member | None
    account: ModelAccount
    avoid: str | None = None
    """The endpoint the retry just failed on..."""
    avoid_until: float = float("inf")
    """...and when it may go back there (inf: only when no other serves the model)."""
    route: list[str] | None = None
    """The endpoints its attempts went to (None until the first: one endpoint's
    requests, nearly all, never allocate it)."""
    identities: dict[str, str] | None = None

    def went(self, member: Member) -> None:
        """An attempt goes to ``member``."""
        if self.route is None or self.identities is None:
            self.route, self.identities = [], {}
        self.route.append(member.name)
        self.identities[member.name] = member.identity

    def mark(self, outcome: Outcome) -> None:
        """Name on ``outcome`` the endpoints its attempts went to and the one that
        answered last (a pool's; a run with one endpoint: nothing to add)."""
        if self.member is None or not self.route or self.identities is None:
            return
        outcome.route = list(self.route)
        outcome.endpoint = self.identities.get(self.route[-1], self.route[-1])


async def routed_attempts(
    sender: Sender,
    where: Where,
    model: str,
    tokens: int,
    attempt_once: Callable[[], Awaitable[Reply]],
    record_failure: Callable[[BaseException | None], None],
) -> Reply:
    """The attempts of one request over the pool (see the module docstring);
    ``attempt_once`` sends to ``where.member`` (pacing a retry there first)."""
    pool = sender.pool
    assert pool is not None
    made = 0
    while True:
        member = where.member
        assert member is not None
        try:
            return await attempt_once()
        except RequestError as exc:
            made += 1
            now = sender.clock()
            warning = member.breaker.failed(exc, now, model)
            if warning is not None:
                sender.warn(warning)
            stuck = pool.stranded([model])
            if stuck:
                sender.stop("endpoint_down", stop_note(stuck, pool.breakers))
                if not exc.billed:
                    raise Abandon() from exc  # left pending for the rerun
                raise
            wait_here = wait_seconds(exc, made, use_reset=False) if is_retryable(exc) else 0.0
            retry = retry_route(
                member.name,
                exc,
                pool.candidates(model, tokens, now),
                wait_here=wait_here,
                attempts=made,
                max_attempts=sender.max_attempts,
            )
            if retry is None:
                raise
            record_failure(exc)
            # the retry is routed again when it may go (the soonest endpoint then,
            # never bound to one cooling down): back to this one only after its
            # back-off (its Retry-After), elsewhere as soon as there is room
            where.avoid = member.name
            where.avoid_until = float("inf") if retry.moved else now + wait_here


__all__ = ["Abandon", "Where", "routed_attempts"]
