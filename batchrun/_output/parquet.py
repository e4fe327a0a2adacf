"""results.parquet: one row per input row, joined from results.jsonl and errors.jsonl.

The JSONL files are the run's record (append-only, in finishing order, several
processes' worth after resumes); results.parquet is a view of them in *input* order,
rebuilt from scratch after every run so it can never drift from them:

1. one pass over errors.jsonl then results.jsonl notes, for each line, the 64-bit
   hash of its custom_id and where the line starts (`ResultIndex`: 16 bytes per
   line, never a body). When an id has several lines the last one wins, and a line
   in results.jsonl beats any in errors.jsonl (a --retry-failed success);
2. the input is streamed again, in order, through the run's own mapper (so ids and
   invalid rows come out exactly as the run saw them); each row's final line is
   read back with one seek, and rows go out in row groups of `ROW_GROUP_ROWS`
   through a ``ParquetWriter`` to a temp file that replaces results.parquet at the
   end (a reader never sees half a file).

Every input row appears exactly once, with a ``status``: ``succeeded``, ``failed``,
``pending`` (not finished yet: the run was interrupted or stopped by its budget) or
``invalid`` (a bad row skipped by --skip-invalid). Columns, in order:

* ``custom_id`` (string), ``row`` (int64: 1-based line or row number in the input);
* dataset jobs only: every input column, carried as is. From Parquet they keep
  their Arrow type; from JSONL the type is inferred over the whole file: all bools
  -> bool, all ints -> int64, ints and floats -> double, all strings -> string,
  a column with arrays or objects -> their JSON text, other mixes -> string (strings
  as they are, other values as JSON text), all null -> string. An input column
  whose name is one of the result columns below (``parse_error`` included) is
  renamed ``input_<name>``;
* ``status``, ``status_code`` (int32, last HTTP status), ``model``, ``content``,
  ``reasoning_content``, ``finish_reason``, ``tool_calls`` (JSON text), all of the
  *first* choice when the request asked for n > 1 (results.jsonl keeps them all);
* ``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``cached_tokens``,
  ``reasoning_tokens`` (int64, null when the server reported no usage);
* ``latency_ms``, ``ttft_ms`` (double), ``attempts`` (int32), ``error_code``,
  ``error_message`` (string);
* with a pool of endpoints: ``endpoint`` (string), the name of the endpoint that
  answered (or failed) the row last;
* when the job has a ``confidence`` setting: ``confidence`` (double), how sure the
  answer is (`batchrun._confidence`, read from the line's response body; with
  "agreement" the row's answer columns are the majority's first choice);
* an embeddings job (``api = "embeddings"``): ``embedding``, each row's vector as
  Arrow ``fixed_size_list<float32>[dim]`` (`batchrun._output.vectors`; null for a row
  without one). ``dim`` is the job's ``dimensions``, else the size of the first vector
  results.jsonl holds (0 while it holds none), so the schema is known before the first
  row group is written and memory stays one row group's;
* when the job has a JSON schema: one typed column per top-level property
  (`batchrun._output.answers.parsed_columns`), then ``parse_error`` (string; null when the
  content fitted the schema). A property named like an earlier column is written
  as ``out_<name>``.

The schema depends only on the job and the input, never on the answers, so runs of
the same job always give the same columns. Renamed columns are listed in the file's
metadata (key ``batchrun``).

    >>> report = write_results_parquet(cfg, "runs/a/results.parquet")   # doctest: +SKIP
    >>> report.rows, report.statuses                                    # doctest: +SKIP
    (300, {'succeeded': 298, 'failed': 2, 'pending': 0, 'invalid': 0})
"""

from __future__ import annotations

import os
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from batchrun._apis import EMBEDDINGS, RESPONSES
from batchrun._confidence import ConfidenceCounts, ConfidenceReader
from batchrun._ids import body_hash, id_hash
from batchrun._input.sources import Source
from batchrun._jobs.calibration import CalibrationSample
from batchrun._jobs.evaluate import Evaluator
from batchrun._jobs.gold import read_gold
from batchrun._models import Outcome
from batchrun._output.answers import parse_content, parsed_columns
from batchrun._output.journal import ERRORS, RESULTS, Provenance
from batchrun._output.lines import custom_id_of, decode, milliseconds
from batchrun._output.shapes import (
    answer_kind,
    response_finish,
    response_reasoning,
    response_text,
    response_tool_calls,
)
from batchrun._output.summary import atomic_file
from batchrun._output.usage import usage_of
from batchrun._output.vectors import FLOAT32_BYTES, decode_vector, vectors_array
from batchrun._settings import Settings
from batchrun._version import __version__
from batchrun.errors import InputError

