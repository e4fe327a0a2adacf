"""Read requests from JSONL (.jsonl, .jsonl.gz), Parquet and CSV/TSV files, one row at a time.

Two kinds of row are accepted (see README "Input"):

* a Batch API line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``;
  the ``url`` may also be ``/v1/embeddings`` or ``/v1/responses`` (one file may mix
  them), each body checked for its API (`batchrun.input.bodies`)
* a bare chat-completions body ``{"model", "messages", ...}`` with an optional
  top-level ``custom_id`` (taken out of the body before sending).

Rows without a custom_id are named ``row-<n>`` after their 1-based line (JSONL) or
row (Parquet; CSV: after the header) number, so a rerun names them the same.

The input may also be a directory, prefix or glob of such files, local or on object
storage (`batchrun.input.locations`): each file is read through an `InputFile` (a
filesystem and a path), rows are numbered across the files in order, and a row
without an id is ``<file>:row-<n>`` after its own file's line or row. Dataset
jobs instead turn each row into a body through a prompt template (`RowMapper`
injected by the job). A CSV or TSV file (`batchrun.input.delimited`) is a dataset;
run without a template it must have a ``body`` column, as a Parquet request file.

Files are streamed: `Source.scan` makes one validating pass (counts rows, rejects
duplicates, writes invalid rows aside with --skip-invalid) before anything is
sent, then `Source.requests` streams again. Memory holds one batch of rows plus
16 bytes per row (the hashes of its id and of its body).

Every pass reads the same rows: the file's length is taken once (`fingerprint`),
a plain JSONL file is never read past it, and after the scan no pass reads past
the last row it validated. Rows appended while a run goes are neither sent nor
counted (the next run sees a changed input and says so).

A `Span` restricts a source to one shard of the file (`batchrun.scale.shards`): a byte
range of a JSONL file (read from its first byte, never from the top), a range of
Parquet row groups, or (gzip, which cannot seek, and CSV, whose quoted values may
hold line breaks) a range of rows read through. Rows keep their numbers in the
whole file, so ``row-<n>`` ids are the same in every shard.

    >>> src = Source("requests.jsonl")              # doctest: +SKIP
    >>> scan = src.scan(); next(iter(src.requests())).custom_id   # doctest: +SKIP
    'row-1'
"""

from __future__ import annotations

import os
import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from batchrun.apis import CHAT, EMBEDDINGS, api_of_url
from batchrun.errors import ConfigError, InputError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.bodies import embeddings_problem, responses_problem
from batchrun.input.kinds import input_kind
from batchrun.input.locations import InputFile, child, input_files, tag_all
from batchrun.models import Request
from batchrun.templating.rowwatch import Interrupted, watched

if TYPE_CHECKING:
    from batchrun.input.delimited import DelimitedFile

CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
PARQUET_BATCH_ROWS = 2048


class RowMapper(Protocol):
    """(decoded row, row number, where) -> its Request, or one per variant (a list);
    raises InputError for a bad row. ``name`` is the id of a row that names none
    (None: ``row-<row>``; a many-file input passes ``<file>:row-<n>``)."""

    def __call__(
        self, obj: Any, row: int, where: str, *, name: str | None = None
    ) -> Request | list[Request]: ...


# Told of every valid request of a scan, with its body as sent (bytes).
ScanObserver = Callable[[Request, bytes], None]
# The last step from row to request (e.g. set a streamed body up for usage).
Finisher = Callable[[Request], Request]
# A rule every request must pass (its context window): None, or why its row is bad.
RequestCheck = Callable[[Request], "str | None"]


