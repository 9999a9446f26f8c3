// The engine dashboard: the runs list, and one run's call tree updating live.
//
// Plain JavaScript, no build step, no third-party code. Data comes from the same JSON API as
// everything else (GET /v1/runs, /v1/runs/{id}/dag, /v1/runs/{id}/logs); a running run's graph
// is polled about once a second and the polling stops when the run is finished.
//
// Large fan-outs are collapsed: siblings of one function under one parent form a group, and the
// tree is opened level by level only while it stays under NODE_BUDGET visible boxes; a group
// that does not fit is drawn as one box ("agent ×100 · 1,100 calls") with a bar of its calls'
// statuses. Clicking a group opens it. So a run of thousands of calls draws a few dozen boxes.
"use strict";

const NODE_BUDGET = 60;     // boxes opened automatically
const SMALL_GROUP = 3;      // groups this small are always open
const MAX_DEP_EDGES = 600;  // dependency edges drawn at most
const COL = 230, BOX_W = 196, BOX_H = 28, ROW = 36, PAD = 14;
const STATUSES = ["pending", "queued", "running", "tail", "succeeded", "failed", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  token: sessionStorage.getItem("engine-token") || "",
  timer: null, runId: null, dag: null, selected: null,
  expanded: new Set(), collapsed: new Set(), logs: new Map(),
};

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

