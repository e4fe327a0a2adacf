"""A few answers to look at after a pilot, before paying for the rest.

`Examples.observe` is handed every joined output row by the results.parquet pass; it
keeps the first answered rows (for variants, every variant of those rows): an excerpt
of the input (the columns the prompt reads, or a request's last user message), the
answer, and its parsed fields when the job has a schema.

    examples = Examples(settings)
    write_results_parquet(settings, path, observe=examples.observe)
    print(format_examples(examples.rows))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchrun._models import Outcome
from batchrun._settings import Settings

SHOWN_ROWS = 3
EXCERPT = 120
ANSWER = 240


class Examples:
    def __init__(self, settings: Settings, rows: int = SHOWN_ROWS) -> None:
        self.wanted = rows
        self.rows: list[dict[str, Any]] = []
        self._seen: set[int] = set()
        self._columns = _prompt_columns(settings)
        self._hidden = {
            settings.id_column,
            settings.eval.reference_column if settings.eval else None,
        }

    def observe(
        self,
        obj: Any,
        values: Mapping[str, Any],
        parsed: Mapping[str, Any] | None,
        record: Outcome | None,
    ) -> None:
        if values.get("status") != "succeeded":
            return
        row = values["row"]
        if row not in self._seen:
            if len(self._seen) >= self.wanted:
                return
            self._seen.add(row)
        self.rows.append(
            {
                "custom_id": values["custom_id"],
                "variant": values.get("variant"),
                "input": self._excerpt(obj),
                "answer": _cut(values.get("content"), ANSWER),
                "parsed": dict(parsed) if parsed else None,
            }
        )

    def _excerpt(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            return {}
        if "messages" in obj or "body" in obj:  # a request row: its last user message
            body = obj["body"] if isinstance(obj.get("body"), dict) else obj
            for message in reversed(body.get("messages") or []):
                if isinstance(message, dict) and message.get("role") == "user":
                    return {"user": _cut(message.get("content"), EXCERPT)}
            return {}
        names = self._columns or [k for k in obj if k not in self._hidden]
        return {k: _cut(obj.get(k), EXCERPT) for k in names[:4] if k in obj}


def _prompt_columns(settings: Settings) -> list[str]:
    """The columns the prompt(s) read, in order (empty when unknown)."""
    from batchrun._input.variants import plan_variants
    from batchrun._templating.text import template_for

    seen: dict[str, None] = {}
    for chosen in [v.settings for v in plan_variants(settings)] or [settings]:
        messages = chosen.template_messages()
        if messages is None:
            continue
        try:
            template = template_for(messages, chosen)
        except Exception:  # a template the run could not use: show every column
            return []
        for name in template.placeholders:
            seen.setdefault(name)
    return list(seen)


def _cut(value: Any, most: int) -> Any:
    if isinstance(value, str):
        value = " ".join(value.split())
        return value if len(value) <= most else value[: most - 1] + "…"
    return value


def format_examples(rows: list[dict[str, Any]]) -> str:
    """The examples as text, one block per answer."""
    out = []
    for example in rows:
        head = example["custom_id"]
        out.append(head)
        for name, value in example["input"].items():
            out.append(f"  {name}: {value}")
        if example.get("parsed"):
            fields = ", ".join(f"{k}={_cut(v, 60)!r}" for k, v in example["parsed"].items())
            out.append(f"  -> {fields}")
        else:
            out.append(f"  -> {example['answer']}")
    return "\n".join(out)


__all__ = ["Examples", "format_examples"]
