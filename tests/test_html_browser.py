"""The HTML report in a real browser: headless Debian Chromium, driven by playwright.

Each section must show the run's own numbers (compared with summary.json and the
files), with no JavaScript error in the console and no network request; the live
page must follow a real run against the simulator. One browser per module.

BATCHRUN_SCREENSHOT=docs/report.png saves the static page's screenshot there (the
README's picture); otherwise it goes to the test's temporary directory.
BATCHRUN_SCREENSHOTS=DIR saves the whole pages of the comparison, Batch API and failed
runs there (compare.png, batch.png, failed.png), to look at; each is checked at 1,400
px: no sideways scroll, no console error.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchrun._report.html import serve_run_dir, write_html_report
from batchrun._report.tables import format_usd
from batchrun._report.text import format_status, status_report
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests.html_helpers import run_job, sentiment_config

pytest_plugins = ["tests.conftest_html"]  # browser and the runs it shows


class Page:
    """A browser tab that records console errors, page errors and requests."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on(
            "console", lambda m: m.type in ("error", "warning") and self.errors.append(m.text)
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def text(self, key: str) -> str:
        return str(self.page.locator(f'[data-k="{key}"]').first.inner_text()).strip()

    def texts(self) -> dict[str, str]:
        """Every figure on the page by its data-k key, read in one round trip."""
        return dict(
            self.page.evaluate(
                "() => Object.fromEntries([...document.querySelectorAll('[data-k]')]"
                ".reverse().map(e => [e.dataset.k, e.innerText.trim()]))"
            )
        )

    def wait_for(self, expression: str, timeout: float = 10.0) -> None:
        """Poll ``expression`` from here: wait_for_function evaluates its predicate
        from a string, which the page's Content-Security-Policy (rightly) forbids."""
        deadline = time.monotonic() + timeout
        while not self.page.evaluate(f"() => Boolean({expression})"):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.02)

    def wait_rendered(self, renders: int = 1) -> None:
        self.wait_for(f"window.batchrunReport && window.batchrunReport.renders >= {renders}")


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    try:
        yield page
    finally:
        page.page.close()


def n(value: int) -> str:
    return f"{value:,}"