function fmtDuration(s) {
  if (s == null) return "";
  if (s < 1) return `${Math.max(0, Math.round(s * 1000))} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  return `${m}m ${String(Math.round(s - m * 60)).padStart(2, "0")}s`;
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const fmtCount = (n) => n.toLocaleString("en-US");

// --- API ------------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let res;
  try {
    res = await fetch(path, Object.assign({}, options, { headers }));
  } catch (err) {
    setConn(false);
    throw err;
  }
  setConn(true);
  const body = (res.headers.get("content-type") || "").includes("json") ? await res.json() : await res.text();
  if (res.status === 401) {
    askToken();
    throw new Error("this server needs a token");
  }
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}

function setConn(ok) {
  const el = $("#conn");
  el.className = `conn ${ok ? "ok" : "bad"}`;
  el.title = ok ? "connected" : "the server does not answer";
}

function askToken() {
  const dialog = $("#token-dialog");
  if (!dialog.open) dialog.showModal();
}

$("#token-form").addEventListener("submit", () => {
  state.token = $("#token-input").value.trim();
  sessionStorage.setItem("engine-token", state.token);
  route();
});
$("#token-button").addEventListener("click", askToken);

// --- routing --------------------------------------------------------------------------------

function route() {
  clearTimeout(state.timer);
  const match = location.hash.match(/^#\/runs\/([^/?]+)/);
  if (match) showRun(decodeURIComponent(match[1]));
  else showRuns();
}
window.addEventListener("hashchange", route);

function mount(templateId) {
  const main = $("#main");
  main.replaceChildren($(templateId).content.cloneNode(true));
  return main;
}

// --- the runs list --------------------------------------------------------------------------

function showRuns() {
  state.runId = null;
  mount("#runs-template");
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  $("#f-status").value = params.get("status") || "";
  for (const id of ["#f-app", "#f-status"]) $(id).addEventListener("change", () => { clearTimeout(state.timer); refreshRuns(); });
  api("/v1/applications").then((data) => {
    const select = $("#f-app");
    if (!select) return;
    for (const app of data.applications) select.add(new Option(`${app.name} (v${app.version})`, app.name));
    if (params.get("application")) select.value = params.get("application");
  }).catch(() => {});
  refreshRuns();
}

async function refreshRuns() {
  const body = $("#runs-body");
  if (!body || state.runId) return;
  const q = new URLSearchParams({ limit: "200" });
  if ($("#f-app").value) q.set("application", $("#f-app").value);
  if ($("#f-status").value) q.set("status", $("#f-status").value);
  try {
    const data = await api(`/v1/runs?${q}`);
    body.innerHTML = data.runs.map((r) => `<tr data-run="${esc(r.run_id)}">
      <td class="mono"><a href="#/runs/${encodeURIComponent(r.run_id)}">${esc(r.run_id)}</a></td>
      <td>${esc(r.application)}${r.version != null ? ` <span class="muted">v${r.version}</span>` : ""}</td>
      <td><span class="pill s-${esc(r.status)}">${esc(r.status)}</span></td>
      <td>${esc(fmtTime(r.created_at))}</td>
      <td class="num">${esc(fmtDuration(r.queued_seconds))}</td>
      <td class="num">${esc(fmtDuration(r.duration))}</td></tr>`).join("");
    $("#runs-total").textContent = `${fmtCount(data.total)} run${data.total === 1 ? "" : "s"}${data.total > data.runs.length ? `, newest ${data.runs.length} shown` : ""}`;
    $("#runs-empty").hidden = data.total > 0;
  } catch (err) {
    $("#runs-total").textContent = String(err.message || err);
  }
  state.timer = setTimeout(refreshRuns, 2000);
}

// --- one run --------------------------------------------------------------------------------

function showRun(runId) {
  if (state.runId !== runId) {
    state.expanded = new Set(); state.collapsed = new Set(); state.selected = null; state.logs = new Map();
  }
  state.runId = runId;
  state.dag = null;
  mount("#run-template");
  $("#run-title").textContent = runId;
  $("#legend").innerHTML = STATUSES.map((s) => `<span><i style="background:var(--${s})"></i>${s}</span>`).join("");
  $("#graph").addEventListener("click", onGraphClick);
  $("#show-deps").addEventListener("change", render);
  $("#expand-all").addEventListener("click", () => { expandAll(); render(); });
  $("#collapse-all").addEventListener("click", () => { state.expanded.clear(); state.collapsed.clear(); render(); });
  $("#btn-cancel").addEventListener("click", () => act("cancel"));
  $("#btn-resume").addEventListener("click", () => act("resume"));
  refreshRun();
}

async function act(what) {
  try {
    await api(`/v1/runs/${encodeURIComponent(state.runId)}/${what}`, { method: "POST" });
  } catch (err) {
    alert(err.message || err);
  }
  clearTimeout(state.timer);
  refreshRun();
}

async function refreshRun() {
  const runId = state.runId;
  if (!runId || !$("#graph")) return;
  let finished = false;
  try {
    const dag = await api(`/v1/runs/${encodeURIComponent(runId)}/dag`);
    if (runId !== state.runId) return;
    state.dag = dag;
    finished = FINAL.has(dag.run.status);
    if (finished && !state.outcomeLoaded) loadOutcome(runId);
    render();
  } catch (err) {
    $("#run-meta").textContent = String(err.message || err);
  }
  if (!finished) state.timer = setTimeout(refreshRun, 900);
}

async function loadOutcome(runId) {
  state.outcomeLoaded = true;
  try {
    const run = await api(`/v1/runs/${encodeURIComponent(runId)}`);
    const box = $("#run-outcome");
    if (!box || runId !== state.runId) return;
    box.hidden = false;
    if (run.error) {
      box.className = "outcome err";
      box.innerHTML = `<b>${esc(run.error.kind)}</b>: ${esc(run.error.message)}${run.error.traceback ? `<pre>${esc(run.error.traceback)}</pre>` : ""}`;
    } else {
      box.className = "outcome";
      box.innerHTML = `<b>result</b> <code>${esc(JSON.stringify(run.result)).slice(0, 2000)}</code>`;
    }
  } catch (err) { /* shown on the next refresh */ }
  state.outcomeLoaded = false;
}

function renderHead(dag) {
  const run = dag.run;
  const pill = $("#run-status");
  pill.textContent = run.status;
  pill.className = `pill s-${run.status}`;
  pill.dataset.status = run.status;
  $("#run-title").textContent = run.run_id;
  const parts = [`${run.application}${run.version != null ? ` v${run.version}` : ""}`];
  if (run.duration != null) parts.push(fmtDuration(run.duration));
  if (run.queued_seconds) parts.push(`queued ${fmtDuration(run.queued_seconds)}`);
  if (run.resumes) parts.push(`resumed ${run.resumes}×`);
  if (run.owner && run.status === "running") parts.push(`driven by ${run.owner}`);
  $("#run-meta").textContent = parts.join(" · ");
  $("#btn-cancel").hidden = !(run.status === "queued" || run.status === "running");
  $("#btn-resume").hidden = !(run.status === "failed" || run.status === "cancelled");
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const n of dag.nodes) counts[n.status] = (counts[n.status] || 0) + 1;
  const total = dag.nodes.length || 1;
  $("#run-counts").innerHTML = `<span class="c"><b>${fmtCount(dag.nodes.length)}</b> calls</span>`
    + STATUSES.filter((s) => counts[s]).map((s) => `<span class="c"><b>${fmtCount(counts[s])}</b> ${s}</span>`).join("")
    + `<span class="bar">${STATUSES.map((s) => counts[s] ? `<span style="width:${(100 * counts[s]) / total}%;background:var(--${s})"></span>` : "").join("")}</span>`;
}

// --- the tree model -------------------------------------------------------------------------

function buildTree(dag) {
  const byId = new Map(dag.nodes.map((n) => [n.id, n]));
  const children = new Map();
  const roots = [];
  for (const n of dag.nodes) {
    if (n.parent && byId.has(n.parent)) {
      if (!children.has(n.parent)) children.set(n.parent, []);
      children.get(n.parent).push(n);
    } else roots.push(n);
  }
  // Status counts of every subtree (the call and everything under it), post-order.
  const sub = new Map();
  const order = [];
  const stack = [...roots];
  while (stack.length) {
    const n = stack.pop();
    order.push(n);
    for (const c of children.get(n.id) || []) stack.push(c);
  }
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    const counts = { total: 1 };
    counts[n.status] = 1;
    for (const c of children.get(n.id) || []) {
      for (const [k, v] of Object.entries(sub.get(c.id))) counts[k] = (counts[k] || 0) + v;
    }
    sub.set(n.id, counts);
  }
  return { byId, children, roots, sub };
}

function groupsOf(tree, node) {
  const groups = new Map();
  for (const c of tree.children.get(node.id) || []) {
    const key = `${node.id}|${c.function}`;
    if (!groups.has(key)) groups.set(key, { key, fn: c.function, members: [] });
    groups.get(key).members.push(c);
  }
  return [...groups.values()];
}

// Visible items: {kind: "node", node, kids: [...]} or {kind: "group", key, fn, members, kids: []}.
function visibleTree(tree) {
  const top = tree.roots.map((n) => ({ kind: "node", node: n, kids: [] }));
  let visible = top.length;
  let frontier = top;
  while (frontier.length) {
    const level = [];
    let size = 0;
    for (const item of frontier) {
      for (const g of groupsOf(tree, item.node)) { level.push([item, g]); size += g.members.length; }
    }
    const fits = visible + size <= NODE_BUDGET;
    const next = [];
    for (const [item, g] of level) {
      const open = state.expanded.has(g.key)
        || (!state.collapsed.has(g.key) && (fits || g.members.length <= SMALL_GROUP));
      if (open) {
        for (const m of g.members) {
          const child = { kind: "node", node: m, kids: [] };
          item.kids.push(child);
          next.push(child);
        }
        visible += g.members.length;
      } else {
        item.kids.push({ kind: "group", key: g.key, fn: g.fn, members: g.members, kids: [] });
        visible += 1;
      }
    }
    frontier = next;
  }
  return top;
}

function expandAll() {
  if (!state.dag) return;
  const tree = buildTree(state.dag);
  for (const n of state.dag.nodes) for (const g of groupsOf(tree, n)) state.expanded.add(g.key);
  state.collapsed.clear();
}

function layout(items) {
  let row = 0, maxDepth = 0;
  const placed = [];
  const place = (item, depth) => {
    maxDepth = Math.max(maxDepth, depth);
    item.x = PAD + depth * COL;
    if (!item.kids.length) {
      item.y = PAD + row++ * ROW;
    } else {
      for (const k of item.kids) place(k, depth + 1);
      item.y = (item.kids[0].y + item.kids[item.kids.length - 1].y) / 2;
    }
    placed.push(item);
  };
  for (const item of items) place(item, 0);
  return { placed, width: PAD * 2 + maxDepth * COL + BOX_W + 40, height: PAD * 2 + Math.max(row, 1) * ROW };
}

// --- drawing --------------------------------------------------------------------------------

function render() {
  const dag = state.dag;
  const graph = $("#graph");
  if (!dag || !graph) return;
  renderHead(dag);
  const tree = buildTree(dag);
  const items = visibleTree(tree);
  const { placed, width, height } = layout(items);
  const now = Date.now() / 1000;

  // Every call maps to the box that shows it: its own, or its group's.
  const owner = new Map();
  const pos = new Map();
  for (const item of placed) {
    if (item.kind === "node") { owner.set(item.node.id, item.node.id); pos.set(item.node.id, item); }
    else {
      pos.set(item.key, item);
      const stack = [...item.members];
      while (stack.length) {
        const n = stack.pop();
        owner.set(n.id, item.key);
        for (const c of tree.children.get(n.id) || []) stack.push(c);
      }
    }
  }

  const edges = [];
  for (const item of placed) {
    for (const k of item.kids) edges.push(curve(item, k, "parent"));
  }
  const seen = new Set();
  let deps = 0;
  for (const e of dag.edges) {
    if (e.kind === "parent") continue;
    if (e.kind === "dependency" && (!$("#show-deps").checked || deps >= MAX_DEP_EDGES)) continue;
    const a = owner.get(e.from), b = owner.get(e.to);
    if (!a || !b || a === b) continue;
    const key = `${a}>${b}>${e.kind}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (e.kind === "dependency") deps++;
    edges.push(curve(pos.get(a), pos.get(b), e.kind));
  }

  const boxes = placed.map((item) => (item.kind === "node" ? nodeBox(item, now) : groupBox(item, tree)));
  const scroll = [graph.scrollLeft, graph.scrollTop];
  graph.innerHTML = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="call graph">`
    + `<g class="edges">${edges.join("")}</g><g class="nodes">${boxes.join("")}</g></svg>`;
  [graph.scrollLeft, graph.scrollTop] = scroll;
  graph.dataset.nodes = String(dag.nodes.length);
  graph.dataset.visible = String(placed.length);
  if (state.selected) renderDetails(tree);
}

function curve(a, b, kind) {
  const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2;
  if (b.x > a.x) {
    const x2 = b.x, y2 = b.y + BOX_H / 2, mx = (x1 + x2) / 2;
    return `<path class="edge ${kind}" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}"/>`;
  }
  // Same column or back: an arc out to the right, into the target's right side.
  const x2 = b.x + BOX_W, y2 = b.y + BOX_H / 2, bulge = Math.max(x1, x2) + 26 + Math.min(60, Math.abs(y2 - y1) / 8);
  return `<path class="edge ${kind}" d="M${x1},${y1} C${bulge},${y1} ${bulge},${y2} ${x2},${y2}"/>`;
}

