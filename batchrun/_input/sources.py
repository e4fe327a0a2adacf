"""Read requests from JSONL (.jsonl, .jsonl.gz), Parquet and CSV/TSV files, one row at a time.

Two kinds of row are accepted (see README "Input"):

* a Batch API line ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}``;
  the ``url`` may also be ``/v1/embeddings`` or ``/v1/responses`` (one file may mix
  them), each body checked for its API (`batchrun._input.bodies`)
* a bare chat-completions body ``{"model", "messages", ...}`` with an optional
  top-level ``custom_id`` (taken out of the body before sending).

Rows without a custom_id are named ``row-<n>`` after their 1-based line (JSONL) or
row (Parquet; CSV: after the header) number, so a rerun names them the same.

The input may also be a directory, prefix or glob of such files, local or on object
storage (`batchrun._input.locations`): each file is read through an `InputFile` (a
filesystem and a path), rows are numbered across the files in order, and a row
without an id is ``<file>:row-<n>`` after its own file's line or row. Dataset
jobs instead turn each row into a body through a prompt template (`RowMapper`
injected by the job). A CSV or TSV file (`batchrun._input.delimited`) is a dataset;
run without a template it must have a ``body`` column, as a Parquet request file.

Files are streamed: `Source.scan` makes one validating pass (counts rows, rejects
duplicates, writes invalid rows aside with --skip-invalid) before anything is
sent, then `Source.requests` streams again. Memory holds one batch of rows plus
16 bytes per row (the hashes of its id and of its body).

Every pass reads the same rows: the file's length is taken once (`fingerprint`),
a plain JSONL file is never read past it, and after the scan no pass reads past
the last row it validated. Rows appended while a run goes are neither sent nor
counted (the next run sees a changed input and says so).

A `Span` restricts a source to one shard of the file (`batchrun._scale.shards`): a byte
range of a JSONL file (read from its first byte, never from the top), a range of
Parquet row groups, or (gzip, which cannot seek, and CSV, whose quoted values may
hold line breaks) a range of rows read through. Rows keep their numbers in the
whole file, so ``row-<n>`` ids are the same in every shard.

    >>> src = Source("requests.jsonl")              # doctest: +SKIP
    >>> scan = src.scan(); next(iter(src.requests())).custom_id   # doctest: +SKIP
    'row-1'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Protocol

import orjson

from batchrun._apis import CHAT, EMBEDDINGS, api_of_url
from batchrun._input.bodies import embeddings_problem, responses_problem
from batchrun._input.fileset import FileSet
from batchrun._input.fileset import Span as Span
from batchrun._input.kinds import DELIMITED_KINDS
from batchrun._input.locations import InputFile
from batchrun._input.reading import Row, RowReader
from batchrun._input.scan import ScanObserver as ScanObserver
from batchrun._input.scan import ScanResult as ScanResult
from batchrun._input.scan import StopCheck, scan
from batchrun._models import Request
from batchrun._templating.rowwatch import Interrupted as Interrupted
from batchrun.errors import InputError

if TYPE_CHECKING:
    from batchrun._input.delimited import DelimitedFile


class RowMapper(Protocol):
    """(decoded row, row number, where) -> its Request, or one per variant (a list);
    raises InputError for a bad row. ``name`` is the id of a row that names none
    (None: ``row-<row>``; a many-file input passes ``<file>:row-<n>``)."""

    def __call__(
        self, obj: Any, row: int, where: str, *, name: str | None = None
    ) -> Request | list[Request]: ...


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


class Source:
    """A request or dataset input: one file, or the files of a directory, prefix or glob
    (`batchrun._input.locations`), local or on object storage. `requests()` may be
    called more than once.

    The rows of many files are numbered across them in order (file by file, each
    file's lines or rows counted whole), and their ids without a custom_id are
    ``<file>:row-<n>`` after the file's own line or row number: adding a file leaves
    the ids of the others as they were. Messages name the file and its line or row.

    Three collaborators do the work: ``input`` (`FileSet`: which files, their kind,
    lengths and fingerprint), ``reader`` (`RowReader`: their decoded rows) and the scan
    (`batchrun._input.scan`); the Source turns rows into requests.
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
        self.input = FileSet(path, span=span, column_types=column_types)
        self.path = self.input.path
        self.skip_invalid = skip_invalid
        # dataset rows go to a template mapper as they are; request rows carry a body
        self.dataset = dataset
        self.reader = RowReader(self.input, dataset=dataset)
        source_path = self.path

        def request_row(obj: Any, row: int, where: str, *, name: str | None = None) -> Request:
            return request_from_row(
                obj, row, where, default_model=default_model, path=source_path, name=name
            )

        base: RowMapper = mapper or request_row
        self.mapper: RowMapper = (
            base if finish is None and check is None else _finished(base, finish, check, path)
        )
        self._unchecked: RowMapper = (
            self.mapper if check is None else _finished(base, finish, None, path)
        )
        self._all_passed = False
        """The last scan ran to the end and found no bad row, so ``check`` passed every
        one: a later pass, which reads no row past it, need not ask again (it is a pure
        function of the body: the context window)."""

    # -- the files (`FileSet`) ----------------------------------------------------------
    @property
    def span(self) -> Span | None:
        """Only these rows of the input (one shard of a run on a cluster); None: all."""
        return self.input.span

    @span.setter
    def span(self, span: Span | None) -> None:
        self.input.span = span
        self._all_passed = False  # other rows: scan them first

    @property
    def column_types(self) -> dict[str, str]:
        return self.input.column_types

    def files(self) -> list[InputFile]:
        """The input's files in order (a shard of a many-file input: its one file)."""
        return self.input.files()

    @property
    def many(self) -> bool:
        """The input is a directory, prefix or glob (ids start with each file's name)."""
        return self.input.many

    @property
    def kind(self) -> str:
        """'jsonl', 'jsonl.gz', 'parquet', or one of the CSV/TSV kinds (of every file)."""
        return self.input.kind

    @property
    def delimited(self) -> bool:
        """CSV or TSV files (`batchrun._input.delimited`)."""
        return self.kind in DELIMITED_KINDS

    def fingerprint(self) -> str:
        """What a resumed run checks it reads the same input by (`FileSet.fingerprint`)."""
        return self.input.fingerprint()

    def grew(self) -> bool:
        """True when a local file is longer now than when this run first read it (an
        object cannot grow: a new version is refused when it is read, `CHANGED`)."""
        return self.input.grew()

    def file_at(self, row: int) -> tuple[InputFile, int]:
        """(the file input row ``row`` is in, its row number in that file); a many-file
        input, for rows a pass has reached."""
        return self.input.file_at(row)

    # -- rows (`RowReader`) -------------------------------------------------------------
    def rows(self) -> Iterator[Row]:
        """(row number, label, decoded row or the InputError that row raised)."""
        return self.reader.rows()

    def delimited_file(self, file: InputFile | None = None) -> DelimitedFile:
        """The CSV/TSV reader of one file of this source (never reading past the scanned
        length); the first file by default."""
        return self.reader.delimited_file(file)

    def dataset_batches(self, batch_rows: int) -> Iterator[tuple[list[Row], Any]]:
        """A Parquet dataset's rows a batch at a time with their Arrow batch (the input
        columns results.parquet carries), numbered as `rows` numbers them; every file's
        batches in the first file's schema."""
        return self.reader.dataset_batches(batch_rows)

    def parquet_schema(self) -> Any:
        """The Arrow schema of a Parquet input (its first file's)."""
        return self.files()[0].parquet().schema_arrow

    # -- requests -----------------------------------------------------------------------
    def row_name(self, row: int) -> str:
        """The id of input row ``row`` when the row names none: ``row-<n>``, and
        ``<file>:row-<n>`` (the file's own row number) in a many-file input."""
        if not self.input.many:
            return f"row-{row}"
        file, local = self.file_at(row)
        return f"{file.relative}:row-{local}"

    def map_row(
        self, obj: Any, row: int, where: str, mapper: RowMapper | None = None
    ) -> Request | list[Request]:
        """The row's request(s) through the mapper; a many-file input's rows get their
        file's ids, and their errors name the file."""
        mapper = mapper or self.mapper
        if not self.input.many:
            return mapper(obj, row, where)
        file, local = self.file_at(row)
        try:
            return mapper(obj, row, where, name=f"{file.relative}:row-{local}")
        except InputError as exc:
            if exc.path == file.name:
                raise
            raise InputError(file.name, exc.where, exc.reason) from None

    def requests(self) -> Iterator[Request]:
        """Valid requests in file order (invalid rows skipped: `scan` reported them).
        After a scan that found no bad row, rows are not put to the source's ``check``
        again (`check` costs a serialisation of the body; 3 % of a plain run's lines)."""
        mapper = self._unchecked if self._all_passed else self.mapper
        # one file: the mapper itself (`map_row` asks `many` again for every row)
        map_row = partial(self.map_row, mapper=mapper) if self.input.many else mapper
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
        should_stop: StopCheck | None = None,
        observe: ScanObserver | None = None,
        keep_bodies: bool = True,
    ) -> ScanResult:
        """Validate every row, count them, reject duplicate ids. Sends nothing.

        Raises the first InputError unless the source skips invalid rows, in which
        case each bad row is written to ``invalid_sink`` as a JSON line (with its
        ``file`` in a many-file input).
        ``should_stop`` is polled every few hundred rows, and inside a row whose
        template loops (`batchrun._templating.rowwatch`, which also ends a row rendering
        past its time limit as a bad row); when it says so the scan raises
        `Interrupted` (a Ctrl-C during a long scan must not wait for it).
        ``observe`` is told of every valid request with its body's bytes (the run's
        pilot selection and in-run dedupe collect what they need from it).
        ``keep_bodies=False``: the result's ``bodies`` stays empty (8 bytes a row saved
        when there are no earlier answers to compare bodies with).
        """
        self._all_passed = False
        result = scan(
            self, invalid_sink, should_stop=should_stop, observe=observe, keep_bodies=keep_bodies
        )
        self._all_passed = result.invalid == 0
        return result


def _finished(
    mapper: RowMapper, finish: Finisher | None, check: RequestCheck | None, path: str
) -> RowMapper:
    """The mapper's requests passed through ``finish``; a row whose request (any of its
    variants') fails ``check`` is a bad row."""

    def finished(
        obj: Any, row: int, where: str, *, name: str | None = None
    ) -> Request | list[Request]:
        made = mapper(obj, row, where, name=name)
        if not isinstance(made, list):  # one request (nearly every row): no lists
            one = made if finish is None else finish(made)
            checked(one, where)
            return one
        requests: list[Request] = made if finish is None else [finish(r) for r in made]
        for req in requests:  # every variant finished, then every one checked
            checked(req, where)
        return requests

    def checked(req: Request, where: str) -> None:
        problem = None if check is None else check(req)
        if problem is not None:
            raise InputError(path, where, problem)

    return finished
