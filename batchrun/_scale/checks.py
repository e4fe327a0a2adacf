"""What a cluster run checks before anything is sent anywhere, from its shards' scans.

Each shard checks its own rows in a task (`batchrun._scale.worker.scan_shard`: bad rows,
duplicate ids within the shard); the driver then checks what only the whole input can
tell (`check_scans`): that there is a valid row at all, that no id is in two shards,
that every model has a price under ``--max-cost`` (or a warning naming the nearest
known names), and that the [eval] reference column exists. `sharded_run_info` is the
run.json of such a run: the online run's shape, plus the shard plan.

    total, invalid = check_scans(settings, plan, scans, served=None, say=print)
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson

from batchrun._arrowbuf import from_array, scalar
from batchrun._input.locations import recorded_location
from batchrun._scale.shards import ShardPlan
from batchrun._scale.worker import ShardScan
from batchrun._settings import Settings
from batchrun._version import __version__
from batchrun.errors import ConfigError, InputError

__all__ = ["check_scans", "sharded_run_info"]


def check_scans(
    cfg: Settings,
    plan: ShardPlan,
    scans: list[ShardScan],
    *,
    served: Callable[[], list[str] | None] | None,
    say: Callable[[str], None],
) -> tuple[int, int]:
    """(valid rows, invalid rows) of the whole input; raises on what stops the run."""
    import pyarrow.compute as pc

    total = sum(s.total for s in scans)
    invalid = sum(s.invalid for s in scans)
    path = cfg.input_path
    if total == 0:
        if invalid:
            raise InputError(path, "0", f"no valid request: all {invalid} rows are invalid")
        raise InputError(path, "0", "the file holds no requests")
    ids = array("Q")
    owner = array("q")
    for s in scans:
        part = array("Q")
        part.frombytes(s.ids)
        ids.extend(part)
        owner.extend([s.index] * len(part))
    if len(ids) > 1:
        values = from_array(ids, "uint64")
        order = pc.sort_indices(values)
        ordered = pc.take(values, order)
        same = pc.equal(ordered[1:], ordered[:-1])
        if pc.any(same).as_py():
            at = int(pc.index(same, scalar(True, "bool")).as_py())
            a, b = int(order[at].as_py()), int(order[at + 1].as_py())
            shards = sorted({owner[a], owner[b]})
            spans = ", ".join(f"shard {i} ({plan.shards[i].span.describe()})" for i in shards)
            raise InputError(path, "0", f"duplicate custom_id: the same id is in {spans}")
    models = set().union(*(s.models for s in scans))
    from batchrun._cost.modelnames import ModelAdvice
    from batchrun._cost.prices import PriceBook

    advice = ModelAdvice(PriceBook.load(cfg.prices), served)
    if cfg.max_cost is not None:
        from batchrun._cost.budget import refuse_unpriced

        refuse_unpriced(models, advice)
    elif not cfg.quiet:
        for warning in advice.warnings(models):
            say(f"batchrun: warning: {warning}")
    spec = cfg.eval
    columns = [s.columns for s in scans if s.columns is not None]
    if spec is not None and columns:
        seen = set().union(*columns)
        if spec.reference_column not in seen:
            raise ConfigError(
                f"[eval] reference_column {spec.reference_column!r} is not a column of "
                f"{path} (columns: {', '.join(sorted(seen)[:20])})"
            )
    return total, invalid


def sharded_run_info(
    cfg: Settings, plan: ShardPlan, scans: list[ShardScan], *, fingerprint: str, total: int
) -> dict[str, Any]:
    """run.json of a cluster run (naming the prefix of a run on object storage, not
    its local copy)."""
    from dataclasses import replace

    from batchrun._output.mirror import recorded_out_dir

    given = replace(cfg, out_dir=recorded_out_dir(cfg.out_dir))
    return {
        "batchrun_version": __version__,
        "input_path": recorded_location(cfg.input_path),
        "input_fingerprint": fingerprint,
        "input_rows": total,
        "request_options": orjson.loads(orjson.dumps(cfg.fingerprint(), default=str)),
        "options": orjson.loads(orjson.dumps(given.public_dict(), default=str)),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sharded": {
            "shards": len(plan.shards),
            "shard_rows": plan.shard_rows,
            "ray": cfg.ray,
            "rows_by_shard": [s.total for s in scans],
        },
    }
