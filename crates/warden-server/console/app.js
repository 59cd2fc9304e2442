// The Warden console: plain JS, no dependency. Every value from the server is put in the page
// with textContent (never as HTML), so nothing the agents send can run here.
"use strict";

const MAX_ROWS = 500;
let csrf = "";
let source = null;
let approvalTimer = null;
const counts = { allow: 0, deny: 0, pending: 0 };
let latencies = [];

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method === "POST") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = csrf;
  }
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showLogin(message) {
  stop();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-view").hidden = false;
  $("login-error").textContent = message || "";
}

function stop() {
  if (source) { source.close(); source = null; }
  if (approvalTimer) { clearInterval(approvalTimer); approvalTimer = null; }
}

async function start() {
  let session;
  try {
    session = await api("/ui/api/session");
  } catch (e) {
    showLogin(e.status === 401 ? "" : e.message);
    return;
  }
  csrf = session.csrf;
  $("who").textContent = "admin key " + session.key_id;
  $("login-view").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  connect();
  loadApprovals();
  loadPins();
  loadPolicies();
  approvalTimer = setInterval(() => { loadApprovals(); loadPins(); }, 2000);
}

function connect() {
  if (source) source.close();
  const params = new URLSearchParams();
  for (const [name, value] of new FormData($("filters"))) {
    if (value) params.set(name, value);
  }
  $("decisions").replaceChildren();
  source = new EventSource("/ui/events?" + params.toString());
  source.onopen = () => { $("stream-state").textContent = "live"; };
  source.onerror = () => { $("stream-state").textContent = "reconnecting"; };
  source.addEventListener("decision", (message) => {
    const d = JSON.parse(message.data);
    addDecision(d);
  });
  // Over the daemon's per-viewer rate (`console.live_events_per_sec`), decisions come as counts
  // per verdict: they still count in the rates, and the page says how many were not listed.
  source.addEventListener("skipped", (message) => {
    const tally = JSON.parse(message.data);
    let total = Number($("skipped").textContent);
    for (const verdict of Object.keys(counts)) {
      const n = Number(tally[verdict] || 0);
      counts[verdict] += n;
      total += n;
    }
    $("skipped").textContent = String(total);
  });
  source.addEventListener("dropped", (message) => {
    const total = Number($("dropped").textContent) + Number(message.data);
    $("dropped").textContent = String(total);
  });
}

function addDecision(d) {
  const row = document.createElement("tr");
  row.className = d.verdict;
  cell(row, new Date(d.at_ms).toLocaleTimeString());
  cell(row, d.verdict, "verdict");
  cell(row, d.tool || d.kind);
  cell(row, d.rule);
  cell(row, d.tenant);
  cell(row, d.principal);
  cell(row, d.session);
  cell(row, d.policy);
  cell(row, d.latency_us);
  // Only the fields the policy marks as displayable (`display:`) ever arrive here.
  const shown = d.shown
    ? Object.entries(d.shown).map(([field, value]) => `${field}=${JSON.stringify(value)}`).join(" ")
    : "";
  cell(row, shown, "shown");
  const body = $("decisions");
  body.insertBefore(row, body.firstChild);
  while (body.childElementCount > MAX_ROWS) body.removeChild(body.lastChild);
  if (d.verdict in counts) counts[d.verdict] += 1;
  latencies.push(d.latency_us);
}

// Once a second: the decisions seen per verdict, and the latency percentiles of that second.
setInterval(() => {
  for (const verdict of Object.keys(counts)) {
    $("rate-" + verdict).textContent = String(counts[verdict]);
    counts[verdict] = 0;
  }
  if (latencies.length > 0) {
    latencies.sort((a, b) => a - b);
    const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
    $("lat-p50").textContent = String(at(0.5));
    $("lat-p99").textContent = String(at(0.99));
  }
  latencies = [];
}, 1000);

