"""Read CSV and TSV files (.csv, .tsv, .csv.gz, .tsv.gz) a block at a time, row by row.

A CSV row is a dataset row: its header names the columns a prompt template uses, as
a Parquet row's do. The file is streamed with ``pyarrow.csv.open_csv`` one block of
`BLOCK_BYTES` at a time (memory does not grow with the file); a row longer than a
block is read again with larger blocks.

Every cell is text exactly as written unless ``column_types`` says otherwise: type
inference would turn the id ``00123`` into ``123``, a ZIP code into a number, and
(pyarrow infers from the first block only) fail half-way through a file whose later
rows say ``n/a`` where the first said ``3``. So ``{text}`` renders what the file
says, and a user who wants numbers asks for them (``--column-type score=float``).
An empty cell is a missing value (null: a template refuses to render it, as a null
in JSONL); ``""`` written with quotes is an empty string. A row whose cells are all
empty (a blank line, an exported ``,,,``) holds no data and is not a row.

Rows are numbered from 1 after the header (``row-<n>`` ids, `Source` spans) and each
is named ``row N (line L)``: L is the file line where the row starts, which differs
from N by the header and by every line break inside quoted values.

    >>> reader = DelimitedFile("reviews.csv")               # doctest: +SKIP
    >>> next(reader.rows())                                  # doctest: +SKIP
    (1, 'row 1 (line 2)', {'id': '007', 'text': 'Great, really'})
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import orjson

from batchrun._input.kinds import delimited_kind
from batchrun.errors import InputError

if TYPE_CHECKING:
    from batchrun._input.locations import InputFile

BLOCK_BYTES = 1 << 20
"""Bytes pyarrow parses at once: one batch of rows (and one read ahead) in memory."""
MAX_BLOCK_BYTES = 256 << 20
"""A single row longer than this is refused rather than read whole into memory."""
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def _to_int(text: str) -> int:
    return int(text)


def _to_float(text: str) -> float:
    return float(text)


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def _to_json(text: str) -> Any:
    return orjson.loads(text)


_CONVERT: dict[str, tuple[Callable[[str], Any], str]] = {
    "int": (_to_int, "an integer"),
    "float": (_to_float, "a number"),
    "bool": (_to_bool, "true or false"),
    "json": (_to_json, "JSON"),
}


class _Capped(io.RawIOBase):
    """The first ``limit`` bytes of a file: rows appended after a run first looked at
    the file are never read (as for JSONL, see `batchrun._input.sources`)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self._raw = raw
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        n = self._raw.readinto(view[:want])  # type: ignore[attr-defined]
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


