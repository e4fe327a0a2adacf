"""A run directory, read: the one reader of everything a run leaves behind.

The layout (written by the engine, `batchrun._batch` and `batchrun._scale`):

    run.json            what the run was started with: input, valid rows, options
    summary.json        its totals, replaced atomically at every checkpoint
    results.jsonl       one line per answered request (only ever grows)
    errors.jsonl        one line per request that failed for good
    invalid.jsonl       the input rows --skip-invalid set aside (rewritten by each scan)
    results.parquet     one row per input row (a directory of parts for a sharded run)
    .lock               held by the process writing the directory, with its pid
    batch/steps.jsonl   a Batch API run's step journal, batch/state.json the last
                        state of its batches (`batchrun._output.ledger`)
    shards.json         a run on a cluster: its shard plan, and each shard a run
    shards/00003/       directory of its own under shards/

`RunDir` reads all of it without changing anything (a torn last line is skipped,
never repaired; no lock is taken), so `batchrun status`, the text and HTML reports,
the live page, `batchrun.open` and the sum over a cluster's shards say the same thing
of the same files, whether the run went online, through the Batch API or on a
cluster. `RunDir.snapshot` is what the reports are built from.

    >>> run = RunDir.open("runs/a")                 # doctest: +SKIP
    >>> snap = run.snapshot()                        # doctest: +SKIP
    >>> snap.status, snap.requests["pending"]        # doctest: +SKIP
    ('complete', 0)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from batchrun._models import Outcome
from batchrun._output.journal import (
    ERRORS,
    RESULTS,
    RUN_INFO,
    SUMMARY,
    JournalState,
    read_journal,
)
from batchrun._output.ledger import batch_history, batch_status
from batchrun._output.lines import decode, decode_meta
from batchrun._output.summary import read_json_object, summary_figures
from batchrun._output.tally import Tally
from batchrun._runfiles import holder
from batchrun.errors import RunDirError

INVALID = "invalid.jsonl"
PARQUET = "results.parquet"
PLAN = "shards.json"
SHARDS_DIR = "shards"
FILE_ORDER = (RESULTS, ERRORS, PARQUET, INVALID, SUMMARY, RUN_INFO)
"""The files `RunDir.files` lists first, in this order; any other follows by name."""


def shard_name(index: int) -> str:
    """A shard's directory under ``shards/``: ``00003``."""
    return f"{index:05d}"


def is_complete(summary: Mapping[str, Any]) -> bool:
    """A summary of a run (or a shard) that finished every row."""
    requests = summary.get("requests") or {}
    return summary.get("status") == "complete" and not requests.get("pending")


@dataclass(frozen=True)
class Counted:
    """The rows of a run, counted (`RunDir.counts`)."""

    requests: dict[str, int]
    """``total`` (valid input rows), ``succeeded``, ``failed`` (for good, now),
    ``pending`` and ``invalid`` (rows set aside)."""
    error_codes: dict[str, int]
    """The rows failing now, by code, most first."""
    tally: Tally
    """Every output line counted: usage, retries, quality, reuse, ways..."""

    def figures(self) -> dict[str, Any]:
        """The summary's figures of these lines (`summary_figures`)."""
        return summary_figures(self.tally)


@dataclass(frozen=True)
class Snapshot:
    """What a run directory says, read once (`RunDir.snapshot`): the report's facts."""

    path: str
    info: dict[str, Any]
    """run.json ({} when missing or unreadable)."""
    summary: dict[str, Any]
    """summary.json (or the running process's own), {} before the first checkpoint."""
    status: str
    """summary.json's status; ``stopped`` for a run that says it is running while no
    process holds its lock (killed before it could say so); ``unknown`` without one."""
    running_pid: int | None
    """The process writing the directory now (-1: one whose pid is unknown)."""
    requests: dict[str, int]
    error_codes: dict[str, int]
    figures: dict[str, Any]
    """``usage``, ``by_model``, ``retries``, ``rate_limited``, ``quality`` and, when
    answers were reused, ``reused`` (`summary_figures`)."""
    by_mode: dict[str, int]
    """Lines by the way their row went (online, batch, reused, and ``_failed``)."""
    batches: dict[str, Any] | None
    """A Batch API run's batches (`batchrun._output.ledger.batch_status`), else None."""
    shards: dict[str, Any] | None
    """A run on a cluster: ``total``, ``complete`` and ``shard_rows``; else None."""
    files: list[dict[str, Any]]
    """``path`` and ``bytes`` of each file (`RunDir.files`)."""


