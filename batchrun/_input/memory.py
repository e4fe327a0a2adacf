"""Rows held in memory, written to a file a run can read (twice) and resume from.

A run reads its input twice (a validating scan, then the sending pass), fingerprints
it to refuse a resume with other data, and re-reads it for results.parquet; rows in
memory (a list of dicts, a pyarrow Table or RecordBatchReader, anything exporting the
Arrow C stream interface such as a pandas or polars DataFrame or a DuckDB result, a
Hugging Face ``datasets.Dataset``) are therefore first written to a file: Arrow data
to Parquet, dicts to JSONL, streamed batch by batch, never copied whole in memory.
The same rows give the same bytes, so the same notebook cell re-run finds the same
fingerprint and resumes.

    staged = spill(df)                        # a temporary file and its fingerprint
    placed = staged.place("runs/reviews", force=False)  # RUN_DIR/input.parquet
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun._runfiles import file_mode, remove_empty_dirs
from batchrun.errors import BatchrunError, ConfigError, InputError, RunDirError

ARROW_BATCH_ROWS = 8192


def in_memory(value: Any) -> bool:
    """True for input that is not a path to a file."""
    return value is not None and not isinstance(value, str | os.PathLike)


def _arrow_batches(value: Any) -> Iterator[Any] | None:
    """Record batches of an Arrow-like object, or None when it is not one."""
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return iter(value.to_batches(max_chunksize=ARROW_BATCH_ROWS))
    if isinstance(value, pa.RecordBatchReader):
        return iter(value)
    if isinstance(value, pa.RecordBatch):
        return iter([value])
    table = getattr(getattr(value, "data", None), "table", None)  # datasets.Dataset
    if isinstance(table, pa.Table):
        return iter(table.to_batches(max_chunksize=ARROW_BATCH_ROWS))
    if hasattr(value, "__arrow_c_stream__"):  # pandas >= 2.2, polars, duckdb, ...
        return iter(pa.RecordBatchReader.from_stream(value))
    if type(value).__module__.startswith("pandas") and hasattr(value, "iloc"):
        return (
            pa.RecordBatch.from_pandas(value.iloc[i : i + ARROW_BATCH_ROWS], preserve_index=False)
            for i in range(0, len(value), ARROW_BATCH_ROWS)
        )
    return None


@dataclass(frozen=True)
class Placed:
    """Where `Staged.place` put the rows, and what it made for them: ``made_dir``, the
    run directory or the first of its parents that did not exist (None: it existed),
    and whether ``path`` is a file it wrote (False: the same rows were there already).
    A run refused before it starts removes what was made (`batchrun._runfiles.
    undone_unless_started`): a mistake leaves no copy of the caller's data behind."""

    path: str
    made_dir: str | None
    made_file: bool


@dataclass
class Staged:
    """In-memory input written to a temporary file, before it has a run directory."""

    path: str
    fingerprint: str
    suffix: str

    def place(self, out_dir: str, *, force: bool) -> Placed:
        """Move the file to ``out_dir/input.<suffix>`` (its mode from the umask, as every
        file of a run directory). A run directory that already holds other data is
        refused unless ``force`` (its answers are for that data); one that cannot be
        made or written is a `RunDirError` (the file is removed, and the directories
        made for it while still empty)."""
        made_dir = _first_missing(out_dir)
        try:
            return self._place(out_dir, made_dir, force=force)
        except (OSError, BatchrunError) as exc:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # the rows' temporary file: nothing else holds it now
            if made_dir is not None:
                remove_empty_dirs(out_dir, made_dir)
            if isinstance(exc, BatchrunError):
                raise
            failed = "write the rows into" if os.path.isdir(out_dir) else "create"
            raise RunDirError(
                f"{out_dir}: cannot {failed} the run directory ({exc.strerror or exc})"
            ) from exc

    def _place(self, out_dir: str, made_dir: str | None, *, force: bool) -> Placed:
        from batchrun._input.sources import Source

        os.makedirs(out_dir, exist_ok=True)
        final = os.path.join(out_dir, f"input{self.suffix}")
        if os.path.exists(final):
            same = Source(final).fingerprint() == self.fingerprint
            if same:
                os.unlink(self.path)
                return Placed(final, made_dir, made_file=False)
            if os.path.exists(os.path.join(out_dir, "run.json")) and not force:
                os.unlink(self.path)
                raise RunDirError(
                    f"{out_dir} was started with other rows; use another directory, or "
                    "force=True to run these (rows whose request changed are sent again)"
                )
        shutil.move(self.path, final)
        # the temporary file was private (0600, in a shared /tmp); in the run directory
        # it is one more of the run's files
        os.chmod(final, file_mode())
        return Placed(final, made_dir, made_file=True)


