"""The shard plan: which rows of the input each shard of a run on a cluster holds.

A plan depends only on the input file and ``shard_rows``, so the same input always
splits the same way; it is recorded in ``RUN_DIR/shards.json`` when a run starts, and
a rerun reads it back instead of planning again, so every shard resumes the rows it
started with (shard 3 is ``RUN_DIR/shards/00003/`` forever).

* JSONL: every ``shard_rows`` lines, cut at line ends; each shard records its byte
  range, so a worker seeks to its first line instead of reading the file from the top.
* Parquet: whole row groups, consecutive ones gathered until ``shard_rows`` (a row
  group is never split: Parquet reads them whole anyway).
* gzip: row ranges (a gzip stream cannot seek; each worker reads through to its rows).
* CSV/TSV: row ranges read through, as gzip (a quoted value may hold line breaks, so
  a line end is not a row end).
* Many files (a directory, prefix or glob: `batchrun._input.locations`): each file is
  split as above and no shard crosses a file; a shard's span names its file and the
  input's row number before the file's first row, so its rows are numbered as in one
  pass over the whole input.

Planning reads a JSONL, gzip or CSV file through (counting line ends, ~1 GB/s) and of
a Parquet file its footer only, so a prefix of Parquet files on object storage is
planned without reading its rows. Without ``shard_rows`` the plan aims at
`SHARDS_PER_WORKER` shards per worker, so a slow shard near the end holds up little
of the run.

    >>> plan = split_lines([10, 10, 10, 10, 10], shard_rows=2)
    >>> [(s.first_row, s.stop_row, s.start_byte, s.stop_byte) for s in plan]
    [(1, 3, 0, 20), (3, 5, 20, 40), (5, 6, 40, 50)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from batchrun._input.delimited import DelimitedFile
from batchrun._input.kinds import DELIMITED_KINDS, input_kind
from batchrun._input.locations import InputFile, input_files, recorded_location, tag_all
from batchrun._input.sources import Span
from batchrun._output.rundir import PLAN, SHARDS_DIR, shard_name
from batchrun.errors import InputError, RunDirError

SHARDS_PER_WORKER = 4
MIN_AUTO_ROWS = 1_000
MAX_AUTO_ROWS = 1_000_000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Shard:
    """One shard: its number and its rows."""

    index: int
    span: Span

    @property
    def name(self) -> str:
        return shard_name(self.index)

    @property
    def rows(self) -> int:
        """Rows (lines, blank ones included) the shard covers."""
        return self.span.stop_row - self.span.first_row


@dataclass(frozen=True)
class ShardPlan:
    input_path: str
    kind: str
    size: int
    """The input's length in bytes when planned (a changed length is a changed input)."""
    shard_rows: int
    shards: tuple[Shard, ...]
    files: tuple[tuple[str, int], ...] = ()
    """An input of many files: each file's name inside it and its size when planned."""

    def shard_dir(self, run_dir: str, shard: Shard) -> str:
        return shard_dir(run_dir, shard)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": 1,
            "input_path": self.input_path,
            "kind": self.kind,
            "size": self.size,
            "shard_rows": self.shard_rows,
            "shards": [{"index": s.index, **_span_fields(s.span)} for s in self.shards],
        }
        if self.files:
            out["files"] = [{"name": name, "size": size} for name, size in self.files]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardPlan:
        shards = []
        for item in data["shards"]:
            item = dict(item)
            index = int(item.pop("index"))
            shards.append(Shard(index, Span(**item)))
        files = tuple((str(f["name"]), int(f["size"])) for f in data.get("files") or ())
        return cls(
            str(data["input_path"]),
            str(data["kind"]),
            int(data["size"]),
            int(data["shard_rows"]),
            tuple(shards),
            files,
        )


def _span_fields(span: Span) -> dict[str, Any]:
    """A span as shards.json records it (a one-file input's spans as they always were)."""
    fields = asdict(span)
    if span.file is None:
        del fields["file"], fields["offset"]
    return fields


def shard_dir(run_dir: str, shard: Shard) -> str:
    """``RUN_DIR/shards/00003``: the shard's own run directory."""
    return os.path.join(run_dir, SHARDS_DIR, shard.name)


# -- pure splitting -----------------------------------------------------------------------
def split_lines(line_lengths: Iterable[int], shard_rows: int) -> list[Span]:
    """Spans of ``shard_rows`` lines each, from the lines' lengths in bytes (pure)."""
    spans: list[Span] = []
    first, start, pos, n = 1, 0, 0, 0
    lineno = 0
    for lineno, length in enumerate(line_lengths, 1):
        pos += length
        n += 1
        if n == shard_rows:
            spans.append(Span(first, lineno + 1, start, pos))
            first, start, n = lineno + 1, pos, 0
    if n:
        spans.append(Span(first, lineno + 1, start, pos))
    return spans


def split_groups(group_rows: Sequence[int], shard_rows: int) -> list[Span]:
    """Consecutive Parquet row groups gathered until each shard has ``shard_rows`` (pure).

    >>> [(s.first_row, s.stop_row, s.first_group, s.stop_group)
    ...  for s in split_groups([4, 4, 4], shard_rows=5)]
    [(1, 9, 0, 2), (9, 13, 2, 3)]
    """
    spans: list[Span] = []
    first_group, first_row, n = 0, 1, 0
    for g, rows in enumerate(group_rows):
        n += rows
        if n >= shard_rows:
            spans.append(Span(first_row, first_row + n, first_group=first_group, stop_group=g + 1))
            first_group, first_row, n = g + 1, first_row + n, 0
    if n:
        spans.append(
            Span(first_row, first_row + n, first_group=first_group, stop_group=len(group_rows))
        )
    return spans


