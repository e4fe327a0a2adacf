"""The review queue: a run's doubtful rows out to people, and their labels back in as gold.

`write_review` takes the answered rows of a run with a confidence (`batchrun._settings.
Confidence`) whose confidence is below ``below``: answers without a usable label first,
then (a cascade, `batchrun._jobs.cascade`) the rows whose stages gave different labels,
then the lowest confidence first, at most ``limit`` of them, each with its input
columns (but the [eval] reference column: people are not shown the answer they are to
give), the model's label, its confidence and the raw answer, in one of three formats:

* ``label-studio``: a JSON list of Label Studio tasks, ``data`` holding the input
  columns (and ``batchrun_id``, the row's custom_id, which the export keeps), and
  ``predictions: [{model_version, score, result: [{from_name, to_name, type:
  "choices", value: {choices: [label]}}]}]``, which Label Studio shows as a
  pre-annotation and sorts by score. ``from_name`` is the label field (or "label"),
  ``to_name`` the text column; `label_studio_config` is the labelling configuration
  whose names match (written next to the file);
* ``argilla``: a JSON list of Argilla 2 records as ``rg.Record.from_dict`` reads them
  (``Dataset.records.log`` too): ``id`` (the custom_id), ``fields`` (the text column),
  ``metadata`` (the other input columns, the confidence, the model),
  ``suggestions: {QUESTION: {value, score, agent}}``;
* ``jsonl``: one line per row, ``{"custom_id", "row", "input": {...}, "prediction",
  "confidence", "model", "answer", "label": null}``: a person fills in ``label``.

A cascade's row carries every stage's answer (``stages.parquet``): in Label Studio one
more scored prediction per earlier stage, in Argilla ``stage<n>_label`` and
``stage<n>_confidence`` metadata, in JSONL a ``stages`` list of ``{"stage", "model",
"prediction", "confidence"}``.

`import_labels` reads people's labels back: a Label Studio JSON export (each task's
``annotations[].result[].value.choices``, cancelled annotations left out; several
annotators: the majority, a tie left out) or its JSON-MIN export, an Argilla export
(nested ``responses: {QUESTION: [{value, status}]}`` or flat ``QUESTION.responses``;
discarded and draft responses left out), or JSONL lines ``{"custom_id", "label"}``
(a null label: not reviewed). Every record must name a row of the run, and with known
labels (the schema's enum) give one of them (any case): otherwise nothing is imported
and the error names the file and the record. The labels are appended to the run's
gold.jsonl (`batchrun._jobs.gold`), where `batchrun eval` takes them as the reference.

    >>> rows = [ReviewRow("row-1", 1, {"text": "meh"}, "neutral", 0.41, "weak", "...")]
    >>> task = label_studio_tasks(rows, "sentiment", "text")[0]
    >>> task["predictions"][0]["result"][0]["value"]
    {'choices': ['neutral']}
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

import orjson

from batchrun._jobs.gold import append_gold
from batchrun.errors import ConfigError, InputError

FORMATS = ("label-studio", "argilla", "jsonl")
ID_KEY = "batchrun_id"
"""The key of a Label Studio task's ``data`` holding the row's custom_id."""
DEFAULT_QUESTION = "label"
SUBMITTED = ("submitted", None)

__all__ = [
    "FORMATS",
    "ID_KEY",
    "ImportReport",
    "ReviewReport",
    "ReviewRow",
    "StageAnswer",
    "argilla_records",
    "import_labels",
    "jsonl_lines",
    "label_studio_config",
    "label_studio_tasks",
    "read_labels",
    "review_rows",
    "write_review",
]


@dataclass(frozen=True)
class ReviewRow:
    """One row in the review queue."""

    custom_id: str
    row: int
    inputs: dict[str, Any]
    label: str | None
    """The model's label (None: the answer has none where it should be)."""
    confidence: float | None
    model: str | None
    answer: str | None
    """The raw answer."""
    stages: tuple[StageAnswer, ...] = ()
    """A cascade's row: every stage's answer to it, in stage order."""

    @property
    def disagreeing(self) -> bool:
        """Its stages gave different labels."""
        return len({s.label for s in self.stages if s.label is not None}) > 1


@dataclass(frozen=True)
class StageAnswer:
    """One cascade stage's answer to a row in the review queue."""

    stage: int
    model: str
    label: str | None
    confidence: float | None


@dataclass
class ReviewReport:
    """What `write_review` wrote and left out."""

    path: str | None
    format: str
    rows: int
    """Rows written."""
    doubtful: int
    """Rows below the threshold (``rows`` is at most ``limit`` of them)."""
    answered: int
    without_confidence: int
    """Answered rows with a label but no confidence (no logprobs): never queued."""
    question: str
    text_column: str | None
    labels: tuple[str, ...]
    config_path: str | None = None
    notes: list[str] = field(default_factory=list)


