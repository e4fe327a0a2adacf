"""The quality breaker's state: which answers it judges, across processes and modes.

The rule is `batchrun._output.quality.breaker_trips` (a model's unusable share over
``--quality-breaker`` with 95 % confidence, 20 answers at least); this is what it is
applied to. A run is judged on its whole history, never on one process's first
answers: a resumed run, whose first answers are whatever rows happen to be left
(often the ones answered by reuse), is not judged again from scratch.

Judged: every answer *paid for* under the run's current request settings, by model
and category. Earlier processes' answers count: the tally of the run directory keeps
the paid answers (`batchrun._output.tally.Tally.paid_quality`, restored on resume like
every figure of it), and run.json records the part of them that was paid for under
another input or other request options (`not_judged`: before a ``--force`` resume,
those answers say nothing about the requests sent now). Not judged: answers
reused from an identical request of the run or from the response cache, which
repeat an answer already judged.

Every mode feeds it the same way: the online runner and the batch driver `add` each
paid answer once it is written and `judge` after each write; a shard of a Ray run is
an online runner on its own directory, so each shard judges its own history with
the same rule, and a shard that stops stops the run.

The opening judgement: online, answers come back a few at a time, so the breaker
sees the first ones while the rest are still unpaid. Batches run whole and in
parallel, so a batch run whose breaker is on sends each model's first
`OPENING_ANSWERS` rows on their own and submits the rest once they are judged
(`opening`): until the run holds that many judged answers per model, earlier
processes' included. A resumed run that passed it goes straight on.

    >>> from collections import Counter
    >>> breaker = QualityBreaker.resume(
    ...     0.8, QualityCounts({"m": Counter(ok=40, truncated=60)}),
    ...     QualityCounts({"m": Counter(truncated=60)}))  # paid before a --force
    >>> breaker.judged.by_model, breaker.earlier
    ({'m': Counter({'ok': 40})}, 40)
    >>> breaker.judge() is None
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from batchrun._models import Request
from batchrun._output.quality import (
    BREAKER_MIN_ANSWERS,
    QualityAlert,
    QualityCounts,
    Verdict,
    quality_stop,
)

RERUN_HINT = "then rerun with --retry-bad-answers (--quality-breaker 0 turns this check off)"
OPENING_ANSWERS = 50
"""Answers per model a batch run has judged before it submits the rest of its rows:
enough for the rule to stop a run whose answers are nearly all unusable (45 of 50)."""


class QualityBreaker:
    """The answers the quality breaker judges, and its setting.

    ``threshold``: ``--quality-breaker`` (0: off). ``judged``: the paid answers under
    the current request settings, earlier processes' included. ``earlier``: how many
    of them earlier processes wrote. ``not_judged``: the paid answers written under
    other request settings (recorded in run.json, so the next process knows them).
    """

    __slots__ = ("threshold", "min_answers", "judged", "earlier", "not_judged")

    def __init__(
        self,
        threshold: float,
        judged: QualityCounts | None = None,
        *,
        not_judged: QualityCounts | None = None,
        min_answers: int = BREAKER_MIN_ANSWERS,
    ) -> None:
        self.threshold = threshold
        self.min_answers = min_answers
        self.judged = judged if judged is not None else QualityCounts()
        self.earlier = self.judged.answers
        self.not_judged = not_judged if not_judged is not None else QualityCounts()

    @classmethod
    def resume(
        cls, threshold: float, paid: QualityCounts, not_judged: QualityCounts
    ) -> QualityBreaker:
        """The breaker of a run whose directory holds the paid answers ``paid``, of
        which ``not_judged`` were paid for under other request settings."""
        judged = QualityCounts()
        for model, per_model in paid.by_model.items():
            left = per_model - not_judged.by_model.get(model, Counter())
            if left:
                judged.by_model[model] = left
        judged.finish_reasons = paid.finish_reasons - not_judged.finish_reasons
        return cls(threshold, judged, not_judged=not_judged)

    def opening(self, models: int = 1) -> bool:
        """Whether the run is still in its opening judgement: the breaker is on and has
        judged fewer than `OPENING_ANSWERS` answers per model (``models``: how many
        models the input names)."""
        return self.threshold > 0 and self.judged.answers < OPENING_ANSWERS * max(1, models)

    def add(self, verdict: Verdict, model: str) -> None:
        """One answer paid for and written (a reused one is not added)."""
        self.judged.add(verdict, model)

    def judge(
        self,
        overall: QualityCounts | None = None,
        *,
        max_tokens: int | Callable[[], int | None] | None = None,
    ) -> QualityAlert | None:
        """An alert when the rule says stop (None: go on, or the breaker is off).
        ``overall``: every answer of the run (the tally's); ``max_tokens``: the
        requests' (None or 0: none set), or a function giving it, asked only when
        the rule trips; both for the message."""
        if self.threshold <= 0:
            return None
        alert = self._stop(overall, None)
        if alert is None or max_tokens is None:
            return alert
        return self._stop(overall, max_tokens() if callable(max_tokens) else max_tokens)

    def _stop(self, overall: QualityCounts | None, max_tokens: int | None) -> QualityAlert | None:
        return quality_stop(
            self.judged,
            max_tokens=max_tokens or None,
            threshold=self.threshold,
            min_answers=self.min_answers,
            overall=overall,
        )


def stop_note(alert: QualityAlert) -> str:
    """The note a run that the breaker stopped leaves for the user."""
    return f"{alert.message}; {RERUN_HINT}"


def first_max_tokens(requests: Iterable[Request]) -> int:
    """max_tokens (or max_completion_tokens) of the first request; 0: none set. What a
    quality message names when nothing was sent yet (a resumed run judged at start)."""
    first = next(iter(requests), None)
    if first is None:
        return 0
    limit = first.body.get("max_tokens") or first.body.get("max_completion_tokens")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) else 0


__all__ = ["OPENING_ANSWERS", "RERUN_HINT", "QualityBreaker", "first_max_tokens", "stop_note"]
