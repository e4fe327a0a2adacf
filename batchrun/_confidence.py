"""How sure an answer is: from logprobs, from agreement between samples, or from the
model's own estimate. Pure: no I/O.

A job's ``confidence`` setting (`batchrun._settings.Confidence`) picks the method:

* ``"logprobs"``: the request asks for ``logprobs`` and ``top_logprobs``
  (`request_fields`). The confidence is the probability the model gave the label it
  chose: the product of the probabilities of the tokens that spell the label
  (exp of the sum of their logprobs). For a JSON answer those are the tokens of the
  label field's value (``{"sentiment": "positive"}`` -> the tokens of ``positive``),
  for a plain answer the answer's own tokens. When the label values are known (the
  schema's enum, or ``labels``), the probability is normalised over the labels the
  first label token's ``top_logprobs`` show: p(chosen) / (p(chosen) + the other
  labels seen + for each label not shown, the least probability shown: the most it
  can hold, the alternatives being the top k), so mass a model put on tokens that are
  no label (``Positive``,
  whitespace) does not make it look unsure. An alternative token counts for a label
  when, after the bytes the chosen token has before the label (an opening quote),
  it starts the label (or the label starts it) and no other label. An answer that
  is no label, or a job asking ``top_logprobs`` 0 (llama.cpp's server then sends 20
  alternatives all the same), keeps the raw probability;
* ``"agreement"``: the request asks for ``samples`` answers (``n``); the confidence
  is the share of them giving the majority label (a tie: the label given first), and
  the row's answer is the first choice giving it (`majority`);
* ``"self"``: a number field of the answer (the model's own estimate): a value from
  0 to 1 is taken as is, one above 1 up to 100 as a percentage, anything else is
  clamped to [0, 1].

An answer whose confidence cannot be read gets None and says why (`Scored.missing`):
an endpoint that returned no logprobs is never given 1.0.

    >>> tokens = [{"token": '{"', "logprob": 0.0}, {"token": "label", "logprob": 0.0},
    ...           {"token": '":"', "logprob": 0.0}, {"token": "yes", "logprob": -0.1053605},
    ...           {"token": '"}', "logprob": 0.0}]
    >>> body = {"choices": [{"message": {"content": '{"label":"yes"}'},
    ...                      "logprobs": {"content": tokens}}]}
    >>> scored = ConfidenceReader("logprobs", label_field="label").read(body)
    >>> round(scored.confidence, 3), scored.label
    (0.9, 'yes')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from batchrun._labels import normalize_answer
from batchrun._values import CONFIDENCE_METHODS, Confidence, Evaluation, ResponseFormat

if TYPE_CHECKING:
    from batchrun._settings import Settings

LOGPROBS, AGREEMENT, SELF = CONFIDENCE_METHODS
NO_ANSWER = "no_answer"
"""No text answer to judge (a tool call, a refusal, no choices)."""
NO_LOGPROBS = "no_logprobs"
"""The endpoint returned no logprobs for the answer."""
NO_LABEL = "no_label"
"""The answer has no label where the label should be (not JSON, no such field)."""
NO_SCORE = "no_score"
"""``self``: the answer's score field is missing or not a number."""
UNALIGNED = "unaligned"
"""The logprobs' tokens do not spell the answer (or have no logprob)."""
DEFAULT_SCORE_FIELD = "confidence"

__all__ = [
    "AGREEMENT",
    "LOGPROBS",
    "NO_ANSWER",
    "NO_LABEL",
    "NO_LOGPROBS",
    "NO_SCORE",
    "SELF",
    "UNALIGNED",
    "ConfidenceCounts",
    "ConfidenceReader",
    "Scored",
    "confidence_problems",
    "has_logprobs",
    "json_field_span",
    "label_field_of",
    "label_span",
    "majority",
    "request_fields",
    "score_field_of",
    "self_score",
    "span_probability",
    "with_request_fields",
]


@dataclass(frozen=True, slots=True)
class Scored:
    """One answer's confidence, the label it is about, and the choice holding it."""

    confidence: float | None
    label: str | None
    choice: int = 0
    """Which of the response's choices is the row's answer (agreement: the first
    giving the majority label; otherwise the first)."""
    missing: str | None = None
    """Why ``confidence`` is None (`NO_LOGPROBS`, `NO_LABEL`, ...)."""


