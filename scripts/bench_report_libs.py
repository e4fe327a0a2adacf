"""Which plotting library for the HTML report: the same charts drawn by each candidate.

Why: the report must be one self-contained file (no network when viewed), small
(under 2 MB for a 100,000-row run) and fast to open (under 2 s in Chromium), and the
live page redraws it from fresh data every few seconds. This draws the report's
charts (four time series of 600 points, three 103-point latency curves) with each
candidate, its code inline, and prints each page's size and the median time from
navigation start to drawn in headless Chromium over 5 loads; "empty" is the same
page with the data but no library (the baseline). matplotlib draws SVG in Python
(its time is printed apart) and needs no script in the page.

The JavaScript libraries come from the npm registry, unpacked in one folder::

    mkdir -p /tmp/libs && cd /tmp/libs
    npm pack uplot@1.6.32 chart.js@4.6.1 vega@6.4.0 vega-lite@6.4.3 vega-embed@7.3.0 \\
        plotly.js-dist-min@4.1.2
    for f in *.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
    cd - && .venv/bin/pip install matplotlib   # optional: skipped when missing
    .venv/bin/python scripts/bench_report_libs.py /tmp/libs
"""

# ruff: noqa: E501  (the charts are JavaScript in strings)
from __future__ import annotations

import io
import json
import os
import random
import statistics
import sys
import time

from playwright.sync_api import sync_playwright

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from batchrun._report.html.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

HERE = sys.argv[1] if len(sys.argv) > 1 else "/tmp/libs"

rng = random.Random(1)
N = 600
xs = list(range(N))
series = {
    "requests/s": [800 + rng.gauss(0, 50) for _ in xs],
    "tokens/s": [90000 + rng.gauss(0, 5000) for _ in xs],
    "429s": [max(0, int(rng.gauss(2, 3))) for _ in xs],
    "in flight": [200 + rng.gauss(0, 20) for _ in xs],
}
qs = [i / 100 for i in range(101)] + [0.995, 0.999]
qs.sort()
cdf = {
    name: sorted(rng.lognormvariate(mu, 0.6) for _ in qs)
    for name, mu in (("wire", 6), ("wait", 2), ("ttft", 5))
}
DATA = {"x": xs, "series": series, "q": qs, "cdf": cdf}


def read(*parts: str) -> str:
    with open(os.path.join(HERE, *parts), encoding="utf-8") as f:
        return f.read()


def page(head: str, body: str, script: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        + head
        + "</head><body>"
        + body
        + "<script>const DATA="
        + json.dumps(DATA)
        + ";\n"
        + script
        + "</script></body></html>"
    )


DIVS = "".join(f"<div id='c{i}' style='width:800px;height:250px'></div>" for i in range(5))


def uplot() -> str:
    lib = read("uplot-1.6.32", "package", "dist", "uPlot.iife.min.js")
    css = read("uplot-1.6.32", "package", "dist", "uPlot.min.css")
    script = """
    const names = Object.keys(DATA.series);
    names.forEach((n, i) => new uPlot({width: 800, height: 250, scales: {x: {time: false}},
      series: [{}, {label: n, stroke: 'blue'}]}, [DATA.x, DATA.series[n]], document.getElementById('c' + i)));
    const cd = Object.keys(DATA.cdf);
    // CDF: x = ms per curve; uPlot needs one x, so a quantile-aligned plot (x = quantile)
    new uPlot({width: 800, height: 250, scales: {x: {time: false}}, series: [{}, ...cd.map(n => ({label: n, stroke: 'red'}))]},
      [DATA.q, ...cd.map(n => DATA.cdf[n])], document.getElementById('c4'));
    window.__done = performance.now();"""
    return page("<style>" + css + "</style><script>" + lib + "</script>", DIVS, script)


def chartjs() -> str:
    lib = read("chart.js-4.6.1", "package", "dist", "chart.umd.min.js")
    divs = "".join(
        f"<div style='width:800px;height:250px'><canvas id='c{i}'></canvas></div>" for i in range(5)
    )
    script = """
    Chart.defaults.animation = false;
    const names = Object.keys(DATA.series);
    names.forEach((n, i) => new Chart(document.getElementById('c' + i), {type: 'line',
      data: {labels: DATA.x, datasets: [{label: n, data: DATA.series[n], pointRadius: 0}]},
      options: {responsive: true, maintainAspectRatio: false}}));
    const cd = Object.keys(DATA.cdf);
    new Chart(document.getElementById('c4'), {type: 'line', data: {datasets: cd.map(n => ({label: n,
      data: DATA.cdf[n].map((v, i) => ({x: v, y: DATA.q[i]})), pointRadius: 0}))},
      options: {responsive: true, maintainAspectRatio: false, scales: {x: {type: 'logarithmic'}}}});
    window.__done = performance.now();"""
    return page("<script>" + lib + "</script>", divs, script)


