"""What a Jinja prompt template costs per row, against the ``{column}`` PromptTemplate.

Why: a dataset job renders its prompt once per row, on million-row inputs, and the
scan pass renders every row a second time to check it before anything is sent. This
measures, on ``--rows`` rows of product reviews (text ~200 characters), in one process:

* the same two-message prompt (a constant system message, ``Product: {product}\\n
  Review: {text}``) as a `PromptTemplate` and as a `JinjaPromptTemplate`;
* a Jinja prompt doing what ``{column}`` templates cannot: a conditional, a loop over
  a list column, a filter, and five few-shot examples from an examples list;
* compiling each template once (start-up cost), and importing jinja2;
* both Jinja prompts rendered as the scan renders them, under the row watch whose
  ticks (every loop step and call) give a runaway template its time limit.

Times are the best of ``--repeat`` runs.

    .venv/bin/python scripts/bench_jinja.py
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from batchrun._templating.jinja import JinjaPromptTemplate  # noqa: E402
from batchrun._templating.text import PromptTemplate  # noqa: E402

WORDS = "good bad fast slow cheap broken great awful okay refund price works".split()
SYSTEM = "You label the sentiment of product reviews: positive, negative or neutral."
FEW_SHOT = """{% if examples %}
Examples:
{% for ex in examples %}
Review: {{ ex.text }}
Label: {{ ex.label }}
{% endfor %}

{% endif %}
Product: {{ product | title }}{% if rating is not none %} (rated {{ rating }}/5){% endif %}

{% if tags %}
Tags:
{% for tag in tags %}
- {{ tag }}
{% endfor %}
{% endif %}
Review: {{ text }}"""


def make_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    return [
        {
            "id": i,
            "product": rng.choice(["kettle", "toaster", "headphones", "desk lamp"]),
            "text": " ".join(rng.choices(WORDS, k=36)),
            "rating": rng.choice([1, 2, 3, 4, 5, None]),
            "tags": rng.sample(WORDS, rng.randint(0, 3)),
            "label": rng.choice(["positive", "negative", "neutral"]),
        }
        for i in range(n)
    ]


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    examples = [
        {"text": " ".join(random.Random(i).choices(WORDS, k=12)), "label": "neutral"}
        for i in range(5)
    ]

    simple = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Product: {product}\nReview: {text}"},
    ]
    simple_jinja = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Product: {{ product }}\nReview: {{ text }}"},
    ]
    few_shot = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": FEW_SHOT}]

    us = 1e6 / len(rows)
    t_compile_fmt = best(lambda: PromptTemplate(simple), args.repeat)
    t_compile_jinja = best(lambda: JinjaPromptTemplate(simple_jinja), args.repeat)
    t_compile_few = best(lambda: JinjaPromptTemplate(few_shot, examples=examples), args.repeat)

    fmt = PromptTemplate(simple)
    jin = JinjaPromptTemplate(simple_jinja)
    few = JinjaPromptTemplate(few_shot, examples=examples)
    assert fmt.render(rows[0], "line 1") == jin.render(rows[0], "line 1")

    def run(template: Any) -> Callable[[], None]:
        def go() -> None:
            render = template.render
            for row in rows:
                render(row, "line", path="in.jsonl")

        return go

    def via_template_render() -> None:
        # what render() would cost through Jinja's public Template.render: a copy of the
        # row and a merge of the globals per message (render() shares one dict per row)
        compiled = jin._compiled
        for row in rows:
            context = dict(row)
            context["row"] = row
            for message in compiled:
                if message.template is None:
                    continue
                message.template.render(context)

    t_public = best(via_template_render, args.repeat)
    t_fmt = best(run(fmt), args.repeat)
    t_jin = best(run(jin), args.repeat)
    t_few = best(run(few), args.repeat)
    t_few_watched = t_jin_watched = None
    try:  # as the scan renders: loops and calls tick the row's watch (issue 24 item 7)
        from batchrun._templating.rowwatch import watched

        with watched():
            t_jin_watched = best(run(jin), args.repeat)
            t_few_watched = best(run(few), args.repeat)
    except ImportError:  # a tree from before the watch
        pass
    code = "import jinja2.sandbox, jinja2.meta"
    t_import = min(_subprocess_seconds([sys.executable, "-c", code]) for _ in range(3)) - min(
        _subprocess_seconds([sys.executable, "-c", "pass"]) for _ in range(3)
    )

    print(f"{len(rows):,} rows, best of {args.repeat}; Python {sys.version.split()[0]}")
    print(f"{'':52} {'us/row':>8} {'x {column}':>11}")
    print(f"{'PromptTemplate, Product: {product} Review: {text}':52} {t_fmt * us:8.2f} {1:11.2f}")
    print(f"{'JinjaPromptTemplate, the same prompt':52} {t_jin * us:8.2f} {t_jin / t_fmt:11.2f}")
    print(
        f"{'  the same through Template.render (not used)':52} {t_public * us:8.2f} "
        f"{t_public / t_fmt:11.2f}"
    )
    print(
        f"{'JinjaPromptTemplate, if + loop + filter + 5 examples':52} {t_few * us:8.2f} "
        f"{t_few / t_fmt:11.2f}"
    )
    if t_few_watched is not None and t_jin_watched is not None:
        print(
            f"{'  both watched, as the scan renders (time limit)':52} "
            f"{t_jin_watched * us:8.2f} / {t_few_watched * us:.2f}"
        )
    print(f"sample few-shot prompt ({len(few.render(rows[1], 'x')[1]['content'])} characters):")
    print("  " + few.render(rows[1], "x")[1]["content"].replace("\n", "\n  "))
    print(
        f"compile once: PromptTemplate {t_compile_fmt * 1e6:.0f} us, Jinja same prompt "
        f"{t_compile_jinja * 1e6:.0f} us, Jinja few-shot {t_compile_few * 1e6:.0f} us; "
        f"import jinja2.sandbox {t_import * 1000:.0f} ms"
    )


def _subprocess_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