# -- the request side ----------------------------------------------------------------------
def request_fields(spec: Confidence) -> dict[str, Any]:
    """The body fields a method needs from every request.

    >>> request_fields(Confidence("logprobs", top_logprobs=3))
    {'logprobs': True, 'top_logprobs': 3}
    >>> request_fields(Confidence("agreement", samples=7))
    {'n': 7}
    """
    if spec.method == LOGPROBS:
        fields: dict[str, Any] = {"logprobs": True}
        if spec.top_logprobs:
            fields["top_logprobs"] = spec.top_logprobs
        return fields
    if spec.method == AGREEMENT:
        return {"n": spec.samples}
    return {}


def with_request_fields(defaults: Mapping[str, Any], spec: Confidence | None) -> dict[str, Any]:
    """Body defaults with the method's fields added where they leave them out (a field
    the job sets itself wins; `confidence_problems` refuses one that defeats the
    method, such as ``logprobs = false``).

    >>> with_request_fields({"temperature": 0}, Confidence("logprobs", top_logprobs=2))
    {'temperature': 0, 'logprobs': True, 'top_logprobs': 2}
    """
    out = dict(defaults)
    if spec is None:
        return out
    for key, value in request_fields(spec).items():
        out.setdefault(key, value)
    return out


# -- where the label is --------------------------------------------------------------------
_PUNCT = frozenset("{}[],:")


def _json_tokens(text: str, start: int) -> Iterator[tuple[str, int, int]]:
    """(kind, start, end) of each JSON token from ``start``: "str" (quotes included),
    one of ``{}[],:``, or "lit" (a number, true, false, null, or anything else bare)."""
    i, n = start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return  # an unterminated string: no more tokens
            yield "str", i, j + 1
            i = j + 1
        elif c in _PUNCT:
            yield c, i, i + 1
            i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and text[j] not in _PUNCT and text[j] != '"' and not text[j].isspace():
                j += 1
            yield "lit", i, j
            i = j


def json_field_span(text: str, field: str) -> tuple[int, int, Any] | None:
    """Where the value of the top-level ``field`` of the JSON object in ``text`` is:
    ``(start, end, value)``, for a string the span inside its quotes (what the label's
    tokens spell); None when there is no such field with a scalar value. Text around
    the object (a code fence) is skipped.

    >>> json_field_span('{"a": [1, {"b": 2}], "b": "yes"}', "b")
    (27, 30, 'yes')
    >>> json_field_span('```json\\n{"n": 3}\\n```', "n")
    (14, 15, 3)
    """
    opening = text.find("{")
    if opening < 0:
        return None
    depth = 0
    expect = "key"  # at depth 1: "key", "colon", "value" or "comma"
    key: Any = None
    for kind, start, end in _json_tokens(text, opening):
        if depth == 1 and expect == "value":
            expect = "comma"
            if key == field and kind in ("str", "lit"):
                try:
                    value = orjson.loads(text[start:end])
                except orjson.JSONDecodeError:
                    return None
                return (start + 1, end - 1, value) if kind == "str" else (start, end, value)
        if kind in ("{", "["):
            depth += 1
            if depth == 1:
                expect = "key"
        elif kind in ("}", "]"):
            depth -= 1
            if depth <= 0:
                return None
        elif depth != 1:
            continue
        elif kind == ",":
            expect = "key"
        elif expect == "key" and kind == "str":
            try:
                key = orjson.loads(text[start:end])
            except orjson.JSONDecodeError:
                return None
            expect = "colon"
        elif expect == "colon" and kind == ":":
            expect = "value"
    return None


def label_span(content: str, field: str | None) -> tuple[int, int, str] | None:
    """``(start, end, label)``: where the label is in an answer, and the label as text.
    ``field`` None: the whole answer, surrounding whitespace left out.

    >>> label_span(" positive\\n", None)
    (1, 9, 'positive')
    >>> label_span('{"sentiment": "negative"}', "sentiment")
    (15, 23, 'negative')
    """
    if field is None:
        stripped = content.strip()
        if not stripped:
            return None
        start = content.find(stripped)
        return start, start + len(stripped), stripped
    found = json_field_span(content, field)
    if found is None:
        return None
    start, end, value = found
    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return start, end, text