async function loadApprovals() {
  let body;
  try {
    body = await api("/ui/api/approvals");
  } catch (e) {
    if (e.status === 401) { showLogin("your login ended"); return; }
    $("approval-error").textContent = e.message;
    return;
  }
  const rows = $("approval-rows");
  // Keep the reasons being typed across refreshes.
  const typed = {};
  for (const input of rows.querySelectorAll("input[data-id]")) typed[input.dataset.id] = input.value;
  rows.replaceChildren();
  for (const a of body.approvals) {
    const row = document.createElement("tr");
    row.dataset.id = a.id;
    cell(row, a.id, "hash");
    cell(row, a.tool);
    cell(row, a.rule);
    cell(row, a.tenant);
    cell(row, a.principal);
    cell(row, a.session);
    cell(row, (a.args_sha256 || "").slice(0, 16), "hash");
    cell(row, new Date(a.expires_ms).toLocaleTimeString());
    const reasonCell = cell(row, "");
    const reason = document.createElement("input");
    reason.placeholder = "reason";
    reason.dataset.id = a.id;
    reason.value = typed[a.id] || "";
    reasonCell.appendChild(reason);
    const actions = cell(row, "");
    for (const verb of ["approve", "deny"]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = verb === "approve" ? "Approve" : "Deny";
      button.dataset.action = verb;
      button.addEventListener("click", () => answer(a.id, verb, reason.value));
      actions.appendChild(button);
    }
    rows.appendChild(row);
  }
  $("pending-count").textContent = String(body.approvals.length);
}

async function answer(id, verb, reason) {
  $("approval-error").textContent = "";
  if (!reason.trim()) {
    $("approval-error").textContent = "give a reason first";
    return;
  }
  try {
    await api("/ui/api/approvals/" + encodeURIComponent(id) + "/" + verb, {
      method: "POST",
      body: JSON.stringify({ reason }),
    });
  } catch (e) {
    $("approval-error").textContent = e.message;
  }
  loadApprovals();
}

// Tool definitions held for pin approval: each with its diff (pretty-printed JSON, sorted keys),
// a reason and an Approve button. The approval names the pending hash shown here, so a
// definition that changed again meanwhile is refused rather than approved unseen.
async function loadPins() {
  let body;
  try {
    body = await api("/ui/api/pins");
  } catch (e) {
    if (e.status === 401) { showLogin("your login ended"); return; }
    $("pin-error").textContent = e.message;
    return;
  }
  const list = $("pin-list");
  const typed = {};
  for (const input of list.querySelectorAll("input[data-key]")) typed[input.dataset.key] = input.value;
  list.replaceChildren();
  for (const p of body.held) {
    const key = p.upstream + "\u001f" + p.tool + "\u001f" + p.pending_hash;
    const card = document.createElement("div");
    card.className = "pin";
    card.dataset.upstream = p.upstream;
    card.dataset.tool = p.tool;
    const title = document.createElement("h2");
    title.textContent = "mount " + p.upstream + " · tool " + p.tool;
    card.appendChild(title);
    const hashes = document.createElement("p");
    hashes.className = "hash";
    hashes.textContent = "approved " + p.approved_hash + " → pending " + p.pending_hash;
    card.appendChild(hashes);
    if (p.approved === null || p.pending === null) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = p.approved === null
        ? "The approved definition was pinned by its hash only (before definitions were kept): the whole new definition is shown."
        : "The new definition was recorded by its hash only: list the tools again to see it.";
      card.appendChild(note);
    }
    const diff = document.createElement("pre");
    diff.className = "diff";
    for (const line of p.diff) {
      const span = document.createElement("span");
      span.className = line.op === "+" ? "add" : line.op === "-" ? "del" : "same";
      span.textContent = (line.op === "=" ? " " : line.op) + " " + line.text + "\n";
      diff.appendChild(span);
    }
    card.appendChild(diff);
    const reason = document.createElement("input");
    reason.placeholder = "reason";
    reason.dataset.key = key;
    reason.value = typed[key] || "";
    card.appendChild(reason);
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Approve new definition";
    button.dataset.action = "approve-pin";
    button.addEventListener("click", () => approvePin(p, reason.value));
    card.appendChild(button);
    list.appendChild(card);
  }
  $("pin-none").textContent = body.mounts
    ? "No tool definition is waiting for approval."
    : "No MCP upstream is mounted here.";
  $("pin-none").hidden = body.held.length > 0;
  if (body.total > body.held.length) {
    $("pin-error").textContent = "showing " + body.held.length + " of " + body.total + ": approve some to see the rest";
  }
  $("pins-count").textContent = String(body.total);
}

