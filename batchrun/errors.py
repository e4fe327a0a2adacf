"""Every error batchrun raises, in one tree.

    BatchrunError
    ├── ConfigError          bad option, job file or price file (before anything is sent)
    │   ├── JobFileError     a job file's problems, one a line (batchrun._jobs.jobfile)
    │   └── MissingInput     no input named at all (the command line: a usage error, exit 2)
    ├── InputError           bad request/dataset file; names the file and line/row
    ├── RunDirError          run directory (or a file a run writes) unusable, or the
    │   │                    directory was started with other settings
    │   ├── LeaseHeld        a run on object storage is held by another live owner
    │   ├── LeaseLost        this process's lease was taken over: it stops writing
    │   └── SegmentTaken     a segment number is already committed by another writer
    ├── BatchApiError        a Files/Batches API call failed (after its retries)
    │   └── CreateUnknown    a create whose answer was lost: the batch may exist
    ├── StopRun              an admission strategy stops the run cleanly (it can resume)
    │   └── BudgetExceeded   --max-cost reached
    └── RequestError         one HTTP attempt failed
        ├── RetryableError   worth another attempt
        │   ├── TransportError   connection refused/reset, read error
        │   │   └── EndpointUnreachable  no connection at all: the name does not
        │   │                            resolve, the port refuses, TLS fails
        │   │                            (``kind``); before the endpoint has ever
        │   │                            answered, the run stops on it
        │   ├── RequestTimeout   no answer (or no next stream chunk) in time
        │   ├── RateLimited      HTTP 429
        │   ├── ServerError      HTTP 408, 409, 5xx
        │   └── BadResponse      200 that is not a usable completion (torn stream,
        │                        error object inside 200, non-JSON body)
        └── FinalError       retrying cannot help
            ├── ClientError      other 4xx (400, 401, 403, 404, 422, ...)
            └── UnusableAnswer   a billed answer that came back unreadable twice

Beside the tree, not under it (so ``except Exception`` never swallows them): once a
run that a signal stopped has drained and written everything, `batchrun.run` raises
``KeyboardInterrupt`` (Ctrl-C, a notebook's interrupt) or ``SystemExit(143)`` (SIGTERM)
with the `Run` as ``.run`` (`interrupted`). Nothing else leaves the public API: a
failure of a run that has started (the disk fills up, the endpoint goes down) ends it
with a status rather than an exception, and `batchrun.run` returns that `Run`.

Lower-level exceptions are mapped onto this tree in one place each, with
``raise ... from exc``: the HTTP stack's (httpx, aiohttp, OSError on a socket) in
`batchrun._transport.connect.map_transport_error`, an HTTP status in
`batchrun._transport.responses.error_for_status`; the chat client and the
Files/Batches client both use them, and the same retry policy
(`batchrun._pacing.retry`). A Files/Batches call that fails for good is a
`BatchApiError` raised from its last `RequestError`. The CLI turns the non-request
errors into one-line messages; request errors end up in errors.jsonl.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from batchrun._api import Run


class BatchrunError(Exception):
    """Base of everything batchrun raises on purpose."""


class ConfigError(BatchrunError):
    """An option, job file or price file is invalid."""


class MissingInput(ConfigError):
    """No input was named: no INPUT argument, no ``[input] path`` in the job file, no
    rows given in Python. The command line reports it as a usage error (exit 2)."""


class InputError(BatchrunError):
    """An input row is invalid. The message names the file and line (or row)."""

    def __init__(self, path: str, where: str, reason: str) -> None:
        self.path = path
        self.where = where
        self.reason = reason
        # file-level problems (where "0") name no fake "line 0"; rows the caller held
        # in memory have no file (path ""): ``where`` names the caller's row
        if not path:
            super().__init__(f"{where}: {reason}")
        else:
            super().__init__(f"{path}: {reason}" if where == "0" else f"{path}:{where}: {reason}")

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, str]]:
        # rebuilt from its parts when pickled (a shard's check, raised in a Ray task)
        return (InputError, (self.path, self.where, self.reason))


class RunDirError(BatchrunError):
    """The run directory cannot be used (not writable, or started differently)."""


class LeaseHeld(RunDirError):
    """Another owner holds the lease of a run on object storage, and it has not expired
    (`batchrun._output.runlease`): ``owner`` names it, ``expires_in`` says when it may be
    taken over."""

    def __init__(self, what: str, owner: str, expires_in: float) -> None:
        self.owner = owner
        self.expires_in = expires_in
        super().__init__(
            f"{what} is held by {owner} (its lease expires in {max(0.0, expires_in):.0f} s "
            "unless renewed; it is taken over only once expired)"
        )


class LeaseLost(RunDirError):
    """This process's lease was taken over after it expired: it must stop writing."""

    def __init__(self, what: str, owner: str) -> None:
        self.owner = owner
        super().__init__(f"{what}: the lease was taken over by {owner}; this process stops")


class SegmentTaken(RunDirError):
    """A segment number is already committed (`batchrun._output.segments`): another
    writer works on the same shard, and this one must stop."""

    def __init__(self, key: str, owner: str) -> None:
        self.key = key
        self.owner = owner
        super().__init__(f"{key}: segment already committed by {owner}")