def _first_missing(path: str) -> str | None:
    """The outermost directory of ``path`` that does not exist yet (None: it exists)."""
    missing = None
    current = os.path.abspath(path)
    while not os.path.exists(current):
        missing = current
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing


def spill(value: Any) -> Staged:
    """Write in-memory rows to a temporary file (Parquet for Arrow data, else JSONL).
    Request rows in Arrow form need a ``body`` column, as a Parquet request file does."""
    import pyarrow as pa

    from batchrun._input.sources import Source

    try:
        batches = _arrow_batches(value)
        if batches is not None:
            path = _write_parquet(batches)
            suffix = ".parquet"
        elif isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
            path = _write_jsonl(value)
            suffix = ".jsonl"
        else:
            raise ConfigError(
                f"input: cannot read rows from a {type(value).__name__} (give a file path, "
                "dicts, a pyarrow Table, a DataFrame or a datasets.Dataset)"
            )
    except OSError as exc:  # the temporary directory is full or not writable (ArrowIOError too)
        raise RunDirError(
            f"{exc.filename or tempfile.gettempdir()}: cannot write the rows to a temporary "
            f"file ({exc.strerror or exc})"
        ) from exc
    except pa.ArrowException as exc:  # a column Arrow cannot hold (mixed types, say)
        raise InputError(
            "", f"the {type(value).__name__}", f"cannot be read as Arrow ({exc})"
        ) from exc
    return Staged(path, Source(path).fingerprint(), suffix)


def caller_row_error(exc: InputError, kind: str) -> InputError:
    """An error about a row of the file in-memory rows were written to, naming the
    caller's row instead: ``input.jsonl:line 2`` is row 1 of the caller's list (one line
    or Parquet row was written per row, in order).

    >>> str(caller_row_error(InputError("o/input.jsonl", "line 2", "bad"), "DataFrame"))
    'row 1 of the DataFrame (0-based): bad'
    """
    label, _, number = exc.where.partition(" ")
    if label in ("line", "row") and number.isdigit():
        where = f"row {int(number) - 1} of the {kind} (0-based)"
    else:
        where = f"the {kind}"
    return InputError("", where, exc.reason)


@contextlib.contextmanager
def _temp(suffix: str) -> Iterator[str]:
    """A private temporary file for the rows, removed again unless the block ends well
    (a row that cannot be written, a Ctrl-C while writing: no copy left in /tmp)."""
    fd, path = tempfile.mkstemp(prefix="batchrun-input-", suffix=suffix)
    os.close(fd)
    try:
        yield path
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _write_parquet(batches: Iterator[Any]) -> str:
    import pyarrow.parquet as pq

    with _temp(".parquet") as path:
        writer = None
        try:
            for batch in batches:
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema)
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ConfigError("input: no rows")
    return path


def _write_jsonl(rows: Iterable[Any]) -> str:
    with _temp(".jsonl") as path, open(path, "wb") as f:
        wrote = False
        chunk: list[bytes] = []
        for i, row in enumerate(rows, 1):
            try:
                chunk.append(
                    orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
                )
            except TypeError as exc:
                raise ConfigError(f"input: row {i} cannot be written as JSON ({exc})") from exc
            if len(chunk) >= ARROW_BATCH_ROWS:
                f.write(b"".join(chunk))
                chunk.clear()
            wrote = True
        f.write(b"".join(chunk))
        if not wrote:
            raise ConfigError("input: no rows")
    return path


__all__ = ["Placed", "Staged", "caller_row_error", "in_memory", "spill"]