async function approvePin(p, reason) {
  $("pin-error").textContent = "";
  if (!reason.trim()) {
    $("pin-error").textContent = "give a reason first";
    return;
  }
  try {
    await api("/ui/api/pins/approve", {
      method: "POST",
      body: JSON.stringify({ upstream: p.upstream, tool: p.tool, pending_hash: p.pending_hash, reason }),
    });
  } catch (e) {
    $("pin-error").textContent = e.message;
  }
  loadPins();
}

async function loadSession() {
  const form = new FormData($("session-form"));
  const tenant = form.get("tenant");
  const session = form.get("session");
  $("session-error").textContent = "";
  let body;
  try {
    body = await api("/ui/api/sessions/view?" + new URLSearchParams({ tenant, session }).toString());
  } catch (e) {
    $("session-detail").hidden = true;
    $("session-error").textContent = e.message;
    return;
  }
  const taints = $("taint-rows");
  taints.replaceChildren();
  for (const taint of body.taints) {
    const row = document.createElement("tr");
    row.dataset.taint = taint;
    cell(row, taint);
    const reasonCell = cell(row, "");
    const reason = document.createElement("input");
    reason.placeholder = "reason";
    reasonCell.appendChild(reason);
    const actions = cell(row, "");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Clear";
    button.dataset.action = "clear";
    button.addEventListener("click", () => clearTaint(tenant, session, taint, reason.value));
    actions.appendChild(button);
    taints.appendChild(row);
  }
  const history = $("history-rows");
  history.replaceChildren();
  for (const entry of body.history) {
    const row = document.createElement("tr");
    cell(row, entry.tool);
    cell(row, (entry.classes || []).join(", "));
    history.appendChild(row);
  }
  $("session-detail").hidden = false;
}

async function clearTaint(tenant, session, taint, reason) {
  $("session-error").textContent = "";
  if (!reason.trim()) {
    $("session-error").textContent = "give a reason first";
    return;
  }
  try {
    await api("/ui/api/sessions/clear-taint", {
      method: "POST",
      body: JSON.stringify({ tenant, session, taint, reason }),
    });
  } catch (e) {
    $("session-error").textContent = e.message;
    return;
  }
  loadSession();
}

async function loadPolicies() {
  const body = await api("/ui/api/policies");
  const rows = $("policy-rows");
  rows.replaceChildren();
  for (const p of body.policies) {
    const row = document.createElement("tr");
    cell(row, p.name);
    cell(row, p.kind);
    cell(row, p.version);
    cell(row, p.digest, "hash");
    cell(row, p.loaded_at);
    rows.appendChild(row);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/ui/login", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: $("key").value }),
      });
      $("key").value = "";
      start();
    } catch (e) {
      $("login-error").textContent = e.status === 401 ? "unknown key" : e.message;
    }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("/ui/logout", { method: "POST", body: "{}" }); } catch (_) { /* gone anyway */ }
    showLogin("");
  });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); connect(); });
  $("session-form").addEventListener("submit", (event) => { event.preventDefault(); loadSession(); });
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => {
      for (const other of document.querySelectorAll("nav button")) other.classList.remove("active");
      button.classList.add("active");
      for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== button.dataset.view;
      if (button.dataset.view === "policies") loadPolicies();
      if (button.dataset.view === "pins") loadPins();
    });
  }
  start();
});
