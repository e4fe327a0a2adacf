"""Which endpoint answered, and for whom: the identities a run records and keys by. Pure.

An answer is worth reusing only where it came from. A run directory resumed against
another endpoint, or a response cache shared by two API keys, must never hand one
endpoint's (or one tenant's) answers out as another's. Two small identities say
which is which, and neither holds a secret:

* `endpoint_identity`: ``"sim"`` for the built-in simulator, whatever loopback port
  it happens to listen on in this process (``"sim:NAME"`` for each simulated
  endpoint of a pool, `sim_identity`); for a real URL its normalised
  ``scheme://host[:port]/path`` (lower-case scheme and host, no default port, no
  trailing ``/``, no query, no credentials). Every result line records it, run.json
  and the resume fingerprint record it, and the response cache keys by it. Whether
  an answer is simulated is read from here, never from its body;
* `credential_identity`: a one-way hash of who is asking (the key, the auth style
  and header, every ``-H`` header: organisation, project, a proxy's token). The
  cache keys by it so that one tenant's answers are never served to another; it is
  never written anywhere, and cannot be turned back into the key.

Credentials written into the URL itself (``https://user:pw@host/v1``, ``?key=...``)
are refused (`url_credentials`): they would land in run.json, error messages and
logs, and a key belongs in the environment.

    >>> endpoint_identity("HTTPS://API.openai.com:443/v1/")
    'https://api.openai.com/v1'
    >>> endpoint_identity("sim")
    'sim'
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from batchrun._redact import looks_like_key

SIM = "sim"
"""The identity (and the ``base_url``) of the built-in simulator."""

TENANT_BYTES = 16
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SECRET_PARAM_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "sig")
_SECRET_PARAMS = frozenset({"code", "credential", "credentials", "access_token"})


def endpoint_identity(base_url: str) -> str:
    """Where answers come from, as recorded with them (see the module docstring).

    >>> endpoint_identity("http://127.0.0.1:8000/v1?api-version=2024-10-21")
    'http://127.0.0.1:8000/v1'
    >>> endpoint_identity("https://user:pw@Example.com/openai/")
    'https://example.com/openai'
    """
    if base_url == SIM:
        return SIM
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: keep what was written
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host += f":{port}"
    return urlunsplit((scheme, host, parts.path.rstrip("/"), "", ""))


def sim_identity(name: str) -> str:
    """The identity of a pool's simulated endpoint ``name`` (``base_url = "sim"`` in
    ``[endpoints.NAME]``): each has a simulator of its own, so two of them are two
    endpoints to account for, and both are simulated.

    >>> sim_identity("fast"), is_simulated(sim_identity("fast"))
    ('sim:fast', True)
    """
    return f"{SIM}:{name}"


def is_simulated(identity: str | None) -> bool:
    """Whether answers of this identity come from a simulator (a real URL's identity
    always starts with its scheme)."""
    return identity is not None and (identity == SIM or identity.startswith(SIM + ":"))


def url_credentials(base_url: str) -> str | None:
    """What in ``base_url`` is a credential (``user:password@``, a query parameter
    such as ``?key=``), described without its value; None when there is none.

    >>> url_credentials("http://user:pw@host/v1"), url_credentials("https://h/v1?api-key=x")
    ('a user name or password (user:password@)', "the query parameter 'api-key'")
    >>> url_credentials("https://h/openai?api-version=2024-10-21") is None
    True
    """
    if base_url == SIM:
        return None
    parts = urlsplit(base_url)
    if parts.username is not None or parts.password is not None:
        return "a user name or password (user:password@)"
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        lowered = name.lower()
        if lowered == "api-version":
            continue
        if (
            lowered in _SECRET_PARAMS
            or any(word in lowered for word in _SECRET_PARAM_WORDS)
            or looks_like_key(value)
        ):
            return f"the query parameter {name!r}"
    return None


def credential_identity(
    api_key: str | None,
    *,
    auth: str = "bearer",
    auth_header: str = "Authorization",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Who is asking, as a one-way 128-bit hash: the key as it is presented (auth
    style and header) and every extra header (names case-folded, order ignored).
    Every ``-H`` header counts, not only those named like credentials: a header is
    part of what the server sees (an organisation, a project, a proxy's token, a
    routing hint), and a cache that guessed which ones matter could serve one
    tenant's answer to another. With ``auth = "none"`` the key is not sent, so it
    is not part of the identity.

    >>> a = credential_identity("sk-a")
    >>> a == credential_identity("sk-a") != credential_identity("sk-b")
    True
    >>> credential_identity("sk-a", headers=[("OpenAI-Project", "p1")]) == a
    False
    """
    sent_key = "" if auth == "none" or not api_key else api_key
    digest = blake2b(digest_size=TENANT_BYTES, person=b"batchrun-tenant")
    for part in (auth, auth_header.lower(), sent_key):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    for name, value in sorted((n.lower(), v) for n, v in headers):
        digest.update(name.encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(value.encode("utf-8", "surrogatepass") + b"\x00")
    return digest.digest()


__all__ = [
    "SIM",
    "credential_identity",
    "endpoint_identity",
    "is_simulated",
    "sim_identity",
    "url_credentials",
]
