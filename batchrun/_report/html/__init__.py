"""A run as one self-contained HTML page, and the same page live while the run goes.

    >>> from batchrun._report.html import write_html_report, serve_run_dir
    >>> write_html_report("runs/a")                  # doctest: +SKIP
    'runs/a/report.html'
    >>> with serve_run_dir("runs/a") as url:         # doctest: +SKIP
    ...     print(url)                               # http://127.0.0.1:PORT/

Modules, in the order the data flows: `timeseries` (pure binning), `sample` (the
rows table), `data` (`build_page_data`: everything the page shows, aggregated),
`page` (`render_html`, `write_html_report`: one file, nothing fetched), `server`
(`serve_run_dir`: the live page), `cli` (`report_command`, `serve_command`);
`browser` says how tests and benchmarks open the page in headless Chromium.
"""

from __future__ import annotations

from batchrun._report.html.cli import report_command, serve_command
from batchrun._report.html.data import build_page_data
from batchrun._report.html.page import render_html, write_html_report
from batchrun._report.html.server import LiveServer, serve_run_dir

__all__ = [
    "LiveServer",
    "build_page_data",
    "render_html",
    "report_command",
    "serve_command",
    "serve_run_dir",
    "write_html_report",
]
