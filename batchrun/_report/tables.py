"""Text tables and money amounts for the terminal (the report, the estimate).

>>> format_usd(0.00012)
'$0.000120'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrun._cost.price import ModelPrice


def align_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the rest right-aligned (numbers).

    >>> align_table([("model", "cost"), ("m", "$1.00")])
    ['model   cost', 'm      $1.00']
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


USD_DECIMALS_MAX = 10
"""The most decimals an amount is shown with (summary.json keeps USD to 10 decimals)."""


def format_usd(value: float | None) -> str:
    """Money, the one way batchrun prints it: ``$1,234.56`` from $100, four decimals
    from a cent, and below a cent at least six decimals and always three significant
    digits, so a small spend never reads as zero (``$0.000134``, ``$0.000000134``);
    ``-`` for None.

    >>> [format_usd(v) for v in (1234.5, 0.5, 0.007514, 0.000134, 1.34e-7, 0.0, -0.25)]
    ['$1,234.50', '$0.5000', '$0.007514', '$0.000134', '$0.000000134', '$0.0000', '-$0.2500']
    """
    if value is None:
        return "-"
    sign, size = ("-", -value) if value < 0 else ("", value)
    if size >= 100:
        return f"{sign}${size:,.2f}"
    if size >= 0.01 or size == 0:
        return f"{sign}${size:.4f}"
    # the first significant digit is at decimal -floor(log10(size)); show two more
    decimals = min(max(6, 2 - math.floor(math.log10(size))), USD_DECIMALS_MAX)
    return f"{sign}${size:.{decimals}f}"


def format_cost_table(report: Mapping[str, Any]) -> str:
    """Plain-text table of a `cost_report`: model, input, cached, output, total, batch API.

    >>> from batchrun._cost.bill import cost_report
    >>> from batchrun._cost.prices import ModelPrice, PriceBook
    >>> from batchrun._output.usage import Usage
    >>> price = ModelPrice(input=2.0, output=8.0, batch=ModelPrice(input=1.0, output=4.0))
    >>> book = PriceBook({"m": price}, use_genai_prices=False)
    >>> usage = {"m": Usage(prompt_tokens=10**6, completion_tokens=250_000), "x": Usage()}
    >>> print(format_cost_table(cost_report(usage, book)))
    model    input   cached   output     total  batch API
    m      $2.0000  $0.0000  $2.0000   $4.0000    $2.0000
    x            -        -        -  no price          -
    total  $2.0000  $0.0000  $2.0000   $4.0000    $2.0000
    incomplete: no price known for x (not in the total)
    """
    cost = report["cost_usd"]
    batch = report["batch_api_cost_usd"]
    header = ("model", "input", "cached", "output", "total", "batch API")
    rows: list[tuple[str, ...]] = []
    for model, entry in cost["by_model"].items():
        if entry.get("total") is None:
            rows.append((model, "-", "-", "-", "no price", "-"))
            continue
        rows.append(
            (
                model,
                format_usd(entry["input"]),
                format_usd(entry["cached_input"]),
                format_usd(entry["output"]),
                format_usd(entry["total"]),
                format_usd(batch["by_model"].get(model)),
            )
        )
    rows.append(
        (
            "total",
            format_usd(cost["input"]),
            format_usd(cost["cached_input"]),
            format_usd(cost["output"]),
            format_usd(cost["total"]),
            format_usd(batch["total"]),
        )
    )
    lines = align_table([header, *rows])
    if cost["unpriced_models"]:
        names = ", ".join(cost["unpriced_models"])
        lines.append(f"incomplete: no price known for {names} (not in the total)")
    no_batch = [m for m in batch["models_without_batch_price"] if m not in cost["unpriced_models"]]
    if batch["total"] is not None and no_batch:
        names = ", ".join(no_batch)
        lines.append(f"batch API total excludes models without batch prices: {names}")
    for model, entry in cost["by_model"].items():
        if "note" in entry:
            lines.append(f"{model}: {entry['note']}")
    return "\n".join(lines)


def format_price_table(prices: Sequence[tuple[str, ModelPrice | None]]) -> str:
    """Plain-text table of model prices (USD per million tokens) and where each comes
    from (``batchrun prices MODEL``).

    >>> from batchrun._cost.prices import ModelPrice
    >>> price = ModelPrice(input=2.0, output=8.0, batch=ModelPrice(input=1.0, output=4.0))
    >>> print(format_price_table([("m", price), ("x", None)]))
    model    input   cached   output  batch input  batch output  source
    m      $2.0000  $2.0000  $8.0000      $1.0000       $4.0000  user file
    x            -        -        -            -             -  no price known
    USD per million tokens
    """
    header = ("model", "input", "cached", "output", "batch input", "batch output", "source")
    rows: list[tuple[str, ...]] = []
    for model, price in prices:
        if price is None:
            rows.append((model, "-", "-", "-", "-", "-", "no price known"))
            continue
        cached = price.cached_input if price.cached_input is not None else price.input
        batch = price.batch
        source = price.source
        if price.matched and price.matched != model:
            source += f" ({price.matched})"
        if price.tiers:
            source += f", {len(price.tiers) + 1} tiers by prompt size (base tier shown)"
        rows.append(
            (
                model,
                format_usd(price.input),
                format_usd(cached),
                format_usd(price.output),
                format_usd(batch.input if batch is not None else None),
                format_usd(batch.output if batch is not None else None),
                source,
            )
        )
    # the last column is text: left-aligned like the first
    table = [header, *rows]
    lines = align_table([row[:-1] for row in table])
    width = max(len(line) for line in lines)
    lines = [f"{line.ljust(width)}  {row[-1]}" for line, row in zip(lines, table, strict=True)]
    lines.append("USD per million tokens")
    return "\n".join(lines)


__all__ = ["align_table", "format_cost_table", "format_price_table", "format_usd"]
