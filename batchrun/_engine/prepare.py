"""Everything a run checks before it sends a byte, the same for every lane.

In order: batches an earlier ``--batch-api`` process left running are not a lane's to
answer again (`open_batches_refusal`, asked by the online lanes); temporary files a
killed process left are removed; the input's fingerprint is compared with run.json
(another input or other request-shaping settings are refused unless ``--force``:
`check_resume`); the input is scanned once (a bad row or a duplicate id stops the run
naming its line, before anything is sent; the lane's observers see every valid row:
the pilot's picker, in-run dedupe); the hooks' ``before_send`` checks run (schema,
evaluation column, prices) and their warnings are kept; what the run directory's
journal (read just before the scan) holds is counted *for this input* (a row is done
only for the body it was answered with: `batchrun._output.journal.for_input`), with
the quality breaker resumed from every earlier process's paid answers. The scan keeps
each row's body hash only when the journal holds answers to compare it with. `record`
then writes run.json.

Every blocking step runs in a worker thread, and a stop (Ctrl-C) between two steps,
or inside the scan, ends the preparation with `Interrupted`: nothing was sent.

    prepared = await prepare_input(settings, hooks, state, stopping=stopping)
    record(settings, prepared)

A lane calls `prepare_run`: the same, for its engine, whose figures then start from
what the directory holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.runinfo import not_judged_answers, resume_problems, write_run_info
from batchrun._input.sources import Interrupted, ScanObserver, ScanResult, Source
from batchrun._output.breaker import QualityBreaker
from batchrun._output.journal import (
    RUN_INFO,
    ForInput,
    JournalState,
    for_input,
    read_journal,
    simulated_note,
)
from batchrun._output.summary import Counts
from batchrun._runfiles import remove_stray_temp_files
from batchrun._settings import Settings
from batchrun.errors import RunDirError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["Prepared", "check_resume", "prepare_input", "prepare_run", "record"]


@dataclass
class Prepared:
    """The checked input and what the run directory already holds for it."""

    source: Source
    scan: ScanResult
    journal: JournalState
    held: ForInput
    """What the directory holds for this input (`for_input`)."""
    counts: Counts
    breaker: QualityBreaker
    bad: set[int]
    """Rows whose answer is unusable, sent again (``--retry-bad-answers``)."""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the hooks warned of before anything was sent."""


def check_resume(cfg: Settings, fingerprint: str, notes: list[str]) -> None:
    """Refuse to resume a run started with another input or request-shaping settings
    (`batchrun._engine.runinfo.resume_problems`); with ``--force`` say so and go on
    (what was answered for other bodies counts for nothing; those rows are sent again).
    A job comparing variants may change them: a note says which."""
    path = os.path.join(str(cfg.out_dir), RUN_INFO)
    problems, _, variants = resume_problems(path, cfg, fingerprint, notes)
    if variants:
        notes.append(
            "variants changed since the last run (" + "; ".join(variants) + "): rows whose "
            "request changed are sent, the others keep their answers"
        )
    if problems and cfg.force:
        notes.append("--force: resuming although " + "; ".join(problems))
    elif problems:
        raise RunDirError(
            f"{cfg.out_dir} was started with other settings: "
            + "; ".join(problems)
            + ". Use another -o directory, or --force to resume anyway "
            "(rows whose request changed are sent again)."
        )