def test_the_report_file_shows_the_runs_numbers(
    tab: Page, sentiment_run: Path, tmp_path: Path
) -> None:
    summary = json.loads((sentiment_run / "summary.json").read_text())
    path = write_html_report(str(sentiment_run), str(tmp_path / "report.html"))
    started = time.perf_counter()
    tab.page.goto(Path(path).as_uri())
    tab.wait_rendered()
    render_s = time.perf_counter() - started
    k = tab.texts()

    req = summary["requests"]
    assert k["requests.succeeded"] == n(req["succeeded"])
    assert k["requests.failed"] == n(req["failed"]) == "18"
    assert k["requests.pending"] == "0"
    assert k["requests.total"] == "300"
    assert k["usage.total_tokens"] == n(summary["usage"]["total_tokens"])
    assert k["cost.total"] == format_usd(summary["cost_usd"]["total"])
    assert k["cost.batch_total"] == format_usd(summary["batch_api_cost_usd"]["total"])
    assert k["cost.model.gpt-4o-mini"] == format_usd(summary["cost_usd"]["total"])
    assert k["retries"] == n(summary["retries"])
    assert k["rate_limited"] == n(summary["rate_limited"])
    assert k["run.status"] == "complete"
    assert "300 of 300 rows finished" in k["progress"]
    settings = tab.page.locator("#settings").inner_text()
    assert "concurrency\t16" in settings and "eval\tlabel vs json_field on sentiment" in settings

    # time series: four charts whose data add up to the lines
    charts = tab.page.evaluate(
        "Object.fromEntries(Object.entries(window.batchrunReport.charts).map("
        "([k, u]) => [k, u.data.slice(1).map(s => s.reduce((a, b) => a + b, 0))]))"
    )
    assert set(charts) == {"ts-requests", "ts-tokens", "ts-retries", "ts-inflight", "latency-chart"}
    assert charts["ts-requests"] == [300, 18]  # finished, failed
    assert charts["ts-tokens"] == [summary["usage"]["total_tokens"]]
    assert charts["ts-retries"] == [summary["rate_limited"], summary["retries"]]
    assert tab.page.locator("#timeline canvas").count() >= 4

    # latency: the text report's percentiles
    from batchrun._report.text import status_report

    latency = status_report(str(sentiment_run))["latency_ms"]
    assert k["latency.wire.count"] == "282"
    assert k["latency.wire.p95"] == f"{latency['p95']:,.0f} ms"
    assert k["latency.wire.max"] == f"{latency['max']:,.0f} ms"
    assert "%" in k["latency.wait_share"]

    # quality, evaluation: confusion heat map and per-label table
    assert k["quality.gpt-4o-mini.ok"] == "282"
    ev = summary["eval"]
    assert k["eval.accuracy"] == f"{ev['accuracy'] * 100:.1f}%"
    for ref, row in ev["confusion"].items():
        for pred, count in row.items():
            assert k[f"confusion.{ref}.{pred}"] == n(count)
    for label, stats in ev["per_label"].items():
        assert k[f"per_label.{label}.precision"] == f"{stats['precision']:.3f}"
        assert k[f"per_label.{label}.recall"] == f"{stats['recall']:.3f}"
        assert k[f"per_label.{label}.f1"] == f"{stats['f1']:.3f}"
        assert k[f"per_label.{label}.support"] == n(stats["support"])
    assert tab.page.locator("#comparison").is_hidden()  # one variant: no comparison
    assert tab.text("headline") == data_headline(sentiment_run)["title"]

    # errors by code, with examples from errors.jsonl
    assert k["errors.http_400"] == "18"
    examples = tab.page.locator('#errors tr[data-code="http_400"]').inner_text()
    errors = (sentiment_run / "errors.jsonl").read_text().splitlines()
    failed_ids = {json.loads(line)["custom_id"] for line in errors}
    assert any(cid in examples for cid in failed_ids)

    # the sample table, filtered in the page
    table = pq.read_table(sentiment_run / "results.parquet").to_pylist()
    visible = tab.page.locator("#sample-table tbody tr:visible")
    assert visible.count() == 200
    tab.page.select_option('select[data-filter="status"]', "failed")
    assert visible.count() == 18
    assert {r.get_attribute("data-status") for r in visible.all()} == {"failed"}
    tab.page.select_option('select[data-filter="status"]', "")
    tab.page.select_option('select[data-filter="correct"]', "yes")
    right = visible.count()
    assert 0 < right < 200 and visible.first.locator("td.yes").count() == 1
    tab.page.select_option('select[data-filter="label"]', "neutral")
    neutral = {r["custom_id"] for r in table if r["label"] == "neutral"}
    shown = [r.locator("td").first.inner_text() for r in visible.all()]
    assert shown and set(shown) <= neutral
    assert f"showing {len(shown)} of 200" in tab.page.locator("#sample-count").inner_text()

    tab.page.select_option('select[data-filter="label"]', "")
    tab.page.select_option('select[data-filter="correct"]', "")
    readme = os.environ.get("BATCHRUN_SCREENSHOT")  # the whole page for docs/report.png
    tab.page.screenshot(path=readme or str(tmp_path / "report.png"), full_page=bool(readme))
    assert tab.errors == []
    assert tab.requests == [Path(path).as_uri()]  # the file itself, nothing else
    assert render_s < 2.0


def test_variants_are_compared_and_halves_round_as_the_text_report(
    tab: Page, sentiment_run: Path, tmp_path: Path
) -> None:
    from batchrun._report.html import build_page_data, render_html

    data = build_page_data(str(sentiment_run))
    data["variants"] = [
        {"name": "short prompt", "model": "gpt-4o-mini", "accuracy": 0.61, "cost_usd": 0.0071},
        {"name": "long prompt", "model": "gpt-4o-mini", "accuracy": 0.74, "cost_usd": 0.0125},
    ]
    # exact halves round as Python's format does (to even), as `batchrun status` shows
    data["latency"]["wire"] |= {"p95": 40.5, "p99": 41.5}
    page = tmp_path / "variants.html"
    page.write_text(render_html(data))
    tab.page.goto(page.as_uri())
    tab.wait_rendered()
    assert (tab.text("latency.wire.p95"), tab.text("latency.wire.p99")) == ("40 ms", "42 ms")
    assert tab.page.locator("#comparison").is_visible()
    assert tab.text("variant.long prompt.accuracy") == "74.0%"
    assert tab.text("variant.short prompt.cost_usd") == format_usd(0.0071)
    assert tab.errors == []


def data_headline(run_dir: Path) -> dict[str, Any]:
    from batchrun._report.html import build_page_data

    line: dict[str, Any] = build_page_data(str(run_dir))["headline"]
    return line