ROW_GROUP_ROWS = 10_000
SUCCEEDED, FAILED, PENDING, INVALID = "succeeded", "failed", "pending", "invalid"
STATUSES = (SUCCEEDED, FAILED, PENDING, INVALID)
INPUT_PREFIX = "input_"
PARSED_PREFIX = "out_"

RESULT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("status", pa.string()),
    ("status_code", pa.int32()),
    ("model", pa.string()),
    ("content", pa.string()),
    ("reasoning_content", pa.string()),
    ("finish_reason", pa.string()),
    ("tool_calls", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("total_tokens", pa.int64()),
    ("cached_tokens", pa.int64()),
    ("reasoning_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("ttft_ms", pa.float64()),
    ("attempts", pa.int32()),
    ("error_code", pa.string()),
    ("error_message", pa.string()),
)
_LEAD_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("custom_id", pa.string()),
    ("row", pa.int64()),
)
ENDPOINT_COLUMN = ("endpoint", pa.string())
"""Jobs with a pool of endpoints: the name of the endpoint that answered the row."""
CONFIDENCE_COLUMN = ("confidence", pa.float64())
"""Jobs with a ``confidence`` setting: how sure the answer is (`batchrun._confidence`)."""
_VARIANT_COLUMN = ("variant", pa.string())
"""Jobs with variants (several models or prompts): one row per input row and variant."""
_FILES = (ERRORS, RESULTS)  # scanned in this order: a later line wins
_PARSED = "\0parsed"  # key of the parsed values in a joined row (not a column)

# Told of every joined output row: (input row, its values, the parsed answer, the line)
RowObserver = Callable[[Any, Mapping[str, Any], "Mapping[str, Any] | None", "Outcome | None"], None]


@dataclass
class ParquetReport:
    """What one pass over the run wrote (or, with ``path=None``, only evaluated)."""

    path: str | None
    rows: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    columns: list[str] = field(default_factory=list)
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    """Name clashes only: ``{"input": {column: new name}, "parsed": {property: new name}}``."""
    eval: dict[str, Any] | None = None
    eval_by_variant: dict[str, dict[str, Any]] | None = None
    confidence: dict[str, Any] | None = None
    """`batchrun._confidence.ConfidenceCounts.report` (jobs with a confidence)."""
    confidence_note: str | None = None
    """The warning naming endpoints that answered without logprobs."""
    calibration: dict[str | None, CalibrationSample] = field(default_factory=dict)
    """Per variant (None: the job has none): (confidence, right?) of the scored rows."""
    seconds: float = 0.0


