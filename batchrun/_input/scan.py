"""The validating pass over an input before anything is sent: count the rows, check
each one (writing invalid rows aside with --skip-invalid), reject duplicate ids, and
collect what the checks before sending need (the models named, a dataset's columns).

Memory holds one batch of rows plus 8 bytes per row (the hash of its id), and 8 more
when the body hashes are kept (a resumed run compares them with the answers' bodies);
duplicates are found by sorting the id hashes, then confirmed on the strings.

    >>> scan = Source("requests.jsonl").scan()       # doctest: +SKIP
    >>> scan.total, scan.invalid                     # doctest: +SKIP
    (1000, 0)
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from batchrun._ids import body_hash_int, id_hash
from batchrun._models import Request
from batchrun._templating.rowwatch import Interrupted, watched
from batchrun.errors import InputError

if TYPE_CHECKING:
    from batchrun._input.sources import Source

SCAN_STOP_EVERY = 512
"""Rows between two looks at the scan's stop flag."""

# Told of every valid request of a scan, with its body as sent (bytes).
ScanObserver = Callable[[Request, bytes], None]


class StopCheck(Protocol):
    def __call__(self) -> bool: ...


@dataclass
class ScanResult:
    """What one validating pass over the input found."""

    total: int = 0
    invalid: int = 0
    fingerprint: str = ""
    hashes: array[int] = field(default_factory=lambda: array("Q"))
    """The id hash of every valid row (8 bytes each), in file order."""
    bodies: array[int] = field(default_factory=lambda: array("Q"))
    """The body hash (`batchrun._ids.body_hash_int`) of every valid row, same order;
    empty when the scan was told not to keep them (nothing answered to compare with)."""
    last_row: int = 0
    """The last row number read: later passes stop there."""
    columns: set[str] | None = None
    """Dataset inputs: every column name seen in any row (for checks before sending)."""
    models: set[str] = field(default_factory=set)
    """Every model the requests name (for price checks before sending)."""


def scan(
    source: Source,
    invalid_sink: IO[bytes] | None = None,
    *,
    should_stop: StopCheck | None = None,
    observe: ScanObserver | None = None,
    keep_bodies: bool = True,
) -> ScanResult:
    """`Source.scan`: validate every row of ``source``, count them, reject duplicate
    ids; afterwards no pass over the source reads past the last row this one read."""
    result = ScanResult(fingerprint=source.fingerprint())
    reader = source.reader
    reader.last_row = None
    hashes, bodies, models = result.hashes, result.bodies, result.models
    columns: set[str] | None = set() if source.dataset else None
    collect = columns is not None and source.kind in ("jsonl", "jsonl.gz")
    parquet_names = (
        source.input.parquet_names() if source.kind == "parquet" and columns is not None else None
    )  # files of other columns refused before any row is read
    map_row = source.map_row
    many = source.many
    dumps = orjson.dumps
    serialise = keep_bodies or observe is not None  # a fresh plain run needs no bytes
    # a template's loops and calls look at the time and the stop flag
    with watched(should_stop):
        for row, where, obj in reader.rows():
            result.last_row = row
            if should_stop is not None and row % SCAN_STOP_EVERY == 0 and should_stop():
                raise Interrupted()
            if collect and type(obj) is dict:
                columns.update(obj)  # type: ignore[union-attr]
            try:
                if isinstance(obj, InputError):
                    raise obj
                made = map_row(obj, row, where)
            except InputError as exc:
                if not source.skip_invalid:
                    raise
                result.invalid += 1
                if invalid_sink is not None:
                    line: dict[str, Any] = {"row": row, "where": exc.where, "reason": exc.reason}
                    if many:
                        line["file"] = source.file_at(row)[0].relative
                    invalid_sink.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
                continue
            for req in made if type(made) is list else (made,):
                hashes.append(id_hash(req.custom_id))  # type: ignore[union-attr]
                if serialise:
                    payload = dumps(req.body)  # type: ignore[union-attr]
                    if keep_bodies:
                        bodies.append(body_hash_int(payload))
                    if observe is not None:
                        observe(req, payload)  # type: ignore[arg-type]
                model = req.body.get("model")  # type: ignore[union-attr]
                if isinstance(model, str):
                    models.add(model)
                result.total += 1
    result.columns = columns
    if parquet_names is not None:
        result.columns = set(parquet_names)
    elif source.delimited and columns is not None:
        result.columns = set().union(*(reader.delimited_file(f).header() for f in source.files()))
    reader.last_row = result.last_row
    if result.total == 0 and result.invalid == 0:
        what = "the files hold" if many else "the file holds"
        raise InputError(source.path, "0", f"{what} no requests")
    if result.total == 0:
        raise InputError(
            source.path,
            "0",
            f"no valid request: all {result.invalid} rows are invalid (see invalid.jsonl)",
        )
    duplicates = _duplicate_hashes(hashes)
    if duplicates:
        _raise_first_duplicate(source, duplicates)
    return result


def _raise_first_duplicate(source: Source, suspects: set[int]) -> None:
    """Confirm on the real strings (a hash collision is not a duplicate)."""
    seen: dict[str, str] = {}
    for custom_id, path, where in _ids_with_hash(source, suspects):
        if custom_id in seen:
            first = seen[custom_id]
            raise InputError(
                path, where, f"duplicate custom_id {custom_id!r} (first seen at {first})"
            )
        seen[custom_id] = where if path == source.path else f"{path}:{where}"


def _ids_with_hash(source: Source, suspects: set[int]) -> Iterator[tuple[str, str, str]]:
    """(id, the file it is in, where) of every request whose id hash is a suspect."""
    many = source.many
    for row, where, obj in source.rows():
        if isinstance(obj, InputError):
            continue
        try:
            made = source.map_row(obj, row, where)
        except InputError:
            continue
        path = source.file_at(row)[0].name if many else source.path
        for req in made if isinstance(made, list) else (made,):
            if id_hash(req.custom_id) in suspects:
                yield req.custom_id, path, where


def _duplicate_hashes(hashes: array[int]) -> set[int]:
    """Hashes that occur more than once. Sorts and compares neighbours: ~20 MiB
    transient for a million ids, where a hash table (count_distinct) took ~125 MiB."""
    if len(hashes) < 2:
        return set()
    import pyarrow as pa
    import pyarrow.compute as pc

    values = _uint64_array(hashes)
    ordered = pc.take(values, pc.sort_indices(values))
    same = pc.equal(ordered[1:], ordered[:-1])
    found = (
        {int(v) for v in pc.filter(ordered[1:], same).to_pylist()}
        if pc.any(same).as_py()
        else set()
    )
    del values, ordered, same
    # pyarrow's allocator keeps the sort's freed pages for reuse, and the run that
    # follows never asks it for them again: 15 MiB of resident memory for a million
    # rows (BENCHMARKS.md, "Peak memory for a million rows")
    pa.default_memory_pool().release_unused()
    return found


def _uint64_array(hashes: array[int]) -> Any:
    """Zero-copy view of an array('Q') as a pyarrow uint64 array."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.uint64(), len(hashes), [None, pa.py_buffer(hashes)])
