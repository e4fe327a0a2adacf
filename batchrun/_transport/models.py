"""Ask an endpoint which models it serves: ``GET {base_url}/models``, OpenAI's shape.

Used only to help with a model name batchrun cannot price (a typo, a fine-tune, a
self-hosted model): the names the endpoint lists are the best "did you mean". It is a
courtesy, never a requirement: a short timeout, and any failure (no such route, a 401,
a relay that lists nothing, a body that is not a list of models) is "unknown", None.

    served_models("http://127.0.0.1:8000/v1", headers={})   # ['llama-3.1-8b', ...] or None
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import orjson

from batchrun._version import __version__

LIST_TIMEOUT_S = 3.0
MAX_LIST_BYTES = 16 * 1024 * 1024


def models_url(base_url: str) -> str:
    """The model list under ``base_url``, query string kept.

    >>> models_url("https://api.openai.com/v1")
    'https://api.openai.com/v1/models'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    return urlunsplit(
        (parts.scheme, parts.netloc, parts.path.rstrip("/") + "/models", parts.query, "")
    )


def served_models(
    base_url: str,
    *,
    headers: Mapping[str, str],
    timeout: float = LIST_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> list[str] | None:
    """The ids of the models the endpoint lists, or None when it will not say.

    ``headers``: the run's own (its auth header included): the list is asked of the
    same endpoint, the same way, as the requests will be."""
    sent = {"accept": "application/json", "user-agent": f"batchrun/{__version__}", **headers}
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            with client.stream("GET", models_url(base_url), headers=sent) as response:
                if response.status_code != 200:
                    return None
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_LIST_BYTES:
                        return None
    except (httpx.HTTPError, ValueError):
        return None
    return model_ids(body)


def model_ids(body: bytes) -> list[str] | None:
    """The ids of an OpenAI model list (``{"data": [{"id": ...}, ...]}``), or of a bare
    list of such objects; None for anything else.

    >>> model_ids(b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}]}')
    ['a', 'b']
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    items = data.get("data") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return None
    ids = [
        item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]
    return ids if ids or not items else None


__all__ = ["LIST_TIMEOUT_S", "model_ids", "models_url", "served_models"]
