"""Read requests from JSONL (.jsonl, .jsonl.gz), Parquet and CSV/TSV files, one row at a time.

Two kinds of row are accepted (see README "Input"):

* a Batch API line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``;
  the ``url`` may also be ``/v1/embeddings`` or ``/v1/responses`` (one file may mix
  them), each body checked for its API (`batchrun.input.bodies`)
* a bare chat-completions body ``{"model", "messages", ...}`` with an optional
  top-level ``custom_id`` (taken out of the body before sending).

Rows without a custom_id are named ``row-<n>`` after their 1-based line (JSONL) or
row (Parquet; CSV: after the header) number, so a rerun names them the same. Dataset
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

import gzip
import os
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from batchrun.apis import CHAT, EMBEDDINGS, api_of_url
from batchrun.errors import ConfigError, InputError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.bodies import embeddings_problem, responses_problem
from batchrun.input.rowwatch import Interrupted, watched
from batchrun.models import Request

if TYPE_CHECKING:
    from batchrun.input.delimited import DelimitedFile

CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
PARQUET_BATCH_ROWS = 2048

# (decoded row, row number, where) -> its Request, or one per variant (a list);
# raises InputError for a bad row.
RowMapper = Callable[[Any, int, str], "Request | list[Request]"]
# Told of every valid request of a scan, with its body as sent (bytes).
ScanObserver = Callable[[Request, bytes], None]
# The last step from row to request (e.g. set a streamed body up for usage).
Finisher = Callable[[Request], Request]
# A rule every request must pass (its context window): None, or why its row is bad.
RequestCheck = Callable[[Request], "str | None"]


def input_kind(path: str) -> str:
    """'jsonl', 'jsonl.gz', 'parquet', or one of `DELIMITED_KINDS` ('csv', 'tsv.gz', ...)."""
    from batchrun.input.delimited import delimited_kind

    lowered = path.lower()
    delimited = delimited_kind(lowered)
    if delimited is not None:
        return delimited
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith(".gz"):
        return "jsonl.gz"
    return "jsonl"


def request_from_row(
    obj: Any, row: int, where: str, *, default_model: str | None, path: str
) -> Request:
    """Validate one request-file row and turn it into a Request."""
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
        custom_id = f"row-{row}"
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
    row or line numbers of the whole file).

    JSONL: the lines in bytes ``[start_byte, stop_byte)``; ``first_row`` is the line
    number of the line at ``start_byte``. Parquet: row groups ``[first_group,
    stop_group)``. gzip, CSV and TSV: the rows are found by reading through.
    """

    first_row: int
    stop_row: int
    start_byte: int = 0
    stop_byte: int | None = None
    first_group: int | None = None
    stop_group: int | None = None

    def describe(self) -> str:
        return f"rows {self.first_row}-{self.stop_row - 1}"