# -- which rows ------------------------------------------------------------------------------
def _run_settings(run_dir: str) -> Any:
    from batchrun._engine.runinfo import settings_of

    cfg = settings_of(run_dir)
    if cfg.cascade is not None:  # a cascade's answers have the confidence it decided by
        from dataclasses import replace

        cfg = replace(cfg, confidence=cfg.judged_by())
    if cfg.confidence is None:
        raise ConfigError(
            f"{run_dir}: the run has no confidence to queue doubtful rows by "
            "(run it with --confidence logprobs|agreement|self)"
        )
    if cfg.has_variants:
        raise ConfigError(f"{run_dir}: a run comparing variants cannot be reviewed as one")
    return cfg


def _results(run_dir: str, cfg: Any) -> Any:
    """results.parquet of the run (built from its files when it has none)."""
    import pyarrow.parquet as pq

    from batchrun._output.parquet import write_results_parquet
    from batchrun._runfiles import RunDirLock

    path = os.path.join(run_dir, "results.parquet")
    if not os.path.exists(path):
        with RunDirLock(run_dir):
            if cfg.cascade is not None:
                from batchrun._jobs.cascade_run import rebuild_cascade

                rebuild_cascade(cfg)
            else:
                write_results_parquet(cfg, path)
    return pq.read_table(path)


def _input_columns(table: Any) -> dict[str, str]:
    """results.parquet column -> input column name, for the carried input columns."""
    names = list(table.column_names)
    first = names.index("variant") + 1 if "variant" in names else names.index("row") + 1
    carried = names[first : names.index("status")]
    renamed: dict[str, str] = {}
    meta = (table.schema.metadata or {}).get(b"batchrun")
    if meta:
        try:
            renamed = (orjson.loads(meta).get("renamed") or {}).get("input") or {}
        except orjson.JSONDecodeError:
            renamed = {}
    back = {new: old for old, new in renamed.items()}
    return {name: back.get(name, name) for name in carried}


def review_rows(
    run_dir: str, *, below: float | None = None, limit: int | None = None
) -> tuple[list[ReviewRow], ReviewReport]:
    """The doubtful rows of a run, most doubtful first, and what was left out (the
    report's ``path`` is None: nothing written)."""
    from batchrun._confidence import ConfidenceReader

    cfg = _run_settings(run_dir)
    reader = ConfidenceReader.of(cfg)
    assert reader is not None
    table = _results(run_dir, cfg)
    columns = _input_columns(table)
    if cfg.eval is not None:  # people must not be shown the answer they are to give
        columns = {k: v for k, v in columns.items() if v != cfg.eval.reference_column}
    data = table.select(
        ["custom_id", "row", "status", "model", "content", "confidence", *columns]
    ).to_pylist()
    stages = _stage_answers(run_dir, reader)
    queued: list[ReviewRow] = []
    answered = without = 0
    for item in data:
        if item["status"] != "succeeded":
            continue
        answered += 1
        label = reader.label_of(item["content"])
        confidence = item["confidence"]
        if label is not None and confidence is None:
            without += 1
            continue
        if label is not None and below is not None and confidence >= below:
            continue
        inputs = {original: item[name] for name, original in columns.items()}
        queued.append(
            ReviewRow(
                item["custom_id"],
                item["row"],
                inputs,
                label,
                confidence,
                item["model"],
                item["content"],
                stages.get(item["custom_id"], ()),
            )
        )
    # unusable answers first (no label), then rows whose cascade stages disagree, then
    # the least confident; ties in input order
    queued.sort(key=lambda r: (r.label is not None, not r.disagreeing, r.confidence or 0.0, r.row))
    doubtful = len(queued)
    if limit is not None:
        queued = queued[:limit]
    labels = reader.labels or tuple(sorted({r.label for r in queued if r.label is not None}))
    report = ReviewReport(
        path=None,
        format="",
        rows=len(queued),
        doubtful=doubtful,
        answered=answered,
        without_confidence=without,
        question=reader.label_field or DEFAULT_QUESTION,
        text_column=None,
        labels=labels,
    )
    if without:
        report.notes.append(
            f"{without} answered rows have no confidence (answers without logprobs?): not queued"
        )
    return queued, report


