"""What a run directory already holds: the checkpoint is the output itself.

results.jsonl and errors.jsonl only ever grow by whole lines. On start we re-read
them: every id in results.jsonl is done, every id in errors.jsonl (and not in
results) has failed for good. Each is done *for the body it was sent with*: the
line records that body's hash, and a row whose body is different now is a new
request (`JournalState.done` maps id hash -> body hash, 0 for old lines without
one). A last line without its newline was torn by a crash; it is cut off (the
only bytes ever removed) and that request is sent again.

Re-reading is fast: summary.json records how many bytes of each file its totals
cover, so lines before that point are only scanned for their custom_id (fixed
offset, no JSON parse; the body hash at a fixed offset from the end) and only the
tail is parsed in full. Memory is two 64-bit hashes per id, never the bodies.

Each line names the endpoint that answered it. For a run on a real endpoint, a line
the built-in simulator wrote counts for nothing: not done, not failed, not in the
totals (its row is sent again, and no simulated usage is billed). A line written
before lines named their endpoint is taken to come from the endpoint run.json
records.

    >>> state = read_journal("runs/a")          # doctest: +SKIP
    >>> len(state.done), len(state.failed)      # doctest: +SKIP
    (998, 2)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun._endpoint import SIM, endpoint_identity, is_simulated
from batchrun._ids import id_hash, id_hash_bytes
from batchrun._output.lines import (
    ID_AT,
    ID_PREFIX,
    bad_answer_of,
    body_hash_of,
    custom_id_of,
    decode,
    endpoint_mark,
    marked,
    simulated_line,
)
from batchrun._output.tally import Tally

RESULTS = "results.jsonl"
ERRORS = "errors.jsonl"
SUMMARY = "summary.json"
RUN_INFO = "run.json"
READ_CHUNK = 1 << 20


@dataclass
class JournalState:
    done: dict[int, int] = field(default_factory=dict)
    """id hash -> hash of the body that was answered (0: not recorded)."""
    failed: dict[int, int] = field(default_factory=dict)
    """The same for rows that failed for good (and have no answer)."""
    failed_codes: dict[int, str] = field(default_factory=dict)
    """id hash -> error code of its last failure."""
    bad: set[int] = field(default_factory=set)
    """Ids whose last answer is unusable (truncated, refused, off-schema...)."""
    tally: Tally = field(default_factory=Tally)
    results_bytes: int = 0
    errors_bytes: int = 0
    repaired: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    """Time spent by earlier processes of this run (from the last checkpoint)."""
    simulated: int = 0
    """Lines the simulator answered, left out because this run's endpoint is real."""


def recorded_endpoint(info: Any) -> str | None:
    """The endpoint a run.json says its run answers from (its identity); a run.json
    written before the identity was recorded names it by its base_url option."""
    if not isinstance(info, dict):
        return None
    pool = (info.get("request_options") or {}).get("endpoints")
    if isinstance(pool, dict) and pool:
        # a pool (`Settings.lines_endpoint`): "sim" when any endpoint is simulated
        # (every line counts), else a real identity (only the simulator's lines skip)
        names = [e.get("endpoint") for e in pool.values() if isinstance(e, dict)]
        identities = [n for n in names if isinstance(n, str)]
        if any(is_simulated(n) for n in identities):
            return SIM
        if identities:
            return identities[0]
    recorded = (info.get("request_options") or {}).get("base_url")
    if isinstance(recorded, str):
        return recorded
    url = (info.get("options") or {}).get("base_url")
    return endpoint_identity(url) if isinstance(url, str) else None


