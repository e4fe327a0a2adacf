"""What the simulator answers: deterministic replies derived from the request.

Pure: no I/O, no clock. The same body and seed always give the same reply, so a
test can compute the expected answer, and a rehearsal run is reproducible. The
reply honours the request's shape (``n``, ``response_format``, ``tools`` /
``functions``, ``max_tokens``/``max_completion_tokens``) and reasoning-model names,
and carries OpenAI-shaped usage counted with `batchrun._pacing.tokens`.

    >>> ask = {"role": "user", "content": "Sentiment of: I love it"}
    >>> make_reply({"model": "gpt-4o-mini", "messages": [ask]}).choices[0].content
    'positive'
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from batchrun._pacing import tokens
from batchrun.sim.config import Skill
from batchrun.sim.logprobs import LabelSpan, token_logprobs
from batchrun.sim.schema import WORDS, fake_value
from batchrun.sim.skill import (
    Belief,
    LabelTask,
    answer,
    belief,
    gold_from_messages,
    label_task,
    pick,
)

VALID_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_CHOICES = 128
CACHE_MIN_TOKENS = 1024
CACHE_STEP = 128

_REASONING = re.compile(r"^o\d|reason|deepseek-r1|thinking|qwq", re.IGNORECASE)
_POSITIVE = re.compile(r"\b(love|great|excellent|good|amazing|happy|best|wonderful)\b", re.I)
_NEGATIVE = re.compile(r"\b(hate|bad|terrible|awful|worst|poor|sad|broken|refund)\b", re.I)
_SENTIMENT = re.compile(r"sentiment|positive or negative|negative or positive", re.I)
_YES_NO = re.compile(r"\byes or no\b|answer (with )?yes", re.I)
_SUMMARY = re.compile(r"summari[sz]e|summary|tl;?dr", re.I)
_PROSE = (
    "the results suggest a clear pattern across every sample we reviewed and the team "
    "agrees that a careful next step is to measure again with a larger batch before "
    "drawing a firm conclusion about cost latency or quality of the final answers"
).split()


def is_reasoning_model(model: str) -> bool:
    """Whether a model name looks like a reasoning model (o1/o3/o4, r1, qwq, ...)."""
    return bool(_REASONING.search(model.rsplit("/", 1)[-1]))


@dataclass(frozen=True, slots=True)
class Choice:
    """One generated choice, before it is shaped as a message or as stream deltas."""

    index: int
    content: str | None
    finish_reason: str
    reasoning: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    function_call: dict[str, Any] | None = None
    logprobs: tuple[dict[str, Any], ...] | None = None
    """The content's token logprobs, when the request asked for them."""

    def logprobs_object(self) -> dict[str, Any] | None:
        """``choices[].logprobs`` as OpenAI shapes it (None: not asked for)."""
        if self.logprobs is None:
            return None
        return {"content": list(self.logprobs), "refusal": None}

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        if self.function_call is not None:
            message["function_call"] = self.function_call
        return message


@dataclass(frozen=True, slots=True)
class Reply:
    choices: tuple[Choice, ...]
    usage: dict[str, Any]