async def prepare_input(
    cfg: Settings,
    hooks: RunHooks,
    state: RunState,
    *,
    stopping: anyio.Event,
    source: Source | None = None,
    observe: ScanObserver | None = None,
    retry_bad: bool = False,
) -> Prepared:
    """Check and count (see the module docstring). ``observe`` sees every valid row of
    the scan; ``retry_bad``: unusable answers are pending (``--retry-bad-answers``)."""

    def interrupted() -> None:
        if stopping.is_set():
            raise Interrupted()

    run_dir = str(cfg.out_dir)
    notes: list[str] = []
    removed = remove_stray_temp_files(run_dir)
    if removed:
        notes.append(f"removed {len(removed)} temporary files left by a killed run")
    if source is None:
        from batchrun._input.select import source_for

        source = source_for(cfg)
    fingerprint = await anyio.to_thread.run_sync(source.fingerprint)
    interrupted()
    check_resume(cfg, fingerprint, notes)
    journal = await anyio.to_thread.run_sync(_read_journal, cfg)
    interrupted()
    # the body hashes only matter against answers the directory holds (8 bytes a row)
    keep_bodies = bool(journal.done or journal.failed)
    scan = await anyio.to_thread.run_sync(_scan, cfg, source, stopping.is_set, observe, keep_bodies)
    interrupted()
    warnings = list(hooks.before_send(state, scan) or ())
    bad = journal.bad if retry_bad else set()
    held = for_input(journal, scan.hashes, scan.bodies, bad=bad)
    if held.changed:
        notes.append(f"{held.changed:,} rows changed since they were answered; they are sent again")
    if journal.simulated:
        notes.append(simulated_note(journal.simulated, cfg.lines_endpoint))
    notes.extend(journal.repaired)
    paid = journal.tally.paid_quality
    not_judged = not_judged_answers(os.path.join(run_dir, RUN_INFO), cfg, scan.fingerprint, paid)
    counts = Counts(
        total=scan.total,
        succeeded=held.succeeded,
        failed=len(held.failed_now),
        invalid=scan.invalid,
    )
    breaker = QualityBreaker.resume(cfg.quality_breaker, paid, not_judged)
    return Prepared(source, scan, journal, held, counts, breaker, bad, notes, warnings)


async def prepare_run(
    run: Engine,
    cfg: Settings,
    *,
    source: Source | None = None,
    observe: ScanObserver | None = None,
    retry_bad: bool = False,
) -> Prepared:
    """`prepare_input` for ``run`` (its hooks, state and stop), then the run's figures
    taken from what the directory holds: counts, tally, quality breaker, time spent
    before, the hooks' warnings, and the notes."""
    prepared = await prepare_input(
        cfg,
        run.hooks,
        run.state,
        stopping=run.stopping,
        source=source,
        observe=observe,
        retry_bad=retry_bad,
    )
    facts, journal = run.facts, prepared.journal
    facts.tally, facts.counts, facts.breaker = journal.tally, prepared.counts, prepared.breaker
    facts.elapsed_before = journal.elapsed_s
    facts.warnings = prepared.warnings
    run.notes.extend(prepared.notes)
    return prepared


def record(cfg: Settings, prepared: Prepared) -> None:
    """run.json: the input and settings this directory now answers, and what its lines
    hold that counts for nothing (ids the input lacks, answers to changed bodies)."""
    scan, held = prepared.scan, prepared.held
    write_run_info(
        os.path.join(str(cfg.out_dir), RUN_INFO),
        cfg,
        fingerprint=scan.fingerprint,
        rows=scan.total,
        outside_input=held.foreign,
        changed_rows=held.changed,
        not_judged=prepared.breaker.not_judged,
    )


def _scan(
    cfg: Settings,
    source: Source,
    should_stop: Callable[[], bool],
    observe: ScanObserver | None,
    keep_bodies: bool,
) -> ScanResult:
    if not cfg.skip_invalid:
        return source.scan(should_stop=should_stop, observe=observe, keep_bodies=keep_bodies)
    path = os.path.join(str(cfg.out_dir), "invalid.jsonl")
    try:
        with open(path, "wb") as invalid_sink:
            return source.scan(
                invalid_sink, should_stop=should_stop, observe=observe, keep_bodies=keep_bodies
            )
    except OSError as exc:  # input read errors arrive as InputError; this is the output
        raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _read_journal(cfg: Settings) -> JournalState:
    run_dir = str(cfg.out_dir)
    try:
        return read_journal(run_dir, endpoint=cfg.lines_endpoint)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    except OSError as exc:  # e.g. results.jsonl is a directory
        raise RunDirError(
            f"{exc.filename or run_dir}: cannot read the run's output ({exc.strerror})"
        ) from exc