class RunDir:
    """One run directory, read-only (see the module docstring).

    Every method reads the files when called, so a `RunDir` of a directory another
    process is writing stays current.

        run = RunDir.open("runs/a")
        run.status(), run.counts().requests, [o.custom_id for o in run.outcomes()]
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """``path``, checked to be a run directory (RunDirError saying why not). A run
        on object storage (``s3://bucket/prefix``) is read through a local snapshot of
        what it committed (`batchrun._output.mirror.snapshot`), taken now."""
        from batchrun._output.store import is_object_storage

        if is_object_storage(os.fspath(path)):
            from batchrun._output.mirror import snapshot

            path = snapshot(os.fspath(path))
        run = cls(path)
        if not os.path.isdir(run.path):
            raise RunDirError(f"{run.path}: no such run directory")
        info = run.file(RUN_INFO)
        if not os.path.isfile(info):
            stages = os.path.join(run.path, "stages")
            if os.path.isdir(stages):  # a cascade whose first pass has not ended yet
                names = sorted(os.listdir(stages))
                raise RunDirError(
                    f"{run.path}: a cascade still in its first pass (its files are written "
                    "when its stages end); look at a stage: "
                    + ", ".join(os.path.join(run.path, "stages", n) for n in names[:3])
                )
            raise RunDirError(f"{run.path}: no run.json (is this a batchrun run directory?)")
        if read_json_object(info) is None:
            raise RunDirError(f"{info}: unreadable (not a JSON object)")
        return run

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # -- the files ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """run.json ({} when missing or unreadable)."""
        return read_json_object(self.file(RUN_INFO)) or {}

    def summary(self) -> dict[str, Any]:
        """summary.json ({} before the first checkpoint)."""
        return read_json_object(self.file(SUMMARY)) or {}

    def holder(self) -> int | None:
        """The pid of the process writing the directory now (None: none is; -1: one
        whose pid is unknown, such as the live lease holder of a run on object storage
        when its snapshot was taken)."""
        found = holder(self.path)
        if found is None:
            from batchrun._output.mirror import lease_holder

            if lease_holder(self.path) is not None:
                return -1
        return found

    def status(self) -> str:
        """summary.json's status, ``stopped`` when it says ``running`` but no process
        holds the directory (killed: kill -9, a power cut), ``unknown`` without one."""
        return _status(self.summary(), self.holder())

    @property
    def sharded(self) -> bool:
        """A run on a cluster (its rows are in the shards' directories)."""
        return os.path.isfile(self.file(PLAN))

    def shards(self) -> list[RunDir]:
        """Each shard's own run directory, in plan order ([] for a run that is not
        sharded); a shard that has not started yet has no files."""
        if not self.sharded:
            return []
        path = self.file(PLAN)
        plan = read_json_object(path)
        try:
            indices = [int(s["index"]) for s in (plan or {})["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{path}: unreadable shard plan ({exc!r})") from exc
        return [RunDir(os.path.join(self.path, SHARDS_DIR, shard_name(i))) for i in indices]

    def folders(self) -> list[RunDir]:
        """The directories holding the run's output lines: its own, or each shard's."""
        return self.shards() if self.sharded else [self]

    def line_files(self) -> list[tuple[str, bool]]:
        """(path, holds answers) of every results.jsonl and errors.jsonl of the run,
        existing or not yet."""
        return [(f.file(n), n == RESULTS) for f in self.folders() for n in (RESULTS, ERRORS)]

    def outcomes(
        self, *, answers: bool = True, failures: bool = True, meta: bool = False
    ) -> Iterator[Outcome]:
        """Every complete line of results.jsonl (``answers``) and errors.jsonl
        (``failures``), decoded, file by file. A last line without its newline (torn,
        or being written by a live run) is skipped. ``meta``: answers decoded without
        their body (`decode_meta`: times, retries, reuse), for figures over millions
        of lines. A line that is not JSON is a RunDirError naming file and line."""
        for path, answered in self.line_files():
            if not (answers if answered else failures):
                continue
            parse = decode_meta if meta and answered else decode
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RunDirError(f"{path}: cannot read ({exc.strerror or exc})") from exc
            with f:
                for number, line in enumerate(f, 1):
                    if not line.endswith(b"\n"):
                        break
                    try:
                        outcome = parse(line)
                    except ValueError as exc:
                        raise RunDirError(f"{path}:line {number}: not valid JSON ({exc})") from exc
                    yield outcome

    def files(self) -> list[dict[str, Any]]:
        """``path`` and ``bytes`` of each file at the top of the directory (hidden ones
        left out) and of a results.parquet directory of parts (its path ends with a
        separator), those of `FILE_ORDER` first."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return []
        rank = {name: i for i, name in enumerate(FILE_ORDER)}
        entries = []
        for name in sorted(names, key=lambda n: (rank.get(n, len(rank)), n)):
            path = self.file(name)
            if name.startswith("."):
                continue
            try:
                if os.path.isfile(path):
                    entries.append({"path": path, "bytes": os.path.getsize(path)})
                elif name == PARQUET and os.path.isdir(path):
                    parts = [os.path.join(path, n) for n in os.listdir(path)]
                    size = sum(os.path.getsize(p) for p in parts if not _hidden(p))
                    entries.append({"path": path + os.sep, "bytes": size})
            except OSError:  # removed while listed
                continue
        return entries

    def batches(self) -> dict[str, Any] | None:
        """Where the run's batches stand (`batch_status`; None: it never used the
        Batch API)."""
        return batch_status(self.path)

    def batch_history(self) -> dict[str, Any] | None:
        """Every batch the run made (`batch_history`; None: it never used the Batch API)."""
        return batch_history(self.path)

    # -- counting -----------------------------------------------------------------------
    def counts(self, *, from_checkpoints: bool = True) -> Counted:
        """The rows, counted from the output lines: a row is succeeded or failed by
        its last line, pending otherwise, out of run.json's valid rows.

        A summary's counts are used as they are while nothing was written after them
        (its checkpoint covers every byte), or when rows changed under --force (only
        the runner, with the input at hand, can tell an answer to the old body from
        one to the new); the totals start from its checkpoint. A sharded run is its
        shards added up. ``from_checkpoints=False`` trusts no summary: every line is
        parsed, and the rows set aside are invalid.jsonl's lines."""
        shards = self.shards()
        if shards:  # a shard not started yet has nothing to count
            parts = [
                _directory_counts(s, from_checkpoints) for s in shards if os.path.isdir(s.path)
            ]
            total = int(self.info().get("input_rows") or 0)
        else:
            parts = [_directory_counts(self, from_checkpoints)]
            total = parts[0][0]["total"]
        tally = parts[0][2] if len(parts) == 1 else Tally()
        succeeded = failed = invalid = 0
        codes: Counter[str] = Counter()
        for requests, part_codes, part_tally in parts:
            succeeded += requests["succeeded"]
            failed += requests["failed"]
            invalid += requests["invalid"]
            codes.update(part_codes)
            if part_tally is not tally:
                tally.merge(part_tally)
        return Counted(
            requests={
                "total": total,
                "succeeded": succeeded,
                "failed": failed,
                "pending": max(0, total - succeeded - failed),
                "invalid": invalid,
            },
            error_codes=dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
            tally=tally,
        )

    def snapshot(self, summary: Mapping[str, Any] | None = None) -> Snapshot:
        """Everything the reports show of the run that is not a statistic over its
        lines, read once.

        ``summary``: the running process's own final summary (the end-of-run report,
        built by the process holding the lock): its counts are those of the lines it
        has just written, so they are taken as they are."""
        info = self.info()
        if summary is None:
            summary = self.summary()
            running_pid = self.holder()
            counted = self.counts()
            requests, error_codes = counted.requests, counted.error_codes
            figures = counted.figures()
            by_mode = dict(counted.tally.by_mode)
            status = _status(summary, running_pid)
        else:
            running_pid = None
            requests = {"invalid": 0, **summary["requests"]}
            codes = (summary.get("error_codes") or {}).items()
            error_codes = dict(sorted(codes, key=lambda kv: (-kv[1], kv[0])))
            figures = _figures_of(summary)
            tally_state = (summary.get("journal") or {}).get("tally") or {}
            by_mode = dict(tally_state.get("by_mode") or {})
            status = str(summary.get("status", "unknown"))
        return Snapshot(
            path=self.shown(self.path),
            info=info,
            summary=dict(summary),
            status=status,
            running_pid=running_pid,
            requests=requests,
            error_codes=error_codes,
            figures=figures,
            by_mode=by_mode,
            batches=self.batches(),
            shards=self._shard_progress(),
            files=[{**f, "path": self.shown(f["path"])} for f in self.files()],
        )

    def shown(self, path: str) -> str:
        """``path`` as a report shows it: for the local copy of a run on object storage
        (a snapshot, or a running copy), under the prefix it stands for."""
        from batchrun._output.mirror import location_of

        where = location_of(self.path)
        if where is None or not path.startswith(self.path):
            return path
        return where + path[len(self.path) :].replace(os.sep, "/")

    def _shard_progress(self) -> dict[str, Any] | None:
        if not self.sharded:
            return None
        shards = self.shards()
        plan = read_json_object(self.file(PLAN)) or {}
        return {
            "total": len(shards),
            "complete": sum(1 for s in shards if is_complete(s.summary())),
            "shard_rows": plan.get("shard_rows"),
        }


def _status(summary: Mapping[str, Any], running_pid: int | None) -> str:
    status = str(summary.get("status", "unknown"))
    if status == "running" and running_pid is None:
        return "stopped"  # killed (kill -9, power cut) before it could say so
    return status


def _figures_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    """`summary_figures` as a summary records them."""
    figures: dict[str, Any] = {
        "usage": dict(summary["usage"]),
        "by_model": dict(summary.get("by_model") or {}),
        "retries": int(summary["retries"]),
        "rate_limited": int(summary["rate_limited"]),
        "quality": summary.get("quality") or {},
    }
    if summary.get("reused"):
        figures["reused"] = summary["reused"]
    if summary.get("endpoints"):
        figures["endpoints"] = summary["endpoints"]
    return figures


_COUNTED = ("total", "succeeded", "failed", "invalid")


def _directory_counts(
    run: RunDir, from_checkpoints: bool
) -> tuple[dict[str, int], Counter[str], Tally]:
    """(requests, rows failing now by code, tally) of one directory's own lines."""
    info, summary = run.info(), run.summary()
    try:
        journal = read_journal(run.path, repair=False, from_checkpoint=from_checkpoints)
    except ValueError as exc:
        raise RunDirError(str(exc)) from exc
    recorded = summary.get("requests")
    if from_checkpoints and _summary_counts_hold(summary, info, journal):
        requests = {k: int(summary["requests"].get(k) or 0) for k in _COUNTED}
        codes = Counter({str(k): int(v) for k, v in (summary.get("error_codes") or {}).items()})
    else:
        if from_checkpoints and isinstance(recorded, Mapping) and "invalid" in recorded:
            invalid = int(recorded["invalid"])
        else:
            invalid = _lines(run.file(INVALID))
        requests = {
            "total": int(info.get("input_rows") or 0),
            "succeeded": len(journal.done),
            "failed": len(journal.failed),
            "invalid": invalid,
        }
        codes = Counter(journal.failed_codes.get(h, "unknown") for h in journal.failed)
    return requests, codes, journal.tally


def _summary_counts_hold(
    summary: Mapping[str, Any], info: Mapping[str, Any], journal: JournalState
) -> bool:
    """Use the runner's own counts when nothing was written after them, or when
    rows changed under --force (only the runner, with the input at hand, can tell
    an answer to the old body from one to the new)."""
    if not isinstance(summary.get("requests"), Mapping):
        return False
    marks = summary.get("journal") or {}
    fresh = (
        marks.get("results_bytes") == journal.results_bytes
        and marks.get("errors_bytes") == journal.errors_bytes
    )
    foreign = info.get("outside_input") or {}
    changed = bool(info.get("changed_rows")) or any(foreign.values())
    return fresh or changed


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except OSError:
        return 0


def _hidden(path: str) -> bool:
    return os.path.basename(path).startswith(".")


__all__ = [
    "FILE_ORDER",
    "INVALID",
    "PARQUET",
    "PLAN",
    "SHARDS_DIR",
    "Counted",
    "RunDir",
    "Snapshot",
    "is_complete",
    "shard_name",
]
