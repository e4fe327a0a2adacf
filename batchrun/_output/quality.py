"""Answer quality: is a 200 response a usable answer? Pure, cheap, once per response.

An HTTP success can still be useless: cut off at ``max_tokens``, refused, blocked by a
content filter, empty, or not the JSON the schema asked for. `classify` gives each
chat.completion body one category; `QualityCounts` adds them up per model (and is
stored and rebuilt like `batchrun._output.tally.Tally`); `quality_stop` and `quality_warnings`
turn the counts into a decision and one-line messages naming the setting to change.
The breaker's rule is `breaker_trips` (a lower Wilson bound over the threshold); what
it judges across processes and modes is `batchrun._output.breaker.QualityBreaker`.

Categories, most severe first. A choice gets the first that applies; a body with
several choices (``n > 1``) gets the most severe of its choices' categories:

    no_choices      no usable choice: ``choices`` missing, empty, or an entry that is
                    not an object with a ``message`` object (``[null]``, ``[{}]``)
    content_filter  finish_reason ``content_filter``
    refusal         ``message.refusal`` is set (structured outputs' refusal)
    truncated       finish_reason ``length`` (cut off at max_tokens; the rest of the
                    answer is not judged: it is partial whatever it holds)
    empty           no content (None, blank, no parts) and no tool calls
    schema_error    a JSON schema was given and the content (Markdown fences allowed)
                    is not JSON or not valid against the *whole* schema
    ok              anything else; tool calls without content are ok, and content next
                    to tool calls is not checked against the schema

A Responses API answer gets the same categories (`classify_response`: status
``incomplete`` for ``max_output_tokens`` is truncated, a ``refusal`` part a refusal,
the output text checked against the schema its ``text.format`` asked for); an
embeddings answer is ok unless it holds no usable vectors (`classify_embeddings`:
no_choices, "no data").

Schemas are checked with jsonschema-rs (``jsonschema_rs``), compiled once
(`batchrun._schemas.compile_schema`): ~0.2 us for a flat schema and ~1 us for a nested
one, less than
``orjson.loads`` of the same answer (BENCHMARKS.md, "Answer quality"). Schemas are
compiled offline: a ``$ref`` to a URL is an error, never a download.

    >>> from batchrun._schemas import compile_schema
    >>> schema = compile_schema({"type": "object", "properties": {"n": {"enum": [1, 2]}}})
    >>> classify({"choices": [{"message": {"content": '{"n": 3}'}, "finish_reason": "stop"}]},
    ...          schema)
    Verdict(category='schema_error', finish_reason='stop', detail='$.n: 3 is not one of 1 or 2')
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import orjson

from batchrun._apis import EMBEDDINGS, RESPONSES
from batchrun._output.shapes import (
    answer_kind,
    dimensions_problem,
    embedding_problem,
    response_finish,
    response_refusal,
    response_schema,
    response_text,
    response_tool_calls,
)
from batchrun._output.usage import model_of
from batchrun._schemas import (
    COMPILED_MAX,
    SchemaValidator,
    one_line,
)

OK = "ok"
TRUNCATED = "truncated"
CONTENT_FILTER = "content_filter"
REFUSAL = "refusal"
EMPTY = "empty"
SCHEMA_ERROR = "schema_error"
NO_CHOICES = "no_choices"

CATEGORIES = (NO_CHOICES, CONTENT_FILTER, REFUSAL, TRUNCATED, EMPTY, SCHEMA_ERROR, OK)
"""Every category, most severe first (the precedence `classify` applies)."""
PROBLEMS = CATEGORIES[:-1]
_RANK = {category: rank for rank, category in enumerate(CATEGORIES)}

NO_FINISH_REASON = "(none)"
"""The finish-reason key `QualityCounts` uses for a choice that gave none."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """One response's category, the finish reason behind it, and why (problems only).

    ``finish_reason`` is the deciding choice's (the first choice's when all are ok);
    ``detail`` is a one-line reason for refusal, schema_error and no_choices, else None.
    """

    category: str
    finish_reason: str | None
    detail: str | None = None


_OK_VERDICTS = {reason: Verdict(OK, reason) for reason in ("stop", "tool_calls", None)}


# -- classifying one response ----------------------------------------------------------
def _text_of(content: Any) -> str | None:
    """Content as text: a string as is, a list of parts joined; None when there is none."""
    if content is None or type(content) is str:
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str)) or None
    return orjson.dumps(content, default=str).decode()


def _classify_choice(choice: Any, schema: SchemaValidator | None) -> Verdict:
    if type(choice) is not dict:
        return Verdict(NO_CHOICES, None, f"a choice is {type(choice).__name__}, not an object")
    finish = choice.get("finish_reason")
    if finish is not None and type(finish) is not str:
        finish = str(finish)
    message = choice.get("message")
    if type(message) is not dict:
        return Verdict(NO_CHOICES, finish, "a choice has no message")
    if finish == "content_filter":
        return Verdict(CONTENT_FILTER, finish)
    refusal = message.get("refusal")
    if refusal:
        return Verdict(REFUSAL, finish, one_line(str(refusal)))
    if finish == "length":
        return Verdict(TRUNCATED, finish)
    content = message.get("content")
    if type(content) is not str:
        content = _text_of(content)
    if message.get("tool_calls") or message.get("function_call"):
        pass  # a tool call is the answer; any content beside it is commentary
    elif not content or content.isspace():
        return Verdict(EMPTY, finish)
    elif schema is not None:
        error = schema.content_error(content)
        if error is not None:
            return Verdict(SCHEMA_ERROR, finish, error)
    return _OK_VERDICTS.get(finish) or Verdict(OK, finish)


def classify(
    body: Any,
    schema: SchemaValidator | None = None,
    *,
    max_output_tokens: Any = None,
    dimensions: Any = None,
) -> Verdict:
    """The quality of one answer body (as the server returned it): a chat.completion,
    or a Responses object or an embeddings list (`classify_response`,
    `classify_embeddings`).

    ``schema``: the compiled response schema (`compile_schema`), or None to check
    only finish reasons and emptiness. ``max_output_tokens``: a Responses request's
    limit, for servers that do not echo it (`classify_response`); ``dimensions``: an
    embeddings request's vector size, which every vector must have. See the module
    docstring for the categories.

        >>> classify({"choices": [{"message": {"content": "{"}, "finish_reason": "length"}]})
        Verdict(category='truncated', finish_reason='length', detail=None)
    """
    kind = answer_kind(body)
    if kind == RESPONSES:
        return classify_response(body, schema, max_output_tokens=max_output_tokens)
    if kind == EMBEDDINGS:
        return classify_embeddings(body, dimensions)
    choices = body.get("choices") if type(body) is dict else None
    if type(choices) is not list or not choices:
        return Verdict(NO_CHOICES, None, "no choices")
    verdict = _classify_choice(choices[0], schema)
    if len(choices) == 1:
        return verdict
    rank = _RANK[verdict.category]
    for choice in choices[1:]:
        other = _classify_choice(choice, schema)
        if _RANK[other.category] < rank:
            verdict, rank = other, _RANK[other.category]
    return verdict


def _used_every_output_token(body: dict[str, Any], asked: Any = None) -> bool:
    """A "completed" answer whose output used every token ``max_output_tokens`` allowed
    (the answer echoes it; else ``asked``, the request's): cut there. llama.cpp's
    server says "completed" when it stops at the limit and echoes no limit (OpenAI
    says "incomplete"); an answer that ends by itself on exactly its last allowed
    token is read as cut too, the safe side of the two.

        >>> _used_every_output_token({"max_output_tokens": 16, "usage": {"output_tokens": 16}})
        True
        >>> _used_every_output_token({"max_output_tokens": 16, "usage": {"output_tokens": 9}})
        False
    """
    limit = body.get("max_output_tokens", asked)
    if limit is None:
        limit = asked
    usage = body.get("usage")
    used = usage.get("output_tokens") if type(usage) is dict else None
    return type(limit) is int and type(used) is int and limit > 0 and used >= limit


def classify_answer(
    body: Any, schema: SchemaValidator | None, api: str, request: dict[str, Any]
) -> Verdict:
    """`classify` for an answer to ``request`` (a body of ``api``): a chat answer says
    how it ended itself; a Responses or embeddings answer is also held to the limits
    its request set, which a server may not honour or echo (``max_output_tokens``,
    ``dimensions``: llama.cpp's server does neither)."""
    if api == "chat":
        return classify(body, schema)
    return classify(
        body,
        schema,
        max_output_tokens=request.get("max_output_tokens"),
        dimensions=request.get("dimensions"),
    )


def classify_response(
    body: dict[str, Any], schema: SchemaValidator | None = None, *, max_output_tokens: Any = None
) -> Verdict:
    """The quality of one Responses API answer, by the chat categories: an
    ``incomplete`` answer cut at ``max_output_tokens`` is truncated (at
    ``content_filter``, blocked); a ``refusal`` part is a refusal; no text and no
    tool call is empty; text not valid against the schema (``schema``, else the one
    its ``text.format`` asked for, echoed in the answer) is a schema error.

        >>> classify_response({"status": "incomplete", "output": [],
        ...     "incomplete_details": {"reason": "max_output_tokens"}}).category
        'truncated'
    """
    finish = response_finish(body)
    if type(body.get("output")) is not list:
        return Verdict(NO_CHOICES, finish, "no output")
    if finish == "content_filter":
        return Verdict(CONTENT_FILTER, finish)
    refusal = response_refusal(body)
    if refusal:
        return Verdict(REFUSAL, finish, one_line(refusal))
    if body.get("status") == "incomplete" or _used_every_output_token(body, max_output_tokens):
        return Verdict(TRUNCATED, finish)  # max_output_tokens, or another limit
    if response_tool_calls(body):
        return Verdict(OK, finish)  # a tool call is the answer
    text = response_text(body)
    if not text or text.isspace():
        return Verdict(EMPTY, finish)
    if schema is None:
        asked = response_schema(body)
        schema = _echoed_schema(asked) if asked is not None else None
    if schema is not None:
        error = schema.content_error(text)
        if error is not None:
            return Verdict(SCHEMA_ERROR, finish, error)
    return Verdict(OK, finish)


def classify_embeddings(body: dict[str, Any], dimensions: Any = None) -> Verdict:
    """An embeddings answer is ok, or unusable (`NO_CHOICES`) when it holds no vectors
    to store (`batchrun._output.shapes.embedding_problem`), or a schema error when its
    vectors are not the ``dimensions`` asked for (`dimensions_problem`)."""
    problem = embedding_problem(body)
    if problem is not None:
        return Verdict(NO_CHOICES, None, problem)
    wrong = dimensions_problem(body, dimensions)
    return _EMBEDDINGS_OK if wrong is None else Verdict(SCHEMA_ERROR, None, wrong)


_EMBEDDINGS_OK = Verdict(OK, None)
_ECHOED: dict[bytes, SchemaValidator] = {}


def _echoed_schema(schema: dict[str, Any]) -> SchemaValidator:
    """The validator of a schema echoed in an answer: compiled once per distinct
    schema (every answer carries its own copy, so `compile_schema`'s cache by object
    would compile it again for each)."""
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    found = _ECHOED.get(key)
    if found is None:
        if len(_ECHOED) >= COMPILED_MAX:
            _ECHOED.clear()
        found = _ECHOED[key] = SchemaValidator(schema)
    return found


# -- counting --------------------------------------------------------------------------
@dataclass
class QualityCounts:
    """Verdicts counted per model and category, plus finish reasons (one per response).

    Stored in summary.json (`to_state`) and rebuilt on resume (`from_state`), like
    `batchrun._output.tally.Tally`.

        >>> counts = QualityCounts()
        >>> counts.add(Verdict(TRUNCATED, "length"), "gpt-4o-mini")
        >>> counts.to_state()
        {'by_model': {'gpt-4o-mini': {'truncated': 1}}, 'finish_reasons': {'length': 1}}
    """

    by_model: dict[str, Counter[str]] = field(default_factory=dict)
    finish_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, verdict: Verdict, model: str) -> None:
        per_model = self.by_model.get(model)
        if per_model is None:
            per_model = self.by_model[model] = Counter()
        per_model[verdict.category] += 1
        self.finish_reasons[verdict.finish_reason or NO_FINISH_REASON] += 1

    def count(
        self,
        body: Any,
        schema: SchemaValidator | None = None,
        requested_model: str | None = None,
    ) -> Verdict:
        """Classify one response body and count it under the model it names."""
        verdict = classify(body, schema)
        self.add(verdict, model_of(body, requested_model))
        return verdict

    @property
    def answers(self) -> int:
        return sum(sum(c.values()) for c in self.by_model.values())

    def totals(self) -> Counter[str]:
        """Counts per category over all models."""
        total: Counter[str] = Counter()
        for per_model in self.by_model.values():
            total.update(per_model)
        return total

    def merge(self, other: QualityCounts) -> None:
        for model, per_model in other.by_model.items():
            self.by_model.setdefault(model, Counter()).update(per_model)
        self.finish_reasons.update(other.finish_reasons)

    def to_state(self) -> dict[str, Any]:
        return {
            "by_model": {
                model: {c: n for c, n in sorted(per.items(), key=_by_rank) if n}
                for model, per in sorted(self.by_model.items())
            },
            "finish_reasons": dict(sorted(self.finish_reasons.items())),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> QualityCounts:
        return cls(
            by_model={
                str(model): Counter({str(c): int(n) for c, n in per.items()})
                for model, per in (state.get("by_model") or {}).items()
            },
            finish_reasons=Counter(
                {str(r): int(n) for r, n in (state.get("finish_reasons") or {}).items()}
            ),
        )


def _by_rank(item: tuple[str, int]) -> int:
    return _RANK.get(item[0], len(_RANK))


# -- decisions -------------------------------------------------------------------------
_WHAT = {
    TRUNCATED: 'truncated (finish_reason "length")',
    SCHEMA_ERROR: "not valid against the JSON schema",
    REFUSAL: "refused (message.refusal)",
    CONTENT_FILTER: 'blocked (finish_reason "content_filter")',
    EMPTY: "empty (no content, no tool calls)",
    NO_CHOICES: "without choices",
}


def fix_for(category: str, max_tokens: int | None = None) -> str:
    """The setting to change when answers fall in ``category``.

    >>> fix_for(TRUNCATED, 6)
    'raise max_tokens (now 6)'
    """
    if category == TRUNCATED:
        if max_tokens is None:
            return "set a larger max_tokens (none is set: the server's limit cut the answers)"
        return f"raise max_tokens (now {max_tokens})"
    return {
        SCHEMA_ERROR: "check the schema / prompt",
        REFUSAL: "check the prompt (the model refuses it)",
        CONTENT_FILTER: "check the prompt / input (the provider's content filter blocks it)",
        EMPTY: "check the prompt, stop sequences and model (it answers nothing)",
        NO_CHOICES: "check base_url (the endpoint answers without choices)",
    }.get(category, "check the request settings")


@dataclass(frozen=True, slots=True)
class QualityAlert:
    """A quality problem found in the counts, with its one-line message."""

    model: str
    category: str  # the (most common) problem category
    count: int  # answers in that category
    bad: int  # answers not ok, any category
    answers: int  # answers from this model
    message: str


BREAKER_CONFIDENCE = 0.95
"""How sure the quality breaker must be that a model's unusable share is over its
threshold before it stops a run (one-sided)."""
BREAKER_Z = NormalDist().inv_cdf(BREAKER_CONFIDENCE)
"""The normal quantile of `BREAKER_CONFIDENCE` (1.645) used for the Wilson bound."""
BREAKER_MIN_ANSWERS = 20
"""Answers a model needs before the breaker judges it at all."""


def wilson_lower_bound(bad: int, answers: int, z: float = BREAKER_Z) -> float:
    """The lower end of the Wilson score interval of the share ``bad / answers``.

    The share the answers are unusable *at least*, with the confidence ``z`` stands
    for: unlike the raw share, it is low on a small sample (20 of 20 gives 0.881 at
    z = 1.645, 200 of 200 gives 0.987) and it is never below 0 or above 1.

        >>> round(wilson_lower_bound(46, 50), 4)
        0.8333
    """
    if answers <= 0:
        return 0.0
    p = bad / answers
    z2 = z * z
    centre = p + z2 / (2 * answers)
    margin = z * math.sqrt(p * (1 - p) / answers + z2 / (4 * answers * answers))
    return max(0.0, (centre - margin) / (1 + z2 / answers))


def breaker_trips(
    bad: int,
    answers: int,
    *,
    threshold: float,
    min_answers: int = BREAKER_MIN_ANSWERS,
    z: float = BREAKER_Z,
) -> bool:
    """The quality breaker's rule: stop when a model's answers are unusable over
    ``threshold`` *with confidence*: at least ``min_answers`` answers, and the lower
    Wilson bound of the unusable share (`wilson_lower_bound`) above ``threshold``.

    A small sample proves little (22 of 25 bad is 88 %, but only "over 73 %" with 95 %
    confidence), so a resumed run's few answers, or a bad stretch after many good
    ones, do not stop it; a run whose answers are nearly all bad still stops early
    (0.8: 20 of 20 bad, 45 of 50).

        >>> breaker_trips(22, 25, threshold=0.8), breaker_trips(45, 50, threshold=0.8)
        (False, True)
    """
    if threshold <= 0 or answers < max(1, min_answers):
        return False
    return wilson_lower_bound(bad, answers, z) > threshold


def quality_stop(
    counts: QualityCounts,
    *,
    max_tokens: int | None = None,
    threshold: float = 0.8,
    min_answers: int = BREAKER_MIN_ANSWERS,
    overall: QualityCounts | None = None,
) -> QualityAlert | None:
    """Whether the run should stop: a model whose judged answers are, with confidence,
    mostly unusable (`breaker_trips` on each model of ``counts``).

    The message names the most common problem and the setting to change, the share
    of the answers judged with its confidence bound, and the share over every answer
    of the run (``overall``: the run's counts, reused answers included). Of several
    such models, the one with the highest share.

        >>> counts = QualityCounts({"m": Counter({TRUNCATED: 20})})
        >>> alert = quality_stop(counts, max_tokens=6)
        >>> alert.message.split(": ")[-1]
        'raise max_tokens (now 6)'
    """
    worst: tuple[float, QualityAlert] | None = None
    for model, per_model in sorted(counts.by_model.items()):
        answers = sum(per_model.values())
        bad = answers - per_model[OK]
        if not breaker_trips(bad, answers, threshold=threshold, min_answers=min_answers):
            continue
        category, count = _most_common_problem(per_model)
        share = bad / answers
        what = _WHAT.get(category, category)
        lead = f"{bad} of {answers} answers from {model} are not usable, {count}"
        if count == bad:
            lead = f"{count} of {answers} answers from {model} are"
        shares = (
            f"unusable: {share:.1%} of the {answers} judged (at least "
            f"{wilson_lower_bound(bad, answers):.1%} with {BREAKER_CONFIDENCE:.0%} "
            f"confidence, over --quality-breaker {threshold:g})"
        )
        run = overall.by_model.get(model) if overall is not None else None
        if run:
            run_answers = sum(run.values())
            shares += f", {(run_answers - run[OK]) / run_answers:.1%} of the run's {run_answers}"
        alert = QualityAlert(
            model,
            category,
            count,
            bad,
            answers,
            f"stopping: {lead} {what}; {shares}: {fix_for(category, max_tokens)}",
        )
        if worst is None or share > worst[0]:
            worst = (share, alert)
    return worst[1] if worst else None


def quality_warnings(
    counts: QualityCounts,
    *,
    max_tokens: int | None = None,
    share: float = 0.05,
    min_count: int = 3,
) -> list[QualityAlert]:
    """One alert per model and problem category holding a meaningful share of answers.

    Meaningful: at least ``min_count`` answers and at least ``share`` of the model's
    answers. Ordered by model, then by severity.

        >>> counts = QualityCounts({"m": Counter({OK: 57, SCHEMA_ERROR: 3})})
        >>> [a.message.split(": ")[-1] for a in quality_warnings(counts)]
        ['check the schema / prompt']
    """
    alerts = []
    for model, per_model in sorted(counts.by_model.items()):
        answers = sum(per_model.values())
        bad = answers - per_model[OK]
        for category, count in sorted(per_model.items(), key=_by_rank):
            if category == OK or count < min_count or count / answers < share:
                continue
            message = (
                f"{count} of {answers} answers ({count / answers:.1%}) from {model} are "
                f"{_WHAT.get(category, category)}: {fix_for(category, max_tokens)}"
            )
            alerts.append(QualityAlert(model, category, count, bad, answers, message))
    return alerts


def _most_common_problem(per_model: Counter[str]) -> tuple[str, int]:
    """The problem category with the most answers; ties go to the more severe."""
    problems = [(c, n) for c, n in per_model.items() if c != OK and n]
    return min(problems, key=lambda item: (-item[1], _RANK.get(item[0], len(_RANK))))
