"""Each endpoint's circuit breaker, and when a pool has no endpoint left. Pure.

In a pool, an endpoint that keeps failing must stop taking rows while the others
answer them, and be tried again later; one whose key, account or model is wrong
must stop for good, said once. `EndpointBreaker` is that state machine, with the
time given by the caller:

* **closed** (requests go): `TRIP_AFTER` retryable failures in a row (5xx,
  timeouts, connection errors, unusable 200s; a 429 is the quota's business, the
  account paces it) open it. Consecutive failures, not a failure share over a
  window: a hard outage trips within `TRIP_AFTER` requests, and a noisy endpoint
  (20 % random 5xx, each retried elsewhere) almost never does (0.2^5 = 0.03 % a
  request); a share needs a long window to be steady and then reacts slowly. Against
  an endpoint flapping 3 s up / 3 s down at 20 requests a second, 5 in a row send
  187 requests to the dead phases in two minutes (none: 1,200) and keep 73 % of its
  answers; half of the last 20 sends 287 and keeps 65 % (tests/test_pool_breaker.py);
* **open** (no requests) for a cool-down, `COOLDOWN` seconds, doubled after each
  failed probe up to `MAX_COOLDOWN`;
* **half-open**: one request goes (the probe); its success closes the breaker, its
  failure opens it again for the longer cool-down;
* **removed**: 401, 402, 403 or ``insufficient_quota`` take the endpoint out for the
  rest of the run, with one warning naming it ("endpoint d: 401 Unauthorized: taken
  out for the rest of the run"); a 404 takes it out for that model only (a relay
  without that model may serve the others).

The run-level rule (`stranded`): a run stops (``endpoint_down``) only when a model
that still has rows has no endpoint left: every endpoint serving it removed for it,
or open after `DOWN_AFTER_PROBES` failed probes in a row (half a minute of a dead
endpoint, probed with growing pauses).

    >>> from batchrun.errors import ServerError
    >>> b = EndpointBreaker("c", trip_after=2)
    >>> b.failed(ServerError("boom", code="server_error", status=503), now=0.0)
    >>> b.failed(ServerError("boom", code="server_error", status=503), now=0.1)
    >>> b.state, b.admits(now=0.5), b.admits(now=1.2)
    ('open', False, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus

from batchrun._pacing.retry import is_retryable
from batchrun.errors import RateLimited, RequestError

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
REMOVED = "removed"

TRIP_AFTER = 5
"""Retryable failures in a row that open the breaker."""
COOLDOWN = 1.0
"""Seconds an endpoint stays open after it trips, before a probe."""
MAX_COOLDOWN = 30.0
DOWN_AFTER_PROBES = 5
"""Failed probes in a row after which an open endpoint counts as gone for `stranded`
(with the cool-downs 1, 2, 4, 8, 16 s: half a minute of probing a dead endpoint)."""
ENDPOINT_STATUSES = (401, 402, 403, 404)


def endpoint_fault(exc: BaseException) -> bool:
    """A failure about the endpoint, not the row: the key (401), the account's credit
    (402, ``insufficient_quota``), the permissions (403), the model there (404).
    No other endpoint's row escapes it; another endpoint may serve the row."""
    return isinstance(exc, RequestError) and (
        exc.status in ENDPOINT_STATUSES or exc.code == "insufficient_quota"
    )


def fault_name(exc: RequestError) -> str:
    """How a warning names a failure: ``401 Unauthorized``, ``429 insufficient_quota``."""
    if exc.code == "insufficient_quota":
        return f"{exc.status or 429} insufficient_quota"
    try:
        return f"{exc.status} {HTTPStatus(exc.status or 0).phrase}"
    except ValueError:
        return f"{exc.status} {exc.code}"


