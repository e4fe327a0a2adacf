"""Group commit: the online lane's finished outcomes, written a few loop turns' worth
at a time.

Workers hand each finished outcome to `GroupCommit.deliver` and go on; one writer task
(`GroupCommit.run`) waits for the first, lets the event loop deliver the answers that
are already in (up to `GROUP_COMMIT_TURNS` turns or `GROUP_COMMIT_LINES` lines), and
writes them in one go through the run's `batchrun._engine.commit.Committer`: written,
then counted, then the hooks told. Nothing is counted before its write returned; a
failed write stops the run at once (what is in flight could not be kept).

    commit = GroupCommit(committer, written=after)
    commit.deliver([outcome]); commit.close()      # from the workers
    await commit.run(run)                           # the writer task
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from batchrun._engine.commit import Committer
from batchrun._engine.stops import StopReason
from batchrun._models import Outcome
from batchrun.errors import RunDirError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["GROUP_COMMIT_LINES", "GROUP_COMMIT_TURNS", "GroupCommit"]

GROUP_COMMIT_LINES = 256
GROUP_COMMIT_TURNS = 4


class GroupCommit:
    """The outbox and its writer (see the module docstring). ``written(batch)`` runs
    after each write (followers of identical requests, the response cache, the quality
    breaker); ``failed()`` after a failed one (cut the drain short)."""

    __slots__ = ("committer", "written", "failed", "_outbox", "_ready", "_closed")

    def __init__(
        self,
        committer: Committer,
        *,
        written: Callable[[list[Outcome]], Awaitable[None]],
        failed: Callable[[], None],
    ) -> None:
        self.committer = committer
        self.written = written
        self.failed = failed
        self._outbox: list[Outcome] = []
        self._ready = anyio.Event()
        self._closed = False

    def deliver(self, outcomes: list[Outcome]) -> None:
        """Outcomes to write (answers, failures, answers found without sending)."""
        self._outbox.extend(outcomes)
        self._ready.set()

    def close(self) -> None:
        """No worker delivers any more: write what is left, then end."""
        self._closed = True
        self._ready.set()

    async def run(self, run: Engine) -> None:
        committer = self.committer
        while True:
            await self._ready.wait()
            for _ in range(GROUP_COMMIT_TURNS):
                # let the event loop deliver the responses that are already in, so
                # one write (and one round of hooks) carries many lines
                if len(self._outbox) >= GROUP_COMMIT_LINES or self._closed:
                    break
                await anyio.lowlevel.checkpoint()
            self._ready = anyio.Event()
            batch, self._outbox = self._outbox, []
            if batch:
                try:
                    reason = committer.write(batch)
                except RunDirError as exc:
                    # answers in flight could not be kept: stop sending at once
                    if str(exc) not in run.notes:
                        run.notes.append(str(exc))
                    run.stop(StopReason.DISK_ERROR)
                    self.failed()
                    return
                await self.written(batch)
                if reason:
                    run.stop(reason)
            if self._closed and not self._outbox:
                return