def request_from_row(
    obj: Any,
    row: int,
    where: str,
    *,
    default_model: str | None,
    path: str,
    name: str | None = None,
) -> Request:
    """Validate one request-file row and turn it into a Request (``name``: its id when
    it has no custom_id; None: ``row-<row>``)."""
    if not isinstance(obj, dict):
        kind = type(obj).__name__ if obj is not None else "null"
        raise InputError(path, where, f"expected a JSON object, got {kind}")
    custom_id = obj.get("custom_id")
    api = CHAT
    if "body" in obj and ("url" in obj or "method" in obj or custom_id is not None):
        method = obj.get("method", "POST")
        if not isinstance(method, str) or method.upper() != "POST":
            raise InputError(path, where, f"method must be POST, got {method!r}")
        url = obj.get("url", "/v1/chat/completions")
        found = api_of_url(url)
        if found is None:
            raise InputError(
                path,
                where,
                f"url must be /v1/chat/completions, /v1/embeddings or /v1/responses, got {url!r}",
            )
        api = found
        body = obj["body"]
        if not isinstance(body, dict):
            raise InputError(path, where, "body must be a JSON object")
    else:
        body = obj
        if custom_id is not None:
            body = dict(obj)
            del body["custom_id"]
    if custom_id is None:
        custom_id = name or f"row-{row}"
    elif not isinstance(custom_id, str) or not custom_id:
        raise InputError(path, where, f"custom_id must be a non-empty string, got {custom_id!r}")
    if api == CHAT:
        check_body(body, path, where)
    else:
        problem = embeddings_problem(body) if api == EMBEDDINGS else responses_problem(body)
        if problem is not None:
            raise InputError(path, where, problem)
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError as exc:  # orjson reads 1024 levels deep, writes 255
        raise InputError(path, where, f"body cannot be sent as JSON ({exc})") from exc
    if "model" not in body or body["model"] in (None, ""):
        if not default_model:
            raise InputError(path, where, "no model in the body (give --model for a default)")
        body = {**body, "model": default_model}
    elif not isinstance(body["model"], str):
        raise InputError(path, where, "model must be a string")
    return Request(custom_id, body, row, api=api)


def check_body(body: dict[str, Any], path: str, where: str) -> None:
    messages = body.get("messages")
    if messages is None:
        if "input" in body:  # an embeddings or Responses body, sent without its url
            raise InputError(
                path,
                where,
                "body has no 'messages' (an embeddings or Responses request is a line "
                '{"custom_id", "method": "POST", "url": "/v1/embeddings" or '
                '"/v1/responses", "body"})',
            )
        raise InputError(path, where, "body has no 'messages'")
    if not isinstance(messages, list):
        raise InputError(path, where, "'messages' must be a list")
    if not messages:
        raise InputError(path, where, "'messages' is empty")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InputError(path, where, f"messages[{i}] must be an object with a 'role'")


class _StopCheck(Protocol):
    def __call__(self) -> bool: ...


SCAN_STOP_EVERY = 512
"""Rows between two looks at the scan's stop flag."""


@dataclass
class ScanResult:
    """What one validating pass over the input found."""

    total: int = 0
    invalid: int = 0
    fingerprint: str = ""
    hashes: array[int] = field(default_factory=lambda: array("Q"))
    """The id hash of every valid row (8 bytes each), in file order."""
    bodies: array[int] = field(default_factory=lambda: array("Q"))
    """The body hash (`batchrun.ids.body_hash_int`) of every valid row, same order."""
    last_row: int = 0
    """The last row number read: later passes stop there."""
    columns: set[str] | None = None
    """Dataset inputs: every column name seen in any row (for checks before sending)."""
    models: set[str] = field(default_factory=set)
    """Every model the requests name (for price checks before sending)."""


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


