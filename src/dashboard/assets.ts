/**
 * The dashboard page: HTML, CSS and a small script, served as they are (no front-end build).
 *
 * The script renders every value with `textContent` / `createElement` — never `innerHTML` — because task names,
 * payloads, errors and run ids are user data. It loads data from `/api/*` and refreshes what it shows when the
 * server's event stream (`/api/events`, fed by the CompletionBackend) says something changed: no polling loop.
 */

/** The page. No inline script or style (the Content-Security-Policy forbids both). */
export const pageHtml = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Baton dashboard</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>Baton</h1>
  <span id="storage" class="muted"></span>
  <span id="live" class="pill off" title="Server-Sent Events from the completion stream">connecting…</span>
  <span id="mode" class="pill"></span>
</header>
<main>
  <section id="runs-section">
    <h2>Runs</h2>
    <table id="runs"><thead><tr><th>Run</th><th>Kind</th><th>State</th><th class="wide">Progress</th><th>Batches</th>
      <th>Documents</th><th>Rate</th><th>ETA</th><th>Updated</th></tr></thead><tbody></tbody></table>
    <div id="run-detail" class="detail" hidden>
      <h3>Run <span id="run-detail-id"></span> · batches <button id="run-detail-close" class="link">close</button></h3>
      <p id="run-detail-error" class="error"></p>
      <table id="batches"><thead><tr><th>Batch</th><th>Scope</th><th>Checkpoint</th><th>Created</th>
        <th>Took</th><th>Chord</th><th>Error</th></tr></thead><tbody></tbody></table>
      <div class="pager" id="batches-pager"></div>
    </div>
  </section>

  <section id="chords-section">
    <h2>Chords <span id="chord-counts" class="muted"></span></h2>
    <div class="row">
      <div class="grow">
        <div class="tabs" id="chord-tabs"></div>
        <table id="chords"><thead><tr><th>Chord</th><th>State</th><th>Body</th><th>Callback</th>
          <th>Time to callback</th><th>Created</th><th>Failure</th></tr></thead><tbody></tbody></table>
        <div class="pager" id="chords-pager"></div>
      </div>
      <div class="histogram-box">
        <h3>Time to callback <span id="histogram-samples" class="muted"></span></h3>
        <div id="histogram"></div>
      </div>
    </div>
  </section>

  <section id="queues-section">
    <h2>Queues</h2>
    <table id="queues"><thead><tr><th>Queue</th><th>Pending</th><th>Running</th><th>Succeeded</th><th>Failed</th>
      <th>Dead</th><th>Cancelled</th><th>Throughput</th><th>Oldest waiting</th></tr></thead><tbody></tbody></table>
  </section>

  <section id="workers-section">
    <h2>Workers <span id="worker-count" class="muted"></span></h2>
    <table id="workers"><thead><tr><th>Worker</th><th>Host</th><th>PID</th><th>Queues</th><th>Tasks in hand</th>
      <th>Started</th><th>Last heartbeat</th></tr></thead><tbody></tbody></table>
  </section>

  <section id="tasks-section">
    <h2>Tasks</h2>
    <form id="task-filters" class="filters">
      <select id="f-state"><option value="">any state</option><option>pending</option><option>running</option>
        <option>succeeded</option><option>failed</option><option>dead</option><option>cancelled</option></select>
      <input id="f-queue" placeholder="queue">
      <input id="f-q" placeholder="name contains / task id">
      <input id="f-run" placeholder="run id">
      <button type="submit">Filter</button>
    </form>
    <table id="tasks"><thead><tr><th>Task</th><th>Name</th><th>Queue</th><th>State</th><th>Attempts</th>
      <th>Created</th><th>Error</th><th></th></tr></thead><tbody></tbody></table>
    <div class="pager" id="tasks-pager"></div>
    <p id="task-action-message" class="muted" role="status"></p>
    <div id="task-detail" class="detail" hidden>
      <h3>Task <span id="task-detail-id"></span> <button id="task-detail-close" class="link">close</button></h3>
      <dl id="task-detail-fields"></dl>
      <div class="cols">
        <div><h4>Payload</h4><pre id="task-payload"></pre></div>
        <div><h4>Result</h4><pre id="task-result"></pre></div>
        <div><h4>Last error</h4><pre id="task-error"></pre></div>
      </div>
      <p id="task-actions"></p>
    </div>
  </section>
</main>
</body>
</html>
`

/** The stylesheet. */
export const appCss = `
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa; --ok: #1a7f37; --bad: #cf222e;
  --run: #0969da; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #fff; }
