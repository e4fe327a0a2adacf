"""The files of one input and what a run knows of them: which files (one file, or a
directory, prefix or glob of them: `batchrun._input.locations`), of what kind, how long
each was when first read, which shard of them (`Span`), and the fingerprint a resumed
run checks. Reading their rows is `batchrun._input.reading`; `batchrun._input.sources.Source`
puts the two together.

    >>> Span(first_row=11, stop_row=21).describe()
    'rows 11-20'
    >>> FileSet("data/").fingerprint()     # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from batchrun._input.kinds import DELIMITED_KINDS, input_kind
from batchrun._input.locations import (
    INPUT_SUFFIXES,
    InputFile,
    child,
    input_files,
    is_glob,
    tag_all,
)
from batchrun.errors import ConfigError, InputError


@dataclass(frozen=True)
class Span:
    """One shard's rows of an input file: rows ``first_row`` to ``stop_row - 1`` (1-based
    row or line numbers of the file).

    JSONL: the lines in bytes ``[start_byte, stop_byte)``; ``first_row`` is the line
    number of the line at ``start_byte``. Parquet: row groups ``[first_group,
    stop_group)``. gzip, CSV and TSV: the rows are found by reading through.

    An input of many files: ``file`` is the file the rows are in (its name inside the
    input) and ``offset`` the input's row number before the file's first row, so the
    shard's rows are numbered as in a pass over the whole input.
    """

    first_row: int
    stop_row: int
    start_byte: int = 0
    stop_byte: int | None = None
    first_group: int | None = None
    stop_group: int | None = None
    file: str | None = None
    offset: int = 0

    def describe(self) -> str:
        rows = f"rows {self.first_row}-{self.stop_row - 1}"
        return rows if self.file is None else f"{self.file} {rows}"


class FileSet:
    """The files of an input (one, or many numbered across in order), found once.

    Also remembers, for the passes that read them: each plain file's length when the
    fingerprint was taken (no pass reads past it), and in a many-file input where each
    file's rows start (`file_at`).
    """

    def __init__(
        self, path: str, *, span: Span | None = None, column_types: Mapping[str, str] | None = None
    ) -> None:
        self.path = str(path)
        self.span = span
        """Only these rows of the input (one shard of a run on a cluster); None: all."""
        self.column_types = dict(column_types or {})
        named = input_kind(self.path)
        if self.column_types and named not in DELIMITED_KINDS and _names_a_file(self.path):
            raise ConfigError(
                f"column_types: {path} is not a CSV or TSV file (column types are read "
                "from its values only there)"
            )
        self._files: list[InputFile] | None = None
        self._many = False
        self._kind: str | None = None
        self._sizes: dict[str, int] | None = None
        """Bytes of each file when first read: no pass reads a plain file past them."""
        self._fingerprint: str | None = None
        self._starts: dict[int, InputFile] = {}
        """A many-file input: each file by the input's row number before its first row
        (two passes may run at once, in two threads: `_starts_lock`)."""
        self._offsets: list[int] = []
        self._starts_lock = threading.Lock()

    def files(self) -> list[InputFile]:
        """The input's files in order (a shard of a many-file input: its one file)."""
        if self._files is None:
            if self.span is not None and self.span.file is not None:
                files, many = [child(self.path, self.span.file)], True
            else:
                files, many = input_files(self.path)
            if not many and not files[0].remote:
                local = files[0].path
                if not os.path.exists(local):
                    raise InputError(self.path, "0", "no such file")
            kind = input_kind(files[0].relative)
            if self.column_types and kind not in DELIMITED_KINDS:
                raise ConfigError(
                    f"column_types: {self.path} is not CSV or TSV files (column types are "
                    "read from its values only there)"
                )
            self._files, self._many, self._kind = files, many, kind
        return self._files

    @property
    def many(self) -> bool:
        """The input is a directory, prefix or glob (ids start with each file's name)."""
        self.files()
        return self._many

    @property
    def kind(self) -> str:
        """'jsonl', 'jsonl.gz', 'parquet', or one of the CSV/TSV kinds (of every file)."""
        if self._kind is None:
            self.files()
        assert self._kind is not None
        return self._kind

    def kind_of(self, file: InputFile) -> str:
        return input_kind(file.relative) if self._many else self.kind

    def limit(self, file: InputFile) -> int | None:
        """The file's length when first read (None: not read yet)."""
        sizes = self._sizes
        return None if sizes is None else sizes.get(file.relative)

    def file_at(self, row: int) -> tuple[InputFile, int]:
        """(the file input row ``row`` is in, its row number in that file); a many-file
        input, for rows a pass has reached."""
        if len(self._offsets) != len(self._starts):
            with self._starts_lock:
                self._offsets = sorted(self._starts)
        at = bisect_left(self._offsets, row) - 1
        if at < 0:
            files = self.files()
            return files[0], row
        offset = self._offsets[at]
        return self._starts[offset], row - offset

    def started(self, offset: int, file: InputFile) -> None:
        """A pass reached ``file``, whose first row follows input row ``offset``."""
        with self._starts_lock:
            self._starts[offset] = file

    def fingerprint(self) -> str:
        """What a resumed run checks it reads the same input by.

        A local file: blake2b of its bytes. An object: its size and its store's tag
        (ETag, generation: a new version of an object always has a new one), its bytes
        only where the store gives no tag. Many files: each file's name, size and that,
        in order, so an added, removed, renamed or changed file changes it.

        Taken once per input; it also fixes each plain file's length for every later
        pass. With a `Span`, only the shard's bytes (its JSONL lines, its Parquet row
        groups; of an object, its tag) and the span itself are hashed, so each shard
        checks its own part in parallel.
        """
        if self._fingerprint is not None:
            return self._fingerprint
        files = tag_all(self.files())
        digest = blake2b(digest_size=16)
        if self.span is not None:
            digest.update(_span_key(self.span).encode())
        if self._many:
            digest.update(b"files\0")
        for file in files:
            if self._many:
                digest.update(f"{file.relative}\0{file.size}\0".encode())
            if file.tag is not None:
                if not self._many:
                    digest.update(f"object\0{file.size}\0".encode())
                digest.update(f"tag\0{file.tag}\0".encode())
            else:
                self._hash_bytes(file, digest)
        self._files = files
        self._sizes = {f.relative: f.size for f in files}
        self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _hash_bytes(self, file: InputFile, digest: Any) -> None:
        size = file.size
        start, left = 0, size
        if self.span is not None:
            start, stop = self._span_bytes(file, size)
            left = stop - start
        try:
            with file.open(start) as f:
                while left > 0 and (chunk := f.read(min(1 << 20, left))):
                    digest.update(chunk)
                    left -= len(chunk)
        except OSError as exc:
            raise InputError(file.name, "0", f"cannot read file: {exc}") from exc

    def _span_bytes(self, file: InputFile, size: int) -> tuple[int, int]:
        """The bytes of the file that hold the span's rows (all of a gzip file)."""
        span = self.span
        assert span is not None
        kind = self.kind_of(file)
        if kind == "jsonl":
            stop = size if span.stop_byte is None else min(size, span.stop_byte)
            return span.start_byte, stop
        if kind == "parquet" and span.first_group is not None:
            meta = file.parquet().metadata
            starts, stops = [], []
            for g in range(span.first_group, span.stop_group or meta.num_row_groups):
                group = meta.row_group(g)
                for c in range(group.num_columns):
                    column = group.column(c)
                    first = column.dictionary_page_offset or column.data_page_offset
                    starts.append(first)
                    stops.append(first + column.total_compressed_size)
            if starts:
                return min(starts), min(size, max(stops))
        return 0, size

    def grew(self) -> bool:
        """True when a local file is longer now than when this run first read it (an
        object cannot grow: a new version is refused when it is read, `CHANGED`)."""
        if self._sizes is None or self._files is None:
            return False
        return any(
            not f.remote and f.current_size() > self._sizes.get(f.relative, f.size)
            for f in self._files
        )

    def parquet_names(self) -> list[str]:
        """Every column of a Parquet input; files whose columns differ are refused (a
        dataset's rows must all have its columns)."""
        names: list[str] | None = None
        first: InputFile | None = None
        for file in self.files():
            these = list(file.parquet().schema_arrow.names)
            if names is None:
                names, first = these, file
            elif these != names:
                assert first is not None
                raise InputError(
                    file.name,
                    "0",
                    f"its columns ({', '.join(these)}) are not those of {first.name} "
                    f"({', '.join(names)}): the files of one input have the same columns",
                )
        return names or []


def _names_a_file(path: str) -> bool:
    """``path`` names one file by its suffix (no directory, prefix or glob)."""
    return path.lower().endswith(INPUT_SUFFIXES) and not is_glob(path)


def _span_key(span: Span) -> str:
    """The span as its fingerprint hashes it: the repr a span had before inputs of many
    files (a shard of a run started then keeps its fingerprint), the file after it."""
    key = (
        f"Span(first_row={span.first_row!r}, stop_row={span.stop_row!r}, "
        f"start_byte={span.start_byte!r}, stop_byte={span.stop_byte!r}, "
        f"first_group={span.first_group!r}, stop_group={span.stop_group!r})"
    )
    if span.file is not None:
        key += f" in {span.file!r} after row {span.offset}"
    return key