@pytest.fixture
def wide(browser: Any) -> Iterator[Page]:
    """A tab 1,400 px wide: the width at which the page must not scroll sideways."""
    page = Page(browser)
    page.page.set_viewport_size({"width": 1400, "height": 900})
    try:
        yield page
    finally:
        page.page.close()


def open_report(tab: Page, run_dir: Path, tmp_path: Path) -> None:
    """Write ``run_dir``'s report, open it, and check it fits 1,400 px."""
    path = write_html_report(str(run_dir), str(tmp_path / f"{run_dir.name}.html"))
    tab.page.goto(Path(path).as_uri())
    tab.wait_rendered()
    no_sideways_scroll(tab)


def no_sideways_scroll(tab: Page) -> None:
    width = tab.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the page is {width} px wide at 1,400 px"


def looked_at(tab: Page, tmp_path: Path, name: str) -> None:
    """The whole page's screenshot (in BATCHRUN_SCREENSHOTS, a folder, when set: to look
    at), and no error in its console."""
    folder = Path(os.environ.get("BATCHRUN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
    assert tab.errors == []


def test_a_comparison_report_leads_with_the_comparison(
    wide: Page, compare_run: Path, tmp_path: Path
) -> None:
    summary = json.loads((compare_run / "summary.json").read_text())
    variants, block = summary["variants"], summary["comparison"]
    tab = wide
    open_report(tab, compare_run, tmp_path)
    # the comparison is the first section, under a headline that answers it
    first = tab.page.evaluate("document.querySelector('main > section:not([hidden])').id")
    assert first == "comparison"
    assert tab.text("headline") == "Pilot: No clear winner among 4 variants"
    assert tab.page.locator("#comparison tbody tr[data-variant]").count() == 4
    for v in variants:
        name = v["name"]
        assert tab.text(f"variant.{name}.accuracy") == f"{v['accuracy'] * 100:.1f}%"
        low, high = v["accuracy_low"] * 100, v["accuracy_high"] * 100
        assert tab.text(f"variant.{name}.interval") == f"{low:.1f}% to {high:.1f}%"
        assert tab.text(f"variant.{name}.macro_f1") == f"{v['macro_f1']:.3f}"
        assert tab.text(f"variant.{name}.kappa") == (
            "0.000" if abs(v["kappa"]) < 0.0005 else f"{v['kappa']:.3f}"
        )
        assert tab.text(f"variant.{name}.cost_usd") == format_usd(v["cost_usd"])
        assert tab.text(f"variant.{name}.cost_per_correct_usd") == format_usd(
            v["cost_per_correct_usd"]
        )
    # no variant is clearly more accurate: none is starred, the verdict says why
    assert not any(v["best"] for v in variants)
    assert tab.page.locator("#comparison tr.best").count() == 0
    verdict = tab.text("comparison.verdict")
    assert verdict.startswith(f"no clear winner: {block['leader']} is the most accurate")
    assert verdict in format_status(status_report(str(compare_run)))
    # each pair as the CLI prints it: agreement, kappa, the difference and its interval
    for pair in block["pairs"]:
        key = f"pair.{pair['a']}|{pair['b']}"
        assert tab.text(f"{key}.agree") == f"{pair['agree'] * 100:.1f}%"
        assert tab.text(f"{key}.rows") == str(pair["rows"])
        low, high = pair["difference_low"], pair["difference_high"]
        assert (low > 0 or high < 0) == ("clearly" in tab.text(f"{key}.says"))
    # readable column names, not summary.json's keys
    heads = tab.page.locator("#comparison table.compare").first.locator("th").all_inner_texts()
    assert "cost per correct answer" in heads and "cost_per_correct_usd" not in heads
    # the evaluation names its variant, and shows any other on demand
    assert tab.text("eval.variant") == block["leader"]
    other = next(v for v in variants if v["name"] != block["leader"])
    tab.page.select_option('select[data-filter="eval-variant"]', other["name"])
    assert tab.text("eval.variant") == other["name"]
    assert tab.text("eval.accuracy") == f"{other['accuracy'] * 100:.1f}%"
    assert tab.text("eval.macro_f1") == f"{other['macro_f1']:.3f}"
    no_sideways_scroll(tab)
    looked_at(tab, tmp_path, "compare")


def test_a_batch_mode_report_shows_its_batches(wide: Page, batch_run: Path, tmp_path: Path) -> None:
    tab = wide
    open_report(tab, batch_run, tmp_path)
    assert tab.page.locator("#batches").is_visible()
    k = tab.texts()
    assert (k["batches.count"], k["batches.completed"], k["batches.expired"]) == ("4", "3", "1")
    assert k["batches.resubmissions"] == "1" and k["batches.rows"] == "300"
    assert k["batch.s000002.status"] == "expired" and k["batch.s000002.answered"] == "40"
    assert k["batch.s000004.answered"] == "60"
    assert tab.page.locator("#batches tbody tr").count() == 4
    # answers of a batch have no time of their own: the page says so
    assert k["latency.note"].startswith("None of the 300 answers has a time on the wire")
    assert "No answers yet" not in tab.page.locator("#latency").inner_text()
    assert k["headline"].startswith("Accuracy ")
    looked_at(tab, tmp_path, "batch")


def test_a_failed_runs_report_says_why_not_zero_accuracy(
    wide: Page, failed_run: Path, tmp_path: Path
) -> None:
    tab = wide
    open_report(tab, failed_run, tmp_path)
    k = tab.texts()
    assert k["headline"] == "No answers. Stopped: the endpoint failed every recent request"
    assert "Stopping: the last" in k["headline.detail"]
    assert "not scored" in k["eval.not_scored"].lower()
    assert "eval.accuracy" not in k  # no 0.0% card
    assert "0.0%" not in tab.page.locator("header").inner_text()
    assert "0.0%" not in tab.page.locator("#evaluation").inner_text()
    assert k["latency.note"].startswith("No answers: no request was answered")
    assert k["run.status"] == "endpoint_down"
    looked_at(tab, tmp_path, "failed")


class Background:
    """A run in a thread of its own, to watch from the test: made once its run.json is
    written; `done` waits for its result."""

    def __init__(self, out: Path, make: Callable[[], Any]) -> None:
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(make,), daemon=True).start()
        deadline = time.monotonic() + 10
        while not (out / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self, make: Callable[[], Any]) -> None:
        try:
            self.result = run_job(make())
        except BaseException as exc:  # reported by `done`
            self.error = exc
        finally:
            self.finished.set()

    def done(self) -> Any:
        self.finished.wait(30)
        assert self.error is None and self.result is not None
        return self.result


def test_the_live_page_follows_a_running_run(tab: Page, tmp_path: Path) -> None:
    out = tmp_path / "live"
    out.mkdir()
    # 300 rows, 4 at a time, ~20 ms each: over a second of run to watch
    with SimThread(SimConfig(latency_ms=20, jitter_ms=5, rpm=10**6, tpm=10**10)) as sim:
        run = Background(out, lambda: sentiment_config(out, sim.base_url, concurrency=4))
        with serve_run_dir(str(out), poll_s=0.25) as url:
            tab.page.goto(url)
            tab.wait_rendered()
            first = tab.texts()  # one read: the page may redraw at any moment
            tab.wait_rendered(renders=3)  # two polls later
            second = tab.texts()
            done = [int(t["requests.succeeded"].replace(",", "")) for t in (first, second)]
            assert done[0] < done[1] and done[0] < 300, done
            assert first["run.status"] == "running"
            result = run.done()
            tab.wait_for(
                "document.querySelector('[data-k=\"run.status\"]').textContent === 'complete'"
            )
            assert tab.text("requests.succeeded") == "300"
            assert "live: updated" in tab.page.locator("#live").inner_text()
    assert result.status == "complete"
    assert tab.errors == []
    page_url = url.split("?")[0]
    assert url.startswith(page_url + "?token=")
    assert set(tab.requests) == {url, f"{page_url}data.json?{url.split('?')[1]}"}


def test_the_live_page_of_a_batch_run_counts_rows_inside_running_batches(
    tab: Page, tmp_path: Path
) -> None:
    out = tmp_path / "live-batch"
    out.mkdir()
    # one batch of 300 rows answered 150 a second: two seconds with none collected
    with SimThread(SimConfig(batch=BatchConfig(rows_per_second=150))) as sim:
        run = Background(
            out,
            lambda: sentiment_config(
                out, sim.base_url, mode="batch", poll_interval=0.05, quality_breaker=0
            ),
        )
        with serve_run_dir(str(out), poll_s=0.2) as url:
            tab.page.goto(url)
            tab.wait_for(
                "/more answered inside running batches/.test("
                "(document.querySelector('[data-k=\"progress\"]') || {}).textContent || '')"
            )
            k = tab.texts()
            assert k["requests.succeeded"] == "0"  # nothing collected yet, and yet:
            inside = int(k["batches.at_provider"].replace(",", ""))
            assert 0 < inside < 300
            assert k["headline"].startswith("Running: 0 of 300 rows finished, ")
            assert k["headline"].endswith(" more answered inside running batches")
            result = run.done()
            tab.wait_for(
                "document.querySelector('[data-k=\"run.status\"]').textContent === 'complete'"
            )
            assert tab.text("requests.succeeded") == "300"
            assert "inside running batches" not in tab.text("progress")
    assert result.status == "complete"
    assert tab.errors == []


def test_a_pool_runs_report_shows_one_row_per_endpoint(wide: Page, tmp_path: Path) -> None:
    import batchrun

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "text": f"t{i}"}) + "\n" for i in range(40)))
    out = tmp_path / "pool"
    run = batchrun.run(
        str(rows),
        str(out),
        prompt="{text}",
        model="gpt-4o-mini",
        quiet=True,
        endpoints={"a": {"base_url": "sim"}, "b": {"base_url": "sim"}},
    )
    assert run.exit_code == 0
    tab = wide
    open_report(tab, out, tmp_path)
    k = tab.texts()
    summary = json.loads((out / "summary.json").read_text())
    for name in ("a", "b"):
        row = summary["endpoints"][name]
        assert k[f"endpoint.{name}.answered"] == n(row["answered"])
        assert k[f"endpoint.{name}.requests"] == n(row["requests"])
    assert "Endpoints of the pool" in tab.page.locator("#glance-endpoints").inner_text()
    assert k["usage.total_tokens"] == n(summary["usage"]["total_tokens"])
    # each endpoint's share of the work over time: its answers per bin, as drawn,
    # are a recount of the lines' finish times and endpoints
    drawn = tab.page.evaluate(
        "(() => { const u = window.batchrunReport.charts['ts-endpoints'];"
        " const s = window.batchrunReport.data.series;"
        " const drawn = u.series.slice(1).map((x, i) => [x.label, u.data[i + 1]]);"
        " return { t0: s.t0, bin_s: s.bin_s, bins: u.data[0].length,"
        " series: Object.fromEntries(drawn) }; })()"
    )
    assert tab.page.locator("#ts-endpoints canvas").count() == 1
    recount = {name: [0] * drawn["bins"] for name in ("a", "b")}
    for line in (out / "results.jsonl").read_text().splitlines():
        meta = json.loads(line)["batchrun"]
        index = math.floor((meta["at"] - drawn["t0"]) / drawn["bin_s"])
        recount[meta["route"][-1]][min(max(index, 0), drawn["bins"] - 1)] += 1
    assert drawn["series"] == recount
    assert {name: sum(v) for name, v in recount.items()} == {
        name: summary["endpoints"][name]["answered"] for name in ("a", "b")
    }
    assert all(sum(v) > 0 for v in recount.values())
    looked_at(tab, tmp_path, "pool")


