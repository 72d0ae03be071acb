// manifold-jax report page: scrub through the saved points of a study's runs.
// Plain JavaScript, no library, no network: everything comes from the inline JSON below the page.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const runsByName = {};
  data.runs.forEach((r, i) => { runsByName[r.name] = Object.assign({ index: i }, r); });
  const state = { input: 0, run: data.runs[0].name, frame: 0, timer: null, logScale: null };

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "string") return v;
    if (Array.isArray(v)) return v.map(fmt).join(", ");
    if (typeof v === "object") return JSON.stringify(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
    if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(3);
    return Number(v.toPrecision(4)).toString();
  }
  function argmax(row) { let best = 0; row.forEach((v, i) => { if (v > row[best]) best = i; }); return best; }
  function label(c) { return data.labels[c] !== undefined ? data.labels[c] : String(c); }
  function colour(i) { return COLOURS[i % COLOURS.length]; }
  function currentInput() { return data.inputs[state.input]; }
  function currentRun() { return currentInput().runs[state.run]; }
  function iterations(name) { return runsByName[name].iterations; }
  function nearestFrame(name, iteration) {
    const its = iterations(name);
    let best = 0;
    its.forEach((it, i) => { if (Math.abs(it - iteration) < Math.abs(its[best] - iteration)) best = i; });
    return best;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  // ------------------------------------------------------------------ decoded inputs
  function sentence(ids, original, explored) {
    const out = el("span", { class: "tokens" });
    ids.forEach((id, i) => {
      let token = data.vocabulary[String(id)];
      if (token === undefined) token = "[" + id + "]";
      const piece = token.startsWith("##");
      if (i > 0 && !piece) out.appendChild(document.createTextNode(" "));
      const text = piece ? token.slice(2) : token;
      const changed = original !== null && id !== original[i];
      const node = el(changed ? "mark" : "span", {}, text);
      if (changed) node.title = "was: " + data.vocabulary[String(original[i])];
      if (explored && explored[i]) node.classList.add("explored");
      out.appendChild(node);
    });
    return out;
  }
  function words(list) {
    // verified sentences come as [word, changed] pairs (word pieces already joined)
    const out = el("span", { class: "tokens" });
    list.forEach(([word, changed], i) => {
      if (i > 0) out.appendChild(document.createTextNode(" "));
      out.appendChild(el(changed ? "mark" : "span", {}, word));
    });
    return out;
  }
  function title(name) { return runsByName[name] ? runsByName[name].title : name; }
  function verifiedAt(run, it) {
    // the last verified sentence searched at or before iteration it (the "another class" one aside)
    let best = -1;
    (run.verified || []).forEach((v, i) => { if (v.goal === "match" && v.iteration <= it) best = i; });
    return best;
  }
  function verifiedTable(run, it) {
    const box = el("div", { id: "verified" });
    box.appendChild(el("span", { class: "label" }, "verified real sentences: a search over word substitutions near " +
      "the decoded sentence, each sentence re-tokenised and re-predicted (its own probabilities); marked: words " +
      "that differ from the original"));
    const tableNode = el("table", { class: "verified" });
    const head = el("tr");
    ["iteration", "sentence", "model says"].forEach((h) => head.appendChild(el("th", {}, h)));
    tableNode.appendChild(el("thead")).appendChild(head);
    const body = tableNode.appendChild(el("tbody"));
    const current = verifiedAt(run, it);
    run.verified.forEach((v, i) => {
      const tr = el("tr", { "data-iteration": v.iteration, "data-found": v.found ? "1" : "0" });
      if (i === current) tr.className = "current";
      if (!v.found) tr.classList.add("unverified");
      tr.appendChild(el("td", { class: "num" }, v.goal === "away" ? "from " + v.iteration : String(v.iteration)));
      const cell = el("td", { class: "words" });
      cell.appendChild(words(v.words));
      tr.appendChild(cell);
      const says = el("td", { class: "says" });
      says.appendChild(el("span", { class: "prediction" }, v.top + " " + fmt(v.p)));
      let note = v.goal === "away" ? "a real sentence in another class" : "embedding: " + v.embedding_top;
      if (!v.found) note = "none verified (" + v.tried + " tried): the decoded sentence, re-predicted";
      else if (v.changes) note += "; " + v.changes + " substitution" + (v.changes > 1 ? "s" : "");
      says.appendChild(el("div", { class: "note" }, note));
      tr.appendChild(says);
      body.appendChild(tr);
    });
    box.appendChild(tableNode);
    return box;
  }
  function figure(src, caption, id) {
    const fig = el("figure");
    const img = el("img", { src: src, alt: caption });
    if (id) img.id = id;
    fig.appendChild(img);
    fig.appendChild(el("figcaption", {}, caption));
    return fig;
  }
  function renderDecoded() {
    const input = currentInput(), run = currentRun(), f = state.frame, box = clear($("decoded"));
    const it = iterations(state.run)[f];
    if (data.modality === "image") {
      const row = el("div", { class: "images" });
      row.appendChild(figure(input.original, "original", "original-image"));
      if (run.images) {
        row.appendChild(figure(run.images[f], title(state.run) + " at t = " + it, "decoded-image"));
        const diff = figure(run.differences[f], "decoded − original", "difference-image");
        const bar = el("div", { class: "legend-bar" });
        const s = fmt(run.difference_scale);
        ["−" + s, "0", "+" + s].forEach((t) => bar.appendChild(el("span", {}, t)));
        diff.appendChild(bar);
        diff.appendChild(el("div", { class: "note" }, "largest |change| here: " + fmt(run.largest_change[f])));
        row.appendChild(diff);
      }
      box.appendChild(row);
    } else {
      const orig = el("div", { class: "sentence" });
      orig.appendChild(el("span", { class: "label" }, "original (dotted: explored tokens)"));
      orig.appendChild(sentence(input.original, null, input.select));
      box.appendChild(orig);
      if (run.decoded) {
        const dec = el("div", { class: "sentence", id: "decoded-text" });
        const same = run.decoded[f].every((id, i) => id === input.original[i]);
        dec.appendChild(el("span", { class: "label" }, title(state.run) + " at t = " + it +
          ", decoded (the nearest token to each explored embedding)" +
          (same ? ": the same words as the original" : "; changed words marked")));
        dec.appendChild(sentence(run.decoded[f], input.original, input.select));
        box.appendChild(dec);
      }
      if (run.verified && run.verified.length) box.appendChild(verifiedTable(run, it));
    }
    if (!run.images && !run.decoded) box.appendChild(el("p", { class: "note" }, data.note || "this run is not decoded"));
    const p = run.probabilities[f], top = argmax(p);
    let text = "embedding: " + label(top) + " (p = " + fmt(p[top]) + ")";
    if (run.decoded_probabilities) {
      const q = run.decoded_probabilities[f], qt = argmax(q);
      text += " · decoded input re-predicted: " + label(qt) + " (p = " + fmt(q[qt]) + ")";
    }
    $("prediction").textContent = text;
  }

  // ------------------------------------------------------------------ probabilities
  function probabilityChart() {
    const run = currentRun(), its = iterations(state.run), W = 440, H = 230, L = 48, R = 10, T = 10, B = 30;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, id: "probability-svg", class: "chart" });
    let lo = 1;
    run.probabilities.forEach((row) => row.forEach((v) => { if (v > 0 && v < lo) lo = v; }));
    const log = state.logScale;
    const ymin = log ? Math.max(lo / 2, 1e-12) : 0;
    const x0 = its[0], x1 = its[its.length - 1] === its[0] ? its[0] + 1 : its[its.length - 1];
    const X = (it) => L + (W - L - R) * (it - x0) / (x1 - x0);
    const Y = (p) => {
      const t = log ? (Math.log10(Math.max(p, ymin)) - Math.log10(ymin)) / (0 - Math.log10(ymin)) : p;
      return T + (H - T - B) * (1 - t);
    };
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    chart.appendChild(svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    let ticks = [0, 0.5, 1];
    if (log) {
      const lowest = Math.ceil(Math.log10(ymin)), every = Math.max(1, Math.ceil(-lowest / 4));
      ticks = [];
      for (let e = 0; e >= lowest; e -= every) ticks.push(Math.pow(10, e));
    }
    ticks.forEach((p) => {
      const t = svg("text", { x: L - 4, y: Y(p) + 4, "text-anchor": "end" });
      t.textContent = p === 1 ? "1" : log ? "1e" + Math.round(Math.log10(p)) : String(p);
      chart.appendChild(t);
    });
    [x0, x1].forEach((it, i) => {
      const t = svg("text", { x: X(it), y: H - B + 14, "text-anchor": i ? "end" : "start" });
      t.textContent = String(it);
      chart.appendChild(t);
    });
    const xl = svg("text", { x: (L + W) / 2, y: H - 4, "text-anchor": "middle" });
    xl.textContent = "iteration";
    chart.appendChild(xl);
    const k = run.probabilities[0].length;
    for (let c = 0; c < k; c++) {
      const line = (rows, dash) => {
        const pts = rows.map((row, i) => X(its[i]).toFixed(1) + "," + Y(row[c]).toFixed(1)).join(" ");
        const attrs = { points: pts, fill: "none", stroke: colour(c), "stroke-width": dash ? 1 : 1.6 };
        if (dash) attrs["stroke-dasharray"] = "3 3";
        chart.appendChild(svg("polyline", attrs));
      };
      line(run.probabilities, false);
      if (run.decoded_probabilities) line(run.decoded_probabilities, true);
    }
    const it = its[state.frame];
    chart.appendChild(svg("line", { class: "cursor", id: "probability-cursor", x1: X(it), y1: T, x2: X(it), y2: H - B,
      "data-iteration": it }));
    clear($("probability-chart")).appendChild(chart);
    const note = el("div", { class: "note" }, "solid: on the explored embedding" + (run.decoded_probabilities ? "; dashed: on the decoded input" : ""));
    $("probability-chart").appendChild(note);
  }
  function probabilityTable() {
    const run = currentRun(), f = state.frame, body = clear($("probabilities").tBodies[0]);
    const p = run.probabilities[f], q = run.decoded_probabilities ? run.decoded_probabilities[f] : null, top = argmax(p);
    p.forEach((v, c) => {
      const tr = el("tr", { "data-class": c, "data-p": v });
      if (c === top) tr.className = "top";
      const name = el("td");
      name.appendChild(el("span", { class: "swatch", style: "background:" + colour(c) }));
      name.appendChild(document.createTextNode(label(c)));
      tr.appendChild(name);
      tr.appendChild(el("td", { class: "num" }, fmt(v)));
      tr.appendChild(el("td", { class: "num" }, q ? fmt(q[c]) : "n/a"));
      body.appendChild(tr);
    });
  }

  // ------------------------------------------------------------------ trajectories
  function trajectoryChart() {
    const input = currentInput(), W = 440, H = 300, M = 24;
    const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, id: "trajectory-svg", class: "chart" });
    let xs = [0], ys = [0];
    Object.values(input.runs).forEach((r) => r.xy.forEach((p) => { xs.push(p[0]); ys.push(p[1]); }));
    const span = (v) => { const lo = Math.min(...v), hi = Math.max(...v); return hi > lo ? [lo, hi] : [lo - 1, hi + 1]; };
    const [ax, bx] = span(xs), [ay, by] = span(ys);
    const X = (v) => M + (W - 2 * M) * (v - ax) / (bx - ax), Y = (v) => H - M - (H - 2 * M) * (v - ay) / (by - ay);
    const names = Object.keys(input.runs).filter((n) => n !== state.run).concat([state.run]);
    names.forEach((name) => {
      const r = input.runs[name], current = name === state.run;
      const pts = r.xy.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ");
      chart.appendChild(svg("polyline", { points: pts, fill: "none", stroke: current ? colour(runsByName[name].index) : "#bbb",
        "stroke-width": current ? 1.5 : 1, opacity: current ? 0.8 : 0.6 }));
      if (current) {
        r.xy.forEach((p, i) => chart.appendChild(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5,
          fill: colour(argmax(r.probabilities[i])) })));
      }
    });
    const star = svg("text", { x: X(0), y: Y(0) + 5, "text-anchor": "middle", "font-size": 16 });
    star.textContent = "★";
    chart.appendChild(star);
    const here = currentRun().xy[state.frame];
    chart.appendChild(svg("circle", { id: "trajectory-marker", cx: X(here[0]), cy: Y(here[1]), r: 7, fill: "none",
      stroke: "#000", "stroke-width": 2 }));
    clear($("trajectory-chart")).appendChild(chart);
  }

  // ------------------------------------------------------------------ every run, records, tables
  function runStrip() {
    const input = currentInput(), it = iterations(state.run)[state.frame], strip = clear($("run-strip"));
    data.runs.forEach((meta) => {
      const r = input.runs[meta.name], f = nearestFrame(meta.name, it), p = r.probabilities[f], top = argmax(p);
      const shown = meta.iterations[f], last = meta.iterations[meta.iterations.length - 1];
      const box = el("div", { class: "run" + (meta.name === state.run ? " current" : ""), "data-run": meta.name,
        "data-iteration": shown });
      box.appendChild(el("b", {}, meta.title));
      // a run that ended earlier (a counterfactual stops at its flip) shows its last point, and says so
      const when = shown === it ? "t = " + shown : shown === last && shown < it ? "ended at t = " + shown
        : "nearest saved point t = " + shown;
      box.appendChild(el("div", { class: "note" }, when + ": " + label(top) + " (p = " + fmt(p[top]) + ")"));
      if (r.images) box.appendChild(el("img", { src: r.images[f], alt: meta.title + " at t = " + shown }));
      const v = verifiedAt(r, shown);
      if (v >= 0 && r.verified[v].found) {
        box.appendChild(words(r.verified[v].words));
        box.appendChild(el("div", { class: "note" }, "verified at t = " + r.verified[v].iteration + ": " +
          r.verified[v].top + " (p = " + fmt(r.verified[v].p) + ")"));
      } else if (r.decoded) box.appendChild(sentence(r.decoded[f], input.original, null));
      box.addEventListener("click", () => selectRun(meta.name));
      strip.appendChild(box);
    });
  }
  function records() {
    const run = currentRun(), f = state.frame, body = clear($("records").tBodies[0]);
    const rows = [["iteration", iterations(state.run)[f]], ["shown point", (f + 1) + " of " + iterations(state.run).length]];
    Object.entries(run.records).forEach(([name, values]) => rows.push([name, values[f]]));
    rows.forEach(([k, v]) => {
      const tr = el("tr");
      tr.appendChild(el("th", {}, k));
      tr.appendChild(el("td", { class: "num" }, fmt(v)));
      body.appendChild(tr);
    });
  }
  function table(node, columns, rowsOf, current) {
    clear(node);
    const keys = [];
    columns.forEach((c) => Object.keys(rowsOf(c) || {}).forEach((k) => { if (!keys.includes(k)) keys.push(k); }));
    const head = el("tr");
    head.appendChild(el("th", {}, "metric"));
    columns.forEach((c) => head.appendChild(el("th", { class: c === current ? "current" : "" }, title(c))));
    node.appendChild(el("thead")).appendChild(head);
    const body = node.appendChild(el("tbody"));
    keys.forEach((k) => {
      const tr = el("tr");
      tr.appendChild(el("th", {}, k));
      columns.forEach((c) => tr.appendChild(el("td", { class: "num" + (c === current ? " current" : "") }, fmt((rowsOf(c) || {})[k]))));
      body.appendChild(tr);
    });
  }
  function metricTables() {
    const input = currentInput(), names = data.runs.map((r) => r.name);
    table($("metrics"), names, (n) => input.runs[n].metrics, state.run);
    table($("means"), Object.keys(data.means), (n) => data.means[n], state.run);
  }
  function settings() {
    const body = $("settings").tBodies[0];
    const rows = Object.entries(data.spec).filter(([k]) => k !== "inputs");
    Object.entries(data.timing || {}).forEach(([name, t]) => {
      if (!t || t.seconds_per_iteration === undefined) return;
      let text = fmt(t.seconds_per_iteration) + " s per iteration";
      if (t.iterations !== undefined) text += " over the " + t.iterations + " iterations run";
      if (t.compile_seconds !== undefined) text += " (compilation apart: " + fmt(t.compile_seconds) + " s)";
      rows.push([title(name) + ": time", text]);
    });
    rows.forEach(([k, v]) => {
      const tr = el("tr");
      tr.appendChild(el("th", {}, k.replace(/_/g, " ")));
      tr.appendChild(el("td", {}, fmt(v)));
      body.appendChild(tr);
    });
  }

  function studySummary() {
    const s = data.summary;
    if (!s) return;
    $("study-summary").hidden = false;
    $("summary-title").textContent = "Summary of " + s.inputs + " inputs";
    $("summary-histogram").src = s.histogram;
    const box = clear($("summary-extremes"));
    s.extremes.forEach((r) => ["largest", "smallest"].forEach((end) => {
      box.appendChild(el("p", { class: "extreme" }, end + " " + r.label + ": " +
        r[end].map(([name, value]) => name + " (" + fmt(value) + ")").join("; ")));
    }));
    const node = clear($("summary-table"));
    const head = el("tr");
    s.columns.forEach((c) => head.appendChild(el("th", {}, c)));
    node.appendChild(el("thead")).appendChild(head);
    const body = node.appendChild(el("tbody"));
    s.rows.forEach((row) => {
      const tr = el("tr");
      row.forEach((v, i) => tr.appendChild(el("td", { class: i && typeof v !== "string" ? "num" : "" }, fmt(v))));
      body.appendChild(tr);
    });
  }

  // ------------------------------------------------------------------ state
  function render() {
    const its = iterations(state.run);
    $("slider").max = String(its.length - 1);
    $("slider").value = String(state.frame);
    $("iteration").textContent = String(its[state.frame]);
    $("frame-of").textContent = "(point " + (state.frame + 1) + " of " + its.length + ")";
    renderDecoded();
    probabilityChart();
    probabilityTable();
    trajectoryChart();
    runStrip();
    records();
  }
  function setFrame(frame) {
    const last = iterations(state.run).length - 1;
    state.frame = Math.max(0, Math.min(last, Math.round(frame)));
    render();
  }
  function useDefaultScale() {
    // as the report's figures: when the prediction never wavers, what moves are the unlikely classes (log scale)
    let least = 1;
    currentRun().probabilities.forEach((p) => { least = Math.min(least, p[argmax(p)]); });
    state.logScale = least > 0.99;
    $("log-scale").checked = state.logScale;
  }
  function selectRun(name) {
    const it = iterations(state.run)[state.frame];
    state.run = name;
    $("run-select").value = name;
    $("run-description").textContent = runsByName[name].description;
    state.frame = nearestFrame(name, it);
    useDefaultScale();
    metricTables();
    render();
  }
  function selectInput(index) {
    state.input = index;
    $("input-select").value = String(index);
    useDefaultScale();
    metricTables();
    render();
  }
  function play() {
    if (state.timer !== null) { pause(); return; }
    if (state.frame >= iterations(state.run).length - 1) state.frame = 0;
    const interval = Math.max(40, Math.min(250, 10000 / iterations(state.run).length));
    state.timer = setInterval(() => {
      setFrame(state.frame + 1);
      if (state.frame >= iterations(state.run).length - 1) pause();
    }, interval);
    $("play").textContent = "❚❚ pause";
  }
  function pause() {
    if (state.timer !== null) clearInterval(state.timer);
    state.timer = null;
    $("play").textContent = "▶ play";
  }

  function init() {
    const spec = data.spec;
    $("summary").textContent = (data.summary ? data.summary.inputs : data.inputs.length) + " input(s); " + spec.steps + " steps; eta = " + spec.eta +
      "; select = " + fmt(spec.select) + "; bounds = " + spec.bounds + "; output metric = " + spec.output_metric +
      "; runs: " + data.runs.map((r) => r.title).join(", ") + ".";
    const sampled = data.runs.filter((r) => r.iterations.length < r.saved);
    $("sampling").textContent = sampled.length
      ? "Downsampled: " + sampled.map((r) => r.title + " shows " + r.iterations.length + " of its " + r.saved + " saved points").join("; ") +
        " (evenly spread, first and last included; at most " + data.max_frames + " per run)."
      : "Every saved point is shown.";
    if (data.note) $("sampling").textContent += " Note: " + data.note + ".";
    data.inputs.forEach((input, i) => $("input-select").appendChild(
      el("option", { value: i }, (input.index === undefined ? i : input.index) + ": " + input.name)));
    data.runs.forEach((r) => $("run-select").appendChild(el("option", { value: r.name }, r.title)));
    $("input-select").addEventListener("change", (e) => selectInput(Number(e.target.value)));
    $("run-select").addEventListener("change", (e) => selectRun(e.target.value));
    $("slider").addEventListener("input", (e) => { pause(); setFrame(Number(e.target.value)); });
    $("play").addEventListener("click", play);
    $("log-scale").addEventListener("change", (e) => { state.logScale = e.target.checked; probabilityChart(); });
    document.addEventListener("keydown", (e) => {
      if (e.target.tagName === "SELECT" || e.altKey || e.ctrlKey || e.metaKey) return;
      if (e.key === " " && e.target.tagName === "BUTTON") return; // the button's own click
      const steps = { ArrowRight: 1, ArrowUp: 1, ArrowLeft: -1, ArrowDown: -1, PageUp: 10, PageDown: -10 };
      if (e.key in steps) { pause(); setFrame(state.frame + steps[e.key]); }
      else if (e.key === "Home") { pause(); setFrame(0); }
      else if (e.key === "End") { pause(); setFrame(Infinity); }
      else if (e.key === " ") play();
      else return;
      e.preventDefault();
    });
    settings();
    studySummary();
    $("run-description").textContent = runsByName[state.run].description;
    selectInput(0);
  }
  init();
})();
