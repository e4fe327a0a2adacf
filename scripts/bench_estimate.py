"""How fast `batchrun estimate` counts: requests per second for short chat requests.

Why: the dry run must stay interactive on large jobs (target: 50,000 requests/s).
Builds the requests in memory first, so only counting and pricing are timed.

Example::

    .venv/bin/python scripts/bench_estimate.py --requests 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from batchrun._cost.estimate import estimate, format_estimate  # noqa: E402
from batchrun._cost.prices import PriceBook
from batchrun._models import Request  # noqa: E402
from batchrun._pacing.tokens import prompt_tokens  # noqa: E402

SYSTEM = "You are a careful assistant. Answer in one short sentence."
MODELS = ("gpt-4o-mini", "gpt-4o", "deepseek-chat")


def make_requests(count: int) -> list[Request]:
    return [
        Request(
            f"row-{i}",
            {
                "model": MODELS[i % len(MODELS)],
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"What is {i} plus {i * 7 % 1000}? Explain."},
                ],
                "max_tokens": 64,
            },
            row=i + 1,
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timed passes")
    args = parser.parse_args()

    requests = make_requests(args.requests)
    book = PriceBook.load(None)
    estimate(requests[:100], book, None)  # warm up: tokenizer and price lookups

    best = float("inf")
    report = None
    for _ in range(args.repeat):
        start = time.perf_counter()
        report = estimate(requests, book, None)
        best = min(best, time.perf_counter() - start)
    assert report is not None

    start = time.perf_counter()
    bare = sum(prompt_tokens(r.body) for r in requests)
    bare_s = time.perf_counter() - start
    assert bare == report.prompt_tokens, "estimate must count exactly like tokens.prompt_tokens"

    print(format_estimate(report))
    print()
    print(
        f"estimate:                  {args.requests / best:,.0f} requests/s (best of {args.repeat})"
    )
    print(f"tokens.prompt_tokens only: {args.requests / bare_s:,.0f} requests/s")


if __name__ == "__main__":
    main()
