"""Whose answers the response cache may give to whom, in a pool of endpoints. Pure.

The cache keys an answer by where it came from and for whom (`batchrun._cache.store`:
the endpoint's identity, a one-way hash of the credential, the body as sent). In a
pool each endpoint has its own: its identity (``"sim:NAME"`` for a simulated one),
its key, auth style and headers (`batchrun._settings.Endpoint.tenant`), and its own
name for the model (an Azure deployment), so the body it is sent differs too. So:

* an answer is stored under the scope of the endpoint that gave it, with the body
  as that endpoint was sent it (`PoolScopes.store_key`);
* a request may be answered by what any endpoint serving its model could have given
  it (`PoolScopes.lookup_keys`): one key per distinct (identity, tenant, body), so
  endpoint A's answers never serve endpoint B's tenant, while two endpoints with
  the same identity and the same credential (the same key on two names) share.

A pool of one (no ``[endpoints.NAME]``) has the scope a run has always had
(`batchrun._cache.store.api_scope` of ``Settings.endpoint`` and the run's key), so
caches written before pools existed keep answering.

    scopes = PoolScopes(settings.pool(), endpoint_keys(settings))
    candidates = scopes.lookup_keys("gpt-4o", "chat", body)   # [(name, key), ...]
    scopes.store_key("azure", "chat", body)                     # after azure answered
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchrun._apis import APIS
from batchrun._cache.store import api_scope, scoped_key
from batchrun._values import Endpoint


class PoolScopes:
    """The cache scope of each endpoint of a pool, by API."""

    __slots__ = ("_members", "_scopes")

    def __init__(self, pool: Sequence[Endpoint], keys: Mapping[str, str | None]) -> None:
        self._members = {e.name: e for e in pool}
        self._scopes = {
            e.name: {api: api_scope(e.identity, api, e.tenant(keys.get(e.name))) for api in APIS}
            for e in pool
        }

    def scope(self, name: str, api: str) -> bytes:
        """The `batchrun._cache.store.cache_scope` of endpoint ``name``'s answers."""
        return self._scopes[name][api]

    def identity(self, name: str) -> str:
        """Endpoint ``name``'s identity (a line's ``batchrun.endpoint``)."""
        return self._members[name].identity

    def store_key(self, name: str, api: str, body: Mapping[str, Any]) -> bytes:
        """The key an answer endpoint ``name`` gave is kept under: its scope and the
        body as it was sent there (``body`` as the job wrote it)."""
        member = self._members[name]
        return scoped_key(self._scopes[name][api], orjson.dumps(sent_body(member, body)))

    def lookup_keys(self, model: str, api: str, body: Mapping[str, Any]) -> list[tuple[str, bytes]]:
        """(endpoint name, key) under which an answer may serve this request: one per
        distinct key among the endpoints serving ``model``, in pool order."""
        out: list[tuple[str, bytes]] = []
        seen: set[bytes] = set()
        for name, member in self._members.items():
            if not member.serves(model):
                continue
            key = scoped_key(self._scopes[name][api], orjson.dumps(sent_body(member, body)))
            if key not in seen:
                seen.add(key)
                out.append((name, key))
        return out


def sent_body(member: Endpoint, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` as ``member`` is sent it: the model under its name there (the key's
    place in the body kept, so the bytes are what the client sends).

    >>> e = Endpoint("az", "https://h/openai", models=(("gpt-4o", "dep-eu"),))
    >>> sent_body(e, {"model": "gpt-4o", "messages": []})
    {'model': 'dep-eu', 'messages': []}
    """
    model = body.get("model")
    if not isinstance(model, str) or member.model_name(model) == model:
        return body
    return {**body, "model": member.model_name(model)}


__all__ = ["PoolScopes", "sent_body"]
