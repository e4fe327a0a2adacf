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

from batchrun._report.html.browser import CHROMIUM, CHROMIUM_ARGS
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests.html_helpers import JOBS, SIM_FAULTS, in_thread, run_job, sentiment_config


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


@pytest.fixture(scope="session")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/compare.toml on 60 reviews: two prompts x two models, scored, no clear winner."""
    import batchrun

    out = tmp_path_factory.mktemp("html") / "compare"
    with SimThread(SimConfig(rpm=10**6, tpm=10**10)) as sim:
        run = in_thread(
            lambda: batchrun.run_job(
                JOBS / "compare.toml", out_dir=out, base_url=sim.base_url, limit=60, quiet=True
            )
        )
    assert run.variants is not None and len(run.variants) == 4
    return out


@pytest.fixture(scope="session")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/sentiment.toml through the simulated Batch API in shards of 100 rows: the
    second batch expires with 40 of its rows answered, its other 60 go in a fourth."""
    out = tmp_path_factory.mktemp("html") / "batch"
    batch = BatchConfig(rows_per_second=5_000, fates=("ok", "expire"), expire_fraction=0.4)
    with SimThread(SimConfig(batch=batch)) as sim:
        settings = sentiment_config(
            out,
            sim.base_url,
            mode="batch",
            poll_interval=0.02,
            batch_max_requests=100,
            quality_breaker=0,  # the three batches at once
        )
        result = run_job(settings)
    assert result.status == "complete" and result.summary["requests"]["succeeded"] == 300
    return out


@pytest.fixture(scope="session")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/sentiment.toml with a wrong key: every request refused (401), the run
    stopped on its endpoint before any answer."""
    out = tmp_path_factory.mktemp("html") / "failed"
    with SimThread(SimConfig(require_key="sk-the-right-key-000000000000")) as sim:
        result = run_job(sentiment_config(out, sim.base_url, auth="none"))
    assert result.status == "endpoint_down" and result.summary["requests"]["succeeded"] == 0
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
