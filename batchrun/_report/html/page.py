"""One self-contained HTML file: styles, scripts and data inline, nothing fetched.

The page is a skeleton of sections that `assets/report.js` fills from the JSON data
embedded in it, so the file you mail, the CI artifact and the live page all render
through the same code. Charts are drawn by uPlot (MIT; `vendor/`, 51 KB), chosen by
measurement (docs/DESIGN.md, "The HTML report"). A Content-Security-Policy forbids
every network request (``connect-src 'none'``; the live page allows only its own
origin, for its data): a page opened from an email cannot call home.

    >>> html = render_html(build_page_data("runs/a"))     # doctest: +SKIP
    >>> write_html_report("runs/a")                       # doctest: +SKIP
    'runs/a/report.html'
"""

from __future__ import annotations

import html
import os
from functools import cache
from importlib import resources
from typing import Any

import orjson

from batchrun._output.summary import atomic_file
from batchrun._redact import scrub
from batchrun.errors import RunDirError

REPORT_FILE = "report.html"

_SKELETON = """
<header>
  <h1 id="title">batchrun report</h1>
  <div class="meta"><span id="meta"></span><span id="live" class="live" hidden></span></div>
  <div id="headline" class="headline" hidden></div>
</header>
<noscript><p class="note">This report draws its tables and charts with JavaScript.</p></noscript>
<main>
  <section id="comparison" hidden><h2>Comparison of the variants</h2>
    <div id="comparison-body"></div></section>
  <section id="glance"><h2>The run at a glance</h2>
    <div id="glance-cards" class="cards"></div><div id="glance-progress"></div>
    <div id="glance-endpoints"></div>
    <div id="glance-models" class="grid2"></div>
    <details id="settings-section" open><summary>Settings that shaped the run</summary>
      <div id="settings"></div></details>
  </section>
  <section id="batches" hidden><h2>Batches (Batch API)</h2><div id="batches-body"></div></section>
  <section id="timeline"><h2>Over time</h2>
    <p class="note" id="timeline-note"></p>
    <div class="grid2">
      <div class="chart" id="ts-requests"></div><div class="chart" id="ts-tokens"></div>
      <div class="chart" id="ts-retries"></div><div class="chart" id="ts-inflight"></div>
    </div>
    <div class="chart" id="ts-endpoints" hidden></div>
  </section>
  <section id="latency"><h2>Latency, waiting and time to first token</h2>
    <div id="latency-table"></div><div class="chart" id="latency-chart"></div>
  </section>
  <section id="quality"><h2>Answer quality</h2><div id="quality-body"></div></section>
  <section id="cascade" hidden><h2>Cascade</h2><div id="cascade-body"></div>
    <div class="grid2"><div class="chart" id="cascade-curve"></div></div></section>
  <section id="evaluation"><h2 id="eval-title">Evaluation</h2><div id="eval-body"></div>
    <div class="grid2"><div class="chart" id="eval-reliability"></div></div></section>
  <section id="errors"><h2>Errors by code</h2><div id="errors-body"></div></section>
  <section id="sample"><h2>Sample of results</h2><div id="sample-body"></div></section>
</main>
"""


@cache
def _asset(name: str) -> str:
    """A file shipped in the package (assets/ or vendor/), read once."""
    return resources.files("batchrun._report.html").joinpath(name).read_text(encoding="utf-8")


def page_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: ``<`` is escaped as ``\\u003c``,
    so no string in the data (an answer saying ``</script>``) can close the element.
    Passed through the key scrubber like every other byte batchrun writes."""
    data = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    return scrub(data).replace(b"<", b"\\u003c").decode("utf-8")


def csp(live: bool) -> str:
    """The page's Content-Security-Policy: inline code only, no network (but the live
    page's own data URL)."""
    connect = "'self'" if live else "'none'"
    return (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        f"img-src data:; connect-src {connect}; base-uri 'none'; form-action 'none'"
    )


def render_html(data: dict[str, Any], *, live: dict[str, Any] | None = None) -> str:
    """The report page for `build_page_data`'s ``data``, as one HTML string.

    ``live``: ``{"url": "data.json?token=...", "poll_s": 3}`` makes the page fetch fresh data
    from that URL every ``poll_s`` seconds and draw itself again (`serve_run_dir`).
    """
    run = data.get("run") or {}
    title = html.escape(f"batchrun report: {run.get('name', '')}")
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f'<meta http-equiv="Content-Security-Policy" content="{csp(live is not None)}">',
        "<meta name='referrer' content='no-referrer'>",
        f"<title>{title}</title>",
        "<style>",
        _asset("vendor/uPlot.min.css"),
        _asset("assets/report.css"),
        "</style></head><body>",
        _SKELETON,
        '<script id="batchrun-data" type="application/json">',
        page_json(data),
        "</script>",
    ]
    if live is not None:
        parts += ['<script id="batchrun-live" type="application/json">']
        parts += [page_json(live), "</script>"]
    parts += ["<script>", _asset("vendor/uPlot.iife.min.js"), "</script>"]
    parts += ["<script>", _asset("assets/report.js"), "</script>", "</body></html>\n"]
    return "\n".join(parts)


def write_html_report(run_dir: str, path: str | None = None) -> str:
    """Write the report for ``run_dir`` (default ``RUN_DIR/report.html``) atomically:
    a reader, or a browser reloading it, sees the old file or the new, never half.
    Returns the path written; a path that cannot be written is a `RunDirError`."""
    from batchrun._output.store import is_object_storage
    from batchrun._report.html.data import build_page_data

    if is_object_storage(run_dir):  # read through a snapshot; by default put beside the run
        from batchrun._output.rundir import RunDir
        from batchrun._output.store import open_store

        location = run_dir.rstrip("/")
        if path is None:
            page = render_html(build_page_data(RunDir.open(location).path)).encode("utf-8")
            open_store(location).put(REPORT_FILE, page)
            return f"{location}/{REPORT_FILE}"
        run_dir = RunDir.open(location).path
    path = path or os.path.join(run_dir, REPORT_FILE)
    page = render_html(build_page_data(run_dir)).encode("utf-8")
    try:
        with atomic_file(path, ".html") as tmp, open(tmp, "wb") as f:
            f.write(page)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write the report ({exc.strerror or exc})") from exc
    return path
