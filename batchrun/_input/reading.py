"""Read the rows of an input's files, one at a time: JSONL (.jsonl, .jsonl.gz), Parquet
and CSV/TSV (`batchrun._input.delimited`), decoded but not yet checked or turned into
requests (`batchrun._input.sources` does that).

Every pass reads the same rows: a plain JSONL file is never read past the length the
fingerprint took (`batchrun._input.fileset.FileSet.limit`), and after a scan no pass
reads past the last row it validated (`RowReader.last_row`). A `Span` is read from its
first byte (JSONL) or row group (Parquet), or read through to (gzip, CSV, TSV).

    >>> reader = RowReader(FileSet("requests.jsonl"), dataset=False)   # doctest: +SKIP
    >>> next(iter(reader.rows()))                                       # doctest: +SKIP
    (1, 'line 1', {'model': 'm', 'messages': [...]})
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from batchrun._input.fileset import FileSet, Span
from batchrun._input.locations import InputFile
from batchrun.errors import InputError

if TYPE_CHECKING:
    from batchrun._input.delimited import DelimitedFile

CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
PARQUET_BATCH_ROWS = 2048

Row = tuple[int, str, Any]
"""(row number, label, decoded row or the InputError that row raised)."""


class RowReader:
    """The decoded rows of a `FileSet`, numbered across its files in order. Request
    files (not ``dataset``) must give each row a body: a Parquet or CSV/TSV row is
    turned into a Batch API line from its ``body`` column."""

    def __init__(self, files: FileSet, *, dataset: bool) -> None:
        self.input = files
        self.dataset = dataset
        self.last_row: int | None = None
        """After a scan: the last row it read; no later pass reads past it."""

    def rows(self) -> Iterator[Row]:
        """(row number, label, decoded row or the InputError that row raised)."""
        files = self.input.files()
        if self.input.many:
            rows: Iterator[Row] = self._many_rows(files)
        else:
            rows = self._file_rows(files[0], self.input.span)
        last = self.last_row
        if last is None:
            yield from rows
            return
        for item in rows:
            if item[0] > last:
                break  # appended after the scan: never validated, never sent
            yield item

    def _many_rows(self, files: list[InputFile]) -> Iterator[Row]:
        """Every file's rows, numbered on from the files before it."""
        span = self.input.span
        offset = span.offset if span is not None else 0
        for file in files:
            self.input.started(offset, file)
            rows = self._file_rows(file, span)
            while True:
                try:
                    row, where, obj = next(rows)
                except StopIteration as stop:
                    offset += int(stop.value or 0)
                    break
                yield offset + row, where, obj

    def _file_rows(self, file: InputFile, span: Span | None) -> Generator[Row, None, int]:
        """One file's rows; returns its number of lines (JSONL) or rows."""
        kind = self.input.kind_of(file)
        if kind in ("jsonl", "jsonl.gz"):
            return self._jsonl_rows(file, kind, span)
        if kind == "parquet":
            return self._parquet_rows(file, span)
        return self._delimited_rows(file, span)

    def _jsonl_rows(
        self, file: InputFile, kind: str, span: Span | None
    ) -> Generator[Row, None, int]:
        limit = self.input.limit(file) if kind == "jsonl" else None
        first, pos = 1, 0
        if span is not None and kind == "jsonl":
            first, pos = span.first_row, span.start_byte
            if span.stop_byte is not None:
                limit = span.stop_byte if limit is None else min(limit, span.stop_byte)
        lineno = first - 1
        try:
            with file.open_text_stream(kind == "jsonl.gz", pos) as f:
                for lineno, line in enumerate(f, first):  # noqa: B007 - the count is returned
                    if limit is not None:
                        pos += len(line)
                        if pos > limit:
                            lineno -= 1
                            break  # written after this run first looked at the file
                    if span is not None:
                        if lineno < span.first_row:
                            continue  # gzip: read through to the shard
                        if lineno >= span.stop_row:
                            break
                    if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                        line = line[3:]
                    if not line.strip():
                        continue
                    where = f"line {lineno}"
                    try:
                        yield lineno, where, orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield lineno, where, InputError(file.name, where, f"not valid JSON ({exc})")
        except (OSError, EOFError) as exc:  # unreadable file, corrupt gzip
            raise InputError(file.name, "0", f"cannot read file: {exc}") from exc
        return lineno

    def delimited_file(self, file: InputFile | None = None) -> DelimitedFile:
        """The CSV/TSV reader of one file of this input (never reading past the scanned
        length); the first file by default."""
        from batchrun._input.delimited import DelimitedFile

        file = file or self.input.files()[0]
        kind = self.input.kind_of(file)
        limit = self.input.limit(file) if kind in ("csv", "tsv") else None
        return DelimitedFile(file, kind, column_types=self.input.column_types, limit=limit)

    def _delimited_rows(self, file: InputFile, span: Span | None) -> Generator[Row, None, int]:
        reader = self.delimited_file(file)
        names = reader.header()
        if not self.dataset and "body" not in names:
            raise InputError(
                file.name,
                "0",
                "a CSV/TSV file holds dataset rows: give a prompt template (the prompt "
                "setting: [prompt] user in a job file, prompt= in Python), or a 'body' "
                f"column of JSON request bodies (columns: {', '.join(names)})",
            )
        first, stop = (span.first_row, span.stop_row) if span is not None else (1, None)
        count = 0
        for row, where, record in reader.rows(first, stop):
            count = row
            if self.dataset or isinstance(record, InputError):
                yield row, where, record
            else:
                yield row, where, request_line(file, record, where, False)
        return count

    def _parquet_rows(self, file: InputFile, span: Span | None) -> Generator[Row, None, int]:
        import pyarrow as pa

        pfile = file.parquet()
        struct_body = False
        if not self.dataset:
            names = pfile.schema_arrow.names
            if "body" not in names:
                raise InputError(
                    file.name,
                    "0",
                    f"Parquet request file needs a 'body' column (columns: {', '.join(names)})",
                )
            struct_body = pa.types.is_struct(pfile.schema_arrow.field("body").type)
        groups, row = row_groups(span, pfile.num_row_groups)
        try:
            for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
                for record in batch.to_pylist():
                    row += 1
                    where = f"row {row}"
                    if self.dataset:
                        yield row, where, record
                    else:
                        yield row, where, request_line(file, record, where, struct_body)
        except (pa.ArrowException, OSError) as exc:  # a corrupt page is a plain OSError
            raise InputError(file.name, f"row {row + 1}", f"corrupt Parquet data ({exc})") from exc
        return int(pfile.metadata.num_rows)

    def dataset_batches(self, batch_rows: int) -> Iterator[tuple[list[Row], Any]]:
        """A Parquet dataset's rows a batch at a time with their Arrow batch (the input
        columns results.parquet carries), numbered as `rows` numbers them; every file's
        batches in the first file's schema."""
        import pyarrow as pa

        files = self.input.files()
        many, span = self.input.many, self.input.span
        schema = None
        offset = span.offset if many and span is not None else 0
        for file in files:
            if many:
                self.input.started(offset, file)
            pfile = file.parquet()
            if schema is None:
                schema = pfile.schema_arrow
            groups, row = row_groups(span, pfile.num_row_groups)
            try:
                for batch in pfile.iter_batches(batch_size=batch_rows, row_groups=groups):
                    if batch.schema != schema:
                        batch = _conformed(batch, schema, file)
                    items = []
                    for record in batch.to_pylist():
                        row += 1
                        items.append((offset + row, f"row {row}", record))
                    yield items, batch
            except (pa.ArrowException, OSError) as exc:
                raise InputError(
                    file.name, f"row {row + 1}", f"corrupt Parquet data ({exc})"
                ) from exc
            offset += int(pfile.metadata.num_rows)