def split_rows(total: int, shard_rows: int) -> list[Span]:
    """Plain row ranges (gzip input, read through).

    >>> [(s.first_row, s.stop_row) for s in split_rows(5, 2)]
    [(1, 3), (3, 5), (5, 6)]
    """
    return [Span(a, min(a + shard_rows, total + 1)) for a in range(1, total + 1, shard_rows)]


def auto_shard_rows(total_rows: int, workers: int) -> int:
    """Rows per shard when none is given: `SHARDS_PER_WORKER` shards per worker.

    >>> auto_shard_rows(100_000, 2), auto_shard_rows(50, 2), auto_shard_rows(10**9, 8)
    (12500, 1000, 1000000)
    """
    wanted = math.ceil(total_rows / max(1, workers * SHARDS_PER_WORKER))
    return max(MIN_AUTO_ROWS, min(MAX_AUTO_ROWS, wanted))


# -- reading the input ------------------------------------------------------------------
def _line_lengths(file: InputFile, size: int) -> Iterable[int]:
    """The byte length of every line of the first ``size`` bytes (the last one may lack
    its newline), found with ``bytes.find`` a chunk at a time."""
    with file.open() as f:
        carry = 0
        left = size
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                yield carry + end + 1 - start
                carry = 0
                start = end + 1
            carry += len(chunk) - start
        if carry:
            yield carry


def _count_lines(file: InputFile, size: int) -> int:
    n, last = 0, b"\n"
    with file.open() as f:
        left = size
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            n += chunk.count(b"\n")
            last = chunk[-1:]
            left -= len(chunk)
    return n + (last != b"\n")


def _count_gzip_lines(file: InputFile) -> int:
    n, last = 0, b"\n"
    with file.open_text_stream(True) as f:
        while chunk := f.read(CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _rows_of(file: InputFile, kind: str) -> tuple[int, list[int] | None]:
    """(the file's rows as a pass numbers them: lines of JSONL, rows of Parquet and
    CSV, the Parquet file's row groups' rows)."""
    if kind == "parquet":
        meta = file.parquet().metadata
        groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        return sum(groups), groups
    if kind in DELIMITED_KINDS:
        return DelimitedFile(file, kind).count(), None
    if kind == "jsonl.gz":
        return _count_gzip_lines(file), None
    return _count_lines(file, file.size), None


def _file_spans(
    file: InputFile, kind: str, rows: int, total: int, groups: list[int] | None
) -> list[Span]:
    if kind == "parquet":
        assert groups is not None
        return split_groups(groups, rows)
    if kind == "jsonl":
        return split_lines(_line_lengths(file, file.size), rows)
    return split_rows(total, rows)


def plan_shards(path: str, shard_rows: int | None, workers: int) -> ShardPlan:
    """Split the input at ``path`` into shards (``shard_rows=None``: `auto_shard_rows`)."""
    files, many = input_files(path)
    kind = input_kind(files[0].relative if many else path)
    try:
        files = tag_all(files)
        counted = [(f, input_kind(f.relative) if many else kind) for f in files]
        totals = [_rows_of(f, k) for f, k in counted]
        rows = shard_rows or auto_shard_rows(sum(t for t, _ in totals), workers)
        spans: list[Span] = []
        offset = 0
        for (file, file_kind), (total, groups) in zip(counted, totals, strict=True):
            found = _file_spans(file, file_kind, rows, total, groups)
            if many:
                found = [replace(s, file=file.relative, offset=offset) for s in found]
            spans.extend(found)
            offset += total
    except (OSError, EOFError) as exc:
        raise InputError(path, "0", f"cannot read file: {exc}") from exc
    if not spans:
        what = "the files hold" if many else "the file holds"
        raise InputError(path, "0", f"{what} no requests")
    shards = tuple(Shard(i, span) for i, span in enumerate(spans))
    size = sum(f.size for f in files)
    listed = tuple((f.relative, f.size) for f in files) if many else ()
    return ShardPlan(recorded_location(path), kind, size, rows, shards, listed)


def _input_shape(path: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(the input's bytes, each file's name and size when it is many files); -1: gone."""
    try:
        files, many = input_files(path)
        files = tag_all(files)
    except InputError:
        return -1, ()
    listed = tuple((f.relative, f.size) for f in files) if many else ()
    return sum(f.size for f in files), listed


def load_or_plan(
    run_dir: str, path: str, shard_rows: int | None, workers: int
) -> tuple[ShardPlan, bool]:
    """The plan recorded in ``run_dir`` (and False), or a new one (and True).

    A recorded plan is kept whatever ``shard_rows`` says now: its shards hold
    journals. An input whose length changed (or whose files did) no longer fits it:
    refused.
    """
    import orjson

    recorded = os.path.join(run_dir, PLAN)
    if os.path.exists(recorded):
        try:
            with open(recorded, "rb") as f:
                plan = ShardPlan.from_dict(orjson.loads(f.read()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{recorded}: unreadable shard plan ({exc})") from exc
        size, listed = _input_shape(path)
        if size != plan.size:
            raise RunDirError(
                f"{path} is {size:,} bytes but the run's shards were planned on "
                f"{plan.size:,} bytes; use another -o directory for another input"
            )
        if listed != plan.files:
            raise RunDirError(
                f"{path} holds other files than the run's shards were planned on; use "
                "another -o directory for another input"
            )
        return plan, False
    return plan_shards(path, shard_rows, workers), True


__all__ = [
    "PLAN",
    "SHARDS_DIR",
    "Shard",
    "ShardPlan",
    "auto_shard_rows",
    "load_or_plan",
    "plan_shards",
    "split_groups",
    "split_lines",
    "split_rows",
]
