"""How batchrun opens its page in a headless browser (tests, benchmarks, screenshots).

Debian's Chromium, driven by playwright, never a browser playwright downloads: the
machines batchrun is tested on reach package registries only. The flags keep a
headless start quiet and offline: no sandbox (root in CI), no GPU, and none of the
background connections Chromium would otherwise try (and fail) to make.

    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
"""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("BATCHRUN_CHROMIUM", "/usr/bin/chromium")
"""The browser binary (Debian's package ``chromium``); BATCHRUN_CHROMIUM overrides it."""
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
