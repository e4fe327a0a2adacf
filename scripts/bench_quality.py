"""What checking answer quality costs per response: JSON Schema validators compared.

Why: `batchrun._output.quality.classify` runs once per response on the hot path, and with a
schema it validates every answer. This measures, on the sentiment job's flat schema and
on a nested one (objects in arrays, enums, additionalProperties), in one process:

* baseline: ``orjson.loads`` of the answer's content (the parse every answer needs);
* per candidate library: validating a valid answer, and finding an invalid one's
  first error as a one-line message; compiling the schema; importing the library
  (fresh interpreter, against ``import orjson``);
* ``quality.classify`` end to end on whole response bodies.

Times are the best of ``--repeat`` runs (interference only adds time). Candidates that
are not installed are skipped; the two that batchrun does not depend on install with::

    .venv/bin/pip install jsonschema fastjsonschema
    .venv/bin/python scripts/bench_quality.py

``--breaker`` measures the quality breaker's rule instead (no timing, seeded): runs
whose answers are each unusable with a given probability are judged after every
answer, as a run judges after every write, by the rule (`quality.breaker_trips`:
a lower Wilson bound over 0.8, 20 answers at least) at two confidences, and by the
rule it replaced (20 answers, 80 % of them unusable); the table gives how many runs
stop within 1,000 answers and after how many answers. A share well under 0.8 should
(almost) never stop a run, one near 1 should stop it within 50 answers.

    .venv/bin/python scripts/bench_quality.py --breaker     # ~30 s
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import orjson  # noqa: E402

from batchrun._output.quality import breaker_trips, classify  # noqa: E402
from batchrun._schemas import compile_schema, json_path  # noqa: E402

LABELS = ["positive", "negative", "neutral"]
with open(os.path.join(ROOT, "jobs", "schemas", "sentiment.json"), encoding="utf-8") as f:
    SENTIMENT = json.load(f)
SPAN = {
    "type": "object",
    "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}},
    "required": ["start", "end"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "label": {"type": "string", "enum": LABELS},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "spans": {"type": "array", "items": SPAN},
                },
                "required": ["text", "label", "score", "spans"],
                "additionalProperties": False,
            },
        },
        "summary": {
            "type": "object",
            "properties": {"overall": {"enum": LABELS}, "note": {"type": ["string", "null"]}},
            "required": ["overall", "note"],
            "additionalProperties": False,
        },
    },
    "required": ["items", "summary"],
    "additionalProperties": False,
}
ITEMS = [
    {"text": f"clause {i}", "label": LABELS[i % 3], "score": 0.5, "spans": [{"start": i, "end": 9}]}
    for i in range(5)
]
BAD_ITEMS = [dict(item) for item in ITEMS]
BAD_ITEMS[2]["label"] = "neutralish"
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # name, schema, valid content, invalid content
    (
        "sentiment",
        SENTIMENT,
        '{"sentiment": "positive", "confidence": 0.9, "reason": "Works well, arrived early."}',
        '{"sentiment": "mixed", "confidence": 0.9, "reason": "Works well, arrived early."}',
    ),
    (
        "nested",
        NESTED,
        orjson.dumps({"items": ITEMS, "summary": {"overall": "neutral", "note": None}}).decode(),
        orjson.dumps(
            {"items": BAD_ITEMS, "summary": {"overall": "neutral", "note": None}}
        ).decode(),
    ),
]


# -- the candidates: compile, is-valid, first error as one line -------------------------
def jsonschema_candidate() -> tuple[Callable[[Any], Any], Callable, Callable]:
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    def compile_(schema: Any) -> Any:
        return validators.validator_for(schema)(schema)

    def message(v: Any, instance: Any) -> str | None:
        if v.is_valid(instance):
            return None
        error = best_match(v.iter_errors(instance))
        return f"{error.json_path}: {error.message}"

    return compile_, lambda v, instance: v.is_valid(instance), message


def fastjsonschema_candidate() -> tuple[Callable[[Any], Any], Callable, Callable]:
    import fastjsonschema

    def is_valid(v: Any, instance: Any) -> bool:
        try:
            v(instance)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    def message(v: Any, instance: Any) -> str | None:
        try:
            v(instance)
        except fastjsonschema.JsonSchemaValueException as exc:
            return exc.message
        return None

    return fastjsonschema.compile, is_valid, message


def jsonschema_rs_candidate() -> tuple[Callable[[Any], Any], Callable, Callable]:
    import jsonschema_rs

    def message(v: Any, instance: Any) -> str | None:
        if v.is_valid(instance):
            return None
        error = next(iter(v.iter_errors(instance)))
        return f"{json_path(error.instance_path)}: {error.message}"

    def compile_(schema: Any) -> Any:
        return jsonschema_rs.validator_for(schema, offline=True)

    return compile_, lambda v, instance: v.is_valid(instance), message


CANDIDATES = {
    "jsonschema": ("jsonschema", jsonschema_candidate),
    "fastjsonschema": ("fastjsonschema", fastjsonschema_candidate),
    "jsonschema-rs": ("jsonschema_rs", jsonschema_rs_candidate),
}


# -- timing -----------------------------------------------------------------------------
def per_call_us(fn: Callable[[], Any], repeat: int, budget_s: float = 0.1) -> float:
    """Best-of-``repeat`` microseconds per call, each run about ``budget_s`` long."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        took = time.perf_counter() - start
        if took >= budget_s / 4 or loops >= 1 << 22:
            break
        loops *= 4
    loops = max(1, int(loops * budget_s / max(took, 1e-9)))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best * 1e6


