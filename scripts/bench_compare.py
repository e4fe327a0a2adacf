#!/usr/bin/env python3
"""What comparing variants adds to the end of a run: the results.parquet pass with and
without `batchrun._jobs.compare.Comparison` observing it, on a synthetic run directory
(ROWS input rows x 2 models x 2 prompts, every answer a JSON-schema label), measured in
the same process, best of ROUNDS.

    .venv/bin/python scripts/bench_compare.py [ROWS] [ROUNDS]

Prints the CPU seconds of each pass, the ratio, the cost per observed row, and the
cost of the report (intervals included).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from batchrun._ids import body_hash  # noqa: E402
from batchrun._input.select import source_for  # noqa: E402
from batchrun._jobs.compare import Comparison  # noqa: E402
from batchrun._models import Attempt, Outcome  # noqa: E402
from batchrun._output.lines import encode  # noqa: E402
from batchrun._output.parquet import write_results_parquet  # noqa: E402
from batchrun._settings import Settings  # noqa: E402
from batchrun._values import Evaluation, ResponseFormat  # noqa: E402

LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": list(LABELS)}},
    "required": ["sentiment"],
    "additionalProperties": False,
}


def make_run(tmp: Path, rows: int) -> Settings:
    rng = random.Random(1)
    data = tmp / "reviews.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}", "label": rng.choice(LABELS)}))
            f.write("\n")
    settings = Settings(
        input=str(data),
        out_dir=str(tmp / "run"),
        id_column="id",
        model=("gpt-4o-mini", "gpt-4.1-mini"),
        prompts={"terse": {"user": "{text}"}, "long": {"user": "Review: {text}"}},
        response_format=ResponseFormat("json_schema", "s", SCHEMA),
        eval=Evaluation("label", "json_field", "sentiment"),
    )
    (tmp / "run").mkdir()
    with open(tmp / "run" / "results.jsonl", "wb") as out:
        for req in source_for(settings).requests():
            answer = json.dumps({"sentiment": rng.choice(LABELS)})
            body = {
                "model": req.body["model"],
                "choices": [{"message": {"content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
            }
            outcome = Outcome.success(
                req,
                status=200,
                request_id=None,
                body=body,
                attempts=[Attempt(200, "ok")],
                latency_s=rng.uniform(0.02, 0.4),
                body_hash=body_hash(orjson.dumps(req.body)),
            )
            out.write(encode(outcome))
    return settings


def cpu(fn: object) -> float:
    start = time.process_time()
    fn()  # type: ignore[operator]
    return time.process_time() - start


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with tempfile.TemporaryDirectory() as name:
        settings = make_run(Path(name), rows)
        quiet = replace(settings, eval=replace(settings.eval, interval=False))  # type: ignore[arg-type]
        target = str(Path(name) / "results.parquet")
        base, observed, reports = [], [], []
        for _ in range(rounds):
            base.append(cpu(lambda: write_results_parquet(quiet, target)))
            comparison = Comparison(settings)
            outcome: dict[str, object] = {}

            def with_comparison(c: Comparison = comparison, o: dict[str, object] = outcome) -> None:
                o["report"] = write_results_parquet(settings, target, observe=c.observe)

            observed.append(cpu(with_comparison))
            report = outcome["report"]
            reports.append(cpu(lambda c=comparison, r=report: c.report(r.eval_by_variant)))  # type: ignore[attr-defined]
        requests = rows * 4
        b, o, r = min(base), min(observed), min(reports)
        print(f"rows {rows:,} x 4 variants = {requests:,} result lines")
        print(f"results pass, no comparison:   {b:.3f} s CPU")
        print(f"results pass, with comparison: {o:.3f} s CPU ({o / b:.2f}x)")
        print(f"comparison per observed line:  {(o - b) / requests * 1e6:.1f} us")
        print(
            f"comparison report (4 accuracy + 6 paired intervals, percentiles): {r * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
