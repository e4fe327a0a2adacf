"""The simulator's labelling skill: which label a model gives, and how sure it is. Pure.

A model the simulator knows a `batchrun.sim.config.Skill` for answers labelling
requests like a model of that skill. A request is a labelling request when it has no
tools and its answer is a label: a ``json_schema`` with a string-enum property (the
first one is the label field, its enum the labels; a number property named
``confidence`` gets the model's own estimate), a ``json_object`` (``{"label": ...}``)
or plain text (the skill's labels).

**The truth.** The label an answer is right against is read from the prompt: a marker
``[gold: LABEL]`` anywhere in the messages. A rehearsal job puts it in its template
(``Review: {text} [gold: {label}]``), so the simulator knows each row's gold label
while batchrun itself knows nothing of it: the marker is plain prompt text, which a
real model would read too, so a job meant for a real endpoint leaves it out. Without a
marker the truth is made up, stable per text (`digest` picks it).

**The belief.** Per text (and model and seed) the model is sure with probability
``sure_share``. Its top label gets a probability p drawn around ``right_when_sure``
(unsure: ``right_when_unsure``, or a guess 1/k), spread without moving the mean, and
it is the truth with probability p (else a wrong label, at random); the other labels
share 1 - p. At temperature 0 every choice is the top label; at any other, each choice
is drawn from the belief. Either way a label given with probability q is right with
probability q: the answers are calibrated, so logprobs, agreement between samples and
the self-reported confidence all mean what they say.

    >>> task = label_task({"messages": []}, ("yes", "no"))
    >>> task.labels, task.field
    (('yes', 'no'), None)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun.sim.config import Skill
from batchrun.sim.schema import fake_value

GOLD_MARKER = re.compile(r"\[gold:\s*([^\]\n]+?)\s*\]", re.IGNORECASE)
SCORE_FIELD = "confidence"
JSON_OBJECT_FIELD = "label"

__all__ = [
    "GOLD_MARKER",
    "Belief",
    "LabelTask",
    "answer",
    "belief",
    "gold_from_messages",
    "label_task",
    "pick",
]


@dataclass(frozen=True, slots=True)
class LabelTask:
    """What a labelling request asks for: the labels, where the label goes."""

    labels: tuple[str, ...]
    field: str | None
    """The JSON field holding the label (None: the answer is the label itself)."""
    schema: dict[str, Any] | None = None
    """The json_schema whose other properties are filled in."""


def _string_enum(prop: Any) -> tuple[str, ...]:
    enum = prop.get("enum") if isinstance(prop, dict) else None
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        return tuple(dict.fromkeys(enum))
    return ()


def label_task(body: dict[str, Any], labels: tuple[str, ...]) -> LabelTask | None:
    """The labelling task of a body (None: it is not one: tools, or a schema without
    a string enum). ``labels``: the skill's, for answers without a schema."""
    if body.get("tools") or body.get("functions"):
        return None
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        props = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(props, dict):
            return None
        for name, prop in props.items():
            enum = _string_enum(prop)
            if enum:
                assert isinstance(schema, dict)
                return LabelTask(enum, str(name), schema)
        return None
    if kind == "json_object":
        return LabelTask(labels, JSON_OBJECT_FIELD)
    return LabelTask(labels, None)


def _texts(messages: Any) -> list[str]:
    out = []
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return out


def gold_from_messages(messages: Any, labels: tuple[str, ...]) -> str | None:
    """The label a ``[gold: LABEL]`` marker names (matched to ``labels`` ignoring case;
    the last marker wins), or None: no marker, or one naming no label."""
    found = None
    for text in _texts(messages):
        for match in GOLD_MARKER.finditer(text):
            found = match.group(1)
    if found is None:
        return None
    if found in labels:
        return found
    folded = {label.casefold(): label for label in labels}
    return folded.get(found.casefold())


@dataclass(frozen=True, slots=True)
class Belief:
    """A model's probabilities over the labels for one text."""

    top: str
    probabilities: dict[str, float]
    sure: bool


def belief(skill: Skill, labels: tuple[str, ...], gold: str, rng: random.Random) -> Belief:
    """The model's belief about one text (``rng`` seeded from the text; see the module
    docstring). ``gold`` must be one of ``labels``."""
    k = len(labels)
    if k == 1:
        return Belief(labels[0], {labels[0]: 1.0}, True)
    sure = rng.random() < skill.sure_share
    guess = 1.0 / k
    centre, half = (
        (skill.right_when_sure, skill.spread)
        if sure
        else (skill.unsure_accuracy(k), skill.unsure_spread)
    )
    centre = max(guess, centre)  # a label below a guess would not be the top one
    half = min(half, centre - guess, 1.0 - centre)
    p = centre + half * (2 * rng.random() - 1)
    right = rng.random() < p
    wrong = [label for label in labels if label != gold]
    top = gold if right else rng.choice(wrong)
    rest = (1.0 - p) / (k - 1)
    probabilities = {label: (p if label == top else rest) for label in labels}
    return Belief(top, probabilities, sure)


def pick(view: Belief, rng: random.Random, greedy: bool) -> str:
    """One choice's label: the top one when ``greedy`` (temperature 0), else drawn."""
    if greedy:
        return view.top
    labels = list(view.probabilities)
    return rng.choices(labels, weights=[view.probabilities[label] for label in labels])[0]


def answer(
    task: LabelTask, label: str, probability: float, rng: random.Random
) -> tuple[str, int, int]:
    """(content, start, end): the answer text giving ``label`` and where the label is
    in it. A schema's other properties are filled in (a number property named
    ``confidence``: the model's own estimate, ``probability``)."""
    if task.field is None:
        return label, 0, len(label)
    if task.schema is None:
        value: dict[str, Any] = {task.field: label}
    else:
        value = {}
        props = task.schema.get("properties") or {}
        for name, prop in props.items():
            if name == task.field:
                value[name] = label
            elif name == SCORE_FIELD and _is_number(prop):
                integer = isinstance(prop, dict) and prop.get("type") == "integer"
                value[name] = round(probability * 100) if integer else round(probability, 2)
            else:
                value[name] = fake_value(prop, rng, task.schema)
    content = orjson.dumps(value).decode()
    needle = orjson.dumps({task.field: label}).decode()[1:-1]  # "field":"label"
    at = content.find(needle)
    start = at + len(needle) - len(orjson.dumps(label).decode()) + 1
    return content, start, start + len(orjson.dumps(label).decode()) - 2


def _is_number(prop: Any) -> bool:
    kind = prop.get("type") if isinstance(prop, dict) else None
    kinds = kind if isinstance(kind, list) else [kind]
    return any(k in ("number", "integer") for k in kinds)