# -- logprobs -------------------------------------------------------------------------------
def _token_bytes(token: Any) -> bytes | None:
    if not isinstance(token, Mapping):
        return None
    raw = token.get("bytes")
    if isinstance(raw, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in raw
    ):
        return bytes(raw)
    text = token.get("token")
    return text.encode("utf-8") if isinstance(text, str) else None


def _logprob(token: Any) -> float | None:
    value = token.get("logprob") if isinstance(token, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(min(value, 0.0))


def span_probability(
    tokens: Sequence[Any],
    content: str,
    start: int,
    end: int,
    *,
    labels: Sequence[str] = (),
    chosen: str | None = None,
) -> float | None:
    """The probability of ``content[start:end]`` from its tokens' logprobs (the
    tokens overlapping it: exp of the sum of their logprobs), normalised over the
    other ``labels`` the first of them shows in its ``top_logprobs`` (see the module
    docstring) when ``chosen`` is one of the ``labels``: an answer that is none of them
    (a sentence where one word was asked for) keeps its raw probability, never 1.0 for
    lack of another label to divide by. None when the tokens do not spell ``content``
    or lack a logprob.

    Tokens are placed by their ``bytes`` (a token may hold part of a character) or,
    without them, by their text; tokens around the answer that it does not contain
    (a special token) are allowed.

    >>> toks = [{"token": "pos", "logprob": math.log(0.5)}, {"token": "itive", "logprob": 0.0}]
    >>> span_probability(toks, "positive", 0, 8)
    0.5
    >>> toks[0]["top_logprobs"] = [{"token": "pos", "logprob": math.log(0.5)},
    ...                            {"token": "neg", "logprob": math.log(0.25)}]
    >>> round(span_probability(toks, "positive", 0, 8, labels=["positive", "negative"],
    ...                        chosen="positive"), 4)
    0.6667
    """
    pieces = [_token_bytes(t) for t in tokens]
    if any(p is None for p in pieces):
        return None
    data = content.encode("utf-8")
    joined = b"".join(p for p in pieces if p is not None)
    offset = 0
    if joined != data:
        offset = joined.find(data) if data else -1
        if offset < 0:
            return None
    b_start = len(content[:start].encode("utf-8"))
    b_end = len(content[:end].encode("utf-8"))
    if b_end <= b_start:
        return None
    total = 0.0
    first: tuple[int, int] | None = None
    pos = -offset
    for i, piece in enumerate(pieces):
        assert piece is not None
        lo, hi = pos, pos + len(piece)
        pos = hi
        if not piece or hi <= b_start or lo >= b_end:
            continue
        logprob = _logprob(tokens[i])
        if logprob is None:
            return None
        total += logprob
        if first is None:
            first = (i, lo)
    if first is None:
        return None
    p = math.exp(total)
    if not labels or (chosen is not None and chosen not in labels):
        return p  # an answer that is no label has no labels to be normalised against
    index, lo = first
    alternatives = tokens[index].get("top_logprobs") if isinstance(tokens[index], Mapping) else None
    if not isinstance(alternatives, list) or not alternatives:
        return p  # nothing shown to normalise over (top_logprobs 0): the raw probability
    prefix = data[max(lo, 0) : b_start]
    others = 0.0
    seen: set[str] = set()
    shown: list[float] = []
    for alternative in alternatives:
        alt_bytes = _token_bytes(alternative)
        logprob = _logprob(alternative)
        if logprob is not None:
            shown.append(math.exp(logprob))
        if alt_bytes is None or logprob is None or not alt_bytes.startswith(prefix):
            continue
        rest = alt_bytes[len(prefix) :].decode("utf-8", "ignore")
        if not rest:
            continue
        matches = {label for label in labels if label.startswith(rest) or rest.startswith(label)}
        seen |= matches
        if len(matches) != 1 or chosen in matches:
            continue
        others += math.exp(logprob)
    # a label the alternatives do not show may still hold as much as the least likely
    # one shown (they are the top k): counted at that bound, never as 0, so a label
    # the engine gave 0.1 is not read as sure because its rivals fell below the top k
    unseen = sum(1 for label in labels if label != chosen and label not in seen)
    if unseen and shown:
        others += unseen * min(shown)
    return p / (p + others) if p + others > 0 else None


# -- agreement and self ---------------------------------------------------------------------
def majority(labels: Sequence[str | None]) -> tuple[str | None, float, int]:
    """(majority label, share of the answers giving it, index of the first giving it)
    over one request's answers; a tie goes to the label given first; answers without a
    label (None) count against. No label at all: ``(None, 0.0, 0)``.

    >>> majority(["a", "b", "a", None])
    ('a', 0.5, 0)
    >>> majority(["b", "a", "a", "b"])
    ('b', 0.5, 0)
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for index, label in enumerate(labels):
        if label is None:
            continue
        counts[label] = counts.get(label, 0) + 1
        first.setdefault(label, index)
    if not counts:
        return None, 0.0, 0
    best = max(counts, key=lambda label: (counts[label], -first[label]))
    return best, counts[best] / len(labels), first[best]


def self_score(value: Any) -> float | None:
    """A model's own confidence as a number from 0 to 1: 0-1 as is, above 1 up to 100
    as a percentage ("85%" too), clamped otherwise; None when it is no number.

    >>> self_score(0.8), self_score(85), self_score("90%"), self_score(140), self_score("high")
    (0.8, 0.85, 0.9, 1.0, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            number = float(text.rstrip("%").strip())
        except ValueError:
            return None
        if percent:
            number /= 100
        value = number
    if not isinstance(value, int | float) or math.isnan(value):
        return None
    number = float(value)
    if 1.0 < number <= 100.0:
        number /= 100.0
    return min(1.0, max(0.0, number))


# -- one response ---------------------------------------------------------------------------
def _choices(body: Any) -> list[Any]:
    choices = body.get("choices") if isinstance(body, Mapping) else None
    return choices if isinstance(choices, list) else []


def has_logprobs(body: Any) -> bool:
    """Whether a response's first choice carries token logprobs.

    >>> has_logprobs({"choices": [{"logprobs": None}]})
    False
    """
    choices = _choices(body)
    logprobs = choices[0].get("logprobs") if choices and isinstance(choices[0], Mapping) else None
    return isinstance(logprobs, Mapping) and isinstance(logprobs.get("content"), list)


def _content(choice: Any) -> str | None:
    message = choice.get("message") if isinstance(choice, Mapping) else None
    content = message.get("content") if isinstance(message, Mapping) else None
    return content if isinstance(content, str) else None


def _normal(label: str) -> str:

    return normalize_answer(label)


class ConfidenceReader:
    """Reads one response's confidence by a job's method (see the module docstring).

    ``label_field`` None reads the whole answer as the label; ``labels`` are the label
    values to normalise over (logprobs); ``score_field`` is the number field of
    "self"; ``top_logprobs`` the alternatives the requests asked for (0: the raw
    probability, whatever alternatives the server sent anyway; None: not known).
    `of` resolves them from a run's settings.
    """

    __slots__ = ("labels", "label_field", "method", "score_field", "top_logprobs")

    def __init__(
        self,
        method: str,
        *,
        label_field: str | None = None,
        labels: Sequence[str] = (),
        score_field: str | None = None,
        top_logprobs: int | None = None,
    ) -> None:
        if method not in CONFIDENCE_METHODS:
            raise ValueError(f"confidence method must be one of {CONFIDENCE_METHODS}")
        self.method = method
        self.label_field = label_field
        self.labels = tuple(labels)
        self.score_field = score_field or DEFAULT_SCORE_FIELD
        self.top_logprobs = top_logprobs

    @classmethod
    def of(cls, settings: Settings) -> ConfidenceReader | None:
        """The reader of a run's ``confidence`` setting (None: the run has none)."""
        spec = settings.confidence
        if spec is None:
            return None
        schema = settings.schema
        field = label_field_of(spec, schema, settings.eval)
        return cls(
            spec.method,
            label_field=field,
            labels=spec.labels or _enum_of(schema, field),
            score_field=score_field_of(spec, schema),
            top_logprobs=spec.top_logprobs,
        )

    def label_of(self, content: str | None) -> str | None:
        """The label an answer gives (None: none where it should be)."""
        if content is None:
            return None
        found = label_span(content, self.label_field)
        return found[2] if found is not None else None

    def read(self, body: Any) -> Scored:
        """The confidence of one response body (a chat completion)."""
        choices = _choices(body)
        if not choices:
            return Scored(None, None, 0, NO_ANSWER)
        if self.method == AGREEMENT:
            return self._agreement(choices)
        choice = choices[0]
        content = _content(choice)
        if content is None:
            return Scored(None, None, 0, NO_ANSWER)
        found = label_span(content, self.label_field)
        label = found[2] if found is not None else None
        if self.method == SELF:
            return self._self(content, label)
        logprobs = choice.get("logprobs") if isinstance(choice, Mapping) else None
        tokens = logprobs.get("content") if isinstance(logprobs, Mapping) else None
        if not isinstance(tokens, list):
            return Scored(None, label, 0, NO_LOGPROBS)
        if found is None:
            return Scored(None, None, 0, NO_LABEL)
        start, end, label = found
        # asked for no alternatives (top_logprobs 0), the raw probability, whatever the
        # server shows: llama.cpp's server sends 20 when the request names no top_logprobs
        labels = self.labels if self.top_logprobs != 0 else ()
        p = span_probability(tokens, content, start, end, labels=labels, chosen=label)
        return Scored(p, label, 0, None if p is not None else UNALIGNED)

    def _agreement(self, choices: list[Any]) -> Scored:
        raw = [self.label_of(_content(choice)) for choice in choices]
        normal = [None if label is None else _normal(label) for label in raw]
        best, share, index = majority(normal)
        if best is None:
            return Scored(None, None, 0, NO_LABEL)
        return Scored(share, raw[index], index)

    def _self(self, content: str, label: str | None) -> Scored:
        found = json_field_span(content, self.score_field)
        score = self_score(found[2]) if found is not None else None
        return Scored(score, label, 0, None if score is not None else NO_SCORE)


# -- resolving the fields from a job ----------------------------------------------------------
def _properties(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    return props if isinstance(props, Mapping) else {}


def _string_enum(prop: Any) -> tuple[str, ...]:
    enum = prop.get("enum") if isinstance(prop, Mapping) else None
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return tuple(enum)
    return ()


def _enum_of(schema: Mapping[str, Any] | None, field: str | None) -> tuple[str, ...]:
    return _string_enum(_properties(schema).get(field)) if field is not None else ()


def _is_number(prop: Any) -> bool:
    kind = prop.get("type") if isinstance(prop, Mapping) else None
    kinds = kind if isinstance(kind, list) else [kind]
    return any(k in ("number", "integer") for k in kinds)


def label_field_of(
    spec: Confidence | None,
    schema: Mapping[str, Any] | None,
    evaluation: Evaluation | None = None,
) -> str | None:
    """The answer's field holding the label: ``label_field``, else the [eval] field,
    else the schema's one enum field (or its one property); None: the whole answer.

    >>> label_field_of(Confidence("logprobs"), {"properties": {"why": {"type": "string"},
    ...     "label": {"enum": ["a", "b"]}}})
    'label'
    """
    if spec is not None and spec.label_field:
        return spec.label_field
    if evaluation is not None and evaluation.compare == "json_field" and evaluation.field:
        return evaluation.field
    props = _properties(schema)
    enums = [str(name) for name, prop in props.items() if _string_enum(prop)]
    if len(enums) == 1:
        return enums[0]
    if len(props) == 1:
        return str(next(iter(props)))
    return None


def score_field_of(spec: Confidence | None, schema: Mapping[str, Any] | None) -> str | None:
    """ "self": the number field holding the model's confidence: ``score_field``, else
    a property named ``confidence``, else the schema's one number property."""
    if spec is not None and spec.score_field:
        return spec.score_field
    props = _properties(schema)
    if DEFAULT_SCORE_FIELD in props:
        return DEFAULT_SCORE_FIELD
    numbers = [str(name) for name, prop in props.items() if _is_number(prop)]
    return numbers[0] if len(numbers) == 1 else None


def confidence_problems(values: Mapping[str, Any]) -> list[str]:
    """What makes a job's ``confidence`` setting unable to work, found before anything is
    sent: a label field the schema lacks, a JSON answer whose label field cannot be
    told, "self" without a number field, a body field that defeats the method.
    ``values``: setting name -> value (a job file's, or the merged settings')."""
    spec = values.get("confidence")
    if not isinstance(spec, Confidence):
        return []
    rf = values.get("response_format")
    rf = rf if isinstance(rf, ResponseFormat) else None
    schema = rf.schema if rf is not None and rf.type == "json_schema" else None
    evaluation = values.get("eval")
    evaluation = evaluation if isinstance(evaluation, Evaluation) else None
    out = []
    props = _properties(schema)
    json_answer = rf is not None and rf.type in ("json_schema", "json_object")
    field = label_field_of(spec, schema, evaluation)
    if field is not None and props and field not in props:
        names = ", ".join(str(p) for p in props)
        out.append(
            f"confidence.label_field: {field!r} is not a property of the response schema "
            f"(properties: {names})"
        )
    elif field is None and json_answer and spec.method != SELF:
        out.append(
            "confidence.label_field: the answer is JSON; say which field holds the label "
            "(label_field, or an [eval] field)"
        )
    request = values.get("request") or {}
    if spec.method == LOGPROBS and request.get("logprobs") is False:
        out.append("confidence: method 'logprobs' needs logprobs, but request.logprobs is false")
    if spec.method == AGREEMENT:
        n = request.get("n")
        if isinstance(n, int) and n < 2:
            out.append(f"confidence: method 'agreement' needs n of 2 or more (request.n is {n})")
        if request.get("temperature") == 0:
            out.append(
                "confidence: method 'agreement' needs answers that can differ: a "
                "temperature above 0 (request.temperature is 0)"
            )
    if spec.method == SELF:
        score = score_field_of(spec, schema)
        if not json_answer:
            out.append("confidence: method 'self' needs a JSON answer holding a number field")
        elif score is None and props:
            out.append(
                "confidence.score_field: say which number field of the schema holds the "
                "model's confidence"
            )
        elif score is not None and props and score not in props:
            out.append(
                f"confidence.score_field: {score!r} is not a property of the response schema"
            )
    return out


@dataclass
class ConfidenceCounts:
    """What the confidences of a run came to: for summary.json and the warning that
    names endpoints answering without logprobs."""

    method: str
    scored: int = 0
    total: float = 0.0
    missing: dict[str, int] = field(default_factory=dict)
    no_logprobs_from: dict[str, int] = field(default_factory=dict)

    def add(self, scored: Scored, endpoint: str | None = None) -> None:
        if scored.confidence is not None:
            self.scored += 1
            self.total += scored.confidence
            return
        reason = scored.missing or NO_ANSWER
        self.missing[reason] = self.missing.get(reason, 0) + 1
        if reason == NO_LOGPROBS:
            where = endpoint or "the endpoint"
            self.no_logprobs_from[where] = self.no_logprobs_from.get(where, 0) + 1

    def report(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scored": self.scored,
            "mean": self.total / self.scored if self.scored else None,
            "missing": dict(sorted(self.missing.items())),
            "without_logprobs": dict(sorted(self.no_logprobs_from.items())),
        }

    def warning(self) -> str | None:
        """The note naming endpoints that answered without logprobs (None: none did)."""
        if not self.no_logprobs_from:
            return None
        parts = [f"{n} from {where}" for where, n in sorted(self.no_logprobs_from.items())]
        return (
            f"confidence: {sum(self.no_logprobs_from.values())} answers came without "
            f"logprobs ({', '.join(parts)}): their confidence is empty, not 1.0 (does the "
            "endpoint return logprobs?)"
        )
