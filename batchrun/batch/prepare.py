"""Everything a batch run checks before it uploads a byte: the online run's own checks.

The settings a batch run cannot honour (streaming, a pilot, ``--cache``: rules of
`Settings.problems`) are refused when the driver is made (`check_settings`). Then the
same input, run directory and rules as an online run: the input is scanned once (bad rows and
duplicate ids are reported naming the line, nothing uploaded), the hooks'
``before_send`` checks run (schema, evaluation column, prices), a directory started
with another input or other request-shaping options is refused unless ``--force``,
and what the directory already holds is counted for *this* input (a row is done only
for the body it was answered with). The scan also groups identical requests, as an
online run's does (`batchrun.engine.reuse.Reuse`): only the first of each is sent.
run.json is written in the online run's shape, so either kind of run can resume the
other (the mode is not part of the fingerprint: that is how a deadline hands the rest
to an online run).

    prepared = prepare(settings, hooks, state, should_stop=lambda: False)
    prepared.counts.pending
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from batchrun.cache.dedup import DedupPlan
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.rundir import remove_stray_temp_files
from batchrun.engine.runinfo import not_judged_answers, resume_problems, write_run_info
from batchrun.errors import ConfigError, RunDirError
from batchrun.input.sources import ScanObserver, ScanResult, Source
from batchrun.output.journal import (
    RUN_INFO,
    JournalState,
    for_input,
    read_journal,
    simulated_note,
)
from batchrun.output.quality import QualityCounts
from batchrun.output.summary import Counts
from batchrun.settings import Settings


@dataclass
class Prepared:
    """The checked input and what the run directory already holds for it."""

    source: Source
    scan: ScanResult
    journal: JournalState
    counts: Counts
    failed_now: dict[int, str] = field(default_factory=dict)
    """id hash -> error code of the rows of this input that failed for good."""
    notes: list[str] = field(default_factory=list)
    foreign: dict[str, int] = field(default_factory=dict)
    """Lines that count for nothing now: ids the input lacks, answers to old bodies."""
    changed: int = 0
    """Rows answered for a body they no longer have (sent again)."""
    dedupe: DedupPlan | None = None
    """Which rows repeat an earlier row's request (None: dedupe off, or no repeats)."""
    not_judged: QualityCounts = field(default_factory=QualityCounts)
    """Paid answers the quality breaker does not judge (`not_judged_answers`)."""
    warnings: list[str] = field(default_factory=list)
    """What the hooks warned of before anything was sent."""


def check_settings(cfg: Settings) -> None:
    """Refuse, before anything is touched, what a batch run cannot do: a run without a
    directory, and every rule between settings (`Settings.problems`: no stream, no
    pilot, no cache with ``mode="batch"``)."""
    if not cfg.out_dir:
        raise ConfigError("no run directory given (-o DIR)")
    cfg.validate()


def prepare(
    cfg: Settings,
    hooks: RunHooks,
    state: RunState,
    *,
    should_stop: Callable[[], bool],
    source: Source | None = None,
    dedupe: bool = True,
) -> Prepared:
    """Scan, check and count (see the module docstring); ``dedupe``: group identical
    requests (as ``cfg.dedupe`` and its cache policy allow). Blocking: run in a thread."""
    run_dir = str(cfg.out_dir)
    notes: list[str] = []
    removed = remove_stray_temp_files(run_dir)
    if removed:
        notes.append(f"removed {len(removed)} temporary files left by a killed run")
    if source is None:
        from batchrun.input.select import source_for

        source = source_for(cfg)
    fingerprint = source.fingerprint()
    _check_run_info(cfg, fingerprint, notes)
    reuse = None
    if dedupe and cfg.dedupe and cfg.cache_policy != "off":
        from batchrun.engine.reuse import Reuse

        reuse = Reuse(replace(cfg, cache=None))  # the grouping only: no cache in batches
    scan = _scan(cfg, source, should_stop, None if reuse is None else reuse.observe)
    if reuse is not None:
        reuse.after_scan()
    warnings = list(hooks.before_send(state, scan) or ())
    try:
        journal = read_journal(run_dir, endpoint=cfg.endpoint)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    except OSError as exc:
        raise RunDirError(
            f"{exc.filename or run_dir}: cannot read the run's output ({exc.strerror})"
        ) from exc
    prepared = _adopt(cfg, source, scan, journal, notes)
    prepared.dedupe = reuse.plan if reuse is not None else None
    prepared.not_judged = not_judged_answers(
        os.path.join(run_dir, RUN_INFO), cfg, scan.fingerprint, journal.tally.paid_quality
    )
    prepared.warnings = warnings
    _write_run_info(cfg, scan, prepared)
    return prepared


def _check_run_info(cfg: Settings, fingerprint: str, notes: list[str]) -> None:
    """The online run's rule (`batchrun.engine.runinfo.resume_problems`)."""
    path = os.path.join(str(cfg.out_dir), RUN_INFO)
    problems, _, variants = resume_problems(path, cfg, fingerprint)
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


def _scan(
    cfg: Settings,
    source: Source,
    should_stop: Callable[[], bool],
    observe: ScanObserver | None,
) -> ScanResult:
    if not cfg.skip_invalid:
        return source.scan(should_stop=should_stop, observe=observe)
    path = os.path.join(str(cfg.out_dir), "invalid.jsonl")
    try:
        with open(path, "wb") as invalid_sink:
            return source.scan(invalid_sink, should_stop=should_stop, observe=observe)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _adopt(
    cfg: Settings, source: Source, scan: ScanResult, journal: JournalState, notes: list[str]
) -> Prepared:
    held = for_input(journal, scan.hashes, scan.bodies)
    if held.changed:
        notes.append(f"{held.changed:,} rows changed since they were answered; they are sent again")
    if journal.simulated:
        notes.append(simulated_note(journal.simulated, cfg.endpoint))
    notes.extend(journal.repaired)
    counts = Counts(
        total=scan.total,
        succeeded=held.succeeded,
        failed=len(held.failed_now),
        invalid=scan.invalid,
    )
    return Prepared(
        source, scan, journal, counts, held.failed_now, notes, held.foreign, held.changed
    )


def _write_run_info(cfg: Settings, scan: ScanResult, prepared: Prepared) -> None:
    write_run_info(
        os.path.join(str(cfg.out_dir), RUN_INFO),
        cfg,
        fingerprint=scan.fingerprint,
        rows=scan.total,
        outside_input=prepared.foreign,
        changed_rows=prepared.changed,
        not_judged=prepared.not_judged,
    )


__all__ = ["Prepared", "check_settings", "prepare"]
