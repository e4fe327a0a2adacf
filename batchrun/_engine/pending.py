"""Which rows an online run still sends, in input order, lane by lane.

A row is left out when the run directory holds its answer *for the body it has now*
(or its failure for good, unless ``--retry-failed``; an unusable answer is pending
again with ``--retry-bad-answers``), when a pilot did not pick it, or when an answer
is found for it without sending: from the response cache, or from an identical
request of this run (`batchrun._engine.reuse.Reuse`); such answers go straight to the
writer (``deliver``). The rest are requests for the scheduler's lanes: one lane per
model when the input names several, all fed by one read of the input
(`batchrun._pacing.lanes.SharedRead`), else one.

    pending = PendingRows(done, failed, bad=set(), retry_failed=False,
                          selection=None, reuse=None, deliver=writer.deliver)
    lanes = pending.lanes(source, models, accounts, clock)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import orjson

from batchrun._engine.reuse import LOOKUP_BATCH, SEND, Reuse
from batchrun._ids import body_hash_int, id_hash
from batchrun._input.pilot import Selection
from batchrun._input.sources import Source
from batchrun._models import Outcome, Request
from batchrun._output.journal import answered
from batchrun._pacing.lanes import Cursor, SharedRead
from batchrun._pacing.scheduler import Accounts, Clock, Lane

if TYPE_CHECKING:
    from batchrun._pacing.pool import Pool

__all__ = ["PendingRows"]


class PendingRows:
    """The skip rule and the generators over the input (see the module docstring).

    ``done`` / ``failed``: id hash -> body hash of every answer / failure for good in
    the run directory (`batchrun._output.journal.JournalState`).
    """

    def __init__(
        self,
        done: dict[int, int],
        failed: dict[int, int],
        *,
        bad: set[int],
        retry_failed: bool,
        selection: Selection | None,
        reuse: Reuse | None,
        deliver: Callable[[list[Outcome]], None],
    ) -> None:
        self.done = done
        self.failed = failed
        self.bad = bad
        self.retry_failed = retry_failed
        self.selection = selection
        self.reuse = reuse
        self.deliver = deliver
        self.split: SharedRead | None = None
        """The shared read feeding several models' lanes (None: one lane)."""

    # -- the skip rule ----------------------------------------------------------------
    def is_done(self, req: Request) -> bool:
        """Answered for this very body (or failed for good, unless --retry-failed)."""
        h = id_hash(req.custom_id)
        if h not in self.done and h not in self.failed:
            return False  # most rows of a resume's sending pass: no body hash needed
        return self.done_for(h, body_hash_int(orjson.dumps(req.body)))

    def done_for(self, h: int, b: int) -> bool:
        """`is_done` by the id's hash and the body's (`body_hash_int`)."""
        in_done = h in self.done and h not in self.bad
        in_failed = not self.retry_failed and h in self.failed
        return (in_done and answered(self.done, h, b)) or (
            in_failed and answered(self.failed, h, b)
        )

    # -- the lanes --------------------------------------------------------------------
    def lanes(
        self, source: Source, models: set[str], accounts: Accounts | Pool, clock: Clock
    ) -> list[Lane]:
        """One lane per model when the input names several, all fed by one pass over
        the input (a model waiting for its quota never holds up another, and the input
        is read once whatever the number of models), else one."""
        skipping = bool(self.done or self.failed)  # (an empty run skips nothing)
        pending = self._pending(source, skipping)
        if len(models) > 1:
            self.split = SharedRead(
                lambda skip, cursor: pending(skip=skip, cursor=cursor),
                lambda model, start: pending(model, start=start),
                sorted(models),
                accounts,
                clock=clock,
            )
            return list(self.split.lanes)
        only = next(iter(models)) if models else None
        if self.reuse is None and self.selection is None:
            is_done = self.is_done

            def plain() -> Iterator[Request]:  # the common case, kept lean
                for req in source.requests():
                    if not (skipping and is_done(req)):
                        yield req

            return [Lane(plain(), clock, model=only)]
        return [Lane(pending(), clock, model=only)]

    def _pending(self, source: Source, skipping: bool) -> Callable[..., Iterator[Request]]:
        """``pending(model=None, *, start=0, skip=None, cursor=None)``: the requests to
        send, in input order: not done before, in a pilot's selection, and with reuse
        (answers from the cache or from an identical request are written, not sent).
        ``model``: only its requests; ``start``: from that index on; ``skip(model)``:
        leave out a model's requests before deciding anything about them; ``cursor``:
        told each examined request's index (`batchrun._pacing.lanes`)."""
        is_done = self.is_done
        selection = self.selection
        reuse = self.reuse
        deliver = self.deliver

        def pending(
            model: str | None = None,
            *,
            start: int = 0,
            skip: Callable[[str], bool] | None = None,
            cursor: Cursor | None = None,
        ) -> Iterator[Request]:
            waiting: list[Request] = []
            for index, req in enumerate(source.requests()):
                if index < start:
                    continue
                if model is not None or skip is not None:
                    name = req.body.get("model")
                    if model is not None and name != model:
                        continue
                    if skip is not None and skip(name):  # type: ignore[arg-type]
                        continue
                if cursor is not None:
                    cursor.index = index
                wanted = (selection is None or selection.wants(req)) and not (
                    skipping and is_done(req)
                )
                if reuse is None:
                    if wanted:
                        yield req
                    continue
                reuse.note(index, req, wanted=wanted)
                if not wanted:
                    continue
                decision = reuse.consider(index, req)
                if isinstance(decision, Outcome):
                    deliver([decision])
                elif decision == SEND:
                    waiting.append(req)
                    if len(waiting) >= LOOKUP_BATCH:
                        yield from self._send_or_reuse(reuse, waiting)
                        waiting = []
            yield from self._send_or_reuse(reuse, waiting) if reuse is not None else ()

        return pending

    def _send_or_reuse(self, reuse: Reuse, requests: list[Request]) -> Iterator[Request]:
        for req, answer in reuse.cached(requests):
            if answer is None:
                yield req
            else:
                self.deliver([answer])