class BatchApiError(BatchrunError):
    """A Files/Batches API call failed for good, after its retries. ``retryable``: it
    may work later (the provider was down, busy, rate limiting); else the call itself
    was refused (a key, a quota, a 4xx). ``__cause__`` is the last attempt's
    `RequestError`."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        unreachable: EndpointUnreachable | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.retry_after = retry_after
        """Seconds the provider asked us to wait (Retry-After), if it said."""
        self.unreachable = unreachable
        """Set when the endpoint could not be connected to at all and has not answered
        yet (`batchrun._pacing.retry.ends_the_run`): the run stops on it."""
        self.retryable = retryable
        """What `batchrun._pacing.retry.is_retryable` said of the last attempt."""


class CreateUnknown(BatchApiError):
    """A create got no answer we can trust (lost connection, timeout, unreadable
    answer, 408/409/5xx): the batch may exist. The run looks for it by its metadata
    before it may create again (`batchrun._batch.submit`); it never leaves a run."""


class StopRun(BatchrunError):
    """Raised by an admission strategy (a hook's ``admit``): stop sending, as a Ctrl-C
    would, for ``reason`` (the run's status says why; it can resume)."""

    reason = "stopped"


class BudgetExceeded(StopRun):
    """The --max-cost cap would be crossed by the next request."""

    reason = "budget"


class RequestError(BatchrunError):
    """One attempt at one request failed.

    ``status`` is the HTTP status (None when no response arrived), ``headers`` the
    response headers (used for Retry-After), ``body`` the parsed response body when
    there was one, ``code`` a short machine-readable reason.
    """

    retryable = False
    billed = False
    """True when the server probably charged for this attempt (a 200 we could not
    read, or one over --max-response-bytes): such an attempt is retried once at most,
    and counts against --max-cost at its request's worst case."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.headers: Mapping[str, str] = headers or {}
        self.body = body
        self.request_id = request_id


class RetryableError(RequestError):
    retryable = True


class TransportError(RetryableError):
    pass


UnreachableKind = Literal["dns", "refused", "network", "tls"]


class EndpointUnreachable(TransportError):
    """No connection could be made, so nothing was sent: ``kind`` says why ("dns": the
    host name does not resolve, "refused": nothing listens on the port, "network": no
    route to the host, "tls": the TLS handshake failed, e.g. a certificate that does
    not verify); ``host`` and ``port`` name the endpoint. Retryable like any transport
    error once the endpoint has answered in this run; before that, the run stops on it
    (`batchrun._pacing.retry.ends_the_run`).

        >>> EndpointUnreachable("cannot resolve api.example.invalid", kind="dns",
        ...                     host="api.example.invalid", port=443).code
        'dns_error'
    """

    CODES: Mapping[str, str] = {
        "dns": "dns_error",
        "refused": "connection_refused",
        "network": "network_unreachable",
        "tls": "tls_error",
    }

    def __init__(self, message: str, *, kind: UnreachableKind, host: str, port: int) -> None:
        super().__init__(message, code=self.CODES[kind])
        self.kind: UnreachableKind = kind
        self.host = host
        self.port = port


class RequestTimeout(RetryableError):
    pass


class RateLimited(RetryableError):
    pass


class ServerError(RetryableError):
    pass


class BadResponse(RetryableError):
    pass


class FinalError(RequestError):
    retryable = False


class ClientError(FinalError):
    pass


class UnusableAnswer(FinalError):
    """A second billed attempt came back unreadable: stop paying for this row."""


def interrupted(run: Run, *, terminated: bool = False) -> KeyboardInterrupt | SystemExit:
    """What `batchrun.run` (and `run_job`) raise once a run that a signal stopped has
    drained (what was in flight is written, the rest is pending), so the caller stops
    too instead of going on with part of the rows: a ``KeyboardInterrupt`` for Ctrl-C
    or a notebook's interrupt, ``SystemExit(143)`` for SIGTERM (the command line's exit
    status). ``.run`` is the `Run`; calling again resumes it.

    Plain ``KeyboardInterrupt``, not a subclass: Python ends a script that does not catch
    exactly KeyboardInterrupt by SIGINT, which is how a shell loop running it learns to
    stop too (a subclass would exit with status 1, and the loop would go on).

        try:
            run = batchrun.run(rows, "runs/a", model="gpt-4o-mini", prompt="{text}")
        except KeyboardInterrupt as stopped:
            print(stopped.run.summary["requests"])
            raise
    """
    requests = run.summary.get("requests") or {}
    done, total = requests.get("succeeded", 0), requests.get("total", 0)
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    message = (
        f"{run.run_dir}: {how}; {done:,} of {total:,} rows answered and written, the same "
        "call resumes it (this exception's .run is the Run)"
    )
    exc: KeyboardInterrupt | SystemExit
    if terminated:
        exc = SystemExit(143)
        exc.add_note(message)
    else:
        exc = KeyboardInterrupt(message)
    exc.run = run  # type: ignore[union-attr]
    return exc


class JobFileError(ConfigError):
    """A job file has problems; ``problems`` lists them, ``str()`` shows one a line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))
