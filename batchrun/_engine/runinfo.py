"""run.json: what a run directory was started with, and whether a resume may go on.

A run directory answers one input with one set of request-shaping settings (the
fingerprint, `Settings.fingerprint`). `resume_problems` says what differs between
run.json and this run, one readable line per change; `write_run_info` records the run;
`settings_of` reads back the settings it recorded (for `batchrun cancel DIR`);
`not_judged_answers` says which of the run's paid answers the quality breaker leaves
out (those paid for under other request settings, `batchrun._output.breaker`).

    >>> changes("job", {"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]})
    ['job.b[1]: 2 -> 3']
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import orjson

from batchrun._input.locations import recorded_location
from batchrun._output.journal import RUN_INFO, recorded_endpoint
from batchrun._output.quality import QualityCounts
from batchrun._output.summary import write_json_atomic
from batchrun._settings import Settings
from batchrun._values import DEFAULT_ENDPOINT
from batchrun._version import __version__
from batchrun.errors import RunDirError

VARIANT_SETTINGS = ("model", "prompts", "system")
"""In a job comparing variants, these may change between runs: a changed variant is
a new one (its rows' bodies change, so only they are sent; the others keep their
answers), which is how a comparison is refined."""


def resume_problems(
    path: str, settings: Settings, fingerprint: str, notes: list[str] | None = None
) -> tuple[list[str], bool, list[str]]:
    """(what differs from run.json at ``path`` and refuses the resume, whether it is
    the input itself, the variants that changed). No run.json: nothing differs. An
    unreadable one is a RunDirError unless ``force``. What changed and is allowed
    (an endpoint joined or left the pool, `pool_changes`) is added to ``notes``."""
    if not os.path.exists(path):
        return [], False, []
    try:
        with open(path, "rb") as f:
            before = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        if settings.force:
            return [], False, []
        raise RunDirError(f"{path}: unreadable ({exc}); use --force to start over it") from exc
    problems = []
    input_changed = before.get("input_fingerprint") != fingerprint
    if input_changed:
        problems.append(
            "the input file differs from the one this run started with "
            f"({before.get('input_path')})"
        )
    old_opts = _current_shape(before.get("request_options", {}))
    old_opts.setdefault("base_url", recorded_endpoint(before))
    compared = settings.has_variants and _had_variants(old_opts)
    variants: list[str] = []
    for key, found in _option_changes(old_opts, settings.fingerprint(), notes):
        (variants if compared and key in VARIANT_SETTINGS else problems).extend(found)
    return problems, input_changed, variants


def _option_changes(
    old: dict[str, Any], new: dict[str, Any], notes: list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """(setting, its changes) between two fingerprints; a pool's endpoints are compared
    by `pool_changes` (its notes go to ``notes``)."""
    pooled = "endpoints" in old or "endpoints" in new
    out = [
        (key, changes(f"option {key}", old.get(key), value))
        for key, value in new.items()
        if not (pooled and key in ("base_url", "endpoints"))
    ]
    if pooled:
        problems, joined = pool_changes(_pool_shape(old), _pool_shape(new))
        out.append(("endpoints", problems))
        if notes is not None:
            notes.extend(joined)
    return out


def _pool_shape(options: dict[str, Any]) -> dict[str, Any]:
    """The pool a fingerprint records: its ``endpoints``, or the one endpoint of a run
    without a pool (named as `batchrun._settings.Settings.pool` names it)."""
    pool = options.get("endpoints")
    if isinstance(pool, dict):
        return pool
    return {DEFAULT_ENDPOINT: {"endpoint": options.get("base_url"), "models": None}}


def pool_changes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(changes that refuse a resume, notes) between two pools' shapes
    (`batchrun._settings.Endpoint.shape`, by name). An endpoint that joins is a note:
    more quota for the rows left, nothing answered changes. One that left is a note
    too: the rows it answered keep their answers (each line names who answered), the
    rest go to the others. An endpoint whose name now means another endpoint, or
    other model names there, is a change: the same name would stand for two sources
    of answers.

    >>> pool_changes({"a": {"endpoint": "sim:a", "models": None}},
    ...              {"a": {"endpoint": "sim:a", "models": None},
    ...               "b": {"endpoint": "https://h/v1", "models": None}})
    ([], ['endpoint b (https://h/v1) joins the pool'])
    """
    problems: list[str] = []
    notes: list[str] = []
    for name, shape in new.items():
        before = old.get(name)
        if before is None:
            notes.append(f"endpoint {name} ({_endpoint_of(shape)}) joins the pool")
        else:
            problems.extend(changes(f"option endpoints.{name}", before, shape))
    notes.extend(
        f"endpoint {name} ({_endpoint_of(shape)}) left the pool: the rows it answered keep "
        "their answers"
        for name, shape in old.items()
        if name not in new
    )
    return problems, notes


