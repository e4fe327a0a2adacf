"""A row that cannot fit the model's context window is a bad row, found by the scan.

Sent, such a row is refused by the provider (or, under ``--max-cost``, its worst case
blocks the rows after it); found before sending, it is named by file and line like any
bad row, and ``--skip-invalid`` sets it aside in invalid.jsonl. The window of a model
is the ``context_window`` setting's (for that model, or for every model), else the
one genai-prices' table gives; a model neither knows is not checked.

Counting every row's tokens would make the scan several times slower, so a row is
first measured by `batchrun.pacing.tokens.prompt_tokens_at_most` (its bytes, a bound
no tokenizer can exceed); only a row whose bound does not fit is tokenized.

    check = context_check(settings)
    check(Request("r1", {"model": "gpt-4o-mini", "messages": [...]}, 1))   # None: fits
"""

from __future__ import annotations

from collections.abc import Callable

from batchrun.input.sources import RequestCheck
from batchrun.models import Request
from batchrun.pacing.tokens import answer_ceiling, prompt_tokens, prompt_tokens_at_most
from batchrun.settings import Quota, Settings


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
        from batchrun.cost.genai import genai_context_window

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
        ceiling = answer_ceiling(body)
        answer = ceiling[1] if ceiling is not None else 0
        if prompt_tokens_at_most(body) + answer <= window:
            return None  # the bound fits: no need to tokenize
        prompt = prompt_tokens(body)
        if prompt + answer <= window:
            return None
        asked = f" + {ceiling[0]} {ceiling[1]:,}" if ceiling is not None else ""
        return (
            f"{prompt:,} prompt tokens{asked} exceed {model}'s context window of {window:,} tokens"
        )

    return check


__all__ = ["ContextWindows", "context_check"]