function nodeBox(item, now) {
  const n = item.node;
  const dur = n.status === "running" && n.start ? now - n.start : n.duration;
  const selected = state.selected === n.id ? " selected" : "";
  const badge = n.attempts > 1 ? `<text class="badge" x="${BOX_W - 60}" y="18">×${n.attempts}</text>` : "";
  const label = n.kind === "call" ? n.function : `${n.kind} ${n.function}`;
  return `<g class="node s-${esc(n.status)}${selected}" data-id="${esc(n.id)}" data-status="${esc(n.status)}" transform="translate(${item.x},${item.y})">`
    + `<title>${esc(label)} · ${esc(n.status)}${n.error ? ` · ${esc(n.error)}` : ""}</title>`
    + `<rect class="box" width="${BOX_W}" height="${BOX_H}" rx="5"/><rect class="stripe" width="5" height="${BOX_H}" rx="2"/>`
    + `<text class="fn" x="12" y="18">${esc(clip(label, 20))}</text>${badge}`
    + `<text class="dur" x="${BOX_W - 8}" y="18" text-anchor="end">${esc(fmtDuration(dur))}</text></g>`;
}

function groupBox(item, tree) {
  const counts = {};
  let total = 0;
  for (const m of item.members) {
    for (const [k, v] of Object.entries(tree.sub.get(m.id))) counts[k] = (counts[k] || 0) + v;
  }
  total = counts.total;
  const dominant = ["failed", "running", "queued", "pending", "tail", "cancelled", "succeeded"].find((s) => counts[s]) || "pending";
  let x = 6;
  const bar = STATUSES.filter((s) => counts[s]).map((s) => {
    const w = ((BOX_W - 12) * counts[s]) / total;
    const r = `<rect x="${x}" y="${BOX_H - 6}" width="${w}" height="3" fill="var(--${s})"/>`;
    x += w;
    return r;
  }).join("");
  const summary = STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
  return `<g class="node cluster s-${dominant}" data-group="${esc(item.key)}" data-status="${dominant}" transform="translate(${item.x},${item.y})">`
    + `<title>${esc(item.fn)} ×${item.members.length}: ${esc(summary)} — click to open</title>`
    + `<rect class="shadow" x="4" y="4" width="${BOX_W}" height="${BOX_H}" rx="5"/>`
    + `<rect class="box" width="${BOX_W}" height="${BOX_H}" rx="5"/><rect class="stripe" width="5" height="${BOX_H}" rx="2"/>`
    + `<text class="fn" x="12" y="16">${esc(clip(item.fn, 14))} ×${fmtCount(item.members.length)}</text>`
    + `<text class="sub" x="${BOX_W - 8}" y="16" text-anchor="end">${fmtCount(total)} calls</text>${bar}</g>`;
}