def row_groups(span: Span | None, count: int) -> tuple[list[int] | None, int]:
    """The Parquet row groups to read (None: all of the ``count``) and the number of
    the row before the first of them."""
    if span is None or span.first_group is None:
        return None, 0
    return list(range(span.first_group, span.stop_group or count)), span.first_row - 1


def request_line(file: InputFile, record: dict[str, Any], where: str, struct_body: bool) -> Any:
    """A Parquet or CSV/TSV request row as the Batch API line it stands for (its body
    decoded when it is JSON text; an InputError when that text is not JSON)."""
    body = record.get("body")
    if isinstance(body, str | bytes):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return InputError(file.name, where, f"body is not valid JSON ({exc})")
    elif struct_body:
        body = _drop_nulls(body)
    return {
        "custom_id": record.get("custom_id"),
        "method": record.get("method") or "POST",
        "url": record.get("url") or CHAT_URLS[0],
        "body": body,
    }


def _conformed(batch: Any, schema: Any, file: InputFile) -> Any:
    """A batch of a later file in the first file's schema (an int32 column where the
    first file has int64)."""
    import pyarrow as pa

    try:
        table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
    except (pa.ArrowException, KeyError) as exc:
        raise InputError(
            file.name, "0", f"its columns do not match the input's first file ({exc})"
        ) from exc
    return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema)


def _drop_nulls(value: Any) -> Any:
    """Struct columns give every row every field; a null field was absent."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