# -- where each id's final line is -----------------------------------------------------
class ResultIndex:
    """custom_id -> its final output line, found by hash; memory is 16 bytes a line.

    Lines are located by (file, byte offset) and read back on demand, so the index
    of a million results is 16 MB whatever the size of the bodies.

        with ResultIndex.build("runs/a") as index:
            outcome = index.lookup("row-7")
    """

    def __init__(self, run_dir: str, hashes: Any, locations: Any) -> None:
        self.run_dir = run_dir
        self._hashes = hashes  # sorted uint64, stable: equal ids keep file order
        self._locations = locations  # int64: offset * 2 + file number
        self._files = [_open_if_exists(os.path.join(run_dir, name)) for name in _FILES]

    @classmethod
    def build(cls, run_dir: str, endpoint: str | None = None) -> ResultIndex:
        """The index of ``run_dir`` for a run answering from ``endpoint`` (None: the
        one run.json records): on a real endpoint the simulator's lines are left out."""
        provenance = Provenance.of(run_dir, endpoint)
        hashes = array("Q")
        locations = array("q")
        for number, name in enumerate(_FILES):
            path = os.path.join(run_dir, name)
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                pos = 0
                for line in f:
                    if not line.endswith(b"\n"):
                        break  # torn, or being written by a live run: not final
                    if provenance.skips(line):
                        pos += len(line)
                        continue
                    try:
                        custom_id = custom_id_of(line)
                    except ValueError:
                        custom_id = None  # not ours; the journal reports such lines
                    if custom_id is not None:
                        hashes.append(id_hash(custom_id))
                        locations.append(pos * 2 + number)
                    pos += len(line)
        return cls(run_dir, *_sort_by_hash(hashes, locations))

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, custom_id: str, body_hash: str | None = None) -> Outcome | None:
        """The final line of ``custom_id``, decoded (`batchrun._output.lines.decode`; its
        ``ok`` says whether it is an answer), or None: not finished.

        With ``body_hash``, only a line that answered that very body counts: an
        answer to the row's old prompt (before an edit and --force) is not its answer.
        """
        return self._find(id_hash(custom_id), custom_id, body_hash)

    def lookup_hash(self, h: int, body_hash: str | None = None) -> Outcome | None:
        """`lookup` by the id's `batchrun._ids.id_hash` (the scan and the journal know
        rows by it, not by their id)."""
        return self._find(h, None, body_hash)

    def _find(self, h: int, custom_id: str | None, body_hash: str | None) -> Outcome | None:
        i = bisect_right(self._hashes, h) - 1
        while i >= 0 and self._hashes[i] == h:
            location = self._locations[i]
            f = self._files[location & 1]
            assert f is not None  # it had this line when the index was built
            f.seek(location >> 1)
            outcome = decode(f.readline())
            i -= 1
            if custom_id is not None and outcome.custom_id != custom_id:
                continue  # a hash collision: look on
            recorded = outcome.body_hash
            if body_hash is not None and recorded is not None and recorded != body_hash:
                continue  # answered another body
            return outcome
        return None

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()

    def __enter__(self) -> ResultIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_if_exists(path: str) -> IO[bytes] | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _sort_by_hash(hashes: array[int], locations: array[int]) -> tuple[Any, Any]:
    """Both arrays ordered by hash (stable), as zero-copy memoryviews for bisect."""
    n = len(hashes)
    if n == 0:
        return hashes, locations
    h = pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(hashes)])
    loc = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(locations)])
    order = pc.sort_indices(h)
    sorted_h = pc.take(h, order)
    sorted_loc = pc.take(loc, order)
    return (
        memoryview(sorted_h.buffers()[1])
        .cast("B")
        .cast("Q")[sorted_h.offset : sorted_h.offset + n],
        memoryview(sorted_loc.buffers()[1])
        .cast("B")
        .cast("q")[sorted_loc.offset : sorted_loc.offset + n],
    )


# -- one output line -> result columns -------------------------------------------------
def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def result_values(outcome: Outcome, choice: int = 0) -> dict[str, Any]:
    """The result columns of one output line, decoded: of its first choice, or of
    ``choice`` (confidence by agreement: the first choice giving the majority label).

    >>> from batchrun._models import Request
    >>> body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}
    >>> out = Outcome.success(Request("a", {}, row=1), status=200, request_id=None,
    ...     body=body, attempts=[])
    >>> result_values(out)["content"]
    'hi'
    """
    body = outcome.body
    if isinstance(body, dict) and answer_kind(body) == RESPONSES:  # output text and items
        content = response_text(body)
        reasoning = response_reasoning(body)
        tool_calls: Any = response_tool_calls(body) or None
        finish_reason = response_finish(body)
    else:
        choices = body.get("choices") if isinstance(body, dict) else None
        picked = (
            choices[choice if choice < len(choices) else 0]
            if isinstance(choices, list) and choices
            else None
        )
        picked = picked if isinstance(picked, dict) else {}
        message = picked.get("message")
        message = message if isinstance(message, dict) else {}
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            content = _json_text(content)  # a list of content parts
        reasoning = _str(message.get("reasoning_content")) or _str(message.get("reasoning"))
        tool_calls = message.get("tool_calls") or None
        if tool_calls is None and isinstance(message.get("function_call"), dict):
            tool_calls = [{"type": "function", "function": message["function_call"]}]
        finish_reason = _str(picked.get("finish_reason"))
    usage = usage_of(body)
    error = outcome.error or {}
    return {
        "status": SUCCEEDED if outcome.ok else FAILED,
        "status_code": outcome.status_code,
        "model": _str(body.get("model")) if isinstance(body, dict) else None,
        "content": content,
        "reasoning_content": reasoning,
        "finish_reason": finish_reason,
        "tool_calls": _json_text(tool_calls),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "total_tokens": usage.total_tokens if usage else None,
        "cached_tokens": usage.cached_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "latency_ms": milliseconds(outcome.latency_s),
        "ttft_ms": milliseconds(outcome.ttft_s),
        "attempts": len(outcome.attempts),
        "error_code": _str(error.get("code")),
        "error_message": _str(error.get("message")),
    }