def read_recorded_endpoint(run_dir: str) -> str | None:
    """`recorded_endpoint` of the run.json in ``run_dir`` (None: none, or unreadable)."""
    try:
        with open(os.path.join(run_dir, RUN_INFO), "rb") as f:
            return recorded_endpoint(orjson.loads(f.read()))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Provenance:
    """Which lines count, by the endpoint that answered them (`Provenance.of`)."""

    skip_simulated: bool = False
    """This run's endpoint is real: the simulator's answers are not its answers."""
    unmarked_simulated: bool = False
    """Lines naming no endpoint come from the simulator (run.json says "sim")."""
    own_mark: bytes = b""
    """`endpoint_mark` of this run's endpoint: most lines carry it (a slice compare)."""

    @classmethod
    def of(cls, run_dir: str, endpoint: str | None = None) -> Provenance:
        """For a run answering from ``endpoint`` (None: the one run.json records)."""
        recorded = read_recorded_endpoint(run_dir)
        current = endpoint if endpoint is not None else recorded
        return cls(
            skip_simulated=current is not None and not is_simulated(current),
            unmarked_simulated=is_simulated(recorded),
            own_mark=endpoint_mark(current) if current is not None else b"",
        )

    def skips(self, line: bytes) -> bool:
        """True for a line that counts for nothing in this run."""
        if not self.skip_simulated or marked(line, self.own_mark):
            return False
        simulated = simulated_line(line)
        return self.unmarked_simulated if simulated is None else simulated

    def counted_alike(self, tally_state: dict[str, Any]) -> bool:
        """Whether a checkpoint's tally left out the same lines as this run would (a
        tally from before lines named their endpoint counted every line)."""
        if "skips_simulated" in tally_state:
            return bool(tally_state["skips_simulated"]) == self.skip_simulated
        return not (self.skip_simulated and self.unmarked_simulated)


def repair_torn_tail(path: str) -> int:
    """Cut a torn last line off ``path``. Returns the number of bytes removed."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # walk back to the previous newline
        pos = size
        keep = 0
        while pos > 0:
            step = min(READ_CHUNK, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = pos + idx + 1
                break
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def _checkpoint(run_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(run_dir, SUMMARY), "rb") as f:
            summary = orjson.loads(f.read())
        journal = summary["journal"]
        if "paid_quality" not in journal["tally"]:
            return None  # written by an older batchrun: the breaker's counts need a recount
        Tally.from_state(journal["tally"])  # validate
        return dict(journal)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _line_boundary(path: str, offset: int) -> bool:
    """True when ``offset`` is 0 or sits just after a newline inside the file."""
    if offset == 0:
        return True
    try:
        if offset > os.path.getsize(path):
            return False
        with open(path, "rb") as f:
            f.seek(offset - 1)
            return f.read(1) == b"\n"
    except OSError:
        return False


def _scan(
    path: str,
    ids: dict[int, int],
    tally: Tally,
    parse_from: int,
    bad: set[int],
    provenance: Provenance,
    skipped: list[int],
) -> int:
    """Note every id in ``path`` with its body hash in ``ids`` (a later line wins) and
    in ``bad`` when its answer is unusable; count lines at/after ``parse_from``.
    Lines ``provenance`` skips are only counted in ``skipped[0]``.

    A last line without its newline (torn, or being written right now by a live
    run) is not counted.
    """
    if not os.path.exists(path):
        return 0
    pos = 0
    skip = provenance.skip_simulated
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            if skip and provenance.skips(line):
                skipped[0] += 1
                pos += len(line)
                continue
            if pos >= parse_from:
                outcome = decode(line)
                h = id_hash(outcome.custom_id)
                tally.count_outcome(outcome)
            # the hot loop of a resume: a few slices and one hash per line, inlined
            elif (
                line.startswith(ID_PREFIX)
                and line[ID_AT - 2 : ID_AT] == b':"'
                and (end := line.find(b'"', ID_AT)) > 0
                and b"\\" not in (raw := line[ID_AT:end])
            ):
                h = id_hash_bytes(raw)
            else:
                h = id_hash(custom_id_of(line))
            ids[h] = body_hash_of(line) or 0
            if bad_answer_of(line):
                bad.add(h)
            elif bad:
                bad.discard(h)
            pos += len(line)
    return pos


def _scan_errors(
    path: str,
    ids: dict[int, int],
    codes: dict[int, str],
    tally: Tally,
    parse_from: int,
    provenance: Provenance,
    skipped: list[int],
) -> int:
    """`_scan` for errors.jsonl, which also notes each failure's code. Every line is
    parsed: failures are few next to answers, and their codes make the summary's
    "errors by code" describe the rows failing now, not every failure ever."""
    if not os.path.exists(path):
        return 0
    pos = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            if provenance.skips(line):
                skipped[0] += 1
                pos += len(line)
                continue
            outcome = decode(line)
            h = id_hash(outcome.custom_id)
            ids[h] = body_hash_of(line) or 0
            codes[h] = str(outcome.error.get("code")) if outcome.error is not None else "unknown"
            if pos >= parse_from:
                tally.count_outcome(outcome)
            pos += len(line)
    return pos


def read_journal(
    run_dir: str,
    *,
    repair: bool = True,
    endpoint: str | None = None,
    from_checkpoint: bool = True,
) -> JournalState:
    """Rebuild done/failed sets and totals from the run directory's files, for a run
    answering from ``endpoint`` (its identity; None: the one run.json records).

    ``repair=False`` reads without touching anything (for `batchrun status`, which
    may look at a run that is still writing). ``from_checkpoint=False`` parses every
    line instead of starting from summary.json's totals (a recount that trusts no
    checkpoint, as tests compare a summary with).
    """
    state = JournalState()
    provenance = Provenance.of(run_dir, endpoint)
    results = os.path.join(run_dir, RESULTS)
    errors = os.path.join(run_dir, ERRORS)
    for path in (results, errors):
        cut = repair_torn_tail(path) if repair else 0
        if cut:
            state.repaired.append(
                f"{os.path.basename(path)}: dropped a torn last line ({cut} bytes)"
            )
    checkpoint = _checkpoint(run_dir) if from_checkpoint else None
    r_from = e_from = 0
    if (
        checkpoint is not None
        and _line_boundary(results, int(checkpoint.get("results_bytes", -1)))
        and _line_boundary(errors, int(checkpoint.get("errors_bytes", -1)))
    ):
        state.elapsed_s = float(checkpoint.get("elapsed_s", 0.0))
        # a tally that counted the simulator's answers is recounted for a real run
        if provenance.counted_alike(checkpoint["tally"]):
            state.tally = Tally.from_state(checkpoint["tally"])
            r_from = int(checkpoint["results_bytes"])
            e_from = int(checkpoint["errors_bytes"])
    state.tally.skips_simulated = provenance.skip_simulated
    skipped = [0]
    try:
        state.results_bytes = _scan(
            results, state.done, state.tally, r_from, state.bad, provenance, skipped
        )
        failed: dict[int, int] = {}
        state.errors_bytes = _scan_errors(
            errors, failed, state.failed_codes, state.tally, e_from, provenance, skipped
        )
    except ValueError as exc:
        raise ValueError(f"{run_dir}: an output line is not valid JSON ({exc})") from exc
    state.simulated = skipped[0]
    done = state.done
    # an answer wins over a failure of the same request (--retry-failed); a failure
    # of a later, changed body stands next to the stale answer
    state.failed = {h: b for h, b in failed.items() if done.get(h, -1) != b}
    return state


def simulated_note(lines: int, endpoint: str) -> str:
    """What a run on a real endpoint says of the simulator's answers it left out."""
    return (
        f"{lines:,} answers from the simulator (base_url sim) are not answers from "
        f"{endpoint}: their rows are sent to it"
    )


