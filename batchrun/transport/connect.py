"""Why no connection could be made: the one mapping from the HTTP stack's connect
failures to `batchrun.errors.EndpointUnreachable`.

httpx-aiohttp turns every aiohttp connection error into ``httpx.ConnectTimeout``
(a refused port and a server that dropped the connection alike; docs/DESIGN.md "HTTP:
httpx's types, aiohttp's pool"), so the type says nothing. What happened is in the
exception chain (``__cause__``/``__context__``): aiohttp's ``ClientConnectorDNSError``,
``ClientConnectorCertificateError``, ``ClientConnectorSSLError`` or
``ClientConnectorError`` carrying the ``OSError``, and with httpx's own transport an
``httpx.ConnectError`` over ``socket.gaierror``, ``ConnectionRefusedError`` or
``ssl.SSLError``. Only failures while connecting count: the request was then never
sent, so nothing can have been billed. A read error after the request went out
(even a TLS one) is not mapped here.

The chat client (`batchrun.transport.client`) and the Files/Batches client
(`batchrun.batch.client`) both ask `unreachable`.

    >>> import socket, httpx
    >>> try:
    ...     raise httpx.ConnectError("x") from socket.gaierror(-2, "Name or service not known")
    ... except httpx.ConnectError as exc:
    ...     unreachable(exc, "api.example.invalid", 443).message
    'cannot resolve api.example.invalid (Name or service not known)'
"""

from __future__ import annotations

import errno
import socket
import ssl

from batchrun.errors import EndpointUnreachable

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


__all__ = ["unreachable"]