def _endpoint_of(shape: Any) -> str:
    return str(shape.get("endpoint")) if isinstance(shape, dict) else "?"


def _had_variants(options: dict[str, Any]) -> bool:
    model = options.get("model")
    return bool(options.get("prompts")) or (isinstance(model, list) and len(model) > 1)


def not_judged_answers(
    path: str, settings: Settings, fingerprint: str, paid: QualityCounts
) -> QualityCounts:
    """Which of the run directory's paid answers (``paid``, the tally's) the quality
    breaker does not judge. The same input (``fingerprint``) and request options as
    run.json at ``path`` recorded: the answers it recorded as not judged. Another input
    or other options (a resume with ``--force``), or a run.json that cannot be read:
    all of them, since they answered other requests. No run.json: none (a new run)."""
    if not os.path.exists(path):
        return QualityCounts()
    try:
        with open(path, "rb") as f:
            before = orjson.loads(f.read())
        options = _current_shape(before.get("request_options"))
        options.setdefault("base_url", recorded_endpoint(before))
        same = before.get("input_fingerprint") == fingerprint and not any(
            found for _, found in _option_changes(options, settings.fingerprint())
        )
        recorded = (before.get("quality_breaker") or {}).get("not_judged") or {}
        if same:
            return QualityCounts.from_state(recorded)
    except (OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        pass
    return QualityCounts.from_state(paid.to_state())  # a copy


def _as_given(settings: Settings) -> Settings:
    """The settings as the user gave them: a run on object storage works on a local
    copy (`batchrun._output.mirror`), and run.json names the prefix, not the copy."""
    from batchrun._output.mirror import recorded_out_dir

    return replace(settings, out_dir=recorded_out_dir(settings.out_dir))


def write_run_info(
    path: str,
    settings: Settings,
    *,
    fingerprint: str,
    rows: int,
    outside_input: dict[str, int],
    changed_rows: int,
    not_judged: QualityCounts | None = None,
) -> None:
    info = {
        "batchrun_version": __version__,
        "input_path": recorded_location(settings.input_path),
        "input_fingerprint": fingerprint,
        "input_rows": rows,
        "request_options": _jsonable(settings.fingerprint()),
        # lines that count for nothing now: ids the input no longer has, and
        # answers to bodies that have changed since (after --force)
        "outside_input": outside_input,
        "changed_rows": changed_rows,
        "options": _jsonable(_as_given(settings).public_dict()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # answers paid for under earlier request settings: the breaker does not judge them
        "quality_breaker": {"not_judged": (not_judged or QualityCounts()).to_state()},
    }
    try:
        write_json_atomic(path, info)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc


def settings_of(run_dir: str) -> Settings:
    """The settings a run directory recorded, pointed at that directory."""
    try:
        with open(os.path.join(run_dir, RUN_INFO), "rb") as f:
            info = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{run_dir}: no readable run.json (is it a batchrun run?)") from exc
    return replace(Settings.from_public_dict(info.get("options") or {}), out_dir=run_dir)


def changes(where: str, old: Any, new: Any) -> list[str]:
    """What differs between two JSON values, one ``where: old -> new`` per change."""
    new = _jsonable(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in {**old, **new}:
            out.extend(changes(f"{where}.{key}", old.get(key), new.get(key)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(changes(f"{where}[{i}]", a, b))
        return out
    if old == new:
        return []
    return [f"{where}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _current_shape(options: Any) -> dict[str, Any]:
    """A fingerprint recorded by an older batchrun (a ``job`` dict holding the prompt,
    the body defaults and the response format) in today's shape, so a resume compares
    like with like. Scoring ([eval]) never shaped a request and is dropped."""
    if not isinstance(options, dict):
        return {}
    if "job" not in options:
        return options
    job = options.get("job") or {}
    prompt = job.get("prompt")
    return {
        "id_column": options.get("id_column"),
        "model": options.get("model"),
        "stream": options.get("stream"),
        "request": job.get("request") or {},
        "prompt": prompt.get("messages") if isinstance(prompt, dict) else prompt,
        "response_format": job.get("response_format"),
    }


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))


__all__ = [
    "changes",
    "not_judged_answers",
    "pool_changes",
    "resume_problems",
    "settings_of",
    "write_run_info",
]