def import_ms(module: str, repeat: int) -> float:
    """Best-of-``repeat`` milliseconds to import ``module`` in a fresh interpreter."""
    code = (
        f"import time; t = time.perf_counter(); import {module}; "
        "print((time.perf_counter() - t) * 1e3)"
    )
    runs = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        runs.append(float(done.stdout))
    return min(runs)


def measure(
    candidate: tuple[Callable[[Any], Any], Callable, Callable],
    schema: Any,
    valid: str,
    invalid: str,
    repeat: int,
) -> tuple[float, float, float, str | None]:
    """us to accept the valid answer, to reject the invalid one with a message, to compile."""
    compile_, is_valid, message = candidate
    valid_obj, invalid_obj = orjson.loads(valid), orjson.loads(invalid)
    v = compile_(schema)
    assert is_valid(v, valid_obj) and not is_valid(v, invalid_obj)
    ok_us = per_call_us(lambda: is_valid(v, valid_obj), repeat)
    bad_us = per_call_us(lambda: message(v, invalid_obj), repeat)
    compile_us = per_call_us(lambda: is_valid(compile_(schema), valid_obj), repeat, budget_s=0.2)
    return ok_us, bad_us, compile_us, message(v, invalid_obj)


def body_of(content: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100},
    }


BREAKER_SHARES = (0.5, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0)


def old_rule(bad: int, answers: int) -> bool:
    """The rule before issue 31: 20 answers, 80 % of them unusable."""
    return answers >= 20 and bad >= 0.8 * answers


def answers_to_stop(rule: Callable[[int, int], bool], share: float, rng: Any, most: int) -> int:
    """After how many answers ``rule`` stops a run whose answers are each unusable with
    probability ``share``, judged after every answer (0: not within ``most``)."""
    bad = 0
    for answers in range(1, most + 1):
        bad += rng.random() < share
        if rule(bad, answers):
            return answers
    return 0


def breaker(trials: int, most: int, seed: int) -> None:
    import random
    import statistics

    rules: dict[str, Callable[[int, int], bool]] = {
        "Wilson, 95 % (z 1.645)": lambda b, n: breaker_trips(b, n, threshold=0.8),
        "Wilson, 97.5 % (z 1.96)": lambda b, n: breaker_trips(b, n, threshold=0.8, z=1.96),
        "old: 20 answers, 80 %": old_rule,
    }
    print(f"{trials} runs per cell, judged after every answer, up to {most} answers, seed {seed}")
    print()
    print("| unusable share | rule | runs stopped | answers to stop: median | 95th pct |")
    print("|---:|---|---:|---:|---:|")
    for share in BREAKER_SHARES:
        for name, rule in rules.items():
            rng = random.Random(seed)
            stops = [answers_to_stop(rule, share, rng, most) for _ in range(trials)]
            stopped = sorted(n for n in stops if n)
            if stopped:
                median = f"{statistics.median(stopped):.0f}"
                p95 = f"{stopped[int(0.95 * (len(stopped) - 1))]}"
            else:
                median = p95 = "-"
            print(f"| {share:.2f} | {name} | {len(stopped) / trials:.1%} | {median} | {p95} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="best of N timed runs")
    parser.add_argument("--breaker", action="store_true", help="measure the breaker's rule")
    parser.add_argument("--trials", type=int, default=2000, help="--breaker: runs per cell")
    args = parser.parse_args()
    if args.breaker:
        breaker(args.trials, 1000, seed=31)
        return
    repeat = args.repeat

    available = {}
    for name, (module, make) in CANDIDATES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            print(f"{name}: not installed, skipped (pip install {name})")
            continue
        available[name] = (module, make())

    print(
        f"Python {sys.version.split()[0]}, orjson {orjson.__version__}, "
        + ", ".join(f"{n} {importlib.metadata.version(n)}" for n in available)
    )
    print()
    print("| schema / case | library | us per answer | x orjson.loads |")
    print("|---|---|---:|---:|")
    compile_rows = []
    for case, schema, valid, invalid in CASES:
        base = per_call_us(lambda v=valid: orjson.loads(v), repeat)
        print(f"| {case} | orjson.loads (baseline) | {base:.2f} | 1.0 |")
        for name, (_, candidate) in available.items():
            ok_us, bad_us, compile_us, text = measure(candidate, schema, valid, invalid, repeat)
            print(f"| {case} valid | {name} | {ok_us:.2f} | {ok_us / base:.1f} |")
            print(f"| {case} invalid + message | {name} | {bad_us:.2f} | {bad_us / base:.1f} |")
            compile_rows.append((case, name, compile_us, text))
        for label, body in (
            ("valid", body_of(valid)),
            ("invalid", body_of(invalid)),
            ("truncated", body_of(valid[:20], "length")),
            ("no schema", body_of(valid)),
        ):
            compiled = None if label == "no schema" else compile_schema(schema)
            us = per_call_us(lambda b=body, c=compiled: classify(b, c), repeat)
            verdict = classify(body, compiled).category
            row = f"{case} {label} | quality.classify -> {verdict}"
            print(f"| {row} | {us:.2f} | {us / base:.1f} |")

    print()
    print("| schema | library | compile + first check, us | message for the invalid answer |")
    print("|---|---|---:|---|")
    for case, name, us, text in compile_rows:
        print(f"| {case} | {name} | {us:,.0f} | `{text}` |")

    print()
    base_ms = import_ms("orjson", repeat)
    print("| import (fresh interpreter) | ms | x import orjson |")
    print("|---|---:|---:|")
    print(f"| orjson (baseline) | {base_ms:.1f} | 1.0 |")
    for name, (module, _) in available.items():
        ms = import_ms(module, repeat)
        print(f"| {name} | {ms:.1f} | {ms / base_ms:.1f} |")


if __name__ == "__main__":
    main()