def digest_of(body: dict[str, Any], seed: int = 0) -> bytes:
    """A stable hash of what shapes the answer: messages, model, seed."""
    data = orjson.dumps(
        [body.get("messages"), body.get("model"), seed, body.get("seed")],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(data, digest_size=16).digest()


def make_reply(
    body: dict[str, Any],
    seed: int = 0,
    reply_words: tuple[int, int] = (8, 40),
    skills: Mapping[str, Skill] | None = None,
) -> Reply:
    """The full answer to a (validated) chat-completions body. A model named in
    ``skills`` answers labelling requests with that skill (`batchrun.sim.skill`);
    ``logprobs: true`` gets the content's token logprobs (`batchrun.sim.logprobs`)."""
    model = str(body.get("model") or "")
    digest = digest_of(body, seed)
    budget = _max_tokens(body)
    prompt_text = _last_user_text(body.get("messages"))
    reasoning = is_reasoning_model(model)
    skill = (skills or {}).get(model)
    labelling = _labelling(body, skill, prompt_text, seed) if skill is not None else None
    choices: list[Choice] = []
    completion = reasoning_total = 0
    for index in range(_choice_count(body)):
        rng = random.Random(digest + index.to_bytes(2, "big"))
        choice = _one_choice(body, index, rng, prompt_text, model, budget, reasoning, reply_words)
        choice = _with_answer(body, choice, rng, model, labelling)
        used, thought = _choice_tokens(choice, model)
        completion += used
        reasoning_total += thought
        choices.append(choice)
    prompt = tokens.prompt_tokens(body)
    return Reply(tuple(choices), usage_dict(prompt, completion, reasoning_total, digest))


def completion_object(
    reply: Reply, completion_id: str, model: str, created: int, fingerprint: str
) -> dict[str, Any]:
    """The ``chat.completion`` object carrying `reply` (online answers and batch rows)."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": choice.index,
                "message": choice.message(),
                "logprobs": choice.logprobs_object(),
                "finish_reason": choice.finish_reason,
            }
            for choice in reply.choices
        ],
        "usage": reply.usage,
        "service_tier": "default",
        "system_fingerprint": fingerprint,
    }


def usage_dict(prompt: int, completion: int, reasoning: int, digest: bytes) -> dict[str, Any]:
    """OpenAI's usage object; long prompts get a deterministic prefix-cache hit."""
    cached = 0
    if prompt >= CACHE_MIN_TOKENS:
        share = (0.0, 0.5, 0.75, 0.9)[digest[0] % 4]
        cached_guess = int(prompt * share)
        if cached_guess >= CACHE_MIN_TOKENS:
            cached = cached_guess // CACHE_STEP * CACHE_STEP
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass(frozen=True, slots=True)
class _Labelling:
    """A labelling request to a model with a skill: its task and the model's belief."""

    task: LabelTask
    belief: Belief


def _labelling(
    body: dict[str, Any], skill: Skill, prompt_text: str, seed: int
) -> _Labelling | None:
    task = label_task(body, skill.labels)
    if task is None:
        return None
    messages = body.get("messages")
    # the belief is the model's about this text: the same whatever the sampling seed
    key = orjson.dumps([messages, body.get("model"), seed], option=orjson.OPT_SORT_KEYS)
    rng = random.Random(hashlib.blake2b(key, digest_size=16).digest())
    gold = gold_from_messages(messages, task.labels)
    if gold is None:  # no marker: a truth that stays the same for this text
        found = _sentiment_of(prompt_text)
        gold = found if found in task.labels else task.labels[rng.randrange(len(task.labels))]
    return _Labelling(task, belief(skill, task.labels, gold, rng))


def _with_answer(
    body: dict[str, Any],
    choice: Choice,
    rng: random.Random,
    model: str,
    labelling: _Labelling | None,
) -> Choice:
    """The choice with a skilled model's label (when the request is a labelling one and
    the answer was not cut short), and with logprobs when the request asks for them."""
    want = body.get("logprobs") is True
    top = body.get("top_logprobs")
    top = top if isinstance(top, int) and not isinstance(top, bool) and top > 0 else 0
    if choice.content is None:
        return choice
    span = None
    content = choice.content
    if labelling is not None and choice.finish_reason == "stop":
        temperature = body.get("temperature")
        greedy = isinstance(temperature, int | float) and temperature == 0
        label = pick(labelling.belief, rng, greedy)
        probability = labelling.belief.probabilities[label]
        content, start, end = answer(labelling.task, label, probability, rng)
        others = {k: v for k, v in labelling.belief.probabilities.items() if k != label}
        span = LabelSpan(start, end, probability, others)
        budget = _max_tokens(body)
        finish = "stop"
        if budget is not None:
            content, cut = _truncate(content, budget, model)
            if cut:
                span, finish = None, "length"
        choice = replace(choice, content=content, finish_reason=finish)
    if not want:
        return choice
    entries = token_logprobs(content, model, rng, top, span)
    return replace(choice, logprobs=tuple(entries))


def _sentiment_of(text: str) -> str | None:
    good = len(_POSITIVE.findall(text))
    bad = len(_NEGATIVE.findall(text))
    return "positive" if good > bad else "negative" if bad > good else None


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return min(n, MAX_CHOICES)
    return 1


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _choice_tokens(choice: Choice, model: str) -> tuple[int, int]:
    thought = tokens.count_text(choice.reasoning, model) if choice.reasoning else 0
    used = thought
    if choice.content:
        used += tokens.count_text(choice.content, model)
    for call in choice.tool_calls:
        used += _call_tokens(call["function"], model)
    if choice.function_call is not None:
        used += _call_tokens(choice.function_call, model)
    return used, thought


def _call_tokens(function: dict[str, Any], model: str) -> int:
    return tokens.count_text(function["name"], model) + tokens.count_text(
        function["arguments"], model
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    parts.append("[image]")
        return " ".join(parts)
    return ""


def _last_user_text(messages: Any) -> str:
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""


def _truncate(text: str, limit: int, model: str) -> tuple[str, bool]:
    """`text` cut to at most `limit` tokens; True when something was cut."""
    enc = tokens.get_encoding(tokens.encoding_name_for(model))
    ids = enc.encode_ordinary(text)
    if len(ids) <= limit:
        return text, False
    keep = limit
    while keep > 0:
        cut = enc.decode(ids[:keep], errors="ignore")
        if tokens.count_text(cut, model) <= limit:
            return cut, True
        keep -= 1
    return "", True


def _one_choice(
    body: dict[str, Any],
    index: int,
    rng: random.Random,
    prompt_text: str,
    model: str,
    budget: int | None,
    reasoning_model: bool,
    reply_words: tuple[int, int],
) -> Choice:
    reasoning: str | None = None
    left = budget
    length_cut = False
    if reasoning_model:
        reasoning = _reasoning_text(rng, prompt_text, body.get("reasoning_effort"))
        if left is not None:
            reasoning, length_cut = _truncate(reasoning, left, model)
            left -= tokens.count_text(reasoning, model)
    if length_cut:
        return Choice(index, "", "length", reasoning)

    call = _function_to_call(body, rng)
    if call is not None:
        name, arguments, legacy = call
        if left is not None:
            arguments, length_cut = _truncate(arguments, max(0, left - 1), model)
        function = {"name": name, "arguments": arguments}
        finish = "length" if length_cut else ("function_call" if legacy else "tool_calls")
        if legacy:
            return Choice(index, None, finish, reasoning, function_call=function)
        call_id = "call_" + "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            for _ in range(24)
        )
        tool_call = {"id": call_id, "type": "function", "function": function}
        return Choice(index, None, finish, reasoning, tool_calls=(tool_call,))

    content = _content(body, rng, prompt_text, reply_words)
    if left is not None:
        content, length_cut = _truncate(content, left, model)
    return Choice(index, content, "length" if length_cut else "stop", reasoning)


def _function_to_call(body: dict[str, Any], rng: random.Random) -> tuple[str, str, bool] | None:
    """(name, arguments JSON, legacy?) when the model should call a function."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    legacy = False
    if not (isinstance(tools, list) and tools) or choice == "none":
        tools = body.get("functions")
        choice = body.get("function_call")
        legacy = True
        if not (isinstance(tools, list) and tools) or choice == "none":
            return None
    specs: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        spec = tool if legacy else tool.get("function")
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            specs.append(spec)
    if not specs:
        return None
    wanted = None
    if isinstance(choice, dict):
        wanted = choice.get("name") if legacy else (choice.get("function") or {}).get("name")
    picked = next((s for s in specs if s["name"] == wanted), None) or rng.choice(specs)
    parameters = picked.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        parameters = {"type": "object", "properties": {}}
    value = fake_value(parameters, rng)
    return picked["name"], orjson.dumps(value).decode(), legacy


def _content(
    body: dict[str, Any], rng: random.Random, prompt_text: str, reply_words: tuple[int, int]
) -> str:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        value = fake_value(schema if isinstance(schema, dict) else {"type": "object"}, rng)
        return orjson.dumps(value).decode()
    if kind == "json_object":
        answer = {"answer": _plain_text(rng, prompt_text, reply_words)}
        if _SENTIMENT.search(prompt_text):
            answer = {"sentiment": _sentiment(prompt_text, rng)}
        return orjson.dumps(answer).decode()
    return _plain_text(rng, prompt_text, reply_words)


def _sentiment(text: str, rng: random.Random) -> str:
    good = len(_POSITIVE.findall(text))
    bad = len(_NEGATIVE.findall(text))
    if good > bad:
        return "positive"
    if bad > good:
        return "negative"
    return rng.choice(("positive", "negative", "neutral"))


def _plain_text(rng: random.Random, prompt_text: str, reply_words: tuple[int, int]) -> str:
    if _SENTIMENT.search(prompt_text):
        return _sentiment(prompt_text, rng)
    if _YES_NO.search(prompt_text):
        return rng.choice(("Yes.", "No."))
    count = rng.randint(*reply_words)
    if _SUMMARY.search(prompt_text):
        source = [w for w in re.findall(r"[A-Za-z']+", prompt_text) if len(w) > 3]
        picked = source[:count] if source else _pick(rng, count)
        return "Summary: " + " ".join(picked) + "."
    words = _pick(rng, count)
    return (
        words[0].capitalize() + " " + " ".join(words[1:]) + "."
        if len(words) > 1
        else words[0].capitalize() + "."
    )


def _pick(rng: random.Random, count: int) -> list[str]:
    start = rng.randrange(len(_PROSE))
    return [_PROSE[(start + i) % len(_PROSE)] for i in range(count)]


def _reasoning_text(rng: random.Random, prompt_text: str, effort: Any) -> str:
    steps = {"minimal": 1, "low": 2, "medium": 4, "high": 8}.get(str(effort), 4)
    topic = " ".join(prompt_text.split()[:6]) or "the request"
    lines = [f"The user asks about: {topic}."]
    for step in range(steps):
        lines.append(
            f"Step {step + 1}: consider {rng.choice(WORDS)} and {rng.choice(WORDS)}, "
            "then check the answer against the question."
        )
    return " ".join(lines)