const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

function onGraphClick(event) {
  const el = event.target.closest("g.node");
  if (!el) return;
  if (el.dataset.group) {
    state.expanded.add(el.dataset.group);
    state.collapsed.delete(el.dataset.group);
  } else {
    state.selected = el.dataset.id;
  }
  render();
}

// --- details of one call --------------------------------------------------------------------

function renderDetails(tree) {
  const n = tree.byId.get(state.selected);
  const box = $("#details");
  if (!n || !box) return;
  const groups = groupsOf(tree, n);
  const dur = n.status === "running" && n.start ? Date.now() / 1000 - n.start : n.duration;
  const rows = [
    ["status", `<span class="pill s-${esc(n.status)}">${esc(n.status)}</span>`],
    ["kind", esc(n.kind)], ["call", `<span class="mono">${esc(n.id)}</span>`],
    ["attempts", `${n.attempts}${n.executions !== n.attempts ? ` (${n.executions} executions in all)` : ""}`],
    ["started", esc(fmtTime(n.start))], ["duration", esc(fmtDuration(dur))],
    ["parent", n.parent ? `<a href="#" data-select="${esc(n.parent)}" class="mono">${esc(n.parent)}</a>` : "—"],
    ["children", groups.length ? groups.map((g) => `${esc(g.fn)} ×${g.members.length}`).join(", ") : "—"],
  ];
  const collapse = groups.some((g) => g.members.length > SMALL_GROUP)
    ? `<button type="button" class="link" data-collapse="${esc(n.id)}">collapse its children</button>` : "";
  const logKey = `${n.id}:${n.status}:${n.attempts}`;
  const logs = state.logs.get(logKey);
  box.innerHTML = `<h3>${esc(n.function)}</h3><dl>${rows.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>${collapse}`
    + (n.error ? `<div><b>error</b><pre class="err">${esc(n.error)}</pre></div>` : "")
    + `<div><b>logs</b><pre id="call-logs">${logs == null ? "loading…" : esc(logs) || "(nothing printed)"}</pre></div>`;
  box.onclick = (event) => {
    const sel = event.target.closest("[data-select]");
    if (sel) { event.preventDefault(); state.selected = sel.dataset.select; render(); }
    const col = event.target.closest("[data-collapse]");
    if (col) {
      for (const g of groupsOf(tree, tree.byId.get(col.dataset.collapse))) { state.collapsed.add(g.key); state.expanded.delete(g.key); }
      render();
    }
  };
  if (logs == null && !state.logs.has(`${logKey}:loading`)) {
    state.logs.set(`${logKey}:loading`, true);
    api(`/v1/runs/${encodeURIComponent(state.runId)}/logs?call=${encodeURIComponent(n.id)}`).then((data) => {
      state.logs.set(logKey, data.logs.map((l) => (l.attempt > 1 ? `#${l.attempt} ` : "") + l.text).join(""));
      if (state.selected === n.id) render();
    }).catch((err) => state.logs.set(logKey, String(err.message || err)));
  }
}

route();