def _stage_answers(run_dir: str, reader: Any) -> dict[str, tuple[StageAnswer, ...]]:
    """A cascade's stages.parquet as each row's answers (empty: not a cascade)."""
    import pyarrow.parquet as pq

    path = os.path.join(run_dir, "stages.parquet")
    if not os.path.exists(path):
        return {}
    out: dict[str, list[StageAnswer]] = {}
    columns = ["custom_id", "stage", "model", "status", "content", "confidence"]
    for item in pq.read_table(path, columns=columns).to_pylist():
        ok = item["status"] == "succeeded"
        out.setdefault(str(item["custom_id"]), []).append(
            StageAnswer(
                int(item["stage"]),
                str(item["model"]),
                reader.label_of(item["content"]) if ok else None,
                item["confidence"],
            )
        )
    return {cid: tuple(sorted(found, key=lambda a: a.stage)) for cid, found in out.items()}


def _text_column(rows: Sequence[ReviewRow], wanted: str | None) -> str | None:
    """The column people read: ``wanted``, else ``text``, else the first text column."""
    names = list(rows[0].inputs) if rows else []
    if wanted is not None:
        if rows and wanted not in names:
            raise ConfigError(
                f"--text-column {wanted!r} is not an input column ({', '.join(names)})"
            )
        return wanted
    if "text" in names:
        return "text"
    for name in names:
        if all(isinstance(r.inputs.get(name), str) for r in rows[:50]):
            return name
    return names[0] if names else None


# -- the three formats ------------------------------------------------------------------------
def label_studio_tasks(
    rows: Iterable[ReviewRow], question: str, text_column: str | None
) -> list[dict[str, Any]]:
    """Label Studio tasks with the model's label as a scored prediction."""
    to_name = text_column or "text"
    tasks = []
    for r in rows:
        data = {**r.inputs, ID_KEY: r.custom_id, "batchrun_answer": r.answer}
        task: dict[str, Any] = {"data": data}
        result = []
        if r.label is not None:
            result.append(
                {
                    "from_name": question,
                    "to_name": to_name,
                    "type": "choices",
                    "value": {"choices": [r.label]},
                }
            )
        task["predictions"] = [
            {"model_version": r.model or "batchrun", "score": r.confidence or 0.0, "result": result}
        ]
        for earlier in r.stages[:-1]:  # a cascade: the stages before the deciding one
            task["predictions"].append(
                {
                    "model_version": f"stage {earlier.stage}: {earlier.model}",
                    "score": earlier.confidence or 0.0,
                    "result": [
                        {
                            "from_name": question,
                            "to_name": to_name,
                            "type": "choices",
                            "value": {"choices": [earlier.label]},
                        }
                    ]
                    if earlier.label is not None
                    else [],
                }
            )
        tasks.append(task)
    return tasks


