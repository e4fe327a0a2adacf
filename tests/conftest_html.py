"""Fixtures for the HTML report tests: a real run, and one headless Chromium.

    pytest_plugins = ["tests.conftest_html"]   # in a test module

The browser is Debian's /usr/bin/chromium driven by playwright (no browser download:
scripts/test installs the Debian package when it runs as root). Where either is
missing the browser tests skip, saying what to install, unless
BATCHRUN_BROWSER_REQUIRED=1 (scripts/test sets it when it installed the browser
itself, and CI runs as root), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrun.report.html.browser import CHROMIUM, CHROMIUM_ARGS
from batchrun.sim import SimConfig, SimThread
from tests.html_helpers import SIM_FAULTS, run_job, sentiment_config


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished dataset run with answers, failures, 429s and an evaluation."""
    out = tmp_path_factory.mktemp("html") / "sentiment"
    # quotas far above the run's rate: their headers end the pacer's slow start at once
    config = SimConfig(
        latency_ms=8, jitter_ms=6, retry_after=0.05, fail_first=SIM_FAULTS, rpm=10**6, tpm=10**10
    )
    with SimThread(config) as sim:
        result = run_job(sentiment_config(out, sim.base_url, concurrency=16))
    assert result.status == "complete" and result.summary["requests"]["failed"] > 0
    return out


def _launch() -> tuple[Any, Any]:
    """(playwright, browser), or skip / fail saying what is missing."""
    required = os.environ.get("BATCHRUN_BROWSER_REQUIRED") == "1"
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (scripts/test installs the test extra)"
    if why is None and not os.access(CHROMIUM, os.X_OK):
        why = f"{CHROMIUM} is missing (as root: apt-get install chromium chromium-driver)"
    if why is not None:
        if required:
            pytest.fail(f"browser tests required but {why}")
        pytest.skip(f"browser tests skipped: {why}")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
    except Exception:
        pw.stop()
        raise
    return pw, browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module (a start costs about a second)."""
    pw, chromium = _launch()
    try:
        yield chromium
    finally:
        chromium.close()
        pw.stop()