class DelimitedFile:
    """One CSV or TSV file, read as numbered rows of ``{column: value}``.

    ``path``: a local path, or an `InputFile` (a file of a many-file input, an object
    on object storage). ``limit``: read no byte past it (a plain file's length when the
    run first read it). ``block_bytes``: pyarrow's block; tests make it small to cross
    many blocks.
    """

    def __init__(
        self,
        path: str | InputFile,
        kind: str | None = None,
        *,
        column_types: Mapping[str, str] | None = None,
        limit: int | None = None,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        if isinstance(path, str):
            from batchrun._input.locations import InputFile

            path = InputFile(path, path, path)
        self.file = path
        self.path = path.name
        self.kind = kind or delimited_kind(self.path) or "csv"
        self.delimiter = "\t" if self.kind.startswith("tsv") else ","
        self.column_types = dict(column_types or {})
        self.limit = limit if not self.kind.endswith(".gz") else None
        self.block_bytes = block_bytes
        self._header: list[str] | None = None
        self._bytes = False
        """Cells are read as bytes (the file is not all UTF-8) and decoded row by row."""

    # -- the header -----------------------------------------------------------------
    def _open(self) -> IO[bytes]:
        if self.kind.endswith(".gz") or self.file.remote:
            return self.file.open_text_stream(self.kind.endswith(".gz"))
        raw = self.file.open()  # closed with the reader wrapping it
        if self.limit is None:
            return raw
        return io.BufferedReader(_Capped(raw, self.limit), 1 << 16)

    def header(self) -> list[str]:
        """The column names (the first record), checked once: present, no name twice,
        every typed column among them."""
        if self._header is not None:
            return self._header
        try:
            with self._open() as f:
                names = next(csv.reader(_text_lines(f), delimiter=self.delimiter), None)
        except UnicodeDecodeError as exc:
            raise InputError(self.path, "line 1", f"the header is not UTF-8 text ({exc})") from exc
        except (OSError, EOFError, csv.Error) as exc:
            raise InputError(self.path, "0", f"cannot read file: {exc}") from exc
        if not names:
            raise InputError(self.path, "0", "empty file: no header row naming the columns")
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InputError(self.path, "line 1", f"column {name!r} is named twice")
            seen.add(name)
        from batchrun._checks import suggest

        for name in self.column_types:
            if name not in seen:
                raise InputError(
                    self.path,
                    "0",
                    f"column_types names no column {name!r}{suggest(name, names)} "
                    f"(columns: {', '.join(names)})",
                )
        self._header = names
        return names

    # -- rows -----------------------------------------------------------------------
    def rows(
        self, first_row: int = 1, stop_row: int | None = None
    ) -> Iterator[tuple[int, str, Any]]:
        """(row number, ``row N (line L)``, the row's dict or the InputError it raised)
        for rows ``first_row`` to ``stop_row - 1`` (None: to the end)."""
        names = self.header()
        typed = [(n, t) for n, t in self.column_types.items() if t != "string"]
        for row, where, record in self._numbered(names):
            if stop_row is not None and row >= stop_row:
                return
            if row < first_row:
                continue
            if isinstance(record, str):
                shown = record if len(record) <= 60 else record[:57] + "..."
                found = _cells_in(record, self.delimiter)
                reason = f"expected {len(names)} {self._cells()} but found {found}: {shown!r}"
                yield row, where, InputError(self.path, where, reason)
            else:
                yield row, where, self._values(dict(zip(names, record, strict=True)), typed, where)

    def _numbered(self, names: list[str]) -> Iterator[tuple[int, str, tuple[Any, ...] | str]]:
        """(row number, where, raw record) for every row; blank ones are no rows."""
        line = 2 + sum(_breaks(name) for name in names)  # where the next record starts
        row = 0
        try:
            for _, record, breaks, blank in self._records(names):
                start = line
                line += 1 + breaks
                if blank:
                    continue  # a blank line, or every cell empty: no data, no row
                row += 1
                yield row, f"row {row} (line {start})", record
        except _RowTooLong:
            raise InputError(
                self.path, f"line {line}", f"a row longer than {MAX_BLOCK_BYTES >> 20} MiB"
            ) from None
        except _Unreadable as exc:
            raise InputError(self.path, f"line {line}", str(exc)) from None

    def _cells(self) -> str:
        return "tab-separated fields" if self.delimiter == "\t" else "comma-separated fields"

    def _values(
        self, out: dict[str, Any], typed: list[tuple[str, str]], where: str
    ) -> dict[str, Any] | InputError:
        """The row's cells as text, the typed columns converted."""
        if self._bytes:  # this file holds bytes that are not UTF-8: decoded cell by cell
            for name, value in out.items():
                if type(value) is bytes:
                    try:
                        out[name] = value.decode("utf-8")
                    except UnicodeDecodeError:
                        reason = f"column {name!r} is not UTF-8 text (save the file as UTF-8)"
                        return InputError(self.path, where, reason)
        for name, kind in typed:
            text = out[name]
            if text is None or not text.strip():
                out[name] = None
                continue
            parse, wanted = _CONVERT[kind]
            try:
                out[name] = parse(text)
            except (ValueError, orjson.JSONDecodeError):
                shown = text if len(text) <= 40 else text[:37] + "..."
                return InputError(
                    self.path, where, f"column {name!r}: {shown!r} is not {wanted} ({kind})"
                )
        return out

    def count(self) -> int:
        """The number of rows `rows` yields (valid or not), without converting them."""
        n = 0
        for n, _, _ in self._numbered(self.header()):  # noqa: B007 - the last is the count
            pass
        return n

    # -- records --------------------------------------------------------------------
    def _records(self, names: list[str]) -> Iterator[_Record]:
        """Every record after the header in file order: (record number, record, line
        breaks inside it, blank). A record is a tuple of cells (None for an empty one)
        or, for a line that is not ``len(names)`` cells, its text.

        A row longer than the block is read again from the top with blocks four times
        larger (up to `MAX_BLOCK_BYTES`), the records already given skipped; so is a
        file with bytes that are not UTF-8, as bytes (`_values` names the row)."""
        block = self.block_bytes
        given = 1  # records given so far, the header included
        while True:
            try:
                for chunk in self._read(names, block):
                    if chunk[0][0] <= given:  # read again after a restart
                        chunk = [item for item in chunk if item[0] > given]
                        if not chunk:
                            continue
                    given = chunk[-1][0]
                    yield from chunk
                return
            except _RowTooLong:
                if block >= MAX_BLOCK_BYTES:
                    raise
                block = min(MAX_BLOCK_BYTES, block * 4)
            except _NotUtf8:
                if self._bytes:
                    raise _Unreadable("the file is not UTF-8 text") from None
                self._bytes = True

    def _read(self, names: list[str], block: int) -> Iterator[list[_Record]]:
        """The records of each block (`_records`) through one pyarrow reader; the header
        is record 1."""
        import pyarrow as pa
        import pyarrow.csv as pcsv

        bad: deque[tuple[int, str]] = deque()

        def on_bad(row: Any) -> str:
            # called for a block before that block's batch is handed over
            bad.append((row.number if row.number is not None else -1, row.text))
            return "skip"

        read = pcsv.ReadOptions(block_size=block, use_threads=False)
        parse = pcsv.ParseOptions(
            delimiter=self.delimiter,
            newlines_in_values=True,
            ignore_empty_lines=False,
            invalid_row_handler=on_bad,
        )
        cell = pa.binary() if self._bytes else pa.string()
        convert = pcsv.ConvertOptions(
            column_types={name: cell for name in names},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        )
        number = 1
        try:
            with self._open() as f:
                reader = pcsv.open_csv(
                    pa.PythonFile(f, mode="r"),
                    read_options=read,
                    parse_options=parse,
                    convert_options=convert,
                )
                if reader.schema.names != names:
                    raise InputError(self.path, "line 1", "the header cannot be read")
                for batch in reader:
                    breaks = _batch_breaks(batch.columns) or itertools.repeat(0)
                    blank = _batch_blank(batch.columns) or itertools.repeat(False)
                    cells = [column.to_pylist() for column in batch.columns]
                    chunk: list[_Record] = []
                    rows = zip(zip(*cells, strict=True), breaks, blank, strict=False)
                    for record, n, empty in rows:
                        number += 1
                        while bad and bad[0][0] in (number, -1):
                            text = bad.popleft()[1]
                            chunk.append((number, text, _breaks(text), not text.strip()))
                            number += 1
                        chunk.append((number, record, n, empty))
                    if chunk:
                        yield chunk
                chunk = []
                while bad:
                    number += 1
                    text = bad.popleft()[1]
                    chunk.append((number, text, _breaks(text), not text.strip()))
                if chunk:
                    yield chunk
        except pa.ArrowInvalid as exc:
            message = str(exc)
            if "straddl" in message or "block size" in message:
                raise _RowTooLong() from exc
            if "UTF8" in message:
                raise _NotUtf8() from exc
            raise _Unreadable(f"cannot parse the CSV at or after this line ({exc})") from exc
        except (OSError, EOFError, pa.ArrowException) as exc:  # corrupt gzip, unreadable
            raise InputError(self.path, "0", f"cannot read file: {exc}") from exc


def _batch_breaks(columns: list[Any]) -> list[int] | None:
    """Line breaks inside each row's cells (None: none in the whole batch)."""
    import pyarrow.compute as pc

    total = None
    for column in columns:
        if column.null_count == len(column):
            continue
        newline = pc.any(pc.match_substring(column, "\n")).as_py()
        cr = pc.any(pc.match_substring(column, "\r")).as_py()
        if not (newline or cr):
            continue
        n = pc.count_substring(column, "\n")
        if cr:  # \r\n is one break, a lone \r another
            lone = pc.subtract(pc.count_substring(column, "\r"), pc.count_substring(column, "\r\n"))
            n = pc.add(n, lone)
        n = pc.fill_null(n, 0)
        total = n if total is None else pc.add(total, n)
    return None if total is None else total.to_pylist()


def _batch_blank(columns: list[Any]) -> list[bool] | None:
    """Whether each row's cells are all empty (None: no such row in the batch)."""
    import pyarrow.compute as pc

    if any(column.null_count == 0 for column in columns):
        return None
    mask = pc.is_null(columns[0])
    for column in columns[1:]:
        mask = pc.and_(mask, pc.is_null(column))
    return mask.to_pylist() if pc.any(mask).as_py() else None


_Record = tuple[int, "tuple[Any, ...] | str", int, bool]


class _RowTooLong(Exception):
    """A row did not fit in pyarrow's block."""


class _NotUtf8(Exception):
    """A block holds bytes that are not UTF-8 (read again as bytes)."""


class _Unreadable(Exception):
    """pyarrow could not parse a block (`DelimitedFile._numbered` names the line)."""


def _text_lines(f: IO[bytes]) -> Iterator[str]:
    """The file's lines decoded one by one (only those the header needs are read), the
    UTF-8 byte order mark dropped."""
    first = True
    for raw in f:
        if first and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        first = False
        yield raw.decode("utf-8")


def _breaks(value: str) -> int:
    """Line breaks in a value (\\n, \\r\\n or a lone \\r, as the CSV reader counts)."""
    return value.count("\n") + value.count("\r") - value.count("\r\n")


def _cells_in(text: str, delimiter: str) -> int:
    try:
        return len(next(csv.reader([text], delimiter=delimiter)))
    except (csv.Error, StopIteration):
        return text.count(delimiter) + 1


__all__ = ["BLOCK_BYTES", "DelimitedFile"]
