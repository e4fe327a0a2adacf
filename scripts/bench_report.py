"""What the HTML report costs for a large run: file size, build time, render time.

Why: the report must stay one small file that opens fast whatever the run's size
(targets: under 2 MB and under 2 s in Chromium for 100,000 rows). This builds a run
directory of ``--rows`` rows in the real format (lines written by
`batchrun._output.lines.encode`, a summary built by `batchrun._output.summary.build_summary` from a
`Tally` of those lines, a results.parquet in the dataset layout, an evaluation), over
``--minutes`` of finish times with a burst of 429s, then measures:

* ``build_page_data`` and ``render_html`` in Python (best of ``--repeat``);
* the file's size;
* in headless Chromium (Debian's /usr/bin/chromium through playwright), the time from
  navigation start to the end of the first render (``renderedAt``), the render call
  alone (``renderMs``), and the same navigation-to-script time of an empty page as the
  baseline measured in the same browser (median of ``--repeat`` loads each).

    .venv/bin/python scripts/bench_report.py                 # 100,000 rows
    .venv/bin/python scripts/bench_report.py --rows 1000000
    .venv/bin/python scripts/bench_report.py --screenshot /tmp/report.png
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from batchrun._cost.bill import cost_report  # noqa: E402
from batchrun._cost.prices import PriceBook  # noqa: E402
from batchrun._jobs.evaluate import Evaluator  # noqa: E402
from batchrun._models import Attempt, Outcome, Request  # noqa: E402
from batchrun._output.lines import decode, encode  # noqa: E402
from batchrun._output.parquet import RESULT_COLUMNS, result_values  # noqa: E402
from batchrun._output.summary import Counts, build_summary, write_json_atomic  # noqa: E402
from batchrun._output.tally import Tally  # noqa: E402
from batchrun._output.usage import Usage  # noqa: E402
from batchrun._report.html import build_page_data, render_html  # noqa: E402
from batchrun._report.html.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

LABELS = ("positive", "negative", "neutral")
PRODUCTS = ("kitchen knife", "4K monitor", "blender", "phone case", "desk lamp")
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": list(LABELS)},
        "confidence": {"type": "number"},
        "reason": {"type": "string"},
    },
    "required": ["sentiment", "confidence", "reason"],
    "additionalProperties": False,
}
EVAL = {"reference_column": "label", "compare": "json_field", "field": "sentiment"}


def completion(i: int, label: str, rng: random.Random) -> dict[str, Any]:
    content = orjson.dumps(
        {"sentiment": label, "confidence": round(rng.random(), 2), "reason": f"reason {i}"}
    ).decode()
    prompt, completion_tokens = rng.randint(60, 140), rng.randint(15, 30)
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_800_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }


def build_run(run_dir: Path, rows: int, minutes: float, seed: int = 1) -> None:
    """A finished dataset run of ``rows`` rows, in the files' real formats."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    start = 1_800_000_000.0
    span = minutes * 60
    tally, evaluator = Tally(), Evaluator(**EVAL)
    counts = Counts(total=rows)
    failed_codes: list[str] = []
    table: dict[str, list[Any]] = {"custom_id": [], "row": [], "id": [], "text": []}
    table |= {"product": [], "label": []} | {n: [] for n, _ in RESULT_COLUMNS}
    table |= {"sentiment": [], "confidence": [], "reason": [], "parse_error": []}
    with open(run_dir / "results.jsonl", "wb") as ok, open(run_dir / "errors.jsonl", "wb") as bad:
        for i in range(1, rows + 1):
            cid = f"rev-{i:07d}"
            req = Request(cid, {"model": "gpt-4o-mini", "messages": []}, row=i)
            at = start + span * i / rows + rng.uniform(0, 0.5)
            latency = rng.lognormvariate(-1.2, 0.5)
            storm = 0.3 < i / rows < 0.35  # a burst of 429s a third of the way in
            statuses = [429, 200] if storm or rng.random() < 0.01 else [200]
            reference = rng.choice(LABELS)
            if rng.random() < 0.004:
                attempts = [Attempt(400, "http_400", "Simulated client error 400.")]
                outcome = Outcome.failure(
                    req,
                    code="http_400",
                    message="Simulated client error 400.",
                    attempts=attempts,
                    status=400,
                    latency_s=latency,
                )
                predicted = None
            else:
                label = reference if rng.random() < 0.7 else rng.choice(LABELS)
                attempts = [Attempt(s, "ok" if s == 200 else "rate_limited") for s in statuses]
                outcome = Outcome.success(
                    req,
                    status=200,
                    request_id=f"req_{i}",
                    body=completion(i, label, rng),
                    attempts=attempts,
                    latency_s=latency,
                    wait_s=rng.uniform(0.5, 2.0) if len(statuses) > 1 else rng.uniform(0, 0.002),
                )
                predicted = label
            outcome.finished_at = at
            outcome.body_hash = f"{i:016x}"
            line = encode(outcome)
            (ok if outcome.ok else bad).write(line)
            record = decode(line)
            tally.count_outcome(record)
            evaluator.add(reference, predicted)
            if outcome.ok:
                counts.succeeded += 1
            else:
                counts.failed += 1
                failed_codes.append("http_400")
            values = result_values(record)
            text = f"Review {i} of a {PRODUCTS[i % len(PRODUCTS)]}: " + "words " * rng.randint(
                5, 40
            )
            for key, value in (
                ("custom_id", cid),
                ("row", i),
                ("id", cid),
                ("text", text),
                ("product", PRODUCTS[i % len(PRODUCTS)]),
                ("label", reference),
            ):
                table[key].append(value)
            for name, _ in RESULT_COLUMNS:
                table[name].append(values[name])
            parsed = orjson.loads(values["content"]) if outcome.ok else {}
            for name in ("sentiment", "confidence", "reason"):
                table[name].append(parsed.get(name))
            table["parse_error"].append(None)
    schema = pa.schema(
        [
            ("custom_id", pa.string()),
            ("row", pa.int64()),
            ("id", pa.string()),
            ("text", pa.string()),
            ("product", pa.string()),
            ("label", pa.string()),
            *RESULT_COLUMNS,
            ("sentiment", pa.string()),
            ("confidence", pa.float64()),
            ("reason", pa.string()),
            ("parse_error", pa.string()),
        ],
        metadata={"batchrun": orjson.dumps({"renamed": {}, "first_choice_only": True})},
    )
    pq.write_table(
        pa.table(table, schema=schema), run_dir / "results.parquet", row_group_size=10_000
    )
    state = tally.to_state()
    cost = cost_report(
        {m: Usage.from_dict(u) for m, u in state["by_model"].items()}, PriceBook.load(None)
    )
    options = {
        "input_path": "reviews.jsonl",
        "out_dir": str(run_dir),
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "concurrency": 64,
        "rpm": 5000,
        "tpm": 2_000_000,
        "max_attempts": 10,
        "timeout": 120.0,
        "stream": False,
        "headers": [],
        "id_column": "id",
        "job": {
            "request": {"temperature": 0, "max_tokens": 80},
            "schema": SCHEMA,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "sentiment", "schema": SCHEMA},
            },
            "eval": EVAL,
        },
    }
    write_json_atomic(
        str(run_dir / "run.json"),
        {
            "batchrun_version": "bench",
            "input_path": "reviews.jsonl",
            "input_rows": rows,
            "options": options,
            "started_at": "2027-01-15T08:00:00Z",
        },
    )
    summary = build_summary(
        status="complete",
        input_path="reviews.jsonl",
        counts=counts,
        tally=tally,
        failed_codes=failed_codes,
        elapsed_s=span,
        results_bytes=os.path.getsize(run_dir / "results.jsonl"),
        errors_bytes=os.path.getsize(run_dir / "errors.jsonl"),
        extra={**cost, "eval": {**evaluator.report(), "pending": 0, "invalid": 0}},
    )
    write_json_atomic(str(run_dir / "summary.json"), summary)


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def chromium_times(pages: dict[str, Path], repeat: int, screenshot: str | None) -> dict[str, Any]:
    """Median navigation-start-to-rendered ms per page, and the render call alone."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        for name, path in pages.items():
            loaded, renders, errors = [], [], []
            for _ in range(repeat):
                page = browser.new_page(viewport={"width": 1300, "height": 900})
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.as_uri())
                while not page.evaluate("() => Boolean(window.batchrunReport)"):
                    time.sleep(0.005)
                report = page.evaluate("() => window.batchrunReport")
                loaded.append(report["renderedAt"])
                renders.append(report.get("renderMs") or 0.0)
                if screenshot and name == "report":
                    page.screenshot(path=screenshot, full_page=True)
                    screenshot = None
                page.close()
            out[name] = (statistics.median(loaded), statistics.median(renders), errors)
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=20.0, help="span of finish times")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--screenshot", help="save a full-page screenshot of the report here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        started = time.perf_counter()
        build_run(run_dir, args.rows, args.minutes)
        made = time.perf_counter() - started
        size = sum(p.stat().st_size for p in run_dir.iterdir())
        print(f"run directory: {args.rows:,} rows, {size / 1e6:,.1f} MB, made in {made:.1f} s")

        data_s, data = best(lambda: build_page_data(str(run_dir)), args.repeat)
        html_s, page = best(lambda: render_html(data), args.repeat)
        report = Path(tmp) / "report.html"
        report.write_text(page, encoding="utf-8")
        empty = Path(tmp) / "empty.html"
        empty.write_text(
            "<!doctype html><html><head><meta charset='utf-8'></head><body><script>"
            "window.batchrunReport = {renderedAt: performance.now(), renderMs: 0};"
            "</script></body></html>"
        )
        data_kb = len(orjson.dumps(data)) / 1024
        print(f"build_page_data  {data_s * 1000:8.0f} ms (best of {args.repeat})")
        print(f"render_html      {html_s * 1000:8.0f} ms")
        print(f"report.html      {len(page.encode()) / 1024:8.0f} KB ({data_kb:.0f} KB of it data)")
        times = chromium_times({"empty": empty, "report": report}, args.repeat, args.screenshot)
        base = times["empty"][0]
        loaded, render_ms, errors = times["report"]
        print(f"chromium: empty page {base:6.0f} ms navigation to script (baseline)")
        print(
            f"chromium: report     {loaded:6.0f} ms navigation to rendered "
            f"({loaded - base:.0f} ms over the baseline; render() itself {render_ms:.0f} ms)"
            f", median of {args.repeat}; page errors: {errors or 'none'}"
        )


if __name__ == "__main__":
    main()
