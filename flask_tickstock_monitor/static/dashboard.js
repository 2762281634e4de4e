// The TickStock monitor dashboard. Everything received is shown with textContent, never as HTML.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const state = { view: null, errors: [], invalidations: [], live: false };
const MAX_ITEMS = 100;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function ago(ts) {
  if (!ts) return "never";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

function duration(seconds) {
  if (typeof seconds !== "number") return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function clock(ts) {
  return typeof ts === "number" ? new Date(ts * 1000).toLocaleTimeString() : "";
}

function renderInstances() {
  const body = document.querySelector("#instances tbody");
  const instances = (state.view && state.view.instances) || [];
  body.replaceChildren(...instances.map((inst) => {
    const row = el("tr");
    row.dataset.instance = inst.id;
    const name = el("td", inst.id);
    if (inst.id === state.view.this_instance) name.append(el("small", " (this page)"));
    row.append(name, el("td", inst.component));
    const stateCell = el("td");
    stateCell.append(el("span", inst.state, `pill ${inst.state}`));
    row.append(stateCell, el("td", ago(inst.last_seen)), el("td", duration(inst.uptime_s)));
    const metrics = el("td", null, "metrics");
    for (const [key, value] of Object.entries(inst.metrics || {})) {
      metrics.append(el("span", `${key}: ${value}`));
    }
    row.append(metrics, el("td", `${inst.beats} (${inst.lost_beats} / ${inst.restarts})`));
    return row;
  }));
  document.getElementById("no-instances").hidden = instances.length > 0;
}

function errorItem(error) {
  const item = el("li", null, error.severity);
  const head = el("div");
  head.append(el("span", error.severity, "sev"), " ",
              el("strong", error.component || error.source), " ",
              el("span", error.error_type || ""));
  item.append(head, el("div", error.message, "message"),
              el("div", `${clock(error.timestamp)} · ${error.source} · ${error.error_id}`, "meta"));
  if (error.traceback) {
    const details = el("details");
    details.append(el("summary", "traceback"), el("pre", error.traceback));
    item.append(details);
  }
  return item;
}

function invalidationItem(inv) {
  const item = el("li", null, "invalidation");
  const what = inv.action === "clear" ? "cleared" : `keys ${(inv.keys || []).join(", ")}`;
  item.append(el("div", `${inv.cache}: ${what}${inv.scope ? ` (scope ${inv.scope})` : ""}`),
              el("div", `${clock(inv.timestamp)} · ${inv.reason ? `gap: ${inv.reason}` :
                 inv.local ? "local" : `from ${inv.origin || "?"}`} · applied to ` +
                 `${(inv.caches || []).join(", ") || "nothing"}`, "meta"));
  return item;
}

function renderList(id, items, render) {
  document.getElementById(id).replaceChildren(...items.slice(0, MAX_ITEMS).map(render));
  document.getElementById(`no-${id}`).hidden = items.length > 0;
}

function render() {
  if (!state.view) return;
  renderInstances();
  renderList("errors", state.errors, errorItem);
  renderList("invalidations", state.invalidations, invalidationItem);
  const rate = state.view.errors || {};
  document.getElementById("error-rate").textContent =
    `${rate.count || 0} in the last ${Math.round((rate.window_s || 0) / 60)} min`;
  const instances = state.view.instances || [];
  const down = instances.filter((i) => i.state !== "healthy").length;
  document.getElementById("summary").textContent =
    `${instances.length} instance(s), ${down} not healthy`;
  const link = document.getElementById("link");
  const connected = state.view.connected;
  link.textContent = !connected ? "Redis unreachable" : state.live ? "live" : "polling";
  link.className = `pill ${!connected ? "down" : state.live ? "live" : "polling"}`;
}

function mergeById(fresh, known, key) {
  // Keep events pushed over Socket.IO that the view has not caught up with yet.
  const seen = new Set(fresh.map((item) => item[key]));
  const extra = known.filter((item) => item[key] && !seen.has(item[key]));
  return extra.concat(fresh).sort((a, b) => (b.timestamp || 0) - (a.timestamp || 0));
}

async function refresh() {
  try {
    const response = await fetch(config.view, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const view = await response.json();
    state.view = view;
    state.errors = mergeById((view.errors && view.errors.recent) || [], state.errors, "error_id");
    state.invalidations = view.invalidations || [];
  } catch (err) {
    if (state.view) state.view.connected = false;
  }
  render();
}

let pending = null;
function refreshSoon() {
  if (pending === null) pending = setTimeout(() => { pending = null; refresh(); }, 150);
}

const handlers = {
  tickstock_error(error) {
    if (!state.errors.some((e) => e.error_id === error.error_id)) state.errors.unshift(error);
    render();
    refreshSoon();
  },
  tickstock_health() { refreshSoon(); },
  cache_invalidated(inv) { state.invalidations.unshift(inv); render(); },
};

// A minimal Socket.IO client (Engine.IO 4 over a WebSocket): enough to receive events.
function connectSocket(info) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let ws;
  try {
    ws = new WebSocket(`${scheme}//${location.host}${info.path}?EIO=4&transport=websocket`);
  } catch (err) {
    return;
  }
  const ns = info.namespace;
  ws.onmessage = (message) => {
    const data = message.data;
    if (typeof data !== "string") return;
    if (data[0] === "0") ws.send(ns === "/" ? "40" : `40${ns},`);
    else if (data[0] === "2") ws.send("3");
    else if (data[0] === "4") {
      const kind = data[1];
      let rest = data.slice(2);
      if (rest.startsWith("/")) {
        const comma = rest.indexOf(",");
        if (rest.slice(0, comma) !== ns) return;
        rest = rest.slice(comma + 1);
      } else if (ns !== "/") return;
      if (kind === "0") { state.live = true; refresh(); }
      else if (kind === "4") ws.close();
      else if (kind === "2") {
        const [event, payload] = JSON.parse(rest.slice(rest.indexOf("[")));
        if (Object.hasOwn(handlers, event)) handlers[event](payload);
      }
    }
  };
  ws.onclose = () => {
    state.live = false;
    render();
    setTimeout(() => connectSocket(info), 3000);
  };
}

refresh();
if (config.socket.available && "WebSocket" in window) connectSocket(config.socket);
// Polls every second without Socket.IO; with it, refreshes ages and stale/offline states.
setInterval(() => { if (!state.live) refresh(); }, 1000);
setInterval(() => { if (state.live) refresh(); }, 5000);