# -- carried input columns -------------------------------------------------------------
_KIND_TYPES = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
_INT64 = (-(2**63), 2**63 - 1)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | dict):
        return "json"
    return "other"


def _column_kind(kinds: set[str]) -> str:
    """One column's output kind from the kinds of its non-null values."""
    if not kinds:
        return "string"  # all null: a string column reads everywhere
    if len(kinds) == 1 and next(iter(kinds)) in ("bool", "int", "float", "string", "json"):
        return next(iter(kinds))
    if kinds == {"int", "float"}:
        return "float"
    if "json" in kinds:
        return "json"
    return "mixed"


def infer_jsonl_columns(rows: Iterator[tuple[int, str, Any]]) -> list[tuple[str, str]]:
    """(column, kind) for every key of every object row, in first-seen order.

    >>> infer_jsonl_columns(iter([(1, "", {"a": 1, "b": None}), (2, "", {"a": 2.5, "c": [1]})]))
    [('a', 'float'), ('b', 'string'), ('c', 'json')]
    """
    return columns_of_kinds(jsonl_value_kinds(rows))


def columns_of_kinds(seen: Mapping[str, set[str]]) -> list[tuple[str, str]]:
    """(column, kind) from the kinds of values seen per column (`jsonl_value_kinds`).

    Parts of one input (the shards of a cluster run) agree on their columns when the
    kinds each part saw are united first and turned into columns once.
    """
    return [(str(key), _column_kind(kinds)) for key, kinds in seen.items()]


def jsonl_value_kinds(rows: Iterator[tuple[int, str, Any]]) -> dict[str, set[str]]:
    """The kinds of non-null values seen per key of every object row, first-seen order."""
    seen: dict[str, set[str]] = {}
    for _, _, obj in rows:
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            kinds = seen.get(key)
            if kinds is None:
                kinds = seen[key] = set()
            if value is not None:
                kinds.add(_kind_of(value))
    return seen


def _convert(kind: str) -> Callable[[Any], Any]:
    if kind == "json":
        return _json_text
    if kind == "mixed":
        return lambda v: v if isinstance(v, str) or v is None else _json_text(v)
    if kind == "float":
        return lambda v: None if v is None else float(v)
    return lambda v: v


# -- the pass ----------------------------------------------------------------------------
@dataclass
class _Layout:
    """Output schema plus how input names map onto it."""

    schema: pa.Schema
    carried: list[tuple[str, str, pa.DataType, str | None]]
    """(input name, output name, type, JSONL kind or None for Parquet input)."""
    parsed: list[tuple[str, str, pa.DataType]]
    """(schema property, output name, type)."""
    renamed: dict[str, dict[str, str]]
    dim: int | None
    """An embeddings job's vector size (None: no embedding column)."""


def _unique(name: str, prefix: str, taken: set[str]) -> str:
    while name in taken:
        name = prefix + name
    return name