class Source:
    """A request or dataset input: one file, or the files of a directory, prefix or glob
    (`batchrun.input.locations`), local or on object storage. `requests()` may be
    called more than once.

    The rows of many files are numbered across them in order (file by file, each
    file's lines or rows counted whole), and their ids without a custom_id are
    ``<file>:row-<n>`` after the file's own line or row number: adding a file leaves
    the ids of the others as they were. Messages name the file and its line or row.
    """

    def __init__(
        self,
        path: str,
        *,
        default_model: str | None = None,
        mapper: RowMapper | None = None,
        dataset: bool = False,
        skip_invalid: bool = False,
        finish: Finisher | None = None,
        check: RequestCheck | None = None,
        span: Span | None = None,
        column_types: Mapping[str, str] | None = None,
    ) -> None:
        from batchrun.input.kinds import DELIMITED_KINDS

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
        self.skip_invalid = skip_invalid
        # dataset rows go to a template mapper as they are; request rows carry a body
        self.dataset = dataset
        source_path = self.path

        def request_row(obj: Any, row: int, where: str, *, name: str | None = None) -> Request:
            return request_from_row(
                obj, row, where, default_model=default_model, path=source_path, name=name
            )

        base: RowMapper = mapper or request_row
        self.mapper: RowMapper = (
            base if finish is None and check is None else _finished(base, finish, check, path)
        )
        self._files: list[InputFile] | None = None
        self._many = False
        self._kind: str | None = None
        self._sizes: dict[str, int] | None = None
        """Bytes of each file when first read: no pass reads a plain file past them."""
        self._fingerprint: str | None = None
        self._last_row: int | None = None
        self._starts: dict[int, InputFile] = {}
        """A many-file input: each file by the input's row number before its first row
        (two passes may run at once, in two threads: `_starts_lock`)."""
        self._offsets: list[int] = []
        self._starts_lock = threading.Lock()

    # -- the files ------------------------------------------------------------------
    def files(self) -> list[InputFile]:
        """The input's files in order (a shard of a many-file input: its one file)."""
        if self._files is None:
            from batchrun.input.kinds import DELIMITED_KINDS

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

    @property
    def delimited(self) -> bool:
        """CSV or TSV files (`batchrun.input.delimited`)."""
        from batchrun.input.kinds import DELIMITED_KINDS

        return self.kind in DELIMITED_KINDS

    def _kind_of(self, file: InputFile) -> str:
        return input_kind(file.relative) if self._many else self.kind

    def row_name(self, row: int) -> str:
        """The id of input row ``row`` when the row names none: ``row-<n>``, and
        ``<file>:row-<n>`` (the file's own row number) in a many-file input."""
        if not self._many:
            return f"row-{row}"
        file, local = self.file_at(row)
        return f"{file.relative}:row-{local}"

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

    def _started(self, offset: int, file: InputFile) -> None:
        with self._starts_lock:
            self._starts[offset] = file

    def map_row(self, obj: Any, row: int, where: str) -> Request | list[Request]:
        """The row's request(s) through the mapper; a many-file input's rows get their
        file's ids, and their errors name the file."""
        if not self._many:
            return self.mapper(obj, row, where)
        file, local = self.file_at(row)
        try:
            return self.mapper(obj, row, where, name=f"{file.relative}:row-{local}")
        except InputError as exc:
            if exc.path == file.name:
                raise
            raise InputError(file.name, exc.where, exc.reason) from None

    # -- raw rows -------------------------------------------------------------------
    def rows(self) -> Iterator[tuple[int, str, Any]]:
        """(row number, label, decoded row or the InputError that row raised)."""
        files = self.files()
        if self._many:
            rows: Iterator[tuple[int, str, Any]] = self._many_rows(files)
        else:
            rows = self._file_rows(files[0], self.span)
        last = self._last_row
        if last is None:
            yield from rows
            return
        for item in rows:
            if item[0] > last:
                break  # appended after the scan: never validated, never sent
            yield item

    def _many_rows(self, files: list[InputFile]) -> Iterator[tuple[int, str, Any]]:
        """Every file's rows, numbered on from the files before it."""
        offset = self.span.offset if self.span is not None else 0
        for file in files:
            self._started(offset, file)
            rows = self._file_rows(file, self.span)
            while True:
                try:
                    row, where, obj = next(rows)
                except StopIteration as stop:
                    offset += int(stop.value or 0)
                    break
                yield offset + row, where, obj

    def _file_rows(self, file: InputFile, span: Span | None) -> Generator[Row, None, int]:
        """One file's rows; returns its number of lines (JSONL) or rows."""
        kind = self._kind_of(file)
        if kind in ("jsonl", "jsonl.gz"):
            return self._jsonl_rows(file, kind, span)
        if kind == "parquet":
            return self._parquet_rows(file, span)
        return self._delimited_rows(file, span)

    def _limit(self, file: InputFile) -> int | None:
        sizes = self._sizes
        return None if sizes is None else sizes.get(file.relative)

    def _jsonl_rows(
        self, file: InputFile, kind: str, span: Span | None
    ) -> Generator[Row, None, int]:
        limit = self._limit(file) if kind == "jsonl" else None
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
        """The CSV/TSV reader of one file of this source (never reading past the scanned
        length); the first file by default."""
        from batchrun.input.delimited import DelimitedFile

        file = file or self.files()[0]
        kind = self._kind_of(file)
        limit = self._limit(file) if kind in ("csv", "tsv") else None
        return DelimitedFile(file, kind, column_types=self.column_types, limit=limit)

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
                yield row, where, self._parquet_request_row(file, record, where, False)
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
        groups, row = _row_groups(span, pfile.num_row_groups)
        try:
            for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
                for record in batch.to_pylist():
                    row += 1
                    where = f"row {row}"
                    if self.dataset:
                        yield row, where, record
                    else:
                        yield (
                            row,
                            where,
                            self._parquet_request_row(file, record, where, struct_body),
                        )
        except (pa.ArrowException, OSError) as exc:  # a corrupt page is a plain OSError
            raise InputError(file.name, f"row {row + 1}", f"corrupt Parquet data ({exc})") from exc
        return int(pfile.metadata.num_rows)

    def dataset_batches(self, batch_rows: int) -> Iterator[tuple[list[Row], Any]]:
        """A Parquet dataset's rows a batch at a time with their Arrow batch (the input
        columns results.parquet carries), numbered as `rows` numbers them; every file's
        batches in the first file's schema."""
        import pyarrow as pa

        files = self.files()
        schema = None
        offset = self.span.offset if self._many and self.span is not None else 0
        for file in files:
            if self._many:
                self._started(offset, file)
            pfile = file.parquet()
            if schema is None:
                schema = pfile.schema_arrow
            groups, row = _row_groups(self.span, pfile.num_row_groups)
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

    def parquet_schema(self) -> Any:
        """The Arrow schema of a Parquet input (its first file's)."""
        return self.files()[0].parquet().schema_arrow

    def row_groups(self, count: int) -> tuple[list[int] | None, int]:
        """The Parquet row groups to read (None: all of the ``count``) and the number of
        the row before the first of them."""
        return _row_groups(self.span, count)

    def _parquet_request_row(
        self, file: InputFile, record: dict[str, Any], where: str, struct_body: bool
    ) -> Any:
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

    # -- requests -------------------------------------------------------------------
    def requests(self) -> Iterator[Request]:
        """Valid requests in file order (invalid rows skipped: `scan` reported them)."""
        map_row = self.map_row
        for row, where, obj in self.rows():
            if isinstance(obj, InputError):
                continue
            try:
                made = map_row(obj, row, where)
            except InputError:
                continue
            if type(made) is list:
                yield from made
            else:
                yield made  # type: ignore[misc]

    def scan(
        self,
        invalid_sink: IO[bytes] | None = None,
        *,
        should_stop: _StopCheck | None = None,
        observe: ScanObserver | None = None,
    ) -> ScanResult:
        """Validate every row, count them, reject duplicate ids. Sends nothing.

        Raises the first InputError unless the source skips invalid rows, in which
        case each bad row is written to ``invalid_sink`` as a JSON line (with its
        ``file`` in a many-file input).
        ``should_stop`` is polled every few hundred rows, and inside a row whose
        template loops (`batchrun.templating.rowwatch`, which also ends a row rendering
        past its time limit as a bad row); when it says so the scan raises
        `Interrupted` (a Ctrl-C during a long scan must not wait for it).
        ``observe`` is told of every valid request with its body's bytes (the run's
        pilot selection and in-run dedupe collect what they need from it).
        """
        result = ScanResult(fingerprint=self.fingerprint())
        self._last_row = None
        hashes, bodies, models = result.hashes, result.bodies, result.models
        columns: set[str] | None = set() if self.dataset else None
        collect = columns is not None and self.kind in ("jsonl", "jsonl.gz")
        parquet_names = (
            self._parquet_names() if self.kind == "parquet" and columns is not None else None
        )  # files of other columns refused before any row is read
        map_row = self.map_row
        dumps = orjson.dumps
        # a template's loops and calls look at the time and the stop flag
        with watched(should_stop):
            for row, where, obj in self.rows():
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
                    if not self.skip_invalid:
                        raise
                    result.invalid += 1
                    if invalid_sink is not None:
                        line: dict[str, Any] = {
                            "row": row,
                            "where": exc.where,
                            "reason": exc.reason,
                        }
                        if self._many:
                            line["file"] = self.file_at(row)[0].relative
                        invalid_sink.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
                    continue
                for req in made if type(made) is list else (made,):
                    hashes.append(id_hash(req.custom_id))  # type: ignore[union-attr]
                    payload = dumps(req.body)  # type: ignore[union-attr]
                    bodies.append(body_hash_int(payload))
                    model = req.body.get("model")  # type: ignore[union-attr]
                    if isinstance(model, str):
                        models.add(model)
                    if observe is not None:
                        observe(req, payload)  # type: ignore[arg-type]
                    result.total += 1
        result.columns = columns
        if parquet_names is not None:
            result.columns = set(parquet_names)
        elif self.delimited and columns is not None:
            result.columns = set().union(*(self.delimited_file(f).header() for f in self.files()))
        self._last_row = result.last_row
        if result.total == 0 and result.invalid == 0:
            what = "the files hold" if self._many else "the file holds"
            raise InputError(self.path, "0", f"{what} no requests")
        if result.total == 0:
            raise InputError(
                self.path,
                "0",
                f"no valid request: all {result.invalid} rows are invalid (see invalid.jsonl)",
            )
        duplicates = _duplicate_hashes(hashes)
        if duplicates:
            self._raise_first_duplicate(duplicates)
        return result

    def _raise_first_duplicate(self, suspects: set[int]) -> None:
        """Confirm on the real strings (a hash collision is not a duplicate)."""
        seen: dict[str, str] = {}
        for custom_id, path, where in self._ids_with_hash(suspects):
            if custom_id in seen:
                first = seen[custom_id]
                raise InputError(
                    path, where, f"duplicate custom_id {custom_id!r} (first seen at {first})"
                )
            seen[custom_id] = where if path == self.path else f"{path}:{where}"

    def _ids_with_hash(self, suspects: set[int]) -> Iterator[tuple[str, str, str]]:
        """(id, the file it is in, where) of every request whose id hash is a suspect."""
        for row, where, obj in self.rows():
            if isinstance(obj, InputError):
                continue
            try:
                made = self.map_row(obj, row, where)
            except InputError:
                continue
            path = self.file_at(row)[0].name if self._many else self.path
            for req in made if isinstance(made, list) else (made,):
                if id_hash(req.custom_id) in suspects:
                    yield req.custom_id, path, where

    def fingerprint(self) -> str:
        """What a resumed run checks it reads the same input by.

        A local file: blake2b of its bytes. An object: its size and its store's tag
        (ETag, generation: a new version of an object always has a new one), its bytes
        only where the store gives no tag. Many files: each file's name, size and that,
        in order, so an added, removed, renamed or changed file changes it.

        Taken once per Source; it also fixes each plain file's length for every later
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
        kind = self._kind_of(file)
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

    def _parquet_names(self) -> list[str]:
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


Row = tuple[int, str, Any]


def _names_a_file(path: str) -> bool:
    """``path`` names one file by its suffix (no directory, prefix or glob)."""
    from batchrun.input.locations import INPUT_SUFFIXES, is_glob

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


def _row_groups(span: Span | None, count: int) -> tuple[list[int] | None, int]:
    if span is None or span.first_group is None:
        return None, 0
    return list(range(span.first_group, span.stop_group or count)), span.first_row - 1


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


def _finished(
    mapper: RowMapper, finish: Finisher | None, check: RequestCheck | None, path: str
) -> RowMapper:
    """The mapper's requests passed through ``finish``; a row whose request (any of its
    variants') fails ``check`` is a bad row."""

    def finished(
        obj: Any, row: int, where: str, *, name: str | None = None
    ) -> Request | list[Request]:
        made = mapper(obj, row, where, name=name)
        requests: list[Request] = made if type(made) is list else [made]  # type: ignore[list-item]
        if finish is not None:
            requests = [finish(r) for r in requests]
        if check is not None:
            for req in requests:
                problem = check(req)
                if problem is not None:
                    raise InputError(path, where, problem)
        return requests if type(made) is list else requests[0]

    return finished


def _duplicate_hashes(hashes: array[int]) -> set[int]:
    """Hashes that occur more than once. Sorts and compares neighbours: ~20 MiB
    transient for a million ids, where a hash table (count_distinct) took ~125 MiB."""
    if len(hashes) < 2:
        return set()
    import pyarrow.compute as pc

    values = _uint64_array(hashes)
    ordered = pc.take(values, pc.sort_indices(values))
    same = pc.equal(ordered[1:], ordered[:-1])
    if not pc.any(same).as_py():
        return set()
    return {int(v) for v in pc.filter(ordered[1:], same).to_pylist()}


def _uint64_array(hashes: array[int]) -> Any:
    """Zero-copy view of an array('Q') as a pyarrow uint64 array."""
    import pyarrow as pa

    return pa.Array.from_buffers(pa.uint64(), len(hashes), [None, pa.py_buffer(hashes)])


def _drop_nulls(value: Any) -> Any:
    """Struct columns give every row every field; a null field was absent."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value
