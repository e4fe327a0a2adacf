"""Every failure of the HTTP stack, as batchrun's error tree: the one mapping from
httpx, aiohttp (through httpx-aiohttp) and socket exceptions to `batchrun.errors`,
used by the chat client (`batchrun._transport.client`) and the Files/Batches client
(`batchrun._batch.client`), as httpx maps httpcore's exceptions in one table
(``map_httpcore_exceptions``). Each caller raises the result ``from`` the original.

`map_transport_error` reads the exception (and its chain) in this order:

    could not connect at all (DNS, refused, no route, TLS)  -> EndpointUnreachable
    httpx timeout caused by a connection error               -> TransportError
    httpx timeout, TimeoutError                              -> RequestTimeout
    any other httpx error, OSError, aiohttp/asyncio/ssl error -> TransportError
    anything else (a bug, a cancellation)                    -> None: not mapped

Why the chain and not the type: httpx-aiohttp turns every aiohttp connection error
into ``httpx.ConnectTimeout`` (a refused port and a server that dropped the
connection alike; docs/DESIGN.md "HTTP: httpx's types, aiohttp's pool"), so the type
says nothing. What happened is in the exception chain (``__cause__``/``__context__``):
aiohttp's ``ClientConnectorDNSError``, ``ClientConnectorCertificateError``,
``ClientConnectorSSLError`` or ``ClientConnectorError`` carrying the ``OSError``, and
with httpx's own transport an ``httpx.ConnectError`` over ``socket.gaierror``,
``ConnectionRefusedError`` or ``ssl.SSLError``. Only failures while connecting make an
`EndpointUnreachable` (`unreachable`): the request was then never sent, so nothing can
have been billed. A read error after the request went out (even a TLS one) is an
ordinary `TransportError`.

Messages pass through `batchrun._redact.scrub_text`: an exception's text may quote a
URL, and a URL may carry a key.

    >>> import socket, httpx
    >>> try:
    ...     raise httpx.ConnectError("x") from socket.gaierror(-2, "Name or service not known")
    ... except httpx.ConnectError as exc:
    ...     map_transport_error(exc, "api.example.invalid", 443).message
    'cannot resolve api.example.invalid (Name or service not known)'
    >>> map_transport_error(httpx.ReadTimeout("read timed out"), "h", 443).code
    'timeout'
"""

from __future__ import annotations

import errno
import socket
import ssl

import httpx

from batchrun._redact import scrub_text
from batchrun.errors import EndpointUnreachable, RequestError, RequestTimeout, TransportError

NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen) and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _while_connecting(chain: list[BaseException]) -> bool:
    """A failure to connect (never one after the request went out)."""
    for link in chain:
        kind = type(link)
        if kind.__name__ == "ConnectError" and kind.__module__.startswith(("httpx", "httpcore")):
            return True
        if kind.__module__.startswith("aiohttp") and any(
            base.__name__ == "ClientConnectorError" for base in kind.__mro__
        ):
            return True
    return False


FOREIGN_MODULES = ("aiohttp", "httpx", "httpcore", "asyncio", "ssl")
"""Exceptions from these modules that no row of the table names are transport
failures too (aiohttp errors httpx-aiohttp did not translate, say)."""


def map_transport_error(exc: BaseException, host: str, port: int) -> RequestError | None:
    """``exc``, raised while an HTTP exchange with ``host``:``port`` was under way, as
    the `RequestError` it means (the table in the module docstring); None when it is
    no transport failure at all (a bug in batchrun, a cancellation), which the caller
    lets propagate as it is.

        raise map_transport_error(exc, host, port) or exc   # inside ``except``
    """
    if not isinstance(exc, Exception):  # KeyboardInterrupt, a task's cancellation
        return None
    down = unreachable(exc, host, port)
    if down is not None:
        return down
    if isinstance(exc, httpx.TimeoutException):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, TimeoutError):
            # httpx-aiohttp maps every aiohttp.ClientConnectionError (a refusal, a server
            # that disconnected) to ConnectTimeout: name what really happened
            return TransportError(_describe(cause, "connection failed"), code="connection_error")
        return RequestTimeout(_describe(exc, "timed out"), code="timeout")
    if isinstance(exc, TimeoutError):  # an OSError too: this row comes first
        return RequestTimeout(_describe(exc, "timed out"), code="timeout")
    if isinstance(exc, httpx.HTTPError | OSError) or type(exc).__module__.startswith(
        FOREIGN_MODULES
    ):
        return TransportError(_describe(exc, "connection failed"), code="connection_error")
    return None


def _describe(exc: BaseException, fallback: str) -> str:
    text = scrub_text(str(exc).strip())
    return f"{type(exc).__name__}: {text or fallback}"


def unreachable(exc: BaseException, host: str, port: int) -> EndpointUnreachable | None:
    """``exc`` as an `EndpointUnreachable` for ``host``:``port`` when it says the endpoint
    could not be connected to at all (DNS, refused, no route, TLS handshake); None for
    anything else (a reset, a timeout, a read error), which the caller maps as before."""
    chain = _chain(exc)
    if not _while_connecting(chain):
        return None
    for link in chain:
        if isinstance(link, socket.gaierror) or type(link).__name__ == "ClientConnectorDNSError":
            reason = _gai_reason(link)
            return EndpointUnreachable(
                f"cannot resolve {host}" + (f" ({reason})" if reason else ""),
                kind="dns",
                host=host,
                port=port,
            )
        if isinstance(link, ssl.SSLError) and not isinstance(link, ssl.SSLEOFError):
            return EndpointUnreachable(
                _tls_message(link, host, port), kind="tls", host=host, port=port
            )
        if isinstance(link, ConnectionRefusedError) or (
            isinstance(link, OSError) and link.errno == errno.ECONNREFUSED
        ):
            return EndpointUnreachable(
                f"connection refused by {host}:{port}", kind="refused", host=host, port=port
            )
        if isinstance(link, OSError) and link.errno in NO_ROUTE:
            return EndpointUnreachable(
                f"no route to {host}:{port} ({link.strerror or 'network unreachable'})",
                kind="network",
                host=host,
                port=port,
            )
    return None


def _tls_message(exc: ssl.SSLError, host: str, port: int) -> str:
    # aiohttp's own TLS errors wrap the ssl module's, which carries the reason
    inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
    source = inner if isinstance(inner, ssl.SSLError) else exc
    if isinstance(source, ssl.SSLCertVerificationError) or isinstance(
        exc, ssl.SSLCertVerificationError
    ):
        detail = getattr(source, "verify_message", None) or getattr(source, "reason", None)
        return f"TLS: certificate verify failed for {host}" + (f" ({detail})" if detail else "")
    reason = getattr(source, "reason", None)
    # WRONG_VERSION_NUMBER: https:// to a port that speaks plain HTTP
    hint = "; is it an http:// endpoint?" if reason == "WRONG_VERSION_NUMBER" else ""
    return f"TLS: handshake with {host}:{port} failed ({reason or source}{hint})"


def _gai_reason(exc: BaseException) -> str:
    """The resolver's own words ("Name or service not known"), without the errno."""
    for link in _chain(exc):
        if isinstance(link, socket.gaierror) and link.strerror:
            return link.strerror
    return ""


__all__ = ["map_transport_error", "unreachable"]
