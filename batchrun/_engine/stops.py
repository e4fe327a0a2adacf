"""Why a run stopped, and what that makes its status and exit code: one table for
every mode (online, Batch API, a Ray cluster).

A run ends in one of two ways: it ran out of rows to send (its status says how far it
got: ``complete``, ``incomplete``, a pilot's ``partial``), or something stopped it
first, named by a `StopReason`. The status and exit code follow from the reason and
the counts alone (`final_status`, `exit_code`), so the same stop reads the same in
summary.json and in ``$?`` whichever way the rows were being answered.

    >>> final_status(StopReason.BUDGET, pending=40), exit_code(StopReason.BUDGET, pending=40)
    ('budget_exceeded', 3)
    >>> final_status(None, pending=0), exit_code(None, pending=0, failed=2)
    ('complete', 4)

A hook may stop a run with a reason of its own (any text): the run is then
``interrupted``, and exits 1 when rows are left (`StopReason.of` keeps the text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "EXIT_BUDGET",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_SOME_FAILED",
    "INTERRUPTED_NOTE",
    "RunResult",
    "StopReason",
    "exit_code",
    "final_status",
]

EXIT_OK = 0
"""Every row answered."""
EXIT_ERROR = 1
"""Bad input or settings, or the run could not finish (rows left, a stop of its own)."""
EXIT_BUDGET = 3
"""The ``--max-cost`` cap stopped it."""
EXIT_SOME_FAILED = 4
"""Finished, but some rows failed for good (errors.jsonl)."""
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

INTERRUPTED_NOTE = "interrupted while checking the input; nothing was sent"


class StopReason(StrEnum):
    """What stopped a run before it ran out of rows (summary.json's ``stop_reason``)."""

    SIGINT = "SIGINT"
    """Ctrl-C (or a notebook's interrupt): what was in flight is written, exit 130."""
    SIGTERM = "SIGTERM"
    BUDGET = "budget"
    """The ``--max-cost`` cap: nothing more fits (status ``budget_exceeded``)."""
    DISK_ERROR = "disk_error"
    """A write failed: the disk is full, or the run directory was deleted."""
    ENDPOINT_DOWN = "endpoint_down"
    """The endpoint cannot answer: unreachable, or every request fails the same way."""
    BAD_ANSWERS = "bad_answers"
    """The quality breaker: the answers are, with confidence, mostly unusable."""
    DEADLINE = "deadline"
    """A Batch API run handed the rows left to an online run at its ``--deadline``."""
    SHARD_FAILED = "shard_failed"
    """A shard of a Ray run failed for good."""

    @classmethod
    def of(cls, reason: str | None) -> StopReason | str | None:
        """``reason`` as a member when it names one; a hook's own text stays as it is."""
        if reason is None:
            return None
        try:
            return cls(reason)
        except ValueError:
            return reason


_OWN_STATUS = {
    StopReason.DISK_ERROR,
    StopReason.ENDPOINT_DOWN,
    StopReason.BAD_ANSWERS,
    StopReason.DEADLINE,
}
"""Stops whose name is the run's status as it is."""
_EXIT_BY_SIGNAL = {StopReason.SIGINT: EXIT_SIGINT, StopReason.SIGTERM: EXIT_SIGTERM}


def final_status(reason: str | None, *, pending: int, pilot: bool = False) -> str:
    """summary.json's status once a run's process is over.

    ``pilot``: only part of the input was asked for (``limit``/``sample``), so rows
    left for the full run make it ``partial``, not ``incomplete``.
    """
    stop = StopReason.of(reason)
    if stop is StopReason.BUDGET:
        return "budget_exceeded"
    if stop in _OWN_STATUS:
        return str(stop)
    if stop is not None:
        return "interrupted"
    if pending:
        return "partial" if pilot else "incomplete"
    return "complete"


def exit_code(
    reason: str | None,
    *,
    pending: int,
    failed: int = 0,
    pilot: bool = False,
    cancel_only: bool = False,
) -> int:
    """The process's exit code (the README's table).

    ``cancel_only`` (``batchrun cancel``) succeeds with rows pending: leaving them
    pending is what it was asked to do; so does a pilot that did what it was asked.
    """
    stop = StopReason.of(reason)
    by_signal = _EXIT_BY_SIGNAL.get(stop) if isinstance(stop, StopReason) else None
    if by_signal is not None:
        return by_signal
    if stop is StopReason.BUDGET:
        return EXIT_BUDGET
    if stop is StopReason.DEADLINE:
        # the rows left went on to an online run, whose own code is the process's
        return EXIT_OK if not failed else EXIT_SOME_FAILED
    if stop is not None:
        return EXIT_ERROR
    if pending and not (pilot or cancel_only):
        return EXIT_ERROR
    return EXIT_SOME_FAILED if failed else EXIT_OK


@dataclass
class RunResult:
    """How one process's part of a run ended: its exit code, status, the summary it
    wrote, its run directory and the notes for the user."""

    exit_code: int
    status: str
    summary: dict[str, Any]
    run_dir: str
    notes: list[str] = field(default_factory=list)
