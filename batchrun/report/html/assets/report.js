/* batchrun HTML report: renders the page from the JSON in #batchrun-data (see
 * batchrun/report/html/data.py for its shape). The same code serves the file (data
 * inline) and the live page (which fetches the data again every few seconds and
 * calls render once more). Text from the run (answers, inputs, error messages) only
 * ever goes in through textContent, never as HTML. */
(function () {
  "use strict";

  const COLORS = ["#2563eb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4"];
  const state = { filters: { status: "", label: "", correct: "" }, charts: {}, renders: 0, data: null };

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
      if (v >= 100) return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
      if (v >= 0.01 || v === 0) return "$" + v.toFixed(4);
      return "$" + v.toFixed(6);
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
    f3: (v) => (isNum(v) ? v.toFixed(3) : "-"),
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
  }

  function renderGlance(d) {
    const r = d.requests, u = d.usage, c = d.cost || {}, tp = d.throughput || {};
    const done = r.succeeded + r.failed;
    const share = (n) => (r.total ? (100 * n) / r.total : 0).toFixed(2) + "%";
    const cards = [
      card(fmt.int(r.succeeded), "succeeded", "requests.succeeded"),
      card(fmt.int(r.failed), "failed", "requests.failed"),
      card(fmt.int(r.pending), "pending", "requests.pending"),
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
      h("span", { class: "ok", style: "width:" + share(r.succeeded) }), h("span", { class: "bad", style: "width:" + share(r.failed) }));
    const progress = h("div", { class: "note", "data-k": "progress" },
      fmt.int(done) + " of " + fmt.int(r.total) + " rows finished (" + fmt.pct(r.total ? done / r.total : 0) + ")");
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
      ["ts-requests", "ts-tokens", "ts-retries", "ts-inflight"].forEach((id) => fill(id));
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
      h("p", { class: "note", "data-k": "latency.wait_share" }, "Of the mean request's time, " + fmt.pct(waitShare) +
        " was spent waiting to send (rate limits, cooldowns, back-offs, budget) and the rest on the wire. Succeeded requests only."));
    const curves = kinds.filter(([k]) => L[k].curve && L[k].curve.length);
    if (!curves.length) { fill("latency-chart", h("p", { class: "note", text: "No answers yet." })); return; }
    const q = L.quantiles.map((v) => v * 100);
    // a log axis cannot show 0 ms: the fastest values are drawn at 0.1 ms
    chart("latency-chart", "Milliseconds at each percentile (log scale): the cumulative distribution, turned", q,
      curves.map(([k, label]) => ({ label, values: L[k].curve.map((v) => Math.max(v, 0.1)) })),
      { time: false, log: true, height: 260, xLabel: "percentile", xValue: (u, v) => (v === null ? "-" : "p" + v),
        value: (u, v) => fmt.msAxis(v), xValues: (u, vals) => vals.map((v) => "p" + v), yValues: (u, vals) => vals.map((v) => fmt.msAxis(v)) });
  }

  function renderQuality(d) {
    const Q = d.quality;
    if (!Q || !Q.answers) { fill("quality-body", h("p", { class: "note", text: "No answers yet." })); return; }
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

  function renderEval(d) {
    const E = d.eval;
    if (!E) { fill("eval-body", h("p", { class: "note", text: "No evaluation: the job has no [eval] section (or the run has not finished)." })); return; }
    const head = h("div", { class: "cards" },
      card(fmt.pct(E.accuracy), "accuracy", "eval.accuracy", fmt.int(E.correct) + " of " + fmt.int(E.n) + " correct"),
      card(fmt.pct(E.accuracy_answered), "accuracy of answered rows", "eval.accuracy_answered", fmt.int(E.missing_predictions) + " without a prediction"),
      card(E.reference_column + "", "reference column", "eval.reference_column", E.compare + (E.field ? " on " + E.field : "")));
    const parts = [head];
    if (E.missing_references) parts.push(h("p", { class: "note", text: fmt.int(E.missing_references) + " rows without a reference were skipped" }));
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
        h("div", null, h("h3", { text: "Confusion (rows: reference, columns: prediction)" }), heat),
        h("div", null, h("h3", { text: "Per label" }), table(["label", "precision", "recall", "F1", "support", "predicted"].map((c, i) => (i ? h("th", { class: "n", text: c }) : c)), labelRows))));
    } else if (E.categorical === false) {
      parts.push(h("p", { class: "note", text: "The references are free text (over 50 distinct values): no confusion table." }));
    }
    fill("eval-body", parts);
  }

  const VARIANT_FORMATS = [
    [/^name$/, (v) => String(v)], [/accuracy|share|rate$/, fmt.pct], [/(^|_)cost|usd$/, fmt.usd],
    [/_ms$/, fmt.ms], [/_s$/, fmt.dur],
  ];
  const VARIANT_FIRST = ["name", "model", "accuracy", "n", "correct", "answer_cost_usd", "cost_usd", "reused", "reused_cost_usd",
    "cost_per_correct_usd", "latency_p50_ms", "latency_p95_ms"];
  function renderVariants(d) {
    const V = d.variants;
    const section = document.getElementById("variants");
    if (!V || V.length < 2) { section.hidden = true; return; }
    section.hidden = false;
    const keys = [];
    VARIANT_FIRST.forEach((k) => V.some((v) => k in v) && keys.push(k));
    V.forEach((v) => Object.keys(v).forEach((k) => !keys.includes(k) && keys.push(k)));
    const show = (k, v) => {
      if (v === null || v === undefined) return "-";
      if (v === true || v === false) return v ? "yes" : "";
      const f = VARIANT_FORMATS.find(([re]) => re.test(k));
      if (f && (k === "name" || isNum(v))) return f[1](v);
      return isNum(v) ? fmt.num(v, 4) : String(v);
    };
    const best = Math.max(...V.map((v) => (isNum(v.accuracy) ? v.accuracy : -1)));
    const rows = V.map((v) => h("tr", { "data-variant": v.name }, keys.map((k) => {
      const cell = h("td", { class: k === "name" || typeof v[k] === "string" ? null : "n", "data-k": "variant." + v.name + "." + k, text: show(k, v[k]) });
      if (k === "accuracy" && isNum(v[k])) {
        cell.append(h("span", { class: "accbar", style: "width:" + Math.round(60 * v[k]) + "px" }));
        if ("best" in v ? v.best : v[k] === best) cell.classList.add("yes");
      }
      return cell;
    })));
    const verdict = d.comparison && d.comparison.verdict;
    fill("variants-body", table(keys.map((k) => (k === "name" ? "variant" : k)), rows),
      verdict ? h("p", { class: d.comparison.best ? "note" : "note warn", "data-k": "comparison.verdict", text: verdict }) : null,
      "answer_cost_usd" in V[0] ? h("p", { class: "note", text: "answer_cost_usd: of answering the variant's rows, whoever paid; " +
        "cost_usd: paid by this run (adds up to the run's cost); reused: rows answered by the cache or an identical request" }) : null);
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
    renderGlance(d);
    renderSeries(d);
    renderLatency(d);
    renderQuality(d);
    renderEval(d);
    renderVariants(d);
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