class Source:
    """A request or dataset file. `requests()` may be called more than once."""

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
        from batchrun.input.delimited import DELIMITED_KINDS

        self.path = path
        self.span = span
        """Only these rows of the file (one shard of a run on a cluster); None: all."""
        self.kind = input_kind(path)
        self.delimited = self.kind in DELIMITED_KINDS
        """A CSV or TSV file (`batchrun.input.delimited`)."""
        if column_types and not self.delimited:
            raise ConfigError(
                f"column_types: {path} is not a CSV or TSV file (column types are read "
                "from its values only there)"
            )
        self.column_types = dict(column_types or {})
        self.skip_invalid = skip_invalid
        # dataset rows go to a template mapper as they are; request rows carry a body
        self.dataset = dataset
        base: RowMapper = mapper or (
            lambda obj, row, where: request_from_row(
                obj, row, where, default_model=default_model, path=path
            )
        )
        self.mapper: RowMapper = (
            base if finish is None and check is None else _finished(base, finish, check, path)
        )
        self._size: int | None = None
        """Bytes of a plain JSONL file when first read; no pass reads past them."""
        self._fingerprint: str | None = None
        self._last_row: int | None = None

    # -- raw rows -------------------------------------------------------------------
    def _check_file(self) -> None:
        if not os.path.exists(self.path):
            raise InputError(self.path, "0", "no such file")
        if os.path.isdir(self.path):
            raise InputError(self.path, "0", "is a directory, not a file")

    def _open(self) -> IO[bytes]:
        if self.kind == "jsonl.gz":
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb")

    def rows(self) -> Iterator[tuple[int, str, Any]]:
        """(row number, label, decoded row or the InputError that row raised)."""
        self._check_file()
        if self.delimited:
            rows = self._delimited_rows()
        elif self.kind == "parquet":
            rows = self._parquet_rows()
        else:
            rows = self._jsonl_rows()
        last = self._last_row
        if last is None:
            yield from rows
            return
        for item in rows:
            if item[0] > last:
                break  # appended after the scan: never validated, never sent
            yield item

    def _jsonl_rows(self) -> Iterator[tuple[int, str, Any]]:
        limit = self._size if self.kind == "jsonl" else None
        span = self.span
        first, pos = 1, 0
        if span is not None and self.kind == "jsonl":
            first, pos = span.first_row, span.start_byte
            if span.stop_byte is not None:
                limit = span.stop_byte if limit is None else min(limit, span.stop_byte)
        try:
            with self._open() as f:
                if pos:
                    f.seek(pos)
                for lineno, line in enumerate(f, first):
                    if limit is not None:
                        pos += len(line)
                        if pos > limit:
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
                        yield lineno, where, InputError(self.path, where, f"not valid JSON ({exc})")
        except (OSError, EOFError) as exc:  # unreadable file, corrupt gzip
            raise InputError(self.path, "0", f"cannot read file: {exc}") from exc

    def delimited_file(self) -> DelimitedFile:
        """The CSV/TSV reader of this source (never reading past the scanned length)."""
        from batchrun.input.delimited import DelimitedFile

        limit = self._size if self.kind in ("csv", "tsv") else None
        return DelimitedFile(self.path, self.kind, column_types=self.column_types, limit=limit)

    def _delimited_rows(self) -> Iterator[tuple[int, str, Any]]:
        reader = self.delimited_file()
        names = reader.header()
        if not self.dataset and "body" not in names:
            raise InputError(
                self.path,
                "0",
                "a CSV/TSV file holds dataset rows: give a prompt template (the prompt "
                "setting: [prompt] user in a job file, prompt= in Python), or a 'body' "
                f"column of JSON request bodies (columns: {', '.join(names)})",
            )
        span = self.span
        first, stop = (span.first_row, span.stop_row) if span is not None else (1, None)
        for row, where, record in reader.rows(first, stop):
            if self.dataset or isinstance(record, InputError):
                yield row, where, record
            else:
                yield row, where, self._parquet_request_row(record, where, False)

    def _parquet_rows(self) -> Iterator[tuple[int, str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pfile = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(self.path, "0", f"not a readable Parquet file ({exc})") from exc
        struct_body = False
        if not self.dataset:
            names = pfile.schema_arrow.names
            if "body" not in names:
                raise InputError(
                    self.path,
                    "0",
                    f"Parquet request file needs a 'body' column (columns: {', '.join(names)})",
                )
            struct_body = pa.types.is_struct(pfile.schema_arrow.field("body").type)
        groups, row = self.row_groups(pfile.num_row_groups)
        try:
            for batch in pfile.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
                for record in batch.to_pylist():
                    row += 1
                    where = f"row {row}"
                    if self.dataset:
                        yield row, where, record
                    else:
                        yield row, where, self._parquet_request_row(record, where, struct_body)
        except (pa.ArrowException, OSError) as exc:  # a corrupt page is a plain OSError
            raise InputError(self.path, f"row {row + 1}", f"corrupt Parquet data ({exc})") from exc

    def row_groups(self, count: int) -> tuple[list[int] | None, int]:
        """The Parquet row groups to read (None: all of the ``count``) and the number of
        the row before the first of them."""
        span = self.span
        if span is None or span.first_group is None:
            return None, 0
        return list(range(span.first_group, span.stop_group or count)), span.first_row - 1

    def _parquet_request_row(self, record: dict[str, Any], where: str, struct_body: bool) -> Any:
        body = record.get("body")
        if isinstance(body, str | bytes):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return InputError(self.path, where, f"body is not valid JSON ({exc})")
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
        mapper = self.mapper
        for row, where, obj in self.rows():
            if isinstance(obj, InputError):
                continue
            try:
                made = mapper(obj, row, where)
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
        case each bad row is written to ``invalid_sink`` as a JSON line.
        ``should_stop`` is polled every few hundred rows, and inside a row whose
        template loops (`batchrun.input.rowwatch`, which also ends a row rendering
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
        mapper = self.mapper
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
                    made = mapper(obj, row, where)
                except InputError as exc:
                    if not self.skip_invalid:
                        raise
                    result.invalid += 1
                    if invalid_sink is not None:
                        invalid_sink.write(
                            orjson.dumps(
                                {"row": row, "where": exc.where, "reason": exc.reason},
                                option=orjson.OPT_APPEND_NEWLINE,
                            )
                        )
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
        if self.kind == "parquet" and columns is not None:
            result.columns = set(self._parquet_names())
        elif self.delimited and columns is not None:
            result.columns = set(self.delimited_file().header())
        self._last_row = result.last_row
        if result.total == 0 and result.invalid == 0:
            raise InputError(self.path, "0", "the file holds no requests")
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
        for req_where in self._ids_with_hash(suspects):
            custom_id, where = req_where
            if custom_id in seen:
                raise InputError(
                    self.path,
                    where,
                    f"duplicate custom_id {custom_id!r} (first seen at {seen[custom_id]})",
                )
            seen[custom_id] = where

    def _ids_with_hash(self, suspects: set[int]) -> Iterator[tuple[str, str]]:
        for row, where, obj in self.rows():
            if isinstance(obj, InputError):
                continue
            try:
                made = self.mapper(obj, row, where)
            except InputError:
                continue
            for req in made if isinstance(made, list) else (made,):
                if id_hash(req.custom_id) in suspects:
                    yield req.custom_id, where

    def fingerprint(self) -> str:
        """blake2b of the file's bytes: a resumed run must read the same input.

        Taken once per Source; it also fixes the file's length for every later pass.
        With a `Span`, only the shard's bytes (its JSONL lines, its Parquet row groups)
        and the span itself are hashed, so each shard checks its own part in parallel.
        """
        if self._fingerprint is not None:
            return self._fingerprint
        self._check_file()
        digest = blake2b(digest_size=16)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start, left = 0, size
                if self.span is not None:
                    digest.update(repr(self.span).encode())
                    start, stop = self._span_bytes(size)
                    left = stop - start
                    f.seek(start)
                while left > 0 and (chunk := f.read(min(1 << 20, left))):
                    digest.update(chunk)
                    left -= len(chunk)
        except OSError as exc:
            raise InputError(self.path, "0", f"cannot read file: {exc}") from exc
        self._size = size
        self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _span_bytes(self, size: int) -> tuple[int, int]:
        """The bytes of the file that hold the span's rows (all of a gzip file)."""
        span = self.span
        assert span is not None
        if self.kind == "jsonl":
            stop = size if span.stop_byte is None else min(size, span.stop_byte)
            return span.start_byte, stop
        if self.kind == "parquet" and span.first_group is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(self.path).metadata
            except (pa.ArrowException, OSError) as exc:
                raise InputError(self.path, "0", f"not a readable Parquet file ({exc})") from exc
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
        """True when the file is longer now than when this run first read it."""
        if self._size is None:
            return False
        try:
            return os.path.getsize(self.path) > self._size
        except OSError:
            return False

    def _parquet_names(self) -> list[str]:
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(self.path).schema_arrow.names)


def _finished(
    mapper: RowMapper, finish: Finisher | None, check: RequestCheck | None, path: str
) -> RowMapper:
    """The mapper's requests passed through ``finish``; a row whose request (any of its
    variants') fails ``check`` is a bad row."""

    def finished(obj: Any, row: int, where: str) -> Request | list[Request]:
        made = mapper(obj, row, where)
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