def _layout(
    cfg: Settings,
    source: Source,
    *,
    carry: bool = True,
    jsonl_columns: list[tuple[str, str]] | None = None,
    dim: int | None = None,
) -> _Layout:
    """The output schema. ``dim``: an embeddings job's vector size (`embedding_dim`;
    None: no embedding column). ``carry=False`` leaves the input columns out (evaluation only:
    no need to read a JSONL file once more to type them); ``jsonl_columns``: the
    carried columns of a JSONL input, already inferred over the whole file."""
    has_schema = cfg.schema is not None
    lead = _lead_columns(cfg)
    reserved = {name for name, _ in lead} | {name for name, _ in _result_columns(cfg)}
    if dim is not None:
        reserved.add(EMBEDDING_COLUMN)
    if has_schema:
        reserved.add("parse_error")
    renamed: dict[str, dict[str, str]] = {"input": {}, "parsed": {}}
    carried: list[tuple[str, str, pa.DataType, str | None]] = []
    if source.dataset and carry:
        inputs: list[tuple[str, pa.DataType, str | None]]
        if source.kind == "parquet":
            schema = source.parquet_schema()
            inputs = [(f.name, f.type, None) for f in schema]
        else:
            columns = jsonl_columns
            if columns is None:
                columns = infer_jsonl_columns(source.rows())
            inputs = [(name, _KIND_TYPES.get(kind, pa.string()), kind) for name, kind in columns]
        taken = set(reserved)
        for name, dtype, kind in inputs:
            out = _unique(name, INPUT_PREFIX, taken)
            taken.add(out)
            if out != name:
                renamed["input"][name] = out
            carried.append((name, out, dtype, kind))
    taken = reserved | {out for _, out, _, _ in carried}
    parsed: list[tuple[str, str, pa.DataType]] = []
    if has_schema:
        for name, dtype in parsed_columns(cfg.schema):
            out = _unique(name, PARSED_PREFIX, taken)
            taken.add(out)
            if out != name:
                renamed["parsed"][name] = out
            parsed.append((name, out, dtype))
    fields = [pa.field(n, t) for n, t in lead]
    fields += [pa.field(out, t) for _, out, t, _ in carried]
    fields += [pa.field(n, t) for n, t in _result_columns(cfg)]
    if dim is not None:
        fields.append(pa.field(EMBEDDING_COLUMN, pa.list_(pa.float32(), dim)))
    if has_schema:
        fields += [pa.field(out, t) for _, out, t in parsed]
        fields.append(pa.field("parse_error", pa.string()))
    renamed = {kind: names for kind, names in renamed.items() if names}
    meta = {"batchrun_version": __version__, "renamed": renamed, "first_choice_only": True}
    schema = pa.schema(fields, metadata={"batchrun": orjson.dumps(meta)})
    return _Layout(schema, carried, parsed, renamed, dim)


EMBEDDING_COLUMN = "embedding"


def embedding_dim(cfg: Settings, out_dir: str | None = None) -> int:
    """The size of an embeddings job's vectors: the ``dimensions`` it asks for, else
    the first answer's in results.jsonl (0 when it holds none yet)."""
    asked = cfg.request.get("dimensions")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return asked
    path = os.path.join(out_dir or cfg.out_dir or ".", RESULTS)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return 0
    with handle:
        for line in handle:
            try:
                outcome = decode(line)
            except ValueError:
                continue
            vector = first_vector(outcome.body)
            if vector is not None:
                try:
                    return len(decode_vector(vector)) // FLOAT32_BYTES
                except ValueError:
                    continue
    return 0


def first_vector(body: Any) -> Any:
    """The first vector of an embeddings answer (a float list or base64 text), else None."""
    data = body.get("data") if type(body) is dict else None
    if type(data) is list and data and type(data[0]) is dict:
        return data[0].get("embedding")
    return None


def _lead_columns(cfg: Settings) -> tuple[tuple[str, pa.DataType], ...]:
    return _LEAD_COLUMNS + ((_VARIANT_COLUMN,) if cfg.has_variants else ())


def _result_columns(cfg: Settings) -> tuple[tuple[str, pa.DataType], ...]:
    return (
        RESULT_COLUMNS
        + ((ENDPOINT_COLUMN,) if cfg.endpoints else ())
        + ((CONFIDENCE_COLUMN,) if cfg.confidence is not None else ())
    )


Chunk = tuple[list[tuple[int, str, Any]], "pa.RecordBatch | None"]


