"""Helpers for the HTML report tests (tests/conftest_html.py holds their fixtures)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from batchrun._api import make_runner, settings_for
from batchrun._settings import Settings
from batchrun._values import Quota

JOBS = Path(__file__).resolve().parent.parent / "jobs"
# a few rows fail for good (400), some are refused once (429) then answered
SIM_FAULTS = {"blender": (400,), "kitchen knife": (429,)}


def sentiment_config(out_dir: Path, base_url: str, **changes: Any) -> Settings:
    """jobs/sentiment.toml (300 reviews, JSON schema, [eval]) against ``base_url``."""
    return settings_for(
        out_dir=out_dir,
        job=JOBS / "sentiment.toml",
        given={"base_url": base_url, "rpm": Quota(), "tpm": Quota(), "quiet": True, **changes},
    )


def run_job(settings: Settings) -> Any:
    """Run as the CLI does (cost, results.parquet, evaluation), without its argv.

    In a thread of its own: a session fixture may first be asked for by a test that
    already drives the browser, whose playwright loop runs in the main thread."""
    return in_thread(lambda: anyio.run(make_runner(settings, None).run))


def in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` in a new thread (its own event loop), its result or its error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # raised again in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
