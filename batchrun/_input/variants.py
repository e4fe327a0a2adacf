"""Variants: every row run once per model and per named prompt, to compare them.

A job names several models (``model = ["gpt-4o-mini", "gpt-4.1-mini"]``) and/or named
prompts (``[prompts.short]``, ``[prompts.detailed]``); its variants are their cross
product, each with a readable name: the model (models only), the prompt's name
(prompts only), or ``prompt/model`` (both). A row fans out into one request per
variant, ``<id>@<variant>``, so every answer keeps a stable id: a rerun finds the
answers it has, and changing one prompt leaves the other variants' answers valid (an
answer is tied to the body it answered, see `batchrun._ids.body_hash`).

    >>> s = Settings(input="x.jsonl", model=("a", "b"), prompts={"p": {"user": "{t}"}})
    >>> [v.name for v in plan_variants(s)]
    ['p/a', 'p/b']
    >>> split_variant("r7@p/b", ("p/a", "p/b"))
    ('r7', 'p/b')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchrun._input.sources import RowMapper
from batchrun._models import Request
from batchrun._settings import Settings
from batchrun.errors import ConfigError

SEPARATOR = "@"


@dataclass(frozen=True)
class Variant:
    """One way to run every row: its name, model and prompt, and the settings that
    build its bodies (the job's, with this model and prompt in place)."""

    name: str
    model: str | None
    prompt: str | None
    """The prompt variant's name (None: the job's one prompt)."""
    settings: Settings


def plan_variants(settings: Settings) -> list[Variant]:
    """The job's variants, in a stable order (prompts as given, then models); [] when
    every row runs once."""
    if not settings.has_variants:
        return []
    models: Sequence[str | None] = settings.models or (None,)
    prompts: list[tuple[str | None, Mapping[str, Any] | None]] = (
        list(settings.prompts.items()) if settings.prompts else [(None, None)]
    )
    if settings.prompts and (settings.prompt is not None or settings.messages is not None):
        raise ConfigError(
            "give the prompt in [prompt] (user/messages) or named variants in "
            "[prompts.NAME], not both ([prompt] system is shared by the variants)"
        )
    out = []
    for prompt_name, spec in prompts:
        for model in models:
            name = "/".join(p for p in (prompt_name, model if len(models) > 1 else None) if p)
            changes: dict[str, Any] = {"model": model, "prompts": {}}
            if spec is not None:
                changes["messages"] = spec.get("messages")
                changes["prompt"] = spec.get("user")
                changes["system"] = spec.get("system", settings.system)
            out.append(
                Variant(name or str(model), model, prompt_name, replace(settings, **changes))
            )
    return out


def variant_id(custom_id: str, variant: str) -> str:
    return f"{custom_id}{SEPARATOR}{variant}"


def split_variant(custom_id: str, names: Sequence[str]) -> tuple[str, str | None]:
    """(the row's own id, the variant) of a result id; (id, None) when it names none
    of ``names``."""
    base, sep, name = custom_id.rpartition(SEPARATOR)
    if sep and name in names:
        return base, name
    for candidate in names:  # a variant name holding '@' is refused, but an old id may
        suffix = SEPARATOR + candidate
        if custom_id.endswith(suffix):
            return custom_id[: -len(suffix)], candidate
    return custom_id, None


def fan_out(mapper_for: Callable[[Settings], RowMapper], variants: Sequence[Variant]) -> RowMapper:
    """A row mapper giving one request per variant, each built by that variant's own
    mapper (``mapper_for(variant.settings)``). A row one variant cannot use (a column
    only its template reads is missing) is a bad row for all: the comparison stays
    on the same rows."""
    mappers = [(v.name, mapper_for(v.settings)) for v in variants]

    def mapper(obj: Any, row: int, where: str, *, name: str | None = None) -> list[Request]:
        out = []
        for variant, one in mappers:
            req = one(obj, row, where, name=name)
            assert isinstance(req, Request)
            out.append(replace(req, custom_id=variant_id(req.custom_id, variant), row=row))
        return out

    return mapper


def with_model(mapper: RowMapper, model: str) -> RowMapper:
    """Request files: the variant's model replaces the one each body names."""

    def mapper_for_model(obj: Any, row: int, where: str, *, name: str | None = None) -> Request:
        req = mapper(obj, row, where, name=name)
        assert isinstance(req, Request)
        return replace(req, body={**req.body, "model": model})

    return mapper_for_model


__all__ = ["Variant", "fan_out", "plan_variants", "split_variant", "variant_id", "with_model"]
