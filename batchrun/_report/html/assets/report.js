/* batchrun HTML report: renders the page from the JSON in #batchrun-data (see
 * batchrun/report/html/data.py for its shape). The same code serves the file (data
 * inline) and the live page (which fetches the data again every few seconds and
 * calls render once more). Text from the run (answers, inputs, error messages) only
 * ever goes in through textContent, never as HTML. */
(function () {
  "use strict";

  const COLORS = ["#2563eb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4"];
  const state = { filters: { status: "", label: "", correct: "" }, charts: {}, renders: 0, data: null, evalVariant: null, allFigures: false };

  // ------------------------------------------------------------------ helpers
  function h(tag, attrs) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "text") el.textContent = String(v);
        else if (k === "style") el.style.cssText = v;
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) {
      const child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) child.forEach((c) => c && el.append(c));
      else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  function fill(id, ...children) {
    const el = document.getElementById(id);
    el.replaceChildren(...children.flat().filter(Boolean));
    return el;
  }
  const isNum = (v) => typeof v === "number" && isFinite(v);
  // Python's format(v, ".0f") rounds an exact half to even (40.5 -> 40): the page must
  // show the figures `batchrun status` prints, to the digit
  const round = (v) => {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  };
  const fmt = {
    int: (v) => (isNum(v) ? round(v).toLocaleString("en-US") : "-"),
    num: (v, d) => (isNum(v) ? v.toLocaleString("en-US", { maximumFractionDigits: d === undefined ? 2 : d }) : "-"),
    // the same as batchrun.report.tables.format_usd
    usd: (v) => {
      if (!isNum(v)) return "-";
      const sign = v < 0 ? "-" : "", size = Math.abs(v);
      if (size >= 100) return sign + "$" + size.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      if (size >= 0.01 || size === 0) return sign + "$" + size.toFixed(4);
      // below a cent: three significant digits, at least six decimals, at most ten
      return sign + "$" + size.toFixed(Math.min(Math.max(6, 2 - Math.floor(Math.log10(size))), 10));
    },
    ms: (v) => (isNum(v) ? round(v).toLocaleString("en-US") + " ms" : "-"),
    msAxis: (v) => (isNum(v) ? (v < 10 ? fmt.num(v, 1) : round(v).toLocaleString("en-US")) + " ms" : "-"),
    // the same as batchrun.report.format_duration
    dur: (s) => {
      if (!isNum(s)) return "-";
      s = Math.max(0, s);
      if (s < 59.95) return s.toFixed(1) + " s";
      const w = Math.round(s);
      const pad = (n) => String(n).padStart(2, "0");
      return Math.floor(w / 3600) + ":" + pad(Math.floor((w % 3600) / 60)) + ":" + pad(w % 60);
    },
    pct: (v) => (isNum(v) ? (v * 100).toFixed(1) + "%" : "-"),
    f3: (v) => (isNum(v) ? (Math.abs(v) < 0.0005 ? 0 : v).toFixed(3) : "-"),  // no "-0.000"
    width: (s) => (s % 3600 === 0 ? s / 3600 + " h" : s % 60 === 0 ? s / 60 + " min" : s + " s"),
    time: (unix) => (isNum(unix) ? new Date(unix * 1000).toLocaleString() : "-"),
  };
  // a heading "# name" or "$ name" is a numeric column (right-aligned), shown as "name"
  const NUMERIC = /^(count|mean|max|rows|p\d+)$/;
  function table(head, rows, cls) {
    const th = (c) => (c instanceof Node ? c
      : h("th", { class: /^[#$] /.test(c) || NUMERIC.test(c) ? "n" : null, text: c.replace(/^[#$] /, "") }));
    return h("table", { class: cls || null }, h("thead", null, h("tr", null, head.map(th))), h("tbody", null, rows));
  }
  const num = (text, key) => h("td", { class: "n", "data-k": key || null, text });
  const card = (value, label, key, sub) =>
    h("div", { class: "card" }, h("div", { class: "v", "data-k": key, text: value }), h("div", { class: "l", text: label }), sub ? h("div", { class: "s", text: sub }) : null);

  // ------------------------------------------------------------------ sections
  function renderHeader(d) {
    const run = d.run;
    document.title = "batchrun report: " + run.name;
    fill("title", "batchrun report: ", h("span", { class: "mono", text: run.name }), " ",
      h("span", { class: "badge " + run.status, "data-k": "run.status", text: run.running ? "running" : run.status }));
    fill("meta",
      "input " + (run.input || "-") + " · started " + (run.started_at || "-") +
      " · summary updated " + (run.updated_at || "-") + " · report built " + fmt.time(d.generated_at) +
      (run.batchrun_version ? " · batchrun " + run.batchrun_version : ""));
    const line = d.headline;
    const box = document.getElementById("headline");
    box.hidden = !line;
    if (line) {
      box.className = "headline " + line.tone;
      box.replaceChildren(h("div", { class: "t", "data-k": "headline", text: line.title }),
        line.detail ? h("div", { class: "d", "data-k": "headline.detail", text: line.detail }) : null);
    }
  }

  function renderGlance(d) {
    const r = d.requests, u = d.usage, c = d.cost || {}, tp = d.throughput || {};
    const done = r.succeeded + r.failed;
    const share = (n) => (r.total ? (100 * n) / r.total : 0).toFixed(2) + "%";
    const inside = d.at_provider || 0;  // pending rows a running batch has answered
    const cards = [
      card(fmt.int(r.succeeded), "succeeded", "requests.succeeded"),
      card(fmt.int(r.failed), "failed", "requests.failed"),
      card(fmt.int(r.pending), "pending", "requests.pending", inside ? fmt.int(inside) + " answered inside running batches" : null),
      card(fmt.int(r.total), "rows in the input", "requests.total", r.invalid ? fmt.int(r.invalid) + " invalid rows skipped" : null),
      card(fmt.int(u.total_tokens), "tokens", "usage.total_tokens",
        fmt.int(u.prompt_tokens) + " prompt (" + fmt.int(u.cached_tokens) + " cached), " + fmt.int(u.completion_tokens) + " completion"),
      card(fmt.usd(c.total), "cost" + (c.complete === false ? " (some models unpriced)" : ""), "cost.total",
        isNum(c.online_total) ? "Batch API prices; " + fmt.usd(c.online_total) + " at online prices" : null),
      card(fmt.usd(c.batch_total), "same usage via the Batch API", "cost.batch_total"),
      card(fmt.dur(d.elapsed_s), "elapsed", "elapsed"),
      card(fmt.num(tp.requests_per_s), "requests / s", "throughput.requests_per_s", fmt.int(tp.tokens_per_s) + " tokens / s"),
      card(fmt.int(d.retries), "attempts retried", "retries"),
      card(fmt.int(d.rate_limited), "429 answers", "rate_limited"),
    ];
    const R = d.reused;
    if (R && (R.cache || R.run)) {
      // answers not sent for: never in the tokens, cost or latency figures above
      const saved = R.saved_usage || {};
      cards.splice(5, 0, card(fmt.int((R.cache || 0) + (R.run || 0)), "answers reused, not paid", "reused.answers",
        fmt.int(R.cache || 0) + " from the cache, " + fmt.int(R.run || 0) + " from identical requests; " +
        fmt.int(saved.total_tokens) + " tokens" + (isNum(R.saved_usd) ? " (" + fmt.usd(R.saved_usd) + ")" : "") + " not paid again"));
    }
    const bar = h("div", { class: "bar", title: fmt.int(done) + " of " + fmt.int(r.total) + " finished" },
      h("span", { class: "ok", style: "width:" + share(r.succeeded) }), h("span", { class: "bad", style: "width:" + share(r.failed) }),
      inside ? h("span", { class: "prov", style: "width:" + share(Math.min(inside, r.pending)) }) : null);
    const progress = h("div", { class: "note", "data-k": "progress" },
      fmt.int(done) + " of " + fmt.int(r.total) + " rows finished (" + fmt.pct(r.total ? done / r.total : 0) + ")" +
      (inside ? "; " + fmt.int(inside) + " more answered inside running batches, collected when each batch ends" : ""));
    fill("glance-cards", cards);
    fill("glance-progress", bar, progress);

    const costRows = (c.by_model || []).map((m) => h("tr", null, h("td", { text: m.model }), num(fmt.usd(m.input)),
      num(fmt.usd(m.cached_input)), num(fmt.usd(m.output)), num(fmt.usd(m.total), "cost.model." + m.model), num(fmt.usd(m.batch))));
    if (costRows.length) {
      costRows.push(h("tr", null, h("th", { text: "total" }), num(fmt.usd(c.input)), num(fmt.usd(c.cached_input)),
        num(fmt.usd(c.output)), num(fmt.usd(c.total)), num(fmt.usd(c.batch_total))));
    }
    const tokenRows = Object.entries(d.by_model || {}).map(([m, t]) => h("tr", null, h("td", { text: m }),
      num(fmt.int(t.prompt_tokens)), num(fmt.int(t.cached_tokens)), num(fmt.int(t.completion_tokens)),
      num(fmt.int(t.reasoning_tokens)), num(fmt.int(t.total_tokens), "tokens.model." + m)));
    const notes = [];
    if (c.unpriced_models && c.unpriced_models.length) notes.push(h("p", { class: "note warn", text: "no price for: " + c.unpriced_models.join(", ") }));
    if (c.source === "usage totals") notes.push(h("p", { class: "note", text: "priced now from the usage totals (the run recorded no cost)" }));
    if (u.missing) notes.push(h("p", { class: "note warn", text: fmt.int(u.missing) + " responses carried no usage" }));
    const endpointRows = Object.entries(d.endpoints || {}).map(([name, e]) => h("tr", null, h("td", { text: name }),
      num(fmt.int(e.requests || 0), "endpoint." + name + ".requests"), num(fmt.int(e.answered || 0), "endpoint." + name + ".answered"),
      num(fmt.int(e.failed || 0)), num(fmt.int(e.reused || 0), "endpoint." + name + ".reused"), num(fmt.int(e.rate_limited || 0)),
      h("td", { text: Object.entries(e.failures || {}).map(([k, n]) => k + ": " + fmt.int(n)).join(", ") || "0" }),
      num(e.latency_p50_ms == null ? "-" : fmt.int(e.latency_p50_ms)), num(e.latency_p95_ms == null ? "-" : fmt.int(e.latency_p95_ms)),
      num(fmt.int((e.usage || {}).total_tokens || 0)), num(e.cost_usd == null ? "-" : fmt.usd(e.cost_usd)),
      h("td", { text: (e.breaker || "-") + (e.breaker_trips ? " (" + e.breaker_trips + " trips)" : "") })));
    fill("glance-endpoints",
      endpointRows.length ? h("div", null, h("h3", { text: "Endpoints of the pool" }),
        table(["endpoint", "# requests", "# answered", "# failed", "# reused", "# 429s", "failures", "# p50 ms", "# p95 ms", "# tokens", "$ cost", "breaker"], endpointRows)) : null);
    fill("glance-models",
      h("div", null, h("h3", { text: "Cost per model" }),
        costRows.length ? table(["model", "$ input", "$ cached", "$ output", "$ total", "$ batch API"], costRows) : h("p", { class: "note", text: "no priced usage" }),
        notes),
      h("div", null, h("h3", { text: "Tokens per model" }),
        tokenRows.length ? table(["model", "# prompt", "# cached", "# completion", "# reasoning", "# total"], tokenRows) : h("p", { class: "note", text: "no usage yet" })));

    const settings = (d.settings || []).map(([k, v]) => h("tr", null, h("td", { class: "k", text: k }), h("td", { class: "mono", text: typeof v === "string" ? v : JSON.stringify(v) })));
    const pacing = d.pacing ? h("p", { class: "note" },
      "pacing: concurrency limit " + fmt.int(d.pacing.concurrency_limit) + "; " + fmt.num(d.pacing.cooldown_s, 1) +
      " s cooling down after 429s; " + fmt.num(d.pacing.paced_s, 1) + " s paced by rate-limit headers") : null;
    const causes = Object.entries(d.retry_causes || {});
    const retryNote = causes.length ? h("p", { class: "note", "data-k": "retry_causes", text: "retries by cause: " + causes.map(([k, n]) => k + " " + fmt.int(n)).join(", ") }) : null;
    fill("settings", table(["setting", "value"], settings), pacing, retryNote);
  }

  function destroyCharts() {
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
  }

  function chart(id, title, x, series, opts) {
    const box = document.getElementById(id);
    const width = Math.max(280, (box.clientWidth || 600) - 14);
    const el = h("div");
    box.replaceChildren(h("h3", { text: title }), el);
    const bars = opts.bars && typeof uPlot.paths.bars === "function" ? uPlot.paths.bars({ size: [0.9, 40] }) : null;
    const u = new uPlot({
      width, height: opts.height || 190,
      scales: { x: { time: opts.time !== false, range: opts.xPad ? () => [x[0] - opts.xPad, x[x.length - 1] + opts.xPad] : undefined }, y: opts.log ? { distr: 3 } : { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } },
      series: [{ label: opts.xLabel || "time", value: opts.xValue }].concat(series.map((s, i) => ({
        label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: 1.5,
        fill: opts.bars && !s.line ? (s.color || COLORS[i % COLORS.length]) + "55" : null,
        paths: opts.bars && !s.line ? bars : undefined, points: { show: x.length < 3 || !!s.line }, value: opts.value,
      }))),
      axes: [{ values: opts.xValues }, { size: 78, values: opts.yValues }],
      cursor: opts.sync ? { sync: { key: opts.sync } } : {},
      legend: { show: true },
    }, [x].concat(series.map((s) => s.values)), el);
    state.charts[id] = u;
    return u;
  }

  function renderSeries(d) {
    const s = d.series;
    if (!s || !s.t.length) {
      fill("timeline-note", "No finished requests with a finish time yet.");
      ["ts-requests", "ts-tokens", "ts-retries", "ts-inflight", "ts-endpoints"].forEach((id) => fill(id));
      document.getElementById("ts-endpoints").hidden = true;
      return;
    }
    const x = s.t.map((t) => s.t0 + t + s.bin_s / 2);  // each bar at its bin's middle
    const per = fmt.width(s.bin_s);
    fill("timeline-note", h("span", { "data-k": "series.bin_s", text: "One bar per " + per + "; counted when each row finished (" + fmt.time(s.t0) + " onwards). In flight: the mean number of requests on the wire." }));
    const intValues = (u, vals) => vals.map((v) => (v >= 1000 ? fmt.num(v, 0) : fmt.num(v, 1)));
    // half a bin either side, so one bin (a short run) is a bar, not a line at the edge
    const common = { time: true, sync: "t", yValues: intValues, xPad: s.bin_s / 2 };
    chart("ts-requests", "Requests finished per " + per, x, [
      { label: "finished", values: s.finished }, { label: "failed", values: s.failed, color: "#cf222e" }], { ...common, bars: true });
    chart("ts-tokens", "Tokens per " + per, x, [{ label: "tokens", values: s.tokens, color: "#1a7f37" }], { ...common, bars: true });
    chart("ts-retries", "429 answers and retried attempts per " + per, x, [
      { label: "429s", values: s.rate_limited, color: "#cf222e" }, { label: "retried attempts", values: s.retries, color: "#9a6700", line: true }], { ...common, bars: true });
    chart("ts-inflight", "In flight (mean per " + per + ")", x, [{ label: "in flight", values: s.in_flight, color: "#8250df" }], common);
    // a pool: each endpoint's answers per bin, its share of the work over time
    const shares = Object.entries(s.by_endpoint || {});
    const pooled = document.getElementById("ts-endpoints");
    pooled.hidden = !shares.length;
    if (shares.length) {
      chart("ts-endpoints", "Answers per endpoint per " + per + " (each endpoint's share of the work)", x,
        shares.map(([name, values]) => ({ label: name, values })), common);
    } else {
      fill("ts-endpoints");
    }
  }

  function renderLatency(d) {
    const L = d.latency;
    const kinds = [["wire", "time on the wire"], ["wait", "waiting to send"], ["ttft", "time to first token"]];
    const rows = kinds.map(([k, label]) => {
      const s = L[k];
      return h("tr", null, h("td", { text: label }), num(fmt.int(s.count), "latency." + k + ".count"),
        num(fmt.ms(s.mean), "latency." + k + ".mean"), num(fmt.ms(s.p50), "latency." + k + ".p50"),
        num(fmt.ms(s.p95), "latency." + k + ".p95"), num(fmt.ms(s.p99), "latency." + k + ".p99"), num(fmt.ms(s.max), "latency." + k + ".max"));
    });
    const wire = L.wire.mean, wait = L.wait.mean;
    const waitShare = isNum(wire) && isNum(wait) && wire + wait > 0 ? wait / (wire + wait) : null;
    fill("latency-table", table(["", "count", "mean", "p50", "p95", "p99", "max"], rows),
      waitShare === null ? null : h("p", { class: "note", "data-k": "latency.wait_share" }, "Of the mean request's time, " + fmt.pct(waitShare) +
        " was spent waiting to send (rate limits, cooldowns, back-offs, budget) and the rest on the wire. Succeeded requests only."));
    const curves = kinds.filter(([k]) => L[k].curve && L[k].curve.length);
    const note = L.note ? h("p", { class: "note", "data-k": "latency.note", text: L.note }) : null;
    if (!curves.length) {
      fill("latency-chart", note || h("p", { class: "note", "data-k": "latency.note", text: "No answers yet." }));
      return;
    }
    if (note) document.getElementById("latency-table").append(note);
    const q = L.quantiles.map((v) => v * 100);
    // a log axis cannot show 0 ms: the fastest values are drawn at 0.1 ms
    chart("latency-chart", "Milliseconds at each percentile (log scale): the cumulative distribution, turned", q,
      curves.map(([k, label]) => ({ label, values: L[k].curve.map((v) => Math.max(v, 0.1)) })),
      { time: false, log: true, height: 260, xLabel: "percentile", xValue: (u, v) => (v === null ? "-" : "p" + v),
        value: (u, v) => fmt.msAxis(v), xValues: (u, vals) => vals.map((v) => "p" + v), yValues: (u, vals) => vals.map((v) => fmt.msAxis(v)) });
  }

  function renderQuality(d) {
    const Q = d.quality;
    if (!Q || !Q.answers) {
      fill("quality-body", h("p", { class: "note", text: d.run.running ? "No answers yet." : "No answers to judge: no request was answered." }));
      return;
    }
    const used = Q.categories.filter((c) => Object.values(Q.by_model).some((m) => m[c]));
    const rows = Object.entries(Q.by_model).map(([model, counts]) => {
      const total = Object.values(counts).reduce((a, b) => a + b, 0);
      return h("tr", null, h("td", { text: model }), num(fmt.int(total)),
        used.map((c) => num(fmt.int(counts[c] || 0) + (c !== "ok" && counts[c] ? " (" + fmt.pct(counts[c] / total) + ")" : ""), "quality." + model + "." + c)));
    });
    const reasons = Object.entries(Q.finish_reasons).map(([r, n]) => r + " " + fmt.int(n)).join(", ");
    fill("quality-body", table(["model", "# answers", ...used.map((c) => "# " + c)], rows),
      h("p", { class: "note", "data-k": "quality.finish_reasons", text: "finish reasons: " + (reasons || "-") }),
      Q.warnings.map((w) => h("p", { class: "note warn", text: "warning: " + w })));
  }

  function labelOrder(confusion) {
    const refs = Object.keys(confusion);
    const preds = new Set();
    Object.values(confusion).forEach((row) => Object.keys(row).forEach((p) => preds.add(p)));
    const others = [...preds].filter((p) => !refs.includes(p) && p !== "(none)").sort();
    // every reference label is a column too, so the diagonal is whole
    return { refs, preds: [...refs, ...others, ...(preds.has("(none)") ? ["(none)"] : [])] };
  }

  // a report whose rows with a reference all went unanswered (batchrun.jobs.evaluate.not_scored)
  const notScored = (E) => E.n > 0 && (E.missing_predictions || 0) >= E.n;

  // a percentage axis and legend for charts of shares (accuracy, cost over a baseline)
  const pctAxis = { time: false, yValues: (u, vals) => vals.map((v) => fmt.pct(v)), value: (u, v) => fmt.pct(v) };

  // the reliability diagram: each confidence bin's accuracy against its mean confidence
  function renderReliability(E) {
    const cal = E && E.calibration;
    const bins = cal && cal.bins ? cal.bins.filter((b) => b.n > 0 && isNum(b.confidence)) : [];
    if (!bins.length) { fill("eval-reliability"); return; }
    chart("eval-reliability", "Reliability: accuracy by confidence (ECE " + fmt.f3(cal.ece) + ")", bins.map((b) => b.confidence), [
      { label: "accuracy", values: bins.map((b) => b.accuracy), line: true },
      { label: "calibrated", values: bins.map((b) => b.confidence), color: "#9a6700", line: true }],
    { ...pctAxis, xLabel: "mean confidence", xValues: (u, vals) => vals.map((v) => fmt.pct(v)) });
  }

  // a cascade (summary.json "cascade"): each stage, and cost/accuracy over thresholds
  function renderCascade(d) {
    const c = d.cascade, section = document.getElementById("cascade");
    if (!c) { section.hidden = true; return; }
    section.hidden = false;
    const rows = (c.stages || []).map((s, i) => h("tr", null, h("td", { text: s.stage + ". " + s.model }),
      num(isNum(s.escalate_below) ? fmt.num(s.escalate_below, 3) : "-"), num(fmt.int(s.rows), "cascade.stages." + i + ".rows"),
      num(fmt.int(s.decided), "cascade.stages." + i + ".decided"), num(fmt.int(s.escalated), "cascade.stages." + i + ".escalated"),
      num(fmt.usd(s.cost_usd), "cascade.stages." + i + ".cost_usd"), num(fmt.pct((s.eval_decided || {}).accuracy), "cascade.stages." + i + ".accuracy")));
    const head = ["stage", "escalate below", "rows", "decided", "escalated", "cost", "accuracy (decided)"].map((t, i) => (i ? h("th", { class: "n", text: t }) : t));
    const alone = c.last_stage_alone_usd, last = (c.models || []).slice(-1)[0];
    const acc = (c.eval || {}).accuracy;
    const text = "cascade: " + (isNum(acc) ? "accuracy " + fmt.pct(acc) + ", " : "") + "cost " + fmt.usd(c.cost_usd) +
      (isNum(alone) && alone > 0 && isNum(c.cost_usd) ? "; " + last + " alone about " + fmt.usd(alone) + " (" + fmt.pct(1 - c.cost_usd / alone) + " saved)" : "") +
      (isNum(c.share_escalated) ? "; " + fmt.pct(c.share_escalated) + " escalated past stage " + (c.escalated_past_stage || 1) : "");
    fill("cascade-body", table(head, rows), h("p", { class: "note", "data-k": "cascade.summary", text }));
    const curve = c.curve || [];
    if (!curve.length || !isNum(alone) || alone <= 0) { fill("cascade-curve"); return; }
    chart("cascade-curve", "Accuracy and cost (over " + last + " alone) by stage 1's threshold", curve.map((p) => p.escalate_below), [
      { label: "accuracy", values: curve.map((p) => p.accuracy), line: true },
      { label: "cost", values: curve.map((p) => p.cost_usd / alone), color: "#1a7f37", line: true }],
    { ...pctAxis, xLabel: "escalate below", xValues: (u, vals) => vals.map((v) => fmt.num(v, 2)) });
  }

  function renderEval(d) {
    const top = d.eval;
    const title = document.getElementById("eval-title");
    fill("eval-reliability");
    if (!top) {
      title.textContent = "Evaluation";
      fill("eval-body", h("p", { class: "note", text: "No evaluation: the job has no [eval] section (or the run has not finished)." }));
      return;
    }
    // a comparison scores every variant: the page shows one, named, and offers the others
    const named = top.variants ? Object.keys(top.variants) : [];
    if (!named.includes(state.evalVariant)) state.evalVariant = top.variant || null;
    const E = (state.evalVariant && top.variants[state.evalVariant]) || top;
    title.replaceChildren("Evaluation");
    if (state.evalVariant) title.append(h("span", { class: "sub" }, " of ", h("span", { "data-k": "eval.variant", text: state.evalVariant })));
    const parts = [];
    if (named.length > 1) {
      const C = d.comparison || {};
      const why = state.evalVariant === C.best ? "the best variant"
        : state.evalVariant === C.leader ? "the most accurate variant" + (C.best ? "" : " (no clear winner)") : "";
      const sel = h("select", { "data-filter": "eval-variant" }, named.map((n) => option(n, n, state.evalVariant)));
      sel.addEventListener("change", () => { state.evalVariant = sel.value; renderEval(state.data); });
      parts.push(h("div", { class: "filters" }, h("label", null, "variant", sel),
        h("span", { class: "note", text: (why ? "shown first: " + why + "; " : "") + "every variant was scored on the same rows" })));
    }
    if (notScored(E)) {
      parts.push(h("p", { class: "note warn", "data-k": "eval.not_scored",
        text: "Not scored: none of the " + fmt.int(E.n) + " rows with a reference got an answer" +
          (E.pending ? " (" + fmt.int(E.pending) + " rows not sent yet)" : "") + ", so there is no accuracy to show." }));
      fill("eval-body", parts);
      return;
    }
    const ci = E.accuracy_interval || {};
    const interval = isNum(ci.low) ? fmt.pct(ci.low) + " to " + fmt.pct(ci.high) + " (" + Math.round(100 * ci.confidence) + "% interval); " : "";
    const cards = [
      card(fmt.pct(E.accuracy), "accuracy", "eval.accuracy", interval + fmt.int(E.correct) + " of " + fmt.int(E.n) + " correct"),
      card(fmt.pct(E.accuracy_answered), "accuracy of answered rows", "eval.accuracy_answered", fmt.int(E.missing_predictions) + " without a prediction"),
    ];
    if (isNum(E.macro_f1)) cards.push(card(fmt.f3(E.macro_f1), "macro-F1", "eval.macro_f1"));
    if (isNum(E.kappa)) cards.push(card(fmt.f3(E.kappa), "Cohen's kappa", "eval.kappa", "vs the reference, beyond chance"));
    if (isNum(E.mae)) cards.push(card(fmt.num(E.mae, 4), "mean absolute error", "eval.mae", fmt.int(E.scored) + " answers read as numbers"));
    cards.push(card(E.reference_column + "", "reference column", "eval.reference_column", E.compare + (E.field ? " on " + E.field : "")));
    parts.push(h("div", { class: "cards" }, cards));
    if (E.missing_references) parts.push(h("p", { class: "note", text: fmt.int(E.missing_references) + " rows without a reference were skipped" }));
    if (E.pending) parts.push(h("p", { class: "note", text: fmt.int(E.pending) + " rows have no final answer yet and are not scored" }));
    if (E.confusion) {
      const { refs, preds } = labelOrder(E.confusion);
      let max = 0;
      refs.forEach((r) => preds.forEach((p) => { max = Math.max(max, E.confusion[r][p] || 0); }));
      const rows = refs.map((r) => h("tr", null, h("th", { text: r }), preds.map((p) => {
        const n = E.confusion[r][p] || 0, a = max ? n / max : 0;
        return h("td", { class: "n" + (r === p ? " diag" : ""), "data-k": "confusion." + r + "." + p, title: r + " predicted as " + p + ": " + n,
          style: "background:rgba(37,99,235," + (0.08 + 0.85 * a).toFixed(3) + ");color:" + (a > 0.55 ? "#fff" : "inherit"), text: fmt.int(n) });
      })));
      const heat = h("table", { class: "heat" }, h("thead", null, h("tr", null, h("th", { text: "reference \u2193 predicted \u2192" }), preds.map((p) => h("th", { class: "n", text: p })))), h("tbody", null, rows));
      const per = E.per_label || {};
      const labelRows = refs.map((r) => {
        const s = per[r] || {};
        return h("tr", null, h("td", { text: r }), num(fmt.f3(s.precision), "per_label." + r + ".precision"), num(fmt.f3(s.recall), "per_label." + r + ".recall"),
          num(fmt.f3(s.f1), "per_label." + r + ".f1"), num(fmt.int(s.support), "per_label." + r + ".support"), num(fmt.int(s.predicted)));
      });
      parts.push(h("div", { class: "grid2" },
        h("div", { class: "wide" }, h("h3", { text: "Confusion (rows: reference, columns: prediction)" }), heat),
        h("div", { class: "wide" }, h("h3", { text: "Per label" }), table(["label", "precision", "recall", "F1", "support", "predicted"].map((c, i) => (i ? h("th", { class: "n", text: c }) : c)), labelRows))));
    } else if (E.categorical === false) {
      parts.push(h("p", { class: "note", text: "The references are free text (over 50 distinct values): no confusion table." }));
    }
    fill("eval-body", parts);
    renderReliability(E);
  }

  // ------------------------------------------------------------------ the comparison
  // summary.json's names for a variant's figures, as a reader says them
  const FIGURE_NAMES = {
    name: "variant", model: "model", prompt: "prompt", succeeded: "answered", failed: "failed", pending: "pending",
    n: "rows scored", correct: "correct", accuracy: "accuracy", accuracy_low: "accuracy, interval low", accuracy_high: "accuracy, interval high",
    macro_f1: "macro-F1", kappa: "Cohen's kappa (with the reference)", mae: "mean absolute error",
    cost_usd: "cost", answer_cost_usd: "cost to answer (whoever paid)", reused_cost_usd: "cost of the reused answers, when first paid",
    cost_per_correct_usd: "cost per correct answer", prompt_tokens: "prompt tokens", completion_tokens: "completion tokens",
    reused: "answers reused (cache, identical requests)", reused_prompt_tokens: "prompt tokens of reused answers",
    reused_completion_tokens: "completion tokens of reused answers", latency_p50_ms: "median latency", latency_p95_ms: "p95 latency",
    best: "clearly the best",
  };
  const figureName = (k) => FIGURE_NAMES[k] || (k.startsWith("quality_") ? "answers " + k.slice(8).replace(/_/g, " ") : k.replace(/_/g, " "));
  const VARIANT_FORMATS = [
    [/^name$/, (v) => String(v)], [/accuracy|share|rate$/, fmt.pct], [/(^|_)cost|usd$/, fmt.usd],
    [/_ms$/, fmt.ms], [/_s$/, fmt.dur], [/^(macro_f1|kappa)$/, fmt.f3],
  ];
  function showFigure(k, v) {
    if (v === null || v === undefined) return "-";
    if (v === true || v === false) return v ? "yes" : "no";
    const f = VARIANT_FORMATS.find(([re]) => re.test(k));
    if (f && (k === "name" || isNum(v))) return f[1](v);
    return isNum(v) ? fmt.num(v, 4) : String(v);
  }
  // a variant's name on one line ("gpt-4o-" | "mini" reads badly), unless it is long
  const nameClass = (name) => "name" + (String(name).length <= 40 ? " nw" : "");
  // what answering a variant's rows costs, whoever paid (batchrun.jobs.compare.cost_to_answer)
  const costToAnswer = (v) => ("answer_cost_usd" in v ? v.answer_cost_usd : v.cost_usd);

  // the accuracy and its interval on one scale shared by every variant, so they compare by eye
  function intervalPlot(v, lo, hi) {
    const at = (x) => (100 * (x - lo) / (hi - lo || 1)).toFixed(2) + "%";
    const track = h("div", { class: "track", title: fmt.pct(v.accuracy_low) + " to " + fmt.pct(v.accuracy_high) });
    if (isNum(v.accuracy_low) && isNum(v.accuracy_high)) {
      track.append(h("span", { class: "ci", style: "left:" + at(v.accuracy_low) + ";width:calc(" + at(v.accuracy_high) + " - " + at(v.accuracy_low) + ")" }));
    }
    if (isNum(v.accuracy)) track.append(h("span", { class: "dot", style: "left:" + at(v.accuracy) }));
    return track;
  }

  function renderComparison(d) {
    const V = d.variants;
    const section = document.getElementById("comparison");
    if (!V || V.length < 2) { section.hidden = true; return; }
    section.hidden = false;
    const C = d.comparison || {};
    const scored = V.some((v) => isNum(v.accuracy));
    const reused = V.some((v) => "answer_cost_usd" in v);
    const models = [...new Set(V.map((v) => v.model).filter(Boolean))];
    const ends = V.flatMap((v) => [v.accuracy_low, v.accuracy_high, v.accuracy]).filter(isNum);
    const lo = Math.max(0, Math.floor(10 * Math.min(...ends)) / 10), hi = Math.min(1, Math.ceil(10 * Math.max(...ends)) / 10);
    const rowsOf = (v) => (v.succeeded || 0) + (v.failed || 0) + (v.pending || 0);
    const head = [h("th", { text: "variant" })];
    if (scored) {
      head.push(h("th", { class: "n", text: "accuracy" }), h("th", { text: "interval (" + fmt.pct(lo).replace(".0", "") + " to " + fmt.pct(hi).replace(".0", "") + ")" }),
        h("th", { class: "n", text: "macro\u2011F1" }), h("th", { class: "n", text: "kappa", title: "Cohen's kappa against the reference" }));
    }
    const pending = V.some((v) => v.pending);
    head.push(h("th", { class: "n", text: "answered" }), h("th", { class: "n", text: "failed" }));
    if (pending) head.push(h("th", { class: "n", text: "pending" }));
    head.push(h("th", { class: "n", text: reused ? "cost to answer" : "cost" }));
    if (reused) head.push(h("th", { class: "n", text: "paid by this run" }));
    if (scored) head.push(h("th", { class: "n", text: "cost per correct answer" }));
    head.push(h("th", { class: "n", text: "median latency" }));
    const key = (v, k) => "variant." + v.name + "." + k;
    const rows = V.map((v) => {
      const none = !v.succeeded && rowsOf(v) > 0;  // asked, never answered: 0% says nothing of its answers
      const cells = [h("td", { class: nameClass(v.name) + (v.best ? " yes" : ""), "data-k": key(v, "name"), title: v.best ? "clearly the most accurate" : null },
        (v.best ? "\u2605 " : "") + v.name)];
      if (scored) {
        cells.push(num(none ? "no answers" : fmt.pct(v.accuracy), key(v, "accuracy")),
          h("td", { class: "ci-cell" }, none ? null : intervalPlot(v, lo, hi),
            h("span", { class: "ci-text", "data-k": key(v, "interval"), text: isNum(v.accuracy_low) && !none ? fmt.pct(v.accuracy_low) + " to " + fmt.pct(v.accuracy_high) : "-" })),
          num(none ? "-" : fmt.f3(v.macro_f1), key(v, "macro_f1")), num(none ? "-" : fmt.f3(v.kappa), key(v, "kappa")));
      }
      cells.push(num(fmt.int(v.succeeded), key(v, "succeeded")), num(fmt.int(v.failed), key(v, "failed")));
      if (pending) cells.push(num(fmt.int(v.pending), key(v, "pending")));
      cells.push(num(fmt.usd(costToAnswer(v)), key(v, reused ? "answer_cost_usd" : "cost_usd")));
      if (reused) cells.push(num(fmt.usd(v.cost_usd), key(v, "cost_usd")));
      if (scored) cells.push(num(fmt.usd(v.cost_per_correct_usd), key(v, "cost_per_correct_usd")));
      cells.push(num(fmt.ms(v.latency_p50_ms), key(v, "latency_p50_ms")));
      return h("tr", { "data-variant": v.name, class: v.best ? "best" : null }, cells);
    });
    const parts = [];
    if (C.verdict) parts.push(h("p", { class: "verdict " + (C.best ? "ok" : "warn"), "data-k": "comparison.verdict", text: C.verdict }));
    parts.push(h("div", { class: "wide" }, h("table", { class: "compare" }, h("thead", null, h("tr", null, head)), h("tbody", null, rows))));
    const n = Math.max(...V.map(rowsOf));
    parts.push(h("p", { class: "note" },
      "Every row ran once per variant (" + fmt.int(n) + " rows \u00d7 " + V.length + " variants" + (models.length === 1 ? ", all with " + models[0] : "") + "). " +
      (scored ? "Accuracy counts a failed row as wrong; the interval is a 95% bootstrap interval; \u2605 marks a variant only when the paired " +
        "difference with every other excludes 0. " : "") +
      (reused ? "Cost to answer: what the variant's rows cost whoever paid (the cache, an identical request); paid by this run adds up to the run's cost." : "")));
    const pairs = (C.pairs || []).filter((p) => isNum(p.agree) || isNum(p.accuracy_difference));
    if (pairs.length) {
      const pkey = (p, k) => "pair." + p.a + "|" + p.b + "." + k;
      const prow = (p) => {
        const diff = p.accuracy_difference, low = p.difference_low, high = p.difference_high;
        let says = "-";
        if (isNum(diff)) {
          const ahead = isNum(low) ? (low > 0 ? p.a : high < 0 ? p.b : null) : (diff > 0 ? p.a : diff < 0 ? p.b : null);
          says = ahead ? ahead + " is clearly more accurate" : isNum(low) ? "cannot tell apart: the interval includes 0" : "the same accuracy";
        }
        const signed = (x) => (isNum(x) ? (x > 0 ? "+" : x < 0 ? "\u2212" : "") + (Math.abs(x) * 100).toFixed(1) + " pts" : "-");
        return h("tr", null, h("td", { class: nameClass(p.a), text: p.a }), h("td", { class: nameClass(p.b), text: p.b }),
          num(fmt.int(p.rows), pkey(p, "rows")), num(fmt.pct(p.agree), pkey(p, "agree")), num(fmt.f3(p.kappa), pkey(p, "kappa")),
          num(signed(diff), pkey(p, "difference")),
          num(isNum(low) ? signed(low) + " to " + signed(high) : "-", pkey(p, "interval")),
          h("td", { class: says.includes("clearly") ? "yes" : null, "data-k": pkey(p, "says"), text: says }));
      };
      parts.push(h("h3", { text: "Pairs of variants: how often they agree, and their accuracy difference" }),
        h("div", { class: "wide" }, h("table", { class: "compare pairs" }, h("thead", null, h("tr", null,
          ["variant A", "variant B"].map((t) => h("th", { text: t })),
          ["rows", "same answer", "kappa", "accuracy A \u2212 B", "95% interval"].map((t) => h("th", { class: "n", text: t })),
          h("th", { text: "verdict" }))), h("tbody", null, pairs.map(prow)))),
        h("p", { class: "note", text: "Same answer and kappa: how often the two gave the same label, and that agreement beyond chance. " +
          "The accuracy difference is paired (the rows both were scored on), in percentage points." }));
    }
    // every figure summary.json holds, one column per variant
    const keys = [];
    V.forEach((v) => Object.keys(v).forEach((k) => !keys.includes(k) && k !== "name" && keys.push(k)));
    const all = keys.map((k) => h("tr", null, h("th", { class: "k", text: figureName(k) }),
      V.map((v) => h("td", { class: typeof v[k] === "string" ? null : "n", "data-k": key(v, "all." + k), text: showFigure(k, v[k]) }))));
    const more = h("details", { class: "all-figures", open: state.allFigures }, h("summary", { text: "Every figure per variant" }),
      h("div", { class: "wide" }, h("table", { class: "compare" }, h("thead", null, h("tr", null, h("th", { text: "" }), V.map((v) => h("th", { class: "n name", text: v.name })))), h("tbody", null, all))));
    more.addEventListener("toggle", () => { state.allFigures = more.open; });  // kept open across a live page's redraws
    parts.push(more);
    fill("comparison-body", parts);
  }

  // ------------------------------------------------------------------ batches
  const sameDay = (a, b) => isNum(a) && isNum(b) && new Date(a * 1000).toDateString() === new Date(b * 1000).toDateString();
  function renderBatches(d) {
    const B = d.batches;
    const section = document.getElementById("batches");
    if (!B || !B.batches) { section.hidden = true; return; }
    section.hidden = false;
    const by = B.by_status || {}, modes = d.by_mode || {};
    const cards = [
      card(fmt.int(B.batches), "batches", "batches.count", fmt.int(B.open) + " open"),
      card(fmt.int(by.completed || 0), "completed", "batches.completed"),
      card(fmt.int(by.expired || 0), "expired", "batches.expired", "their unanswered rows go in a later batch"),
      card(fmt.int(B.resubmissions), "resubmissions", "batches.resubmissions", fmt.int(B.rows_sent_again) + " rows sent again"),
      card(fmt.int(modes.batch || 0), "rows answered via the Batch API", "batches.rows", fmt.int(modes.online || 0) + " online"),
    ];
    if (d.at_provider) cards.push(card(fmt.int(d.at_provider), "answered inside running batches", "batches.at_provider", "collected when each batch ends"));
    const other = Object.entries(by).filter(([k]) => !["completed", "expired"].includes(k));
    const now = d.generated_at;
    const took = (s) => (isNum(s.created_at) ? (isNum(s.finished_at) ? fmt.dur(s.finished_at - s.created_at) : s.open ? "running " + fmt.dur(now - s.created_at) : "-") : "-");
    const rows = (B.shards || []).slice().reverse().map((s) => h("tr", { "data-shard": s.shard },
      h("td", { class: "mono", text: s.shard }), h("td", { class: "mono id", text: s.batch_id || "-" }), h("td", { text: s.model || "-" }),
      num(fmt.int(s.rows)), num(s.attempt > 1 ? "#" + s.attempt : "1"),
      h("td", null, h("span", { class: "badge " + s.status, "data-k": "batch." + s.shard + ".status", text: s.status + (s.cancel_requested && s.open ? " (cancel requested)" : "") })),
      num(isNum(s.answered) ? fmt.int(s.answered) : "-", "batch." + s.shard + ".answered"), num(isNum(s.failed) ? fmt.int(s.failed) : "-"),
      h("td", { text: fmt.time(s.created_at) }), h("td", { text: sameDay(s.created_at, s.finished_at) ? new Date(s.finished_at * 1000).toLocaleTimeString() : fmt.time(s.finished_at) }),
      num(took(s))));
    fill("batches-body", h("div", { class: "cards" }, cards),
      other.length ? h("p", { class: "note", "data-k": "batches.other", text: "other states: " + other.map(([k, n]) => k + " " + fmt.int(n)).join(", ") }) : null,
      h("div", { class: "wide" }, table(["batch", "batch id", "model", "# rows", "# attempt", "state", "# answered", "# failed", "created", "finished", "# took"], rows, "batches")),
      h("p", { class: "note", text: (B.shards.length < B.batches ? "The latest " + fmt.int(B.shards.length) + " of " + fmt.int(B.batches) + " batches. " : "") +
        "Attempt #2 and up: a batch of rows an earlier batch left unanswered (expired, cancelled, failed). " +
        "Answered and failed: the provider's counts; an open batch's as last seen" + (isNum(B.updated_at) ? " (" + fmt.time(B.updated_at) + ")" : "") + "." }));
  }

  function renderErrors(d) {
    if (!d.errors.length) { fill("errors-body", h("p", { class: "note", "data-k": "errors.none", text: "No rows failing." })); return; }
    const rows = d.errors.map((e) => h("tr", { "data-code": e.code }, h("td", { class: "mono", text: e.code }), num(fmt.int(e.rows), "errors." + e.code),
      h("td", null, e.examples.length ? e.examples.map((x) => h("div", null,
        h("span", { class: "mono", text: (x.custom_id || "?") + (x.row ? " (row " + x.row + ")" : "") }),
        " · HTTP " + (x.status === null || x.status === undefined ? "-" : x.status) + " · " + fmt.int(x.attempts) + (x.attempts === 1 ? " attempt · " : " attempts · "),
        h("span", { text: x.message || "" }))) : h("span", { class: "note", text: "(no example line)" }))));
    fill("errors-body", table(["code", "rows", "latest examples"], rows));
  }

  function option(value, label, selected) {
    return h("option", { value, selected: value === selected, text: label });
  }

  function renderSample(d) {
    const S = d.sample;
    if (!S || !S.rows.length) { fill("sample-body", h("p", { class: "note", text: "No finished rows yet." })); return; }
    const f = state.filters;
    const statuses = [...new Set(S.rows.map((r) => r.status))].sort();
    const labels = [...new Set(S.rows.map((r) => r.label).filter((l) => l !== null))].sort();
    const scored = S.rows.some((r) => r.correct !== null);
    const select = (name, title, options) => {
      const sel = h("select", { "data-filter": name }, option("", "all", f[name]), options);
      sel.addEventListener("change", () => { f[name] = sel.value; applyFilters(); });
      return h("label", null, title, sel);
    };
    const controls = h("div", { class: "filters" },
      select("status", "status", statuses.map((s) => option(s, s, f.status))),
      labels.length ? select("label", "reference label", labels.map((l) => option(l, l, f.label))) : null,
      scored ? select("correct", "correct", [option("yes", "correct", f.correct), option("no", "wrong", f.correct), option("none", "not scored", f.correct)]) : null,
      h("span", { id: "sample-count", class: "note" }));
    const inputs = new Set(S.input_columns), parsed = new Set(S.parsed_columns);
    const head = S.columns.map((c) => h("th", { title: inputs.has(c) ? "input column" : parsed.has(c) ? "parsed from the answer" : null, text: c }));
    if (scored) head.push(h("th", { text: "correct" }));
    const rows = S.rows.map((r) => {
      const tr = h("tr", { "data-status": r.status, "data-label": r.label === null ? "" : r.label, "data-correct": r.correct === null ? "none" : r.correct ? "yes" : "no" },
        r.cells.map((v, i) => {
          const text = v === null || v === undefined ? "" : String(v);
          const cls = (S.columns[i] === "status" ? "st-" + v : "") + (text.length > 30 ? " long" : "");
          return h("td", { class: cls.trim() || null, title: text.length > 120 ? text : null }, h("div", { class: "t", text }));
        }));
      if (scored) tr.append(h("td", { class: r.correct === null ? null : r.correct ? "yes" : "no", text: r.correct === null ? "-" : r.correct ? "\u2713" : "\u2717" }));
      return tr;
    });
    fill("sample-body", controls, h("div", { class: "scroll" }, h("table", { class: "sample", id: "sample-table" }, h("thead", null, h("tr", null, head)), h("tbody", null, rows))),
      h("p", { class: "note", text: "A sample of " + fmt.int(S.rows.length) + " of " + fmt.int(S.total_rows) + " rows, from " + S.source +
        (S.source === "results.jsonl" ? " (the input columns and correctness are in results.parquet, written when the run ends)." : "; rows that did not succeed first, the rest evenly spaced.") }));
    applyFilters();
  }

  function applyFilters() {
    const f = state.filters;
    let shown = 0, total = 0;
    document.querySelectorAll("#sample-table tbody tr").forEach((tr) => {
      const ok = (!f.status || tr.dataset.status === f.status) && (!f.label || tr.dataset.label === f.label) && (!f.correct || tr.dataset.correct === f.correct);
      tr.hidden = !ok;
      total++;
      if (ok) shown++;
    });
    const count = document.getElementById("sample-count");
    if (count) count.textContent = "showing " + shown + " of " + total;
  }

  // ------------------------------------------------------------------ main
  function render(d) {
    const started = performance.now();
    state.data = d;
    destroyCharts();
    renderHeader(d);
    renderComparison(d);
    renderGlance(d);
    renderBatches(d);
    renderSeries(d);
    renderLatency(d);
    renderQuality(d);
    renderCascade(d);
    renderEval(d);
    renderErrors(d);
    renderSample(d);
    state.renders++;
    // for tests and scripts/bench_report.py: what was drawn, and how long it took
    window.batchrunReport = { data: d, charts: state.charts, renders: state.renders, render,
      renderMs: performance.now() - started, renderedAt: performance.now() };
  }

  function poll(live) {
    const indicator = document.getElementById("live");
    indicator.hidden = false;
    const tick = () => {
      fetch(live.url, { cache: "no-store" })
        .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then((d) => {
          render(d);
          indicator.className = "live on";
          indicator.textContent = "live: updated " + new Date().toLocaleTimeString() + ", every " + live.poll_s + " s";
        })
        .catch((e) => { indicator.className = "live off"; indicator.textContent = "live page unreachable (" + e.message + "); retrying"; })
        .finally(() => setTimeout(tick, live.poll_s * 1000));
    };
    setTimeout(tick, live.poll_s * 1000);
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => state.data && render(state.data), 200);
  });

  render(JSON.parse(document.getElementById("batchrun-data").textContent));
  const liveEl = document.getElementById("batchrun-live");
  if (liveEl) poll(JSON.parse(liveEl.textContent));
})();
