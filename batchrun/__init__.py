"""batchrun: run large batches of OpenAI-compatible chat completions, from Python or
the command line, fast, within quotas and budgets, and without paying twice.

    import batchrun
    run = batchrun.run(rows, "runs/labels", model="gpt-4o-mini",
                       prompt="Label the sentiment: {text}", base_url="sim")
    run.status, run.to_pandas()

The names in ``__all__`` (and `batchrun.errors`) are the public API; every module
below them is private and may change.

    $ batchrun run requests.jsonl -o runs/first --base-url sim
    $ batchrun status runs/first
"""

from __future__ import annotations

from batchrun import errors
from batchrun._api import Run, RunStream, arun, estimate, open, run, run_job, stream
from batchrun._version import __version__
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.errors import BatchrunError, BudgetExceeded, ConfigError, InputError, RunDirError
from batchrun.models import Outcome
from batchrun.settings import Settings
from batchrun.values import (
    Cascade,
    Confidence,
    Endpoint,
    Evaluation,
    Prices,
    Quota,
    ResponseFormat,
)

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
    "run",
    "run_job",
    "stream",
]