def _input_chunks(source: Source, rows: int) -> Iterator[Chunk]:
    """Input rows in order, a chunk at a time; Parquet datasets bring their columns."""
    if source.dataset and source.kind == "parquet":
        yield from source.dataset_batches(rows)  # one shard's row groups, or all
        return
    chunk: list[tuple[int, str, Any]] = []
    for item in source.rows():
        chunk.append(item)
        if len(chunk) >= rows:
            yield chunk, None
            chunk = []
    if chunk:
        yield chunk, None


def _fallback_id(cfg: Settings, source: Source, row: int, obj: Any) -> str | None:
    """Best guess at an invalid row's id (the mapper refused the row)."""
    if not isinstance(obj, dict):
        return None if cfg.id_column else source.row_name(row)
    if source.dataset:
        if cfg.id_column:
            value = obj.get(cfg.id_column)
            return None if value is None or value == "" else str(value)
        return source.row_name(row)
    custom_id = obj.get("custom_id")
    return custom_id if isinstance(custom_id, str) and custom_id else source.row_name(row)


class _Pass:
    """One walk over the input, joined with the results; feeds a writer and/or evaluator."""

    def __init__(
        self,
        cfg: Settings,
        source: Source,
        layout: _Layout,
        index: ResultIndex,
        evaluators: Mapping[str | None, Evaluator] | None,
        report: ParquetReport,
        observe: RowObserver | None = None,
    ) -> None:
        from batchrun._input.variants import plan_variants

        self.cfg = cfg
        self.pooled = bool(cfg.endpoints)
        self.source = source
        self.layout = layout
        self.index = index
        self.evaluators = evaluators
        self.report = report
        self.observe = observe
        self.schema_json = cfg.schema
        first = next(iter(evaluators.values()), None) if evaluators else None
        self.reference = first.reference_column if first else None
        self.variants = tuple(v.name for v in plan_variants(cfg))
        self.lead = _lead_columns(cfg)
        self.converters = [(name, _convert(kind or "")) for name, _, _, kind in layout.carried]
        self.results = _result_columns(cfg)
        self.empty_results = dict.fromkeys((n for n, _ in self.results), None)
        self.empty_parsed = dict.fromkeys((name for name, _, _ in layout.parsed), None)
        self.reader = ConfidenceReader.of(cfg)
        self.confidence = ConfidenceCounts(self.reader.method) if self.reader else None
        self.gold = read_gold(cfg.out_dir) if evaluators is not None and cfg.out_dir else {}
        self.gold_used: dict[str | None, int] = {}

    def rows(self, items: list[tuple[int, str, Any]]) -> Iterator[tuple[int, Any, dict[str, Any]]]:
        """(index in ``items``, decoded input row, its lead + result + parsed values) of
        each output row: one per input row, or one per variant."""
        from batchrun._input.variants import split_variant

        map_row = self.source.map_row
        statuses = self.report.statuses
        for k, (row, where, obj) in enumerate(items):
            try:
                if isinstance(obj, InputError):
                    raise obj
                made = map_row(obj, row, where)
            except InputError as exc:
                values = {
                    **self.empty_results,
                    "status": INVALID,
                    "error_code": "invalid_input",
                    "error_message": exc.reason,
                    "custom_id": _fallback_id(self.cfg, self.source, row, obj),
                    "row": row,
                    "variant": None,
                    "parse_error": None,
                    _PARSED: self.empty_parsed,
                }
                statuses[INVALID] += 1
                if self.observe is not None:
                    self.observe(obj, values, None, None)
                yield k, obj, values
                continue
            for req in made if type(made) is list else (made,):
                values, parsed, record = self._join(req)
                values["variant"] = (
                    split_variant(req.custom_id, self.variants)[1]  # type: ignore[union-attr]
                    if self.variants
                    else None
                )
                values["row"] = row
                status = values["status"]
                statuses[status] += 1
                if self.evaluators is not None and status in (SUCCEEDED, FAILED):
                    evaluator = self.evaluators.get(values["variant"])
                    if evaluator is not None:
                        reference = self._reference(obj, values["custom_id"], values["variant"])
                        predicted = (
                            evaluator.predicted(values["content"], parsed)
                            if status == SUCCEEDED
                            else None
                        )
                        evaluator.add(reference, predicted)
                        confidence = values.get("confidence")
                        right = evaluator.is_correct(reference, predicted)
                        if confidence is not None and right is not None:
                            sample = self.report.calibration.get(values["variant"])
                            if sample is None:
                                sample = self.report.calibration[values["variant"]] = (
                                    CalibrationSample()
                                )
                            sample.add(confidence, right)
                if self.observe is not None:
                    self.observe(obj, values, parsed, record)
                values[_PARSED] = parsed if parsed is not None else self.empty_parsed
                yield k, obj, values

    def _reference(self, obj: Any, custom_id: str, variant: str | None) -> Any:
        """The row's reference: a person's label imported into the run (gold.jsonl),
        else the input's reference column."""
        if self.gold:
            if variant is not None:
                from batchrun._input.variants import split_variant

                custom_id = split_variant(custom_id, self.variants)[0]
            label = self.gold.get(custom_id)
            if label is not None:
                self.gold_used[variant] = self.gold_used.get(variant, 0) + 1
                return label
        return obj.get(self.reference) if isinstance(obj, dict) else None

    def _join(self, req: Any) -> tuple[dict[str, Any], dict[str, Any] | None, Outcome | None]:
        """(values, parsed answer, the line) of one request."""
        parsed: dict[str, Any] | None = None
        parse_error = None
        found = self.index.lookup(req.custom_id, body_hash(orjson.dumps(req.body)))
        record = None
        if found is None:
            values = {**self.empty_results, "status": PENDING}
        else:
            record = found
            scored = None
            if self.reader is not None and found.ok:
                scored = self.reader.read(found.body)
                assert self.confidence is not None
                self.confidence.add(scored, found.endpoint)
            values = result_values(found, choice=scored.choice if scored is not None else 0)
            if self.reader is not None:
                values["confidence"] = scored.confidence if scored is not None else None
            if self.pooled:
                values["endpoint"] = found.route[-1] if found.route else None
            if found.ok and self.schema_json is not None:
                parsed, parse_error = parse_content(values["content"], self.schema_json)
        if self.layout.dim is not None:
            values[EMBEDDING_COLUMN] = (
                first_vector(found.body) if found is not None and found.ok else None
            )
        values["custom_id"] = req.custom_id
        # parsed values stay apart: a property may share a result column's name
        values["parse_error"] = parse_error
        return values, parsed, record

    def table(self, items: list[tuple[int, str, Any]], batch: pa.RecordBatch | None) -> pa.Table:
        """The output rows of one chunk, as a table in the layout's schema."""
        layout = self.layout
        joined = list(self.rows(items))
        columns: dict[str, pa.Array] = {}
        for name, dtype in self.lead + self.results:
            columns[name] = pa.array([v[name] for _, _, v in joined], type=dtype)
        taken = None
        if batch is not None and len(joined) != len(items):  # a row per variant
            taken = pa.array([k for k, _, _ in joined], pa.int64())
        for (name, out, dtype, _), (_, convert) in zip(
            layout.carried, self.converters, strict=True
        ):
            if batch is not None:
                column = batch.column(name)
                columns[out] = column if taken is None else pc.take(column, taken)
            else:
                columns[out] = pa.array(
                    [convert(o.get(name)) if isinstance(o, dict) else None for _, o, _ in joined],
                    type=dtype,
                )
        if layout.dim is not None:
            columns[EMBEDDING_COLUMN] = _vectors(
                [v.get(EMBEDDING_COLUMN) for _, _, v in joined], layout.dim
            )
        for name, out, dtype in layout.parsed:
            columns[out] = pa.array([v[_PARSED][name] for _, _, v in joined], type=dtype)
        if self.schema_json is not None:
            columns["parse_error"] = pa.array([v["parse_error"] for _, _, v in joined], pa.string())
        return pa.Table.from_arrays([columns[f.name] for f in layout.schema], schema=layout.schema)


