"""A cascade's text report: each stage, then the cascade against the last model alone
(summary.json's ``cascade``, `batchrun._jobs.cascade_outputs.cascade_block`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_cascade"]


def format_cascade(summary: Mapping[str, Any]) -> str:
    """A few lines for the terminal: each stage, then the cascade against the last
    model alone."""
    block = summary.get("cascade") or {}
    lines = [
        "cascade "
        + " -> ".join(block.get("models") or ())
        + f" (escalate below {', '.join(str(t) for t in block.get('escalate_below') or ())})"
    ]
    for one in block.get("stages") or ():
        cost = one.get("cost_usd")
        shown = f"${cost:,.4f}" if isinstance(cost, int | float) else "cost unknown"
        acc = (one.get("eval_decided") or {}).get("accuracy")
        right = f", accuracy {acc:.3f} on the rows it decided" if acc is not None else ""
        lines.append(
            f"  stage {one['stage']} {one['model']}: {one['rows']:,} rows, decided "
            f"{one['decided']:,}, escalated {one['escalated']:,}; {shown}{right}"
        )
    total = block.get("cost_usd")
    alone = block.get("last_stage_alone_usd")
    tail = f"  cascade: {summary.get('status')}"
    acc = (block.get("eval") or {}).get("accuracy")
    if acc is not None:
        interval = (block.get("eval") or {}).get("accuracy_interval") or {}
        low, high = interval.get("low"), interval.get("high")
        tail += f", accuracy {acc:.3f}" + (
            f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        )
    if isinstance(total, int | float):
        tail += f", cost ${total:,.4f}"
    if isinstance(alone, int | float) and alone > 0 and isinstance(total, int | float):
        last = (block.get("models") or ["the last model"])[-1]
        tail += f"; {last} alone about ${alone:,.4f} ({1 - total / alone:.0%} saved)"
    lines.append(tail)
    share = block.get("share_escalated")
    if isinstance(share, int | float):
        past = block.get("escalated_past_stage") or 1
        lines.append(f"  escalated past stage {past}: {share:.1%} of {block.get('rows'):,} rows")
    return "\n".join(lines)
