"""A row that cannot fit the model's context window is a bad row, found by the scan.

Sent, such a row is refused by the provider (or, under ``--max-cost``, its worst case
blocks the rows after it); found before sending, it is named by file and line like any
bad row, and ``--skip-invalid`` sets it aside in invalid.jsonl. The window of a model
is the ``context_window`` setting's (for that model, or for every model), else the
one genai-prices' table gives; a model neither knows is not checked. An embeddings
request's inputs are checked one by one: an embedding model's window is per input.

Counting every row's tokens would make the scan several times slower, so a row is
first measured by its JSON's length (one C call: `_json_bound`), then by
`batchrun._pacing.tokens.prompt_tokens_at_most` (its texts' bytes, a bound no
tokenizer can exceed); only a row whose bounds do not fit is tokenized.

    check = context_check(settings)
    check(Request("r1", {"model": "gpt-4o-mini", "messages": [...]}, 1))   # None: fits
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import orjson

from batchrun._apis import EMBEDDINGS
from batchrun._input.sources import RequestCheck
from batchrun._models import Request
from batchrun._pacing.tokens import (
    REPLY_PRIMING,
    answer_ceiling,
    embedding_input_sizes,
    embedding_input_tokens,
    prompt_tokens,
    prompt_tokens_at_most,
)
from batchrun._settings import Settings
from batchrun._values import Quota


class ContextWindows:
    """Model -> context window (None: unknown), looked up once per model."""

    __slots__ = ("given", "table", "known")

    def __init__(self, given: Quota, table: Callable[[str], int | None] | None = None) -> None:
        self.given = given
        """The user's windows (the ``context_window`` setting)."""
        self.table = table
        """Windows the user did not give: genai-prices' by default."""
        self.known: dict[str, int | None] = {}
        """The windows looked up so far (None: no window known)."""

    def window(self, model: str) -> int | None:
        try:
            return self.known[model]
        except KeyError:
            pass
        given = self.given.for_model(model)
        if given is not None:
            found: int | None = int(given)
        else:
            found = self.table(model) if self.table is not None else None
        self.known[model] = found
        return found


def context_check(settings: Settings, windows: ContextWindows | None = None) -> RequestCheck:
    """The check of a run's requests against their model's context window."""
    if windows is None:
        from batchrun._cost.genai import genai_context_window

        windows = ContextWindows(settings.context_window, genai_context_window)
    known = windows.known
    window_of = windows.window

    def check(req: Request) -> str | None:
        body = req.body
        model = body.get("model")
        if type(model) is not str:
            return None
        window = known[model] if model in known else window_of(model)
        if window is None:
            return None
        if req.api == EMBEDDINGS:
            return _inputs_over(body, model, window)
        ceiling = answer_ceiling(body)
        answer = ceiling[1] if ceiling is not None else 0
        if _json_bound(body) + answer <= window:
            return None  # (nearly every row: one C call and a few lines)
        if prompt_tokens_at_most(body, req.api) + answer <= window:
            return None  # the bound fits: no need to tokenize
        prompt = prompt_tokens(body, api=req.api)
        if prompt + answer <= window:
            return None
        asked = f" + {ceiling[0]} {ceiling[1]:,}" if ceiling is not None else ""
        return (
            f"{prompt:,} prompt tokens{asked} exceed {model}'s context window of {window:,} tokens"
        )

    return check


def _json_bound(body: dict[str, Any]) -> int:
    """A bound on a chat or Responses body's prompt tokens from its JSON's length alone:
    a token is at least one byte, the JSON holds every text's UTF-8 bytes and more
    than the few tokens each message adds, and a value counted as its ``str()`` is at
    most twice its JSON. Images are not counted by their bytes: a body whose JSON
    says ``image`` anywhere (or is not JSON) gets no bound here.

    >>> _json_bound({"messages": [{"role": "user", "content": "hi"}]})
    93
    >>> image = {"type": "image_url", "image_url": {"url": "https://x/a.png"}}
    >>> _json_bound({"messages": [{"role": "user", "content": [image]}]}) == sys.maxsize
    True
    """
    try:
        payload = orjson.dumps(body)
    except TypeError:
        return sys.maxsize
    if b"image" in payload:
        return sys.maxsize
    return 2 * len(payload) + REPLY_PRIMING


def _inputs_over(body: dict[str, Any], model: str, window: int) -> str | None:
    """An embeddings body: each input is held to the model's limit on its own (an
    embedding model's window is per input: 8,192 tokens for OpenAI's)."""
    if all(size <= window for size in embedding_input_sizes(body)):
        return None  # the bound fits: no need to tokenize
    counts = embedding_input_tokens(body)
    for index, count in enumerate(counts):
        if count > window:
            which = "the input" if len(counts) == 1 else f"input[{index}]"
            return (
                f"{which} has {count:,} tokens, over {model}'s limit of {window:,} tokens an input"
            )
    return None


__all__ = ["ContextWindows", "context_check"]