def _vectors(vectors: list[Any], dim: int) -> pa.FixedSizeListArray:
    """The embedding column of one chunk: a vector of another size than the column's
    (a server that ignored ``dimensions``) or one that is no vector is null, never a
    misread row."""
    try:
        return vectors_array(vectors, dim)
    except ValueError:
        kept = []
        for vector in vectors:
            try:
                ok = vector is not None and len(decode_vector(vector)) == dim * FLOAT32_BYTES
            except ValueError:
                ok = False
            kept.append(vector if ok else None)
        return vectors_array(kept, dim)


def write_results_parquet(
    cfg: Settings,
    out_path: str | None,
    *,
    source: Source | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    observe: RowObserver | None = None,
    jsonl_columns: list[tuple[str, str]] | None = None,
    dim: int | None = None,
) -> ParquetReport:
    """Write results.parquet for a run (atomically), evaluating in the same pass.

    ``out_path=None`` writes nothing and only evaluates (--no-parquet with [eval]).
    The returned report carries the evaluation (None when the job has no [eval] or is a
    plain request file; with variants, one per variant in ``eval_by_variant``).
    ``observe`` sees every output row (the comparison of variants). Raises InputError
    when the input cannot be read again. ``source`` may be one shard's rows;
    ``jsonl_columns`` then types the carried JSONL columns as the whole input does, so
    every shard's file has the same schema; ``dim`` does the same for an embeddings
    job's vectors (None: `embedding_dim` of the run directory).
    """
    from batchrun._input.select import source_for
    from batchrun._input.variants import plan_variants

    started = time.perf_counter()
    source = source or source_for(cfg)
    evaluators: dict[str | None, Evaluator] | None = None
    if source.dataset and cfg.eval is not None:
        names: list[str | None] = [v.name for v in plan_variants(cfg)] or [None]
        evaluators = {}
        for name in names:
            evaluator = Evaluator.of(cfg.eval)
            assert evaluator is not None
            evaluators[name] = evaluator
    report = ParquetReport(path=out_path)
    if out_path is None and evaluators is None and observe is None:
        return report
    if cfg.api != EMBEDDINGS:
        dim = None
    elif dim is None:
        dim = embedding_dim(cfg)
    layout = _layout(cfg, source, carry=out_path is not None, jsonl_columns=jsonl_columns, dim=dim)
    report.columns = list(layout.schema.names)
    report.renamed = layout.renamed
    assert cfg.out_dir is not None, "a run directory to read"
    with ResultIndex.build(cfg.out_dir, cfg.lines_endpoint) as index:
        joiner = _Pass(cfg, source, layout, index, evaluators, report, observe)
        if out_path is None:
            for items, _ in _input_chunks(source, row_group_rows):
                for _ in joiner.rows(items):
                    pass
        else:
            _write(out_path, layout.schema, joiner, source, row_group_rows)
    report.rows = sum(report.statuses.values())
    if joiner.confidence is not None:
        report.confidence = joiner.confidence.report()
        report.confidence_note = joiner.confidence.warning()
    if evaluators is not None:
        # rows without a final answer yet are not scored; say how many
        unscored = {"pending": report.statuses[PENDING], "invalid": report.statuses[INVALID]}
        reports = {name: {**ev.report(), **unscored} for name, ev in evaluators.items()}
        for name, one in reports.items():
            if joiner.gold:
                one["gold_rows"] = joiner.gold_used.get(name, 0)
            sample = report.calibration.get(name)
            if sample is not None and len(sample):
                one["calibration"] = sample.report()
        if None in reports:
            report.eval = reports[None]
        else:
            report.eval_by_variant = {str(k): v for k, v in reports.items()}
    report.seconds = time.perf_counter() - started
    return report


def _write(out_path: str, schema: pa.Schema, joiner: _Pass, source: Source, rows: int) -> None:
    with atomic_file(out_path, ".parquet") as tmp, pq.ParquetWriter(tmp, schema) as writer:
        waiting: list[pa.Table] = []
        waiting_rows = 0
        for items, batch in _input_chunks(source, rows):
            table = joiner.table(items, batch)
            waiting.append(table)
            waiting_rows += table.num_rows
            if waiting_rows >= rows:  # Parquet input may come in smaller batches
                writer.write_table(pa.concat_tables(waiting), row_group_size=rows)
                waiting, waiting_rows = [], 0
        if waiting:
            writer.write_table(pa.concat_tables(waiting), row_group_size=rows)