@dataclass
class ForInput:
    """What a run directory holds for one input (`for_input`)."""

    succeeded: int
    failed_now: dict[int, str]
    """id hash -> error code of the rows of this input that failed for good."""
    changed: int
    """Rows answered for a body they no longer have: sent again."""
    foreign: dict[str, int]
    """Lines that count for nothing now: ids the input lacks, answers to old bodies."""


def for_input(
    journal: JournalState, hashes: Any, bodies: Any, *, bad: set[int] | frozenset[int] = frozenset()
) -> ForInput:
    """Count what ``journal`` holds *for this input* (its rows' id and body hashes, from
    the scan): a row is done when its id was answered for the body it has now, and
    with ``bad`` (--retry-bad-answers) an unusable answer is not done."""
    done, failed = journal.done, journal.failed
    succeeded = changed = 0
    failed_now: dict[int, str] = {}
    if done or failed:
        codes = journal.failed_codes
        for h, b in zip(hashes, bodies, strict=True):
            if answered(done, h, b):
                if h not in bad:
                    succeeded += 1
            elif answered(failed, h, b):
                failed_now[h] = codes.get(h, "unknown")
            elif h in done or h in failed:
                changed += 1
    foreign = {"succeeded": len(done) - succeeded, "failed": len(failed) - len(failed_now)}
    return ForInput(succeeded, failed_now, changed, foreign)


def answered(table: dict[int, int], id_h: int, body_h: int) -> bool:
    """True when ``table`` (done or failed) holds this id for this body (or for an
    unrecorded one: lines written before body hashes were kept count as the same)."""
    recorded = table.get(id_h)
    return recorded is not None and (recorded == body_h or recorded == 0)
