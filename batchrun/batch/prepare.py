"""Everything a batch run checks before it uploads a byte: the online run's own checks.

The same input, run directory and rules as an online run: the input is scanned once
(bad rows and duplicate ids are reported naming the line, nothing uploaded), the
hooks' ``before_send`` checks run (schema, evaluation column, prices), a directory
started with another input or other request-shaping options is refused unless
``--force``, and what the directory already holds is counted for *this* input (a row
is done only for the body it was answered with). run.json is written in the online
run's shape, so either kind of run can resume the other (the mode is not part of the
fingerprint: that is how a deadline hands the rest to an online run).

    prepared = prepare(settings, hooks, state, should_stop=lambda: False)
    prepared.counts.pending
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun import __version__
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.rundir import remove_stray_temp_files
from batchrun.engine.runner import changes
from batchrun.errors import RunDirError
from batchrun.input.sources import ScanResult, Source
from batchrun.output.journal import RUN_INFO, JournalState, answered, read_journal
from batchrun.output.summary import Counts, write_json_atomic
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


def prepare(
    cfg: Settings,
    hooks: RunHooks,
    state: RunState,
    *,
    should_stop: Callable[[], bool],
    source: Source | None = None,
) -> Prepared:
    """Scan, check and count (see the module docstring). Blocking: run in a thread."""
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
    scan = _scan(cfg, source, should_stop)
    hooks.before_send(state, scan)
    try:
        journal = read_journal(run_dir)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    except OSError as exc:
        raise RunDirError(
            f"{exc.filename or run_dir}: cannot read the run's output ({exc.strerror})"
        ) from exc
    prepared = _adopt(cfg, source, scan, journal, notes)
    _write_run_info(cfg, scan, prepared)
    return prepared


def _check_run_info(cfg: Settings, fingerprint: str, notes: list[str]) -> None:
    path = os.path.join(str(cfg.out_dir), RUN_INFO)
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            before = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        if cfg.force:
            return
        raise RunDirError(f"{path}: unreadable ({exc}); use --force to start over it") from exc
    problems = []
    if before.get("input_fingerprint") != fingerprint:
        problems.append(
            "the input file differs from the one this run started with "
            f"({before.get('input_path')})"
        )
    old = before.get("request_options") or {}
    for key, value in cfg.fingerprint().items():
        problems.extend(changes(f"option {key}", old.get(key), value))
    if problems and cfg.force:
        notes.append("--force: resuming although " + "; ".join(problems))
    elif problems:
        raise RunDirError(
            f"{cfg.out_dir} was started with other settings: "
            + "; ".join(problems)
            + ". Use another -o directory, or --force to resume anyway "
            "(rows whose request changed are sent again)."
        )


def _scan(cfg: Settings, source: Source, should_stop: Callable[[], bool]) -> ScanResult:
    if not cfg.skip_invalid:
        return source.scan(should_stop=should_stop)
    path = os.path.join(str(cfg.out_dir), "invalid.jsonl")
    try:
        with open(path, "wb") as invalid_sink:
            return source.scan(invalid_sink, should_stop=should_stop)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _adopt(
    cfg: Settings, source: Source, scan: ScanResult, journal: JournalState, notes: list[str]
) -> Prepared:
    done, failed = journal.done, journal.failed
    succeeded = changed = 0
    failed_now: dict[int, str] = {}
    if done or failed:
        codes = journal.failed_codes
        for h, b in zip(scan.hashes, scan.bodies, strict=True):
            if answered(done, h, b):
                succeeded += 1
            elif answered(failed, h, b):
                failed_now[h] = codes.get(h, "unknown")
            elif h in done or h in failed:
                changed += 1
    if changed:
        notes.append(f"{changed:,} rows changed since they were answered; they are sent again")
    notes.extend(journal.repaired)
    counts = Counts(
        total=scan.total, succeeded=succeeded, failed=len(failed_now), invalid=scan.invalid
    )
    foreign = {"succeeded": len(done) - succeeded, "failed": len(failed) - len(failed_now)}
    return Prepared(source, scan, journal, counts, failed_now, notes, foreign, changed)


def _write_run_info(cfg: Settings, scan: ScanResult, prepared: Prepared) -> None:
    info: dict[str, Any] = {
        "batchrun_version": __version__,
        "input_path": os.path.abspath(cfg.input_path),
        "input_fingerprint": scan.fingerprint,
        "input_rows": scan.total,
        "request_options": _jsonable(cfg.fingerprint()),
        "outside_input": prepared.foreign,
        "changed_rows": prepared.changed,
        "options": _jsonable(cfg.public_dict()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = os.path.join(str(cfg.out_dir), RUN_INFO)
    try:
        write_json_atomic(path, info)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))


__all__ = ["Prepared", "prepare"]