def test_a_cascade_report_shows_its_stages_curve_and_reliability(
    wide: Page, tmp_path: Path
) -> None:
    import batchrun

    job = Path(__file__).resolve().parent.parent / "jobs" / "cascade.toml"
    run = batchrun.run_job(job, out_dir=tmp_path / "cascade", quiet=True)
    block = run.summary["cascade"]
    open_report(wide, tmp_path / "cascade", tmp_path)
    k = wide.texts()
    assert wide.page.locator("#cascade").is_visible()
    for i, stage in enumerate(block["stages"]):
        assert k[f"cascade.stages.{i}.decided"] == n(stage["decided"])
        assert k[f"cascade.stages.{i}.escalated"] == n(stage["escalated"])
        assert k[f"cascade.stages.{i}.cost_usd"] == format_usd(stage["cost_usd"])
    assert "strong alone about " + format_usd(block["last_stage_alone_usd"]) in k["cascade.summary"]
    charts = wide.page.evaluate("Object.keys(window.batchrunReport.charts)")
    assert "cascade-curve" in charts and "eval-reliability" in charts
    assert wide.page.locator("#cascade-curve canvas").count() == 1
    assert wide.page.locator("#eval-reliability canvas").count() == 1
    assert "Reliability" in wide.page.locator("#eval-reliability h3").inner_text()
    looked_at(wide, tmp_path, "cascade")
