"""batchrun: run large batches of OpenAI-compatible chat completions, from Python or
the command line, fast, within quotas and budgets, and without paying twice.

    import batchrun
    run = batchrun.run(rows, "runs/labels", model="gpt-4o-mini",
                       prompt="Label the sentiment: {text}", base_url="sim")
    run.status, run.to_pandas()

The names in ``__all__`` are the public API, as httpx does it: the functions and
classes re-exported here, and the public modules `batchrun.errors` (the error tree),
`batchrun.ray` (Ray Data processors; imports Ray when first used) and `batchrun.sim`
(the simulator, for offline rehearsals and tests). Every other module's name starts
with an underscore (``batchrun._engine``, ``batchrun._settings``, ...): private, free to
change between releases.

    $ batchrun run requests.jsonl -o runs/first --base-url sim
    $ batchrun status runs/first
"""

from __future__ import annotations

from batchrun import errors
from batchrun._api import Run, RunStream, arun, estimate, open, run, run_job, stream
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._models import Outcome
from batchrun._settings import Settings
from batchrun._values import (
    Cascade,
    Confidence,
    Endpoint,
    Evaluation,
    Prices,
    Quota,
    ResponseFormat,
)
from batchrun._version import __version__
from batchrun.errors import BatchrunError, BudgetExceeded, ConfigError, InputError, RunDirError


def __getattr__(name: str) -> object:
    """`batchrun.ray` and `batchrun.sim` on first use (neither is imported by
    ``import batchrun``: Ray is heavy, and a run needs the simulator only when asked)."""
    if name in ("ray", "sim"):
        import importlib

        return importlib.import_module(f"batchrun.{name}")
    raise AttributeError(f"module 'batchrun' has no attribute {name!r}")


__all__ = [
    "BatchrunError",
    "BudgetExceeded",
    "Cascade",
    "Confidence",
    "ConfigError",
    "Endpoint",
    "Evaluation",
    "InputError",
    "Outcome",
    "Prices",
    "Quota",
    "ResponseFormat",
    "Run",
    "RunDirError",
    "RunHooks",
    "RunState",
    "RunStream",
    "Settings",
    "__version__",
    "arun",
    "errors",
    "estimate",
    "open",
    "ray",
    "run",
    "run_job",
    "sim",
    "stream",
]