class EndpointBreaker:
    """One endpoint's breaker (see the module docstring). Feed it every outcome of a
    request sent there (`succeeded`, `failed`) and tell it when one leaves (`sent`);
    ask `admits` before routing a request to it.

    ``trips``: times it opened; ``failed_probes``: probes failed in a row;
    ``warning``: the one line said when it was removed; ``gone_models``: models it
    was removed for (404), the endpoint serving the others."""

    __slots__ = (
        "name",
        "trip_after",
        "cooldown",
        "max_cooldown",
        "state",
        "in_a_row",
        "reopen_at",
        "probing",
        "failed_probes",
        "trips",
        "warning",
        "reason",
        "gone_models",
        "_pause",
    )

    def __init__(
        self,
        name: str,
        *,
        trip_after: int = TRIP_AFTER,
        cooldown: float = COOLDOWN,
        max_cooldown: float = MAX_COOLDOWN,
    ) -> None:
        self.name = name
        self.trip_after = trip_after
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.state = CLOSED
        self.in_a_row = 0
        self.reopen_at = float("-inf")
        self.probing = False
        self.failed_probes = 0
        self.trips = 0
        self.warning: str | None = None
        self.reason: str | None = None
        """What removed it (``401 Unauthorized``)."""
        self.gone_models: set[str] = set()
        self._pause = cooldown

    # -- may a request go? ---------------------------------------------------------------
    def admits(self, now: float, model: str | None = None) -> bool:
        """Whether a request (of ``model``) may be routed here now."""
        if self.removed_for(model):
            return False
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now >= self.reopen_at
        return not self.probing  # half-open: one probe at a time

    def wait(self, now: float) -> float:
        """Seconds until it admits a request again (0: now; inf: never, or when the
        probe in flight comes back)."""
        if self.state == REMOVED:
            return float("inf")
        if self.state == OPEN:
            return max(0.0, self.reopen_at - now)
        if self.state == HALF_OPEN and self.probing:
            return float("inf")
        return 0.0

    def sent(self, now: float) -> None:
        """A request left for this endpoint (after `admits` said yes)."""
        if self.state == OPEN and now >= self.reopen_at:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN:
            self.probing = True

    def abandoned(self) -> None:
        """A request sent here will not be answered (the run stops): a probe frees
        its place."""
        self.probing = False

    # -- what came back ------------------------------------------------------------------
    def succeeded(self) -> None:
        """An answer (or a failure about the request, not the endpoint: it answered)."""
        self.in_a_row = 0
        if self.state in (OPEN, HALF_OPEN):
            self.state = CLOSED
            self.probing = False
            self.failed_probes = 0
            self._pause = self.cooldown

    def failed(self, exc: BaseException, now: float, model: str | None = None) -> str | None:
        """A request sent here failed; the warning to show once when this takes the
        endpoint out for the rest of the run (None otherwise)."""
        if self.state == REMOVED:
            return None
        if endpoint_fault(exc):
            return self._remove(exc, model)  # type: ignore[arg-type]
        if isinstance(exc, RateLimited) or not is_retryable(exc):
            # a 429 is the account's to pace; a 400 is the row's: the endpoint answered
            self.succeeded()
            return None
        self.in_a_row += 1
        if self.state == HALF_OPEN and self.probing:
            self.probing = False
            self.failed_probes += 1
            self._open(now, longer=True)
        elif self.state == CLOSED and self.in_a_row >= self.trip_after:
            self._open(now, longer=False)
        return None

    def _open(self, now: float, *, longer: bool) -> None:
        if longer:
            self._pause = min(self.max_cooldown, self._pause * 2)
        else:
            self.trips += 1
        self.state = OPEN
        self.reopen_at = now + self._pause

    def _remove(self, exc: RequestError, model: str | None) -> str | None:
        if exc.status == 404 and exc.code != "insufficient_quota" and model is not None:
            if model in self.gone_models:
                return None
            self.gone_models.add(model)
            return (
                f"endpoint {self.name}: {fault_name(exc)} for the model {model}: taken out "
                f"for {model} for the rest of the run"
            )
        self.state = REMOVED
        self.probing = False
        self.reason = fault_name(exc)
        self.warning = f"endpoint {self.name}: {self.reason}: taken out for the rest of the run"
        return self.warning

    # -- the run's view ------------------------------------------------------------------
    def removed_for(self, model: str | None = None) -> bool:
        """Out for the rest of the run (for ``model``: also a 404 for it)."""
        return self.state == REMOVED or (model is not None and model in self.gone_models)

    def gone(self, model: str | None = None) -> bool:
        """Out of the pool for ``model``: removed, or open after `DOWN_AFTER_PROBES`
        failed probes in a row."""
        if self.removed_for(model):
            return True
        return self.state in (OPEN, HALF_OPEN) and self.failed_probes >= DOWN_AFTER_PROBES

    def why(self) -> str:
        """How `stop_note` describes it."""
        if self.reason is not None:
            return self.reason
        if self.gone_models:
            return "its model is not found there (404)"
        return f"failing, {self.failed_probes} probes failed in a row"


def stranded(
    models_left: Iterable[str],
    serving: Mapping[str, Sequence[str]],
    breakers: Mapping[str, EndpointBreaker],
) -> dict[str, list[str]]:
    """model -> the endpoints that served it, for each model that still has rows and
    no endpoint left (every one serving it `EndpointBreaker.gone` for it); empty: go
    on. ``serving``: model -> names of the endpoints serving it (a model no endpoint
    serves was refused before the run started).

    >>> gone = EndpointBreaker("d")
    >>> _ = gone.failed(RequestError("no", code="invalid_api_key", status=401), now=0.0)
    >>> stranded(["m"], {"m": ["d"]}, {"d": gone}), stranded(["m"], {"m": ["d", "e"]},
    ...     {"d": gone, "e": EndpointBreaker("e")})
    ({'m': ['d']}, {})
    """
    out: dict[str, list[str]] = {}
    for model in models_left:
        names = list(serving.get(model, ()))
        if all(breakers[name].gone(model) for name in names):
            out[model] = names
    return out


def stop_note(stuck: Mapping[str, Sequence[str]], breakers: Mapping[str, EndpointBreaker]) -> str:
    """The note of a run `stranded` stops: which model, which endpoints, why.

    >>> gone = EndpointBreaker("d")
    >>> _ = gone.failed(RequestError("no", code="invalid_api_key", status=401), now=0.0)
    >>> stop_note({"m": ["d"]}, {"d": gone})
    'stopping: no endpoint is left for m (d: 401 Unauthorized); the rows left stay pending'
    """
    parts = [
        f"{model} (" + "; ".join(f"{n}: {breakers[n].why()}" for n in names) + ")"
        for model, names in stuck.items()
    ]
    return f"stopping: no endpoint is left for {', '.join(parts)}; the rows left stay pending"


__all__ = [
    "CLOSED",
    "DOWN_AFTER_PROBES",
    "HALF_OPEN",
    "OPEN",
    "REMOVED",
    "TRIP_AFTER",
    "EndpointBreaker",
    "endpoint_fault",
    "fault_name",
    "stop_note",
    "stranded",
]
