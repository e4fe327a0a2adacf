"""Helpers for the HTML report tests (tests/conftest_html.py holds their fixtures)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from batchrun.config import RunConfig
from batchrun.jobfile import load_job

JOBS = Path(__file__).resolve().parent.parent / "jobs"
# a few rows fail for good (400), some are refused once (429) then answered
SIM_FAULTS = {"blender": (400,), "kitchen knife": (429,)}


def sentiment_config(out_dir: Path, base_url: str, **changes: Any) -> RunConfig:
    """jobs/sentiment.toml (300 reviews, JSON schema, [eval]) against ``base_url``."""
    job = load_job(JOBS / "sentiment.toml")
    cfg = RunConfig(**job.to_run_options())
    return replace(
        cfg, base_url=base_url, out_dir=str(out_dir), rpm=None, tpm=None, quiet=True, **changes
    )


def run_job(cfg: RunConfig) -> Any:
    """Run as the CLI does (cost, results.parquet, evaluation), without its argv."""
    from batchrun.commands import run_hooks
    from batchrun.runner import Runner

    return anyio.run(Runner(cfg, hooks=run_hooks(cfg)).run)
