// The engine dashboard: the runs list, one run's call tree and timeline updating live (with
// cancel and resume, and a form per open wait that sends its signal), and a page per
// application with a form, built from its input schema, that starts a run.
//
// Plain JavaScript, no build step, no third-party code. Data comes from the same JSON API as
// everything else (GET /v1/runs, /v1/runs/{id}/dag, /v1/runs/{id}/logs, /v1/applications/{name});
// a running run's graph is polled about once a second and the polling stops when the run is
// finished.
//
// Large fan-outs are collapsed: siblings of one function under one parent form a group, and the
// tree is opened level by level only while it stays under NODE_BUDGET visible boxes; a group
// that does not fit is drawn as one box ("agent ×100 · 1,100 calls") with a bar of its calls'
// statuses. Clicking a group opens it. So a run of thousands of calls draws a few dozen boxes.
//
// The timeline draws one row per call on a canvas, in tree order (children under their parent,
// in the order they were made): a thin bar while it waits (for its dependencies, an executor,
// a retry's back-off), a thick one while an attempt runs, failed attempts in red with a mark
// at their end. Rows are laid out once per update (an array, O(calls)); scrolling and hovering
// only redraw the rows in view, so thousands of calls stay smooth.
"use strict";

const NODE_BUDGET = 60;     // boxes opened automatically
const SMALL_GROUP = 3;      // groups this small are always open
const MAX_DEP_EDGES = 600;  // dependency edges drawn at most
const COL = 230, BOX_W = 196, BOX_H = 28, ROW = 36, PAD = 14;
const STATUSES = ["pending", "queued", "running", "tail", "succeeded", "failed", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  token: sessionStorage.getItem("engine-token") || "",
  timer: null, runId: null, dag: null, selected: null, view: "graph",
  expanded: new Set(), collapsed: new Set(), logs: new Map(), folded: new Set(),
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
  if (!res.ok) {
    const err = new Error((body && body.error) || res.statusText);
    err.status = res.status;
    throw err;
  }
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
  const hash = location.hash;
  let match;
  if ((match = hash.match(/^#\/runs\/([^/?]+)/))) showRun(decodeURIComponent(match[1]));
  else if ((match = hash.match(/^#\/apps\/([^/?]+)/))) showApp(decodeURIComponent(match[1]));
  else if (/^#\/apps\/?(\?|$)/.test(hash)) showApps();
  else showRuns();
}
const hashParams = () => new URLSearchParams(location.hash.split("?")[1] || "");
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
  const params = hashParams();
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
      <td><a href="#/apps/${encodeURIComponent(r.application)}">${esc(r.application)}</a>${r.version != null ? ` <span class="muted">v${r.version}</span>` : ""}</td>
      <td><span class="pill s-${esc(r.waiting ? "waiting" : r.status)}">${esc(r.waiting ? "waiting" : r.status)}</span></td>
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
    state.folded = new Set();
  }
  state.runId = runId;
  state.dag = null;
  state.view = hashParams().get("view") === "timeline" ? "timeline" : "graph";
  mount("#run-template");
  $("#run-title").textContent = runId;
  $("#legend").innerHTML = STATUSES.map((s) => `<span><i style="background:var(--${s})"></i>${s}</span>`).join("");
  $("#graph").addEventListener("click", onGraphClick);
  $("#show-deps").addEventListener("change", render);
  $("#expand-all").addEventListener("click", () => { expandAll(); render(); });
  $("#collapse-all").addEventListener("click", () => { state.expanded.clear(); state.collapsed.clear(); render(); });
  $("#btn-cancel").addEventListener("click", () => act("cancel"));
  $("#btn-resume").addEventListener("click", () => act("resume"));
  $("#view-graph").addEventListener("click", () => setView("graph"));
  $("#view-timeline").addEventListener("click", () => setView("timeline"));
  initTimeline();
  setView(state.view);
  refreshRun();
}

function setView(view) {
  state.view = view;
  const tl = view === "timeline";
  $("#view-graph").classList.toggle("on", !tl);
  $("#view-timeline").classList.toggle("on", tl);
  $("#view-graph").setAttribute("aria-selected", String(!tl));
  $("#view-timeline").setAttribute("aria-selected", String(tl));
  $("#graph").hidden = tl;
  $("#timeline").hidden = !tl;
  for (const el of document.querySelectorAll(".for-graph")) el.hidden = tl;
  for (const el of document.querySelectorAll(".for-timeline")) el.hidden = !tl;
  history.replaceState(null, "", `#/runs/${encodeURIComponent(state.runId)}${tl ? "?view=timeline" : ""}`);
  render();
}

// Cancel and resume: what the server answered stays beside the buttons until the next action.
async function act(what) {
  const out = $("#action-result");
  $(`#btn-${what}`).disabled = true;
  out.className = "action-result";
  out.textContent = what === "cancel" ? "cancelling…" : "resuming…";
  delete out.dataset.outcome;
  try {
    const res = await api(`/v1/runs/${encodeURIComponent(state.runId)}/${what}`, { method: "POST" });
    out.textContent = what === "cancel"
      ? (res.status === "cancelled" ? "cancelled" : "cancel requested: stopping its calls")
      : `resumed: ${res.status}; finished calls are reused`;
    out.dataset.outcome = res.status;
  } catch (err) {
    out.className = "action-result err";
    out.textContent = `${what} refused: ${err.message || err}`;
    out.dataset.outcome = "error";
  }
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
  clearTimeout(state.timer);  // one polling loop, also when an action refreshes meanwhile
  if (!finished && runId === state.runId) state.timer = setTimeout(refreshRun, 900);
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
  const shown = run.waiting ? "waiting" : run.status;  // as `engine show` says it
  pill.textContent = shown;
  pill.className = `pill s-${shown}`;
  pill.dataset.status = shown;
  pill.title = run.waiting ? "running, but only waiting for signals: nothing of it executes" : "";
  $("#run-title").textContent = run.run_id;
  const parts = [`${run.application}${run.version != null ? ` v${run.version}` : ""}`];
  if (run.duration != null) parts.push(fmtDuration(run.duration));
  if (run.queued_seconds) parts.push(`queued ${fmtDuration(run.queued_seconds)}`);
  if (run.resumes) parts.push(`resumed ${run.resumes}×`);
  if (run.rerun_of) parts.push(`rerun of ${run.rerun_of} from ${run.rerun_from}`);
  if (run.owner && run.status === "running") parts.push(`driven by ${run.owner}`);
  const budget = budgetText(run.budget);
  if (budget) parts.push(`budget: ${budget}`);
  $("#run-meta").textContent = parts.join(" · ");
  $("#btn-cancel").disabled = !(run.status === "queued" || run.status === "running");
  $("#btn-resume").disabled = !(run.status === "failed" || run.status === "cancelled");
  if (!FINAL.has(run.status)) $("#run-outcome").hidden = true;  // resumed: the old outcome is gone
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const n of dag.nodes) counts[n.status] = (counts[n.status] || 0) + 1;
  const total = dag.nodes.length || 1;
  // A rerun's calls: those it executed, and the checkpoints it reused from the run it came from.
  const reused = dag.nodes.filter((n) => n.reused).length;
  const rerun = run.rerun_of
    ? `<span class="c" id="run-reused"><b>${fmtCount(dag.nodes.filter((n) => n.executions).length)}</b> executed, `
      + `<b>${fmtCount(reused)}</b> reused</span>` : "";
  $("#run-counts").innerHTML = `<span class="c"><b>${fmtCount(dag.nodes.length)}</b> calls</span>` + rerun
    + STATUSES.filter((s) => counts[s]).map((s) => `<span class="c"><b>${fmtCount(counts[s])}</b> ${s}</span>`).join("")
    + `<span class="bar">${STATUSES.map((s) => counts[s] ? `<span style="width:${(100 * counts[s]) / total}%;background:var(--${s})"></span>` : "").join("")}</span>`;
  renderWaits(run);
}

// --- open waits: a form per signal name -------------------------------------------------------

// Each name the run waits for (`engine.signal(name)` futures still pending, `run.waits`) gets a
// form: a JSON payload and Send, which POSTs it to /v1/runs/{id}/signals/{name}; the server's
// answer stays beside the button (sent, or its error: 400 not JSON, 409 already delivered or run
// finished). A form is built once, so that polling never wipes what is being typed, and stays
// after its wait closed (marked so), so that the answer to a second send is seen too.
function renderWaits(run) {
  const box = $("#run-waits");
  if (!box) return;
  const open = new Map();
  for (const w of run.waits || []) {
    if (!open.has(w.name)) open.set(w.name, []);
    open.get(w.name).push(w);
  }
  for (const [name, waits] of open) {
    let form = box.querySelector(`form[data-signal="${name}"]`);
    if (!form) {
      form = waitForm(name);
      box.append(form);
    }
    const first = waits[0];
    const deadline = waits.map((w) => w.deadline).filter((d) => d != null).sort()[0];
    form.classList.remove("closed");
    form.dataset.open = String(waits.length);
    form.querySelector(".wait-info").textContent = `since ${fmtTime(first.since)}`
      + (waits.length > 1 ? ` · ${waits.length} futures wait for it` : "")
      + (deadline != null ? ` · times out at ${fmtTime(deadline)}` : "");
  }
  for (const form of box.querySelectorAll("form[data-signal]")) {
    if (open.has(form.dataset.signal)) continue;
    form.classList.add("closed");
    form.dataset.open = "0";
    form.querySelector(".wait-info").textContent = "no longer waiting";
  }
  box.hidden = !box.querySelector("form");
}

function waitForm(name) {
  const form = document.createElement("form");
  form.className = "wait-form";
  form.dataset.signal = name;
  form.innerHTML = `<div><b>waiting for signal</b> <code>${esc(name)}</code> <span class="wait-info muted"></span></div>`
    + `<textarea name="payload" rows="3" spellcheck="false" placeholder='its value as JSON, e.g. {"approved": true} (empty: null)'></textarea>`
    + `<div class="actions"><button type="submit" class="primary">Send</button>`
    + `<span class="action-result" role="status"></span></div>`;
  form.addEventListener("submit", (event) => { event.preventDefault(); sendSignal(form); });
  return form;
}

async function sendSignal(form) {
  const name = form.dataset.signal;
  const out = form.querySelector(".action-result");
  const button = form.querySelector("button");
  button.disabled = true;
  out.className = "action-result";
  out.textContent = "sending…";
  delete out.dataset.outcome;
  try {
    // The text as it is: the server says what is wrong with it (400), not this page.
    const res = await api(`/v1/runs/${encodeURIComponent(state.runId)}/signals/${encodeURIComponent(name)}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: form.payload.value,
    });
    out.textContent = `sent: stored as ${res.name} #${res.seq}`;
    out.dataset.outcome = "sent";
  } catch (err) {
    out.className = "action-result err";
    out.textContent = err.status ? `refused (${err.status}): ${err.message}` : String(err.message || err);
    out.dataset.outcome = String(err.status || "error");
  }
  button.disabled = false;
  refreshRun();
}

// "calls 812/1000, depth 3/3, 41 s/600 s" as `engine show` prints it; "" when nothing is limited.
function budgetText(budget) {
  if (!budget || Object.values(budget.limits).every((v) => v == null)) return "";
  const part = (label, used, limit, unit = "") =>
    `${label}${used}${unit}${limit != null ? `/${limit}${unit}` : ""}`;
  return [part("calls ", budget.use.calls, budget.limits.max_calls),
          part("depth ", budget.use.depth, budget.limits.max_depth),
          part("", Math.round(budget.use.duration || 0), budget.limits.max_duration, " s")].join(", ");
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
  state.tree = tree;
  if (state.view === "timeline") {
    layoutTimeline(tree, dag);
    if (state.selected) renderDetails(tree);
    return;
  }
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
  const selected = (state.selected === n.id ? " selected" : "") + (n.reused ? " reused" : "");
  const badge = n.attempts > 1 ? `<text class="badge" x="${BOX_W - 60}" y="18">×${n.attempts}</text>` : "";
  const label = n.kind === "call" ? n.function : `${n.kind} ${n.function}`;
  const frac = progressFraction(n);
  const progress = frac == null ? ""
    : `<rect class="progress-bg" x="6" y="${BOX_H - 5}" width="${BOX_W - 12}" height="2"/>`
      + `<rect class="progress" x="6" y="${BOX_H - 5}" width="${(BOX_W - 12) * frac}" height="2"/>`;
  return `<g class="node s-${esc(n.status)}${selected}" data-id="${esc(n.id)}" data-status="${esc(n.status)}" transform="translate(${item.x},${item.y})">`
    + `<title>${esc(label)} · ${esc(n.status)}${n.reused ? " · reused from the run this one reran" : ""}${frac != null ? ` · ${esc(progressText(n.progress))}` : ""}${n.error ? ` · ${esc(n.error)}` : ""}</title>`
    + `<rect class="box" width="${BOX_W}" height="${BOX_H}" rx="5"/><rect class="stripe" width="5" height="${BOX_H}" rx="2"/>`
    + `<text class="fn" x="12" y="18">${esc(clip(label, 20))}</text>${badge}`
    + `<text class="dur" x="${BOX_W - 8}" y="18" text-anchor="end">${esc(fmtDuration(dur))}</text>${progress}</g>`;
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
  const fails = n.failed_attempts || [];
  const firstStart = fails.length && fails[0].start != null ? fails[0].start : n.start;
  const rows = [
    ["status", `<span class="pill s-${esc(n.status)}">${esc(n.status)}</span>`],
    ["kind", esc(n.kind)], ["call", `<span class="mono">${esc(n.id)}</span>`],
    ...(n.reused ? [["reused", "its checkpoint, from the run this one reran: it did not execute"]] : []),
    ["attempts", `${n.attempts}${n.executions !== n.attempts ? ` (${n.executions} executions in all)` : ""}`],
    ["created", esc(fmtTime(n.created))],
    ["waited", n.created != null && firstStart != null ? esc(fmtDuration(firstStart - n.created)) : "—"],
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
    + progressHtml(n) + attemptsHtml(n) + metricsHtml(n)
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

// --- progress, metrics and attempts of one call (fields a call may or may not carry) ------

function progressFraction(n) {
  const p = n.progress;
  if (!p || !(p.total > 0) || p.current == null) return null;
  return Math.max(0, Math.min(1, p.current / p.total));
}

const progressText = (p) => `${fmtCount(p.current ?? 0)}${p.total != null ? ` / ${fmtCount(p.total)}` : ""}${p.message ? ` · ${p.message}` : ""}`;

function progressHtml(n) {
  if (!n.progress) return "";
  const frac = progressFraction(n);
  return `<div class="call-progress"><b>progress</b> <span>${esc(progressText(n.progress))}</span>`
    + (frac != null ? `<span class="pbar"><span style="width:${(100 * frac).toFixed(1)}%"></span></span>` : "") + "</div>";
}

function metricsHtml(n) {
  const m = n.metrics;
  if (!m) return "";
  const counters = Object.entries(m.counters || {});
  const timers = Object.entries(m.timers || {});
  if (!counters.length && !timers.length) return "";
  const rows = counters.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${esc(fmtCount(v))}</td><td></td></tr>`)
    .concat(timers.map(([k, t]) => `<tr><td>${esc(k)}</td><td class="num">${esc(fmtCount(t.count))}×</td>`
      + `<td class="num">${esc(fmtDuration(t.sum))}${t.count ? ` <span class="muted">(${esc(fmtDuration(t.sum / t.count))} each)</span>` : ""}</td></tr>`));
  return `<div class="call-metrics"><b>metrics</b><table>${rows.join("")}</table></div>`;
}

function attemptsHtml(n) {
  const fails = n.failed_attempts || [];
  if (!fails.length) return "";
  return `<div><b>failed attempts</b><ol class="attempts">${fails.map((f) => `<li value="${f.attempt}">`
    + `<span class="pill s-failed">${esc(f.error_kind || "failed")}</span> after ${esc(fmtDuration(f.start != null ? f.end - f.start : null))}`
    + `<div class="muted">${esc(clip(f.error || "", 300))}</div></li>`).join("")}</ol></div>`;
}

// --- the timeline ---------------------------------------------------------------------------

const TL = { ROW: 22, AXIS: 24, LABEL: 250, RIGHT: 70, INDENT: 12 };
const tl = { rows: [], index: new Map(), t0: 0, t1: 1, now: 0, final: false, runEnd: null,
  raf: 0, hover: -1, hoverX: 0, colors: null };

function initTimeline() {
  const scroll = $("#tl-scroll");
  tl.rows = []; tl.index = new Map(); tl.hover = -1;
  scroll.addEventListener("scroll", () => { hideTip(); drawSoon(); }, { passive: true });
  scroll.addEventListener("mousemove", onTimelineMove);
  scroll.addEventListener("mouseleave", () => { tl.hover = -1; hideTip(); drawSoon(); });
  scroll.addEventListener("click", onTimelineClick);
}
window.addEventListener("resize", () => { if ($("#timeline") && !$("#timeline").hidden) drawSoon(); });

function colors() {
  if (!tl.colors) {
    const css = getComputedStyle(document.documentElement);
    tl.colors = Object.fromEntries([...STATUSES, "ink", "muted", "line"].map((s) => [s, css.getPropertyValue(`--${s}`).trim()]));
  }
  return tl.colors;
}

// Rows in tree order; a folded call hides its descendants and shows their span instead.
function layoutTimeline(tree, dag) {
  const rows = [];
  const stack = [];
  const ordinals = new Map();
  // A caller that returned a tail call stopped running when it handed off (when its tail call
  // was made); the store's end is when the tail's value came back.
  const handoff = new Map();
  for (const e of dag.edges) {
    const target = e.kind === "tail" ? tree.byId.get(e.to) : null;
    if (target && target.created != null) handoff.set(e.from, target.created);
  }
  for (let i = tree.roots.length - 1; i >= 0; i--) stack.push([tree.roots[i], 0]);
  while (stack.length) {
    const [n, depth] = stack.pop();
    const kids = tree.children.get(n.id) || [];
    const folded = kids.length > 0 && state.folded.has(n.id);
    rows.push({ n, depth, kids: kids.length, folded, span: folded ? subtreeSpan(tree, n) : null, nth: ordinals.get(n.id),
      handoff: handoff.get(n.id) });
    if (!folded) {
      // Siblings of one function are told apart by their place: "agent #3".
      const seen = new Map(), total = new Map();
      for (const k of kids) total.set(k.function, (total.get(k.function) || 0) + 1);
      for (const k of kids) {
        seen.set(k.function, (seen.get(k.function) || 0) + 1);
        if (total.get(k.function) > 1) ordinals.set(k.id, seen.get(k.function));
      }
      for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
    }
  }
  tl.rows = rows;
  tl.index = new Map(rows.map((r, i) => [r.n.id, i]));
  const run = dag.run;
  tl.final = FINAL.has(run.status);
  tl.now = Date.now() / 1000;
  tl.runEnd = run.ended_at;
  let t0 = Infinity, t1 = -Infinity;
  for (const n of dag.nodes) {
    if (n.created != null) t0 = Math.min(t0, n.created);
    if (n.start != null) t0 = Math.min(t0, n.start);
    if (n.end != null) t1 = Math.max(t1, n.end);
  }
  if (!tl.final) t1 = Math.max(t1, tl.now);
  else if (run.ended_at != null) t1 = Math.max(t1, run.ended_at);
  if (!isFinite(t0)) t0 = run.started_at || run.created_at || tl.now;
  if (!isFinite(t1) || t1 <= t0) t1 = t0 + 1;
  tl.t0 = t0; tl.t1 = t1;
  const box = $("#timeline");
  $("#tl-spacer").style.height = `${TL.AXIS + rows.length * TL.ROW + 8}px`;
  box.dataset.calls = String(dag.nodes.length);
  box.dataset.rows = String(rows.length);
  box.dataset.retried = String(rows.filter((r) => (r.n.failed_attempts || []).length).length);
  box.dataset.failedAttempts = String(rows.reduce((a, r) => a + (r.n.failed_attempts || []).length, 0));
  box.dataset.running = String(rows.filter((r) => r.n.status === "running").length);
  box.dataset.final = String(rows.filter((r) => FINAL.has(r.n.status)).length);
  drawTimeline();
}

function subtreeSpan(tree, root) {
  let a = Infinity, b = -Infinity, count = 0;
  const stack = [...(tree.children.get(root.id) || [])];
  while (stack.length) {
    const n = stack.pop();
    count++;
    if (n.created != null) a = Math.min(a, n.created);
    const end = n.end ?? (n.start != null ? openEnd() : null);
    if (end != null) b = Math.max(b, end);
    for (const c of tree.children.get(n.id) || []) stack.push(c);
  }
  return { a, b, count };
}

const openEnd = () => (tl.final ? (tl.runEnd ?? tl.t1) : tl.now);

// A call's pieces in time: waiting (thin), each failed attempt, its latest attempt, and the
// wait for its tail call's value (dashed) after a hand-off.
function segments(row) {
  const n = row.n;
  const out = [];
  const fails = n.failed_attempts || [];
  let t = n.created ?? n.start;
  let latestFailed = false;
  for (const f of fails) {
    const a = f.start ?? t;
    if (t != null && a > t) out.push({ kind: "wait", a: t, b: a });
    out.push({ kind: "fail", a, b: f.end, f });
    t = f.end;
    if (f.start != null && f.start === n.start) latestFailed = true;
  }
  const ran = n.start != null && !latestFailed && !["pending", "queued"].includes(n.status);
  if (ran) {
    if (t != null && n.start > t) out.push({ kind: "wait", a: t, b: n.start });
    const end = n.end ?? openEnd();
    if (row.handoff != null && row.handoff >= n.start && row.handoff < end) {
      out.push({ kind: "run", a: n.start, b: row.handoff });
      out.push({ kind: "tail", a: row.handoff, b: end });
    } else out.push({ kind: "run", a: n.start, b: end });
  } else if (!FINAL.has(n.status) || (!latestFailed && t != null)) {
    // Not started yet (or waiting for a retry): it waits until now, or until the run ended.
    if (t != null) out.push({ kind: "wait", a: t, b: n.end ?? openEnd() });
  }
  return out;
}

function drawSoon() {
  if (!tl.raf) tl.raf = requestAnimationFrame(drawTimeline);
}

function drawTimeline() {
  tl.raf = 0;
  const box = $("#timeline"), canvas = $("#tl-canvas"), scroll = $("#tl-scroll");
  if (!box || box.hidden) return;
  const W = scroll.clientWidth, H = box.clientHeight;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.width = `${W}px`; canvas.style.height = `${H}px`;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const c = colors();
  const top = scroll.scrollTop;
  const first = Math.max(0, Math.floor(top / TL.ROW));
  const last = Math.min(tl.rows.length, Math.ceil((top + H) / TL.ROW) + 1);
  const x = xScale(W);
  ctx.font = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
  ctx.textBaseline = "middle";
  // Second gridlines under the bars.
  const ticks = axisTicks(W);
  ctx.strokeStyle = "#eef1f4"; ctx.lineWidth = 1;
  ctx.beginPath();
  for (const t of ticks) { const px = Math.round(x(tl.t0 + t)) + 0.5; ctx.moveTo(px, TL.AXIS); ctx.lineTo(px, H); }
  ctx.stroke();
  for (let i = first; i < last; i++) drawRow(ctx, tl.rows[i], i, TL.AXIS + i * TL.ROW - top, W, x, c);
  // The axis, over the rows.
  ctx.fillStyle = "#f3f5f7"; ctx.fillRect(0, 0, W, TL.AXIS);
  ctx.strokeStyle = c.line; ctx.beginPath(); ctx.moveTo(0, TL.AXIS - 0.5); ctx.lineTo(W, TL.AXIS - 0.5); ctx.stroke();
  ctx.fillStyle = c.muted; ctx.textAlign = "left";
  ctx.fillText(`${fmtCount(tl.rows.length)} calls`, 8, TL.AXIS / 2);
  ctx.textAlign = "center";
  for (const t of ticks) ctx.fillText(fmtTick(t), x(tl.t0 + t), TL.AXIS / 2);
  ctx.textAlign = "left";
}

function xScale(W) {
  const span = tl.t1 - tl.t0, left = TL.LABEL + 8, width = Math.max(40, W - left - TL.RIGHT);
  return (t) => left + ((t - tl.t0) / span) * width;
}

function axisTicks(W) {
  const span = tl.t1 - tl.t0, want = Math.max(2, Math.floor((W - TL.LABEL - TL.RIGHT) / 90));
  const raw = span / want, pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * pow).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = 0; t <= span + 1e-9 && out.length < 100; t += step) out.push(t);
  return out;
}

const fmtTick = (t) => (t === 0 ? "0" : fmtDuration(t));

function drawRow(ctx, row, i, y, W, x, c) {
  const n = row.n, mid = y + TL.ROW / 2;
  if (n.id === state.selected) { ctx.fillStyle = "#e4eefc"; ctx.fillRect(0, y, W, TL.ROW); }
  else if (i === tl.hover) { ctx.fillStyle = "#f3f6f9"; ctx.fillRect(0, y, W, TL.ROW); }
  // Label: fold mark, function, attempts.
  const indent = 6 + Math.min(row.depth, 12) * TL.INDENT;
  ctx.fillStyle = c.muted;
  if (row.kids) ctx.fillText(row.folded ? "▸" : "▾", indent, mid);
  ctx.fillStyle = c[n.status] || c.pending;
  ctx.fillRect(indent + 11, mid - 4, 3, 8);
  ctx.fillStyle = c.ink;
  const fails = (n.failed_attempts || []).length;
  let label = n.kind === "call" ? n.function : `${n.kind} ${n.function}`;
  if (row.nth) label += ` #${row.nth}`;
  if (row.folded) label += `  +${fmtCount(row.span.count)}`;
  const labelRight = TL.LABEL - (fails || n.attempts > 1 ? 30 : 4) - (n.progress ? 40 : 0);
  ctx.fillText(fitText(ctx, label, labelRight - indent - 18), indent + 18, mid);
  if (fails || n.attempts > 1) {
    ctx.fillStyle = c.failed; ctx.textAlign = "right";
    ctx.fillText(`×${Math.max(n.attempts, fails + 1)}`, TL.LABEL - 4 - (n.progress ? 40 : 0), mid);
    ctx.textAlign = "left";
  }
  const frac = progressFraction(n);
  if (frac != null) {
    ctx.fillStyle = "#e1e6eb"; ctx.fillRect(TL.LABEL - 38, mid - 2, 34, 4);
    ctx.fillStyle = c.running; ctx.fillRect(TL.LABEL - 38, mid - 2, 34 * frac, 4);
  }
  // A folded call: the span of everything under it, behind its own bar.
  if (row.folded && isFinite(row.span.a) && isFinite(row.span.b)) {
    ctx.fillStyle = "rgba(31,41,51,.08)";
    ctx.fillRect(x(row.span.a), mid - 7, Math.max(2, x(row.span.b) - x(row.span.a)), 14);
  }
  let end = null;
  for (const s of segments(row)) {
    const a = x(s.a), w = Math.max(s.kind === "wait" ? 0 : 2, x(s.b) - a);
    if (s.kind === "wait") {
      ctx.fillStyle = "#c9d1da"; ctx.fillRect(a, mid - 1.5, w, 3);
    } else if (s.kind === "tail") {
      ctx.strokeStyle = c.tail; ctx.lineWidth = 2; ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(a, mid); ctx.lineTo(a + w, mid); ctx.stroke(); ctx.setLineDash([]);
    } else if (s.kind === "fail") {
      ctx.fillStyle = c.failed; ctx.globalAlpha = 0.55; ctx.fillRect(a, mid - 5, w, 10); ctx.globalAlpha = 1;
      ctx.fillStyle = "#8a1f17"; ctx.fillRect(a + w - 2, mid - 7, 2, 14);
    } else {
      ctx.fillStyle = c[n.status] || c.pending; ctx.fillRect(a, mid - 5, w, 10);
      if (frac != null && n.status === "running") { ctx.fillStyle = "rgba(255,255,255,.65)"; ctx.fillRect(a, mid + 3, w * frac, 2); }
    }
    end = a + w;
  }
  if (end != null) {
    const d = callSpan(n);
    if (d != null) { ctx.fillStyle = c.muted; ctx.fillText(fmtDuration(d), Math.min(end + 5, W - TL.RIGHT + 4), mid); }
  }
}

function fitText(ctx, text, width) {
  if (width <= 0) return "";
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const m = (lo + hi + 1) >> 1;
    if (ctx.measureText(`${text.slice(0, m)}…`).width <= width) lo = m; else hi = m - 1;
  }
  return `${text.slice(0, lo)}…`;
}

// From the first attempt's start to the end (or now): how long it took, retries included.
function callSpan(n) {
  const fails = n.failed_attempts || [];
  const a = fails.length && fails[0].start != null ? fails[0].start : n.start;
  if (a == null) return null;
  const b = n.end ?? (FINAL.has(n.status) ? null : (n.status === "running" ? Date.now() / 1000 : null));
  return b == null ? null : b - a;
}

function rowAt(event) {
  const scroll = $("#tl-scroll"), r = scroll.getBoundingClientRect();
  const px = event.clientX - r.left, py = event.clientY - r.top;
  if (py < TL.AXIS) return { i: -1, px, py };
  const i = Math.floor((py + scroll.scrollTop - TL.AXIS) / TL.ROW);
  return { i: i >= 0 && i < tl.rows.length ? i : -1, px, py };
}

function onTimelineMove(event) {
  const { i, px, py } = rowAt(event);
  if (i !== tl.hover) { tl.hover = i; drawSoon(); }
  if (i < 0) { hideTip(); return; }
  showTip(tl.rows[i], px, py);
}

function onTimelineClick(event) {
  const { i, px } = rowAt(event);
  if (i < 0) return;
  const row = tl.rows[i];
  const indent = 6 + Math.min(row.depth, 12) * TL.INDENT;
  if (row.kids && px < indent + 14) {
    if (state.folded.has(row.n.id)) state.folded.delete(row.n.id); else state.folded.add(row.n.id);
  } else {
    state.selected = row.n.id;
  }
  render();
}

function showTip(row, px, py) {
  const n = row.n, tip = $("#tl-tip");
  const x = xScale($("#tl-scroll").clientWidth);
  const fails = n.failed_attempts || [];
  const firstStart = fails.length && fails[0].start != null ? fails[0].start : n.start;
  const hit = fails.find((f) => f.start != null && px >= x(f.start) - 2 && px <= x(f.end) + 2);
  const stop = row.handoff != null && n.start != null && row.handoff >= n.start ? row.handoff
    : (n.end ?? (n.status === "running" ? Date.now() / 1000 : null));
  const ran = n.start != null && stop != null ? stop - n.start : null;
  const lines = [
    `<b>${esc(n.function)}</b> <span class="pill s-${esc(n.status)}">${esc(n.status)}</span>`,
    `<span class="mono">${esc(n.id)}</span>`,
    `waited ${esc(n.created != null && firstStart != null ? fmtDuration(firstStart - n.created) : "—")}`
      + ` · ran ${esc(ran != null ? fmtDuration(ran) : "—")}`
      + (callSpan(n) != null ? ` · total ${esc(fmtDuration(callSpan(n)))}` : ""),
    `attempts ${Math.max(n.attempts, fails.length)}${n.executions !== n.attempts ? ` (${n.executions} executions)` : ""}`,
  ];
  for (const f of fails) {
    lines.push(`<span class="${f === hit ? "hit" : ""}">#${f.attempt} <b class="bad">${esc(f.error_kind || "failed")}</b> after ${esc(fmtDuration(f.start != null ? f.end - f.start : null))}: ${esc(clip(f.error || "", 120))}</span>`);
  }
  if (stop === row.handoff && row.handoff != null) lines.push("handed off by tail call, then waited for its value (dashed)");
  if (n.progress) lines.push(`progress ${esc(progressText(n.progress))}`);
  if (row.folded) lines.push(`${fmtCount(row.span.count)} calls folded under it`);
  if (n.error && !fails.length) lines.push(`<span class="bad">${esc(clip(n.error, 160))}</span>`);
  tip.innerHTML = lines.map((l) => `<div>${l}</div>`).join("");
  tip.dataset.id = n.id;
  tip.hidden = false;
  const box = $("#timeline"), w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = `${Math.max(4, Math.min(px + 14, box.clientWidth - w - 4))}px`;
  tip.style.top = `${py + 16 + h > box.clientHeight ? Math.max(4, py - h - 8) : py + 16}px`;
}

function hideTip() {
  const tip = $("#tl-tip");
  if (tip) tip.hidden = true;
}

// Where a call's latest bar is on screen, scrolled into view (for tests and links).
function timelinePoint(id) {
  const i = tl.index.get(id);
  if (i == null) return null;
  const scroll = $("#tl-scroll");
  const rowTop = TL.AXIS + i * TL.ROW;
  if (rowTop - scroll.scrollTop < TL.AXIS || rowTop + TL.ROW - scroll.scrollTop > scroll.clientHeight) {
    scroll.scrollTop = Math.max(0, rowTop - scroll.clientHeight / 2);
  }
  drawTimeline();
  const segs = segments(tl.rows[i]).filter((s) => s.kind !== "tail");
  const x = xScale(scroll.clientWidth), r = scroll.getBoundingClientRect();
  const s = segs.length ? segs[segs.length - 1] : null;
  const px = s ? (x(s.a) + Math.max(x(s.b), x(s.a) + 2)) / 2 : TL.LABEL / 2;
  return { x: r.left + px, y: r.top + rowTop - scroll.scrollTop + TL.ROW / 2 };
}

// --- applications -----------------------------------------------------------------------------

function showApps() {
  state.runId = null;
  mount("#apps-template");
  api("/v1/applications").then((data) => {
    const body = $("#apps-body");
    if (!body) return;
    body.innerHTML = data.applications.map((a) => `<tr data-app="${esc(a.name)}">
      <td><a href="#/apps/${encodeURIComponent(a.name)}">${esc(a.name)}</a></td>
      <td>${a.version != null ? `v${esc(a.version)}` : ""}</td>
      <td>${esc(fmtTime(a.deployed_at))}</td>
      <td class="mono">${a.error ? `<span class="bad">${esc(a.error)}</span>` : esc((a.parameters || []).map((p) => `${p.name}${p.type ? `: ${p.type}` : ""}`).join(", "))}</td>
      <td>${esc(a.description || "")}</td></tr>`).join("");
    $("#apps-total").textContent = `${data.applications.length} deployed`;
    $("#apps-empty").hidden = data.applications.length > 0;
  }).catch((err) => { if ($("#apps-total")) $("#apps-total").textContent = String(err.message || err); });
}

function showApp(name) {
  state.runId = null;
  mount("#app-template");
  $("#app-title").textContent = name;
  $("#app-runs-link").href = `#/?application=${encodeURIComponent(name)}`;
  api(`/v1/applications/${encodeURIComponent(name)}`).then((app) => {
    if (!$("#form-fields")) return;
    $("#app-meta").textContent = `v${app.version} · ${app.file}`;
    if (app.description) { $("#app-description").textContent = app.description; $("#app-description").hidden = false; }
    const deps = app.deployments || (app.versions || []).slice().reverse().map((v) => ({ version: v }));
    $("#versions-body").innerHTML = deps.map((d) => `<tr data-version="${esc(d.version)}"><td>v${esc(d.version)}${d.version === app.version ? " <span class=\"muted\">latest</span>" : ""}</td>
      <td>${esc(fmtTime(d.deployed_at))}</td><td class="mono">${esc(d.file || "")}</td><td class="mono">${esc((d.digest || "").slice(0, 12))}</td></tr>`).join("");
    buildForm(name, app.input_schema);
  }).catch((err) => { $("#app-meta").textContent = String(err.message || err); });
  refreshAppRuns(name);
}

async function refreshAppRuns(name) {
  const body = $("#app-runs-body");
  if (!body) return;
  try {
    const data = await api(`/v1/runs?${new URLSearchParams({ application: name, limit: "10" })}`);
    body.innerHTML = data.runs.map((r) => `<tr><td class="mono"><a href="#/runs/${encodeURIComponent(r.run_id)}">${esc(r.run_id)}</a></td>
      <td><span class="pill s-${esc(r.status)}">${esc(r.status)}</span></td><td>${esc(fmtTime(r.created_at))}</td>
      <td class="num">${esc(fmtDuration(r.duration))}</td></tr>`).join("") || `<tr><td colspan="4" class="muted">none yet</td></tr>`;
  } catch (err) { /* the next refresh tries again */ }
  clearTimeout(state.timer);
  if ($("#app-runs-body")) state.timer = setTimeout(() => refreshAppRuns(name), 3000);
}

// The form: one field per parameter, nested fieldsets for objects (pydantic models), a select
// for enums, a JSON box for anything else (lists, dicts, unions). Each input names its place in
// the request body by `data-path` ("person.name").
function buildForm(name, schema) {
  const fields = $("#form-fields");
  const defs = (schema && schema.$defs) || {};
  if (!schema) {
    fields.innerHTML = `<p class="muted">This version's code does not load here: write the request body as JSON.</p>`;
    $("#raw-body").open = true;
  } else if (!Object.keys(schema.properties).length) {
    fields.innerHTML = `<p class="muted">It takes no input.</p>`;
  } else {
    const required = new Set(schema.required || []);
    fields.innerHTML = Object.entries(schema.properties)
      .map(([key, sub]) => fieldHtml(key, [key], sub, defs, required.has(key))).join("");
  }
  $("#raw-body").addEventListener("toggle", () => {
    if ($("#raw-body").open && !$("#raw-input").value) {
      const body = formBody(schema);
      $("#raw-input").value = body === undefined ? "" : JSON.stringify(body, null, 2);
    }
  });
  $("#run-form").addEventListener("submit", (event) => { event.preventDefault(); submitRun(name, schema); });
}

function resolveSchema(schema, defs) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 20; i++) s = defs[s.$ref.split("/").pop()] || {};
  // Optional[X]: X, not required.
  const alts = s.anyOf || s.oneOf;
  if (alts) {
    const others = alts.filter((a) => a.type !== "null");
    if (others.length === 1) return Object.assign({}, resolveSchema(others[0], defs), { nullable: others.length < alts.length, default: s.default, description: s.description });
  }
  return s;
}

function fieldHtml(label, path, raw, defs, required, depth = 0) {
  const s = resolveSchema(raw, defs);
  const p = esc(path.join("."));
  const def = raw && raw.default !== undefined ? raw.default : s.default;
  const title = `<span class="fname">${esc(label)}${required ? " <b class=\"req\" title=\"required\">*</b>" : ""}`
    + ` <i class="muted">${esc(typeName(s))}</i></span>`;
  const help = s.description ? `<small class="muted">${esc(s.description)}</small>` : "";
  const common = `data-path="${p}" data-required="${required ? 1 : 0}" name="${p}"`;
  if (s.type === "object" && s.properties && depth < 6) {
    const req = new Set(s.required || []);
    return `<fieldset data-object="${p}"><legend>${title}</legend>${help}`
      + Object.entries(s.properties).map(([k, sub]) => fieldHtml(k, [...path, k], sub, defs, req.has(k), depth + 1)).join("")
      + "</fieldset>";
  }
  let input;
  if (s.enum) {
    input = `<select ${common} data-kind="enum">${required ? "" : "<option value=\"\"></option>"}`
      + s.enum.map((v) => `<option value="${esc(JSON.stringify(v))}"${JSON.stringify(v) === JSON.stringify(def) ? " selected" : ""}>${esc(typeof v === "string" ? v : JSON.stringify(v))}</option>`).join("")
      + "</select>";
  } else if (s.type === "boolean") {
    input = `<input type="checkbox" ${common} data-kind="boolean"${def ? " checked" : ""}>`;
  } else if (s.type === "integer" || s.type === "number") {
    input = `<input type="number" ${common} data-kind="${s.type}" step="${s.type === "integer" ? 1 : "any"}"${def != null ? ` value="${esc(def)}"` : ""}>`;
  } else if (s.type === "string" && s.format === "binary") {
    input = `<input type="text" ${common} data-kind="skip" disabled placeholder="a file: send it as the raw request body (curl --data-binary)">`;
  } else if (s.type === "string") {
    input = `<input type="text" ${common} data-kind="string"${def != null ? ` value="${esc(def)}"` : ""}>`;
  } else {
    input = `<textarea ${common} data-kind="json" rows="2" spellcheck="false" placeholder="JSON">${def !== undefined ? esc(JSON.stringify(def)) : ""}</textarea>`;
  }
  return `<label class="field">${title}${input}${help}</label>`;
}

function typeName(s) {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.type === "array") return `list${s.items && s.items.type ? ` of ${s.items.type}` : ""}`;
  if (s.type === "object") return s.title || "object";
  if (s.format === "binary") return "file";
  return (s.type || "any") + (s.nullable ? " or null" : "");
}

// The request body the form describes (undefined: send none, so every parameter takes its default).
function formBody(schema) {
  if (!schema) return undefined;
  const out = {};
  for (const el of document.querySelectorAll("#form-fields [data-path]")) {
    const kind = el.dataset.kind;
    if (kind === "skip") continue;
    let value;
    if (kind === "boolean") value = el.checked;
    else if (el.value.trim() === "") {
      if (el.dataset.required !== "1") continue;
      value = kind === "string" ? "" : null;
    } else if (kind === "integer" || kind === "number") value = Number(el.value);
    else if (kind === "enum") value = JSON.parse(el.value);
    else if (kind === "json") {
      try { value = JSON.parse(el.value); } catch (err) { throw new Error(`${el.dataset.path}: not valid JSON (${err.message})`); }
    } else value = el.value;
    const path = el.dataset.path.split(".");
    let at = out;
    for (const key of path.slice(0, -1)) at = at[key] = at[key] || {};
    at[path[path.length - 1]] = value;
  }
  if (schema["x-body"] === "value") {
    const [only] = Object.keys(schema.properties);
    return only in out ? out[only] : undefined;
  }
  return out;
}

async function submitRun(name, schema) {
  const out = $("#form-result");
  out.className = "action-result";
  out.textContent = "submitting…";
  let body;
  try {
    if ($("#raw-body").open) {
      const text = $("#raw-input").value.trim();
      if (text) JSON.parse(text);  // a clear message here rather than the server's
      body = text || undefined;
    } else {
      const value = formBody(schema);
      body = value === undefined ? undefined : JSON.stringify(value);
    }
    const res = await api(`/v1/applications/${encodeURIComponent(name)}/runs`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
    out.textContent = `accepted: ${res.run_id}`;
    location.hash = `#/runs/${encodeURIComponent(res.run_id)}`;
  } catch (err) {
    out.className = "action-result err";
    out.textContent = String(err.message || err);
  }
}

route();
