"""Which model a name batchrun cannot price may have meant.

A misspelt model (``gpt-4o-mni``) has no price; sent, it is answered by a relay that
maps it somewhere, or refused after the run has started. Before sending, a model that
no price source knows is compared with the names the price table knows (genai-prices
and the user's price file); only close names count (a `difflib` ratio of 0.75 or
more, and within 0.05 of the best), so a self-hosted model with a name of its own gets
no advice, and costs no question to the endpoint. When there are close names, the
endpoint is asked which models it serves (``GET /models``, once): a model it lists is
no typo, and its own close names are the better advice.

    >>> nearest_models("gpt-4o-mni", ["gpt-4o-mini", "gpt-4.1-mini", "o3-mini"])
    ['gpt-4o-mini']
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchrun._cost.prices import PriceBook

CLOSE = 0.75
"""The least similarity (difflib's ratio, case ignored) of a name offered."""
NEAR_BEST = 0.05
"""Names offered besides the closest must be this close to it."""
SHOWN = 3
ADVISED = 20
"""Models advised on at most: past that many unpriced names, they are a set of the
user's own (a self-hosted fleet, a test), not typos."""


def nearest_models(name: str, names: Iterable[str], n: int = SHOWN) -> list[str]:
    """The known names ``name`` most likely meant (closest first), or []."""
    by_lower: dict[str, str] = {}
    for known in names:
        by_lower.setdefault(known.lower(), known)
    wanted = name.lower()
    if wanted in by_lower:  # only the case differs
        return [by_lower[wanted]] if by_lower[wanted] != name else []
    matcher = difflib.SequenceMatcher(b=wanted)
    scored = []
    for lower, known in by_lower.items():
        matcher.set_seq1(lower)
        if matcher.real_quick_ratio() < CLOSE or matcher.quick_ratio() < CLOSE:
            continue
        ratio = matcher.ratio()
        if ratio >= CLOSE:
            scored.append((ratio, known))
    scored.sort(key=lambda item: (-item[0], item[1]))
    if not scored:
        return []
    best = scored[0][0]
    return [known for ratio, known in scored[:n] if ratio >= best - NEAR_BEST]


def did_you_mean(names: Sequence[str]) -> str:
    """``did you mean 'a' or 'b'?``

    >>> did_you_mean(["a", "b", "c"])
    "did you mean 'a', 'b' or 'c'?"
    """
    quoted = [f"'{n}'" for n in names]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f"did you mean {listed}?"


class ModelAdvice:
    """What to say about the models of a run that have no price: the endpoint's list
    is asked for (``served``, at most once, only when a model has no price)."""

    def __init__(
        self, book: PriceBook, served: Callable[[], list[str] | None] | None = None
    ) -> None:
        self.book = book
        self._served = served
        self._listed: list[str] | None = None
        self._asked = False

    def unpriced(self, models: Iterable[str]) -> list[str]:
        """The models no price source knows, sorted."""
        return sorted(m for m in models if self.book.price_for(m) is None)

    def served(self) -> list[str] | None:
        """The endpoint's models (None: it did not say), asked once."""
        if not self._asked and self._served is not None:
            self._asked = True
            try:
                self._listed = self._served()
            except Exception:  # a courtesy: never the reason a run fails
                self._listed = None
        return self._listed

    def known_names(self) -> list[str]:
        """The price sources' model names: the user's prices, then genai-prices'."""
        from batchrun._cost.genai import model_names

        user = list(self.book.user_prices)
        return user + (model_names() if self.book.use_genai_prices else [])

    def nearest(self, model: str) -> list[str]:
        """The names ``model`` most likely meant ([]: none, or the endpoint serves it):
        the endpoint's close names, else the price table's."""
        table = nearest_models(model, self.known_names())
        if not table:
            return []  # a name of its own: the endpoint is not even asked
        listed = self.served()
        if listed is None:
            return table
        if model in listed:
            return []
        return nearest_models(model, listed) or table

    def described(self, model: str) -> str:
        """``'gpt-4o-mni' (did you mean 'gpt-4o-mini'?)``, or the name alone."""
        close = self.nearest(model)
        return f"{model!r} ({did_you_mean(close)})" if close else repr(model)

    def warnings(self, models: Iterable[str]) -> list[str]:
        """One line per model that has no price, is close to a name that is known,
        and is not listed by the endpoint: probably a typo."""
        out = []
        for model in self.unpriced(models)[:ADVISED]:
            close = self.nearest(model)
            if not close:
                continue  # a name of its own, or one the endpoint serves: no advice
            listed = self.served()
            where = (
                "the endpoint does not list it"
                if listed is not None
                else "no price source knows it"
            )
            out.append(
                f"model {model!r} has no known price and {where}: {did_you_mean(close)} "
                "(its requests are sent as named; their cost shows as unknown)"
            )
        return out


__all__ = ["ModelAdvice", "did_you_mean", "nearest_models"]