header { display: flex; gap: 12px; align-items: center; padding: 10px 20px; border-bottom: 1px solid var(--line);
  background: var(--bg); }
header h1 { font-size: 18px; margin: 0; }
main { padding: 8px 20px 40px; }
h2 { font-size: 15px; margin: 18px 0 8px; }
h3 { font-size: 13px; margin: 8px 0; }
h4 { margin: 4px 0; font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top;
  white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.err { white-space: normal; color: var(--bad); max-width: 420px; overflow-wrap: anywhere; }
td.name { white-space: normal; overflow-wrap: anywhere; max-width: 320px; }
th.wide { width: 22%; }
tbody tr.clickable { cursor: pointer; }
tbody tr.clickable:hover { background: var(--bg); }
.muted { color: var(--muted); }
.error { color: var(--bad); }
.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.pill { border-radius: 10px; padding: 1px 8px; font-size: 12px; background: #ddf4ff; color: var(--run); }
.pill.off { background: #fff8c5; color: var(--warn); }
.pill.ro { background: #eaeef2; color: var(--muted); }
.state { font-weight: 600; }
.state-running, .state-pending { color: var(--run); }
.state-succeeded, .state-completed { color: var(--ok); }
.state-failed, .state-dead { color: var(--bad); }
.state-cancelled { color: var(--muted); }
.bar { position: relative; height: 14px; background: #eaeef2; border-radius: 7px; overflow: hidden; min-width: 160px; }
.pill.stalled { background: #b45309; color: #fff; }
.bar > div { height: 100%; background: var(--run); transition: width .3s; }
.bar.done > div { background: var(--ok); }
.bar.failed > div { background: var(--bad); }
.bar > span { position: absolute; inset: 0; text-align: center; font-size: 11px; line-height: 14px; color: #fff;
  mix-blend-mode: difference; }
.detail { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin-top: 10px; background: #fbfcfd; }
.pager { display: flex; gap: 8px; align-items: center; padding: 6px 0; color: var(--muted); }
button { font: inherit; padding: 2px 10px; border: 1px solid var(--line); border-radius: 5px; background: #fff;
  cursor: pointer; }
button:disabled { opacity: .5; cursor: default; }
button.link { border: 0; background: none; color: var(--run); padding: 0 4px; }
button.danger { border-color: var(--bad); color: var(--bad); }
.tabs { display: flex; gap: 6px; margin-bottom: 6px; }
.tabs button.active { background: var(--fg); color: #fff; }
.row { display: flex; gap: 20px; align-items: flex-start; }
.grow { flex: 1; min-width: 0; }
.histogram-box { width: 300px; }
.hrow { display: flex; align-items: center; gap: 6px; font-size: 11px; height: 16px; }
.hrow .label { width: 70px; text-align: right; color: var(--muted); }
.hrow .hbar { height: 10px; background: var(--run); border-radius: 2px; }
.filters { display: flex; gap: 6px; margin-bottom: 6px; }
.filters input, .filters select { font: inherit; padding: 2px 6px; border: 1px solid var(--line); border-radius: 5px; }
pre { background: var(--bg); padding: 6px; border-radius: 4px; max-height: 240px; overflow: auto; white-space: pre-wrap;
  overflow-wrap: anywhere; margin: 0; font-size: 12px; }
.cols { display: grid; grid-template-columns: 1fr 1fr 1fr; gap: 10px; }
dl { display: grid; grid-template-columns: max-content 1fr max-content 1fr max-content 1fr; gap: 2px 10px; margin: 4px 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
`

/**
 * The script. Plain ES2017, no template literals (this file holds it in one), every value through `textContent`.
 */
export const appJs = String.raw`"use strict";
(function () {
  var state = {
    config: { allowActions: false },
    runsDetail: null, batchesOffset: 0,
    chordState: "", chordsOffset: 0,
    tasksOffset: 0, taskFilter: {}, taskDetail: null
  };
  var PAGE = 50, CHORD_PAGE = 12, BATCH_PAGE = 20;

  function $(id) { return document.getElementById(id); }
  // Re-render a view only when its data changed: fewer DOM swaps under a stream of events (a row being clicked is
  // not replaced under the pointer unless it really changed).
  var lastRendered = {};
  function unchanged(key, data) {
    var text = JSON.stringify(data);
    if (lastRendered[key] === text) return true;
    lastRendered[key] = text;
    return false;
  }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else if (k === "onclick") node.addEventListener("click", attrs[k]);
      else node.setAttribute(k, attrs[k]);
    }
    if (children) children.forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function td(text, className) { return el("td", { text: text == null ? "" : String(text), className: className || "" }); }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtTime(ms) { if (ms == null) return "—"; var d = new Date(ms); return d.toLocaleTimeString(); }
  function fmtDuration(ms) {
    if (ms == null) return "—";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
    return (ms / 3600000).toFixed(1) + " h";
  }
  function fmtNum(n) { return n == null ? "—" : Number(n).toLocaleString(); }
  function short(id) { return id == null ? "—" : String(id).length > 12 ? String(id).slice(0, 8) + "…" : String(id); }
  function stateCell(s) { return el("td", { className: "state state-" + s, text: s }); }
  function errorText(e) {
    if (e == null) return "";
    if (typeof e === "string") return e;
    if (e.message) return (e.kind ? e.kind + ": " : "") + e.message;
    return JSON.stringify(e);
  }
  function pretty(v) { return v == null ? "—" : typeof v === "string" ? v : JSON.stringify(v, null, 2); }

  function api(path, options) {
    return fetch(path, Object.assign({ credentials: "same-origin", headers: { accept: "application/json" } }, options || {}))
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (body) {
          if (!res.ok) throw new Error((body && body.error) || ("HTTP " + res.status));
          return body;
        });
      });
  }
  function query(params) {
    var parts = [];
    for (var k in params) if (params[k] !== undefined && params[k] !== null && params[k] !== "")
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
    return parts.length ? "?" + parts.join("&") : "";
  }
  function pager(node, total, offset, onPage, size) {
    clear(node);
    size = size || PAGE;
    var from = total === 0 ? 0 : offset + 1, to = Math.min(offset + size, total);
    var prev = el("button", { text: "‹ prev" }); prev.disabled = offset === 0;
    prev.addEventListener("click", function () { onPage(Math.max(0, offset - size)); });
    var next = el("button", { text: "next ›" }); next.disabled = offset + size >= total;
    next.addEventListener("click", function () { onPage(offset + size); });
    node.appendChild(prev);
    node.appendChild(el("span", { text: fmtNum(from) + "–" + fmtNum(to) + " of " + fmtNum(total) }));
    node.appendChild(next);
  }

  // Runs
  function progressBar(done, total, s) {
    var pct = total > 0 ? Math.round((done / total) * 100) : 0;
    var inner = el("div"); inner.style.width = pct + "%";
    var bar = el("div", { className: "bar" + (s === "succeeded" ? " done" : s === "failed" ? " failed" : "") }, [
      inner, el("span", { text: pct + "%", className: "pct" })
    ]);
    return bar;
  }
  function renderRuns(data) {
    if (unchanged("runs", data)) return;
    var body = $("runs").tBodies[0]; clear(body);
    if (data.items.length === 0) body.appendChild(el("tr", {}, [el("td", { text: "no runs yet", colspan: "9", className: "muted" })]));
    data.items.forEach(function (r) {
      var docs = r.documents;
      var tr = el("tr", { className: "clickable", "data-run": r.id }, [
        el("td", { className: "mono", text: r.id }), td(r.kind), stateCell(r.state),
        el("td", { className: "progress" }, [
          r.stalled
            ? el("span", { className: "pill stalled", text: "stalled: no live worker",
                title: fmtNum(r.tasksPending) + " tasks pending, " + fmtNum(r.tasksRunning) + " running, and no live worker serves their queues" })
            : progressBar(docs ? docs.done : r.completedBatches, docs ? docs.total : r.totalBatches, r.state)
        ]),
        el("td", { className: "batches", text: r.completedBatches + "/" + r.totalBatches }),
        el("td", { className: "documents", text: docs ? fmtNum(docs.done) + "/" + fmtNum(docs.total) : "—" }),
        td(r.batchesPerSecond == null ? "—" : r.batchesPerSecond.toFixed(2) + " batches/s"),
        td(r.state === "running" ? fmtDuration(r.etaMs) : "—"), td(fmtTime(r.updatedAt))
      ]);
      if (r.error) tr.title = r.error;
      tr.addEventListener("click", function () { state.runsDetail = r.id; state.batchesOffset = 0; loadRunDetail(); });
      body.appendChild(tr);
    });
  }
  // Latest request wins, per view: a refresh started before the user changed a filter or a page must not paint its
  // older answer over the newer one (responses can arrive out of order).
  var requestSeq = {};
  function fresh(view) {
    var n = (requestSeq[view] = (requestSeq[view] || 0) + 1);
    return function (render) { return function (d) { if (requestSeq[view] === n) return render(d); }; };
  }
  function loadRuns() { return api("/api/runs?limit=20").then(fresh("runs")(renderRuns)); }
  function loadRunDetail() {
    if (!state.runsDetail) { $("run-detail").hidden = true; return Promise.resolve(); }
    var only = fresh("run-detail");
    return api("/api/runs/" + encodeURIComponent(state.runsDetail) + query({ limit: BATCH_PAGE, offset: state.batchesOffset }))
      .then(only(function (d) {
        $("run-detail").hidden = false;
        if (unchanged("run-detail", d)) return;
        $("run-detail-id").textContent = d.run.id + " (" + d.run.state + ", attempt " + d.run.attempt + ")";
        $("run-detail-error").textContent = d.run.error || "";
        var body = $("batches").tBodies[0]; clear(body);
        d.batches.items.forEach(function (b) {
          body.appendChild(el("tr", {}, [
            td(b.batchIndex), el("td", { className: "mono", text: b.scope }), stateCell(b.status),
            td(fmtTime(b.createdAt)), td(fmtDuration(b.durationMs)),
            el("td", { className: "mono", text: b.chord ? short(b.chord.id) + " " + b.chord.state : "—" }),
            el("td", { className: "err", text: errorText(b.error) })
          ]));
        });
        pager($("batches-pager"), d.batches.total, state.batchesOffset, function (o) { state.batchesOffset = o; loadRunDetail(); }, BATCH_PAGE);
      }));
  }

  // Chords
  function renderChordTabs(counts) {
    var tabs = $("chord-tabs"); clear(tabs);
    [["", "all"], ["running", "pending"], ["completed", "dispatched"], ["failed", "failed"], ["cancelled", "cancelled"]]
      .forEach(function (t) {
        var n = t[0] === "" ? Object.keys(counts).reduce(function (a, k) { return a + counts[k]; }, 0) : counts[t[0]] || 0;
        var b = el("button", { text: t[1] + " " + fmtNum(n), className: state.chordState === t[0] ? "active" : "" });
        b.addEventListener("click", function () { state.chordState = t[0]; state.chordsOffset = 0; loadChords(); });
        tabs.appendChild(b);
      });
  }
  function renderHistogram(h) {
    var box = $("histogram"); clear(box);
    $("histogram-samples").textContent = "(last " + fmtNum(h.samples) + " dispatched)";
    var buckets = h.buckets, last = -1, first = -1, max = 0;
    buckets.forEach(function (b, i) { if (b.count > 0) { if (first < 0) first = i; last = i; } max = Math.max(max, b.count); });
    if (first < 0) { box.appendChild(el("div", { className: "muted", text: "no dispatched chords yet" })); return; }
    for (var i = first; i <= last; i++) {
      var b = buckets[i];
      var bar = el("div", { className: "hbar" }); bar.style.width = (b.count === 0 ? 0 : Math.max(2, Math.round((b.count / max) * 180))) + "px";
      box.appendChild(el("div", { className: "hrow" }, [
        el("span", { className: "label", text: b.le == null ? "more" : "≤ " + fmtDuration(b.le) }), bar,
        el("span", { text: fmtNum(b.count) })
      ]));
    }
  }
  function renderChords(d) {
    if (unchanged("chords", [d, state.chordState])) return;
    var c = d.counts;
    $("chord-counts").textContent = "pending " + fmtNum(c.running) + " · dispatched " + fmtNum(c.completed) +
      " · failed " + fmtNum(c.failed) + " · cancelled " + fmtNum(c.cancelled);
    renderChordTabs(c);
    var body = $("chords").tBodies[0]; clear(body);
    d.items.forEach(function (ch) {
      var f = ch.failure;
      var failure = f ? (f.reason === "cancelled" ? "cancelled" : "task " + (f.index == null ? "?" : f.index) + " " +
        (f.taskName || "?") + " (" + short(f.taskId) + "): " + errorText(f.error)) : "";
      body.appendChild(el("tr", { "data-chord": ch.id }, [
        el("td", { className: "mono", text: short(ch.id) }), stateCell(ch.state === "running" ? "pending" : ch.state === "completed" ? "dispatched" : ch.state),
        el("td", { className: "body", text: fmtNum(ch.succeeded) + "/" + fmtNum(ch.expected) + (ch.failed ? " · " + ch.failed + " failed" : "") }),
        el("td", { className: "mono", text: ch.callbackName + (ch.callbackTaskId ? " → " + short(ch.callbackTaskId) : "") }),
        td(ch.timeToCallbackMs == null ? "—" : fmtDuration(ch.timeToCallbackMs) + (ch.healed ? " (healed)" : "")),
        td(fmtTime(ch.createdAt)), el("td", { className: "err", text: failure })
      ]));
    });
    pager($("chords-pager"), d.total, state.chordsOffset, function (o) { state.chordsOffset = o; loadChords(); }, CHORD_PAGE);
    renderHistogram(d.histogram);
  }
  function loadChords() {
    return api("/api/chords" + query({ state: state.chordState, limit: CHORD_PAGE, offset: state.chordsOffset })).then(fresh("chords")(renderChords));
  }

  // Queues
  function renderQueues(d) {
    if (unchanged("queues", d.queues)) return;
    var body = $("queues").tBodies[0]; clear(body);
    if (d.queues.length === 0) body.appendChild(el("tr", {}, [el("td", { text: "no tasks yet", colspan: "9", className: "muted" })]));
    d.queues.forEach(function (q) {
      var o = q.oldestWaiting;
      var dead = el("td", { className: q.depth.dead ? "state state-dead" : "", text: fmtNum(q.depth.dead) });
      body.appendChild(el("tr", { "data-queue": q.queue }, [
        el("td", { className: "mono", text: q.queue }), el("td", { className: "pending", text: fmtNum(q.depth.pending) }),
        td(fmtNum(q.depth.running)), td(fmtNum(q.depth.succeeded)), td(fmtNum(q.depth.failed)), dead,
        td(fmtNum(q.depth.cancelled)), td(q.throughput.perSecond.toFixed(1) + " tasks/s (1 min)"),
        el("td", { className: "name", text: o ? o.name + " · waiting " + fmtDuration(o.waitingMs) : "—" })
      ]));
    });
  }
  function loadQueues() { return api("/api/queues").then(renderQueues); }

  // Workers (they register and heartbeat without completion events, so this list is also refreshed on a timer)
  function renderWorkers(d) {
    if (unchanged("workers", d.items)) return;
    $("worker-count").textContent = d.items.length + " live";
    var body = $("workers").tBodies[0]; clear(body);
    if (d.items.length === 0) body.appendChild(el("tr", {}, [el("td", { text: "no live worker", colspan: "7", className: "muted" })]));
    d.items.forEach(function (w) {
      body.appendChild(el("tr", { "data-worker": w.id }, [
        el("td", { className: "mono", text: w.id }), td(w.host), td(w.pid), el("td", { className: "mono", text: w.queues.join(", ") }),
        td(fmtNum(w.tasksInHand) + " / " + fmtNum(w.concurrency)), td(fmtTime(w.startedAt)), td(fmtTime(w.lastHeartbeat))
      ]));
    });
  }
  function loadWorkers() { return api("/api/workers").then(fresh("workers")(renderWorkers)); }

  // Tasks
  function readFilters() {
    state.taskFilter = { state: $("f-state").value, queue: $("f-queue").value.trim(), q: $("f-q").value.trim(), run: $("f-run").value.trim() };
  }
  function retryButton(taskId) {
    var b = el("button", { text: "retry", className: "danger" });
    if (!state.config.allowActions) { b.disabled = true; b.title = "read-only: start with --allow-actions"; }
    b.addEventListener("click", function (ev) {
      ev.stopPropagation(); b.disabled = true;
      api("/api/tasks/" + encodeURIComponent(taskId) + "/retry", { method: "POST", headers: { "x-baton-action": "1", accept: "application/json" } })
        .then(function () { $("task-action-message").textContent = "task " + taskId + " queued again"; refreshAll(); })
        .catch(function (e) { b.disabled = false; $("task-action-message").textContent = "retry refused: " + e.message; });
    });
    return b;
  }
  function renderTasks(d) {
    if (unchanged("tasks", [d, state.config.allowActions])) return;
    var body = $("tasks").tBodies[0]; clear(body);
    d.items.forEach(function (t) {
      var retryable = (t.state === "dead" || t.state === "failed") && !t.chordId;
      var tr = el("tr", { className: "clickable", "data-task": t.id }, [
        el("td", { className: "mono", text: short(t.id) }), el("td", { className: "name", text: t.name }),
        el("td", { className: "mono", text: t.queue }), stateCell(t.state), td(t.attempts + "/" + t.maxAttempts),
        td(fmtTime(t.createdAt)), el("td", { className: "err", text: t.state === "succeeded" ? "" : errorText(t.error) }),
        el("td", {}, [retryable ? retryButton(t.id) : null])
      ]);
      tr.addEventListener("click", function () { state.taskDetail = t.id; loadTaskDetail(); });
      body.appendChild(tr);
    });
    pager($("tasks-pager"), d.total, state.tasksOffset, function (o) { state.tasksOffset = o; loadTasks(); });
  }
  function loadTasks() {
    var f = state.taskFilter;
    return api("/api/tasks" + query({ state: f.state, queue: f.queue, q: f.q, run: f.run, limit: PAGE, offset: state.tasksOffset }))
      .then(fresh("tasks")(renderTasks));
  }
  function loadTaskDetail() {
    if (!state.taskDetail) { $("task-detail").hidden = true; return Promise.resolve(); }
    return api("/api/tasks/" + encodeURIComponent(state.taskDetail)).then(fresh("task-detail")(function (t) {
      $("task-detail").hidden = false;
      if (unchanged("task-detail", t)) return;
      $("task-detail-id").textContent = t.id;
      var dl = $("task-detail-fields"); clear(dl);
      [["name", t.name], ["state", t.state], ["queue", t.queue], ["attempts", t.attempts + "/" + t.maxAttempts],
       ["namespace", t.namespace], ["tags", t.tags.join(", ") || "—"], ["run", t.runId || "—"], ["chord", t.chordId || "—"],
       ["created", fmtTime(t.createdAt)], ["started", fmtTime(t.startedAt)], ["finished", fmtTime(t.finishedAt)],
       ["idempotency key", t.idempotencyKey || "—"],
       ["progress", t.progress ? Math.round(t.progress.value * 100) + "%" + (t.progress.message ? " · " + t.progress.message : "") + " (" + fmtTime(t.progress.at) + ")" : "—"]].forEach(function (p) {
        dl.appendChild(el("dt", { text: p[0] })); dl.appendChild(el("dd", { text: String(p[1]) }));
      });
      $("task-payload").textContent = pretty(t.payload);
      $("task-result").textContent = pretty(t.result);
      $("task-error").textContent = pretty(t.error);
      var actions = $("task-actions"); clear(actions);
      if (t.retryable) actions.appendChild(retryButton(t.id));
    }));
  }

  // Live updates: the server pushes "change" when completion events arrive; refresh what is shown, one fetch at a
  // time, plus one trailing refresh a second after the last event (progress is recorded just after a checkpoint).
  var inFlight = false, again = false, trailing = null;
  function refreshAll() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    Promise.all([loadRuns(), loadRunDetail(), loadChords(), loadQueues(), loadTasks(), loadTaskDetail(), loadWorkers()])
      .catch(function (e) { console.error(e); })
      .then(function () { inFlight = false; if (again) { again = false; refreshAll(); } });
  }
  function connect() {
    var live = $("live");
    var source = new EventSource("/api/events");
    source.addEventListener("open", function () { live.textContent = "live"; live.className = "pill"; refreshAll(); });
    source.addEventListener("change", function () {
      refreshAll();
      if (trailing) clearTimeout(trailing);
      trailing = setTimeout(function () { trailing = null; refreshAll(); }, 1000);
    });
    source.addEventListener("error", function () { live.textContent = "reconnecting…"; live.className = "pill off"; });
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("run-detail-close").addEventListener("click", function () { state.runsDetail = null; $("run-detail").hidden = true; });
    $("task-detail-close").addEventListener("click", function () { state.taskDetail = null; $("task-detail").hidden = true; });
    $("task-filters").addEventListener("submit", function (ev) { ev.preventDefault(); readFilters(); state.tasksOffset = 0; loadTasks(); });
    api("/api/config").then(function (c) {
      state.config = c;
      $("storage").textContent = c.storage || "";
      var mode = $("mode");
      mode.textContent = c.allowActions ? "actions allowed" : "read-only";
      mode.className = c.allowActions ? "pill" : "pill ro";
    }).catch(function () {}).then(function () {
      refreshAll(); connect();
      // Workers come and go (and runs become stalled) without a completion event.
      setInterval(function () { loadWorkers().catch(function () {}); loadRuns().catch(function () {}); }, 10000);
    });
  });
})();
`
