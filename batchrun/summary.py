"""summary.json: the run's totals, rewritten atomically (temp file + rename).

A reader (a person, `batchrun status`, a script polling a long run) always sees a
complete JSON document: either the previous one or the new one, never half.

    >>> write_json_atomic("runs/a/summary.json", {"requests": {}})  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun import __version__
from batchrun.tally import Tally


def write_json_atomic(path: str, data: Any) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def pending(self) -> int:
        return max(0, self.total - self.succeeded - self.failed)

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "invalid": self.invalid,
        }


def build_summary(
    *,
    status: str,
    input_path: str,
    counts: Counts,
    tally: Tally,
    elapsed_s: float,
    results_bytes: int,
    errors_bytes: int,
    pacing: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary document. ``journal`` lets a resume skip re-parsing old lines."""
    state = tally.to_state()
    summary: dict[str, Any] = {
        "status": status,
        "batchrun_version": __version__,
        "input": input_path,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "requests": counts.to_dict(),
        "usage": {**state["usage"], "missing": state["missing_usage"]},
        "by_model": state["by_model"],
        "retries": tally.retries,
        "rate_limited": tally.rate_limited,
        "error_codes": state["error_codes"],
        "elapsed_s": round(elapsed_s, 3),
        "pacing": pacing or {},
    }
    if extra:
        summary.update(extra)
    summary["journal"] = {
        "results_bytes": results_bytes,
        "errors_bytes": errors_bytes,
        "elapsed_s": round(elapsed_s, 3),
        "tally": state,
    }
    return summary