def label_studio_config(question: str, text_column: str | None, labels: Sequence[str]) -> str:
    """A labelling configuration whose control and object names match the tasks."""
    text = text_column or "text"
    choices = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
    return (
        "<View>\n"
        f"  <Text name={quoteattr(text)} value={quoteattr('$' + text)}/>\n"
        f'  <Choices name={quoteattr(question)} toName={quoteattr(text)} choice="single" '
        'showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _metadata_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return orjson.dumps(value, default=str).decode()


def argilla_records(
    rows: Iterable[ReviewRow], question: str, text_column: str | None
) -> list[dict[str, Any]]:
    """Argilla 2 records (``rg.Record.from_dict``), the label as a scored suggestion."""
    records = []
    for r in rows:
        fields = {text_column: r.inputs.get(text_column)} if text_column else {}
        metadata = {
            name: _metadata_value(value)
            for name, value in r.inputs.items()
            if name != text_column and value is not None
        }
        metadata.update(confidence=r.confidence, model=r.model, row=r.row)
        for one in r.stages:  # a cascade: every stage's label and confidence
            metadata[f"stage{one.stage}_label"] = one.label
            metadata[f"stage{one.stage}_confidence"] = one.confidence
        suggestions = {}
        if r.label is not None:
            suggestions[question] = {"value": r.label, "score": r.confidence, "agent": r.model}
        records.append(
            {
                "id": r.custom_id,
                "fields": fields,
                "metadata": {k: v for k, v in metadata.items() if v is not None},
                "suggestions": suggestions,
                "responses": {},
                "vectors": {},
            }
        )
    return records


def jsonl_lines(rows: Iterable[ReviewRow]) -> list[dict[str, Any]]:
    """Plain records; a person fills in ``label``."""
    return [
        {
            "custom_id": r.custom_id,
            "row": r.row,
            "input": r.inputs,
            "prediction": r.label,
            "confidence": r.confidence,
            "model": r.model,
            "answer": r.answer,
            **(
                {
                    "stages": [
                        {
                            "stage": a.stage,
                            "model": a.model,
                            "prediction": a.label,
                            "confidence": a.confidence,
                        }
                        for a in r.stages
                    ]
                }
                if r.stages
                else {}
            ),
            "label": None,
        }
        for r in rows
    ]


def write_review(
    run_dir: str,
    out: str | None,
    *,
    below: float | None = None,
    limit: int | None = None,
    format: str = "jsonl",
    text_column: str | None = None,
) -> tuple[ReviewReport, bytes]:
    """Queue a run's doubtful rows for people (see the module docstring). Writes ``out``
    (atomically; Label Studio: and its labelling configuration, ``OUT.xml`` without
    the suffix) and returns the report and the bytes (for stdout when ``out`` is None).

        report, _ = write_review("runs/labels", "review.json", below=0.7, limit=500,
                                 format="label-studio")
    """
    if format not in FORMATS:
        raise ConfigError(f"review format must be one of {', '.join(FORMATS)} (got {format!r})")
    if below is not None and not 0 <= below <= 1:
        raise ConfigError(f"--below must be a confidence from 0 to 1 (got {below})")
    rows, report = review_rows(run_dir, below=below, limit=limit)
    report.format = format
    column = _text_column(rows, text_column)
    report.text_column = column
    if format == "label-studio":
        data = orjson.dumps(
            label_studio_tasks(rows, report.question, column), option=orjson.OPT_INDENT_2
        )
    elif format == "argilla":
        data = orjson.dumps(
            argilla_records(rows, report.question, column), option=orjson.OPT_INDENT_2
        )
    else:
        data = b"".join(
            orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in jsonl_lines(rows)
        )
    if out is not None:
        from batchrun._output.summary import atomic_file

        with atomic_file(out, ".tmp") as tmp, open(tmp, "wb") as f:
            f.write(data)
        report.path = out
        if format == "label-studio":
            config_path = os.path.splitext(out)[0] + ".xml"
            with atomic_file(config_path, ".tmp") as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(label_studio_config(report.question, column, report.labels))
            report.config_path = config_path
    return report, data


# -- people's labels back -----------------------------------------------------------------------
@dataclass
class ImportReport:
    """What `import_labels` took from a file."""

    path: str
    format: str
    imported: int = 0
    changed: int = 0
    """Rows whose gold label this import changed (an earlier import said otherwise)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Records left out, by why: "unreviewed", "cancelled", "disagreeing"."""

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def _load(path: str) -> tuple[str, list[Any]]:
    """("json", items) for a JSON list, ("jsonl", objects) for JSON lines."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(path, "0", f"cannot read ({exc.strerror or exc})") from exc
    text = raw.lstrip()
    if text.startswith(b"["):
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(path, "0", f"not valid JSON ({exc})") from exc
        return "json", list(items)
    objects = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            objects.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InputError(path, f"line {number}", f"not valid JSON ({exc})") from exc
    return "jsonl", objects


def _vote(values: list[str], report: ImportReport) -> str | None:
    if not values:
        report.skip("unreviewed")
        return None
    counts = Counter(values).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        report.skip("disagreeing")
        return None
    return counts[0][0]


def _objects(items: list[Any], path: str, noun: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each item of an export with where it stands ("task 3"); one that is not a JSON
    object is an `InputError`."""
    for number, item in enumerate(items, 1):
        where = f"{noun} {number}"
        if not isinstance(item, dict):
            raise InputError(path, where, "not a JSON object")
        yield where, item


def _label_studio(
    items: list[Any], path: str, question: str, report: ImportReport
) -> Iterable[tuple[str, str, str]]:
    for where, task in _objects(items, path, "task"):
        data = task.get("data")
        custom_id = (data if isinstance(data, dict) else task).get(ID_KEY)
        if not isinstance(custom_id, str):
            raise InputError(path, where, f"no {ID_KEY} in its data (is it a batchrun task?)")
        if "annotations" in task:
            values = []
            for annotation in task.get("annotations") or ():
                if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                    report.skip("cancelled")
                    continue
                chosen = _ls_choice(annotation.get("result") or (), question)
                if chosen is not None:
                    values.append(chosen)
            label = _vote(values, report)
        else:  # JSON-MIN: the control's name holds the choice
            value = task.get(question)
            if isinstance(value, dict):
                value = (value.get("choices") or [None])[0]
            label = value if isinstance(value, str) else None
            if label is None:
                report.skip("unreviewed")
        if label is not None:
            yield custom_id, label, where


def _ls_choice(results: Iterable[Any], question: str) -> str | None:
    choices = [
        r
        for r in results
        if isinstance(r, dict) and r.get("type") == "choices" and isinstance(r.get("value"), dict)
    ]
    named = [r for r in choices if r.get("from_name") == question] or choices
    for r in named:
        picked = r["value"].get("choices")
        if isinstance(picked, list) and len(picked) == 1 and isinstance(picked[0], str):
            return picked[0]
    return None


def _argilla(
    items: list[Any], path: str, question: str, report: ImportReport
) -> Iterable[tuple[str, str, str]]:
    for where, record in _objects(items, path, "record"):
        custom_id = record.get("id")
        if not isinstance(custom_id, str):
            raise InputError(path, where, "no id")
        responses = record.get("responses")
        values: list[str] = []
        if isinstance(responses, dict):  # nested: {question: [{value, user_id, status}]}
            given = responses.get(question)
            if given is None and len(responses) == 1:
                given = next(iter(responses.values()))
            for response in given or ():
                if isinstance(response, dict) and response.get("status") in SUBMITTED:
                    if isinstance(response.get("value"), str):
                        values.append(response["value"])
        else:  # flat: "question.responses", "question.responses.status"
            given = record.get(f"{question}.responses") or []
            status = record.get(f"{question}.responses.status") or [None] * len(given)
            for value, state in zip(given, status, strict=False):
                if isinstance(value, str) and state in SUBMITTED:
                    values.append(value)
        label = _vote(values, report)
        if label is not None:
            yield custom_id, label, where


def _jsonl(items: list[Any], path: str, report: ImportReport) -> Iterable[tuple[str, str, str]]:
    for number, line in enumerate(items, 1):
        where = f"line {number}"
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise InputError(path, where, "expected an object with a custom_id")
        label = line.get("label")
        if label is None:
            report.skip("unreviewed")
            continue
        if not isinstance(label, str) or not label.strip():
            raise InputError(path, where, f"label must be text (got {label!r})")
        yield line["custom_id"], label, where


def _detect(kind: str, items: list[Any]) -> str:
    if kind == "jsonl":
        return "jsonl"
    first = next((item for item in items if isinstance(item, dict)), {})
    if "annotations" in first or ID_KEY in first or ID_KEY in (first.get("data") or {}):
        return "label-studio"
    if "responses" in first or "fields" in first or any(".responses" in k for k in first):
        return "argilla"
    return "jsonl" if "custom_id" in first else "label-studio"


def read_labels(
    path: str, question: str = DEFAULT_QUESTION
) -> tuple[list[tuple[str, str, str]], ImportReport]:
    """(custom_id, label, where in the file) of every reviewed record, and what was
    left out; the format is told from the file (see the module docstring)."""
    kind, items = _load(path)
    fmt = _detect(kind, items)
    report = ImportReport(path, fmt)
    if fmt == "label-studio":
        found = list(_label_studio(items, path, question, report))
    elif fmt == "argilla":
        found = list(_argilla(items, path, question, report))
    else:
        found = list(_jsonl(items, path, report))
    return found, report


def _known_ids(run_dir: str, cfg: Any) -> set[str]:
    table = _results(run_dir, cfg)
    return {str(v) for v in table.column("custom_id").to_pylist() if v is not None}


def import_labels(run_dir: str, path: str) -> ImportReport:
    """Read people's labels from ``path`` into the run's gold.jsonl (see the module
    docstring); nothing is written when a record names no row of the run or, with
    known labels, no label.

        report = import_labels("runs/labels", "export.json")
        report.imported, report.skipped
    """
    from batchrun._confidence import ConfidenceReader
    from batchrun._engine.runinfo import settings_of
    from batchrun._jobs.gold import read_gold

    cfg = settings_of(run_dir)
    reader = ConfidenceReader.of(cfg)
    question = (reader.label_field if reader is not None else None) or DEFAULT_QUESTION
    labels = reader.labels if reader is not None else ()
    found, report = read_labels(path, question)
    known = _known_ids(run_dir, cfg)
    canonical = {label.casefold(): label for label in labels}
    pairs: dict[str, str] = {}
    for custom_id, label, where in found:
        if custom_id not in known:
            raise InputError(path, where, f"{custom_id!r} is not a row of {run_dir}")
        label = label.strip()
        if canonical:
            if label.casefold() not in canonical:
                raise InputError(path, where, f"label {label!r} is not one of {', '.join(labels)}")
            label = canonical[label.casefold()]
        pairs[custom_id] = label
    before = read_gold(run_dir)
    report.imported = append_gold(
        run_dir, pairs.items(), source=f"{report.format}:{os.path.basename(path)}"
    )
    report.changed = sum(
        1 for cid, label in pairs.items() if cid in before and before[cid] != label
    )
    return report