def plotly() -> str:
    lib = read("plotly.js-dist-min-4.1.2", "package", "plotly.min.js")
    script = """
    const names = Object.keys(DATA.series);
    const ps = names.map((n, i) => Plotly.newPlot('c' + i, [{x: DATA.x, y: DATA.series[n], type: 'scattergl', mode: 'lines', name: n}], {width: 800, height: 250}));
    const cd = Object.keys(DATA.cdf);
    ps.push(Plotly.newPlot('c4', cd.map(n => ({x: DATA.cdf[n], y: DATA.q, mode: 'lines', name: n})), {width: 800, height: 250, xaxis: {type: 'log'}}));
    Promise.all(ps).then(() => { window.__done = performance.now(); });"""
    return page("<script>" + lib + "</script>", DIVS, script)


def vega() -> str:
    libs = "".join(
        "<script>" + read(*p) + "</script>"
        for p in (
            ("vega-6.4.0", "package", "build", "vega.min.js"),
            ("vega-lite-6.4.3", "package", "build", "vega-lite.min.js"),
            ("vega-embed-7.3.0", "package", "build", "vega-embed.min.js"),
        )
    )
    script = """
    const names = Object.keys(DATA.series);
    const ps = names.map((n, i) => vegaEmbed('#c' + i, {width: 750, height: 220, mark: 'line',
      data: {values: DATA.x.map((x, j) => ({x, y: DATA.series[n][j]}))},
      encoding: {x: {field: 'x', type: 'quantitative'}, y: {field: 'y', type: 'quantitative'}}}, {actions: false, renderer: 'canvas'}));
    const cd = Object.keys(DATA.cdf);
    ps.push(vegaEmbed('#c4', {width: 750, height: 220, mark: 'line',
      data: {values: cd.flatMap(n => DATA.cdf[n].map((v, j) => ({curve: n, ms: v, q: DATA.q[j]})))},
      encoding: {x: {field: 'ms', type: 'quantitative', scale: {type: 'log'}}, y: {field: 'q', type: 'quantitative'}, color: {field: 'curve'}}}, {actions: false, renderer: 'canvas'}));
    Promise.all(ps).then(() => { window.__done = performance.now(); });"""
    return page(libs, DIVS, script)


def matplotlib_svg() -> tuple[str, float]:
    t0 = time.perf_counter()
    import matplotlib  # noqa: I001

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    svgs = []
    for n, ys in series.items():
        fig, ax = plt.subplots(figsize=(8, 2.5))
        ax.plot(xs, ys, label=n)
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        plt.close(fig)
        svgs.append(buf.getvalue())
    fig, ax = plt.subplots(figsize=(8, 2.5))
    for n, vs in cdf.items():
        ax.plot(vs, qs, label=n)
    ax.set_xscale("log")
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svgs.append(buf.getvalue())
    python_s = time.perf_counter() - t0
    html = (
        "<!doctype html><html><head><meta charset='utf-8'></head><body>"
        + "".join(s[s.index("<svg") :] for s in svgs)
        + "<script>window.__done = performance.now();</script></body></html>"
    )
    return html, python_s


def empty() -> str:
    return page("", "", "window.__done = performance.now();")


def main() -> None:
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    pages = {"empty": (empty(), 0.0)}
    makers = {"uPlot": uplot, "Chart.js": chartjs, "Vega-Lite": vega, "Plotly": plotly}
    for name, make in makers.items():
        try:
            pages[name] = (make(), 0.0)
        except FileNotFoundError as exc:
            print(f"{name}: skipped ({exc.filename} missing)")
    try:
        pages["matplotlib SVG"] = matplotlib_svg()
    except ImportError:
        print("matplotlib SVG: skipped (pip install matplotlib)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        for name, (html, py_s) in pages.items():
            path = os.path.join(out, name.replace(" ", "_") + ".html")
            with open(path, "w", encoding="utf-8") as f:
                f.write(html)
            times = []
            for _ in range(5):
                pg = browser.new_page()
                errors = []
                pg.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                pg.goto("file://" + path)
                pg.wait_for_function("window.__done !== undefined", timeout=20000)
                times.append(pg.evaluate("window.__done"))
                pg.close()
            print(
                f"{name:16s} {len(html.encode()):>10,} B  rendered at {statistics.median(times):7.1f} ms"
                f" (median of 5)  python {py_s * 1000:.0f} ms  errors={errors[:1]}"
            )
        browser.close()


if __name__ == "__main__":
    sys.exit(main())
