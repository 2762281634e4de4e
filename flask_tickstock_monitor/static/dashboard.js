// The TickStock monitor dashboard: state, data (the JSON API, Socket.IO or polling), filters
// in the URL, and rendering batched to animation frames. Everything received is shown with
// textContent, never as HTML (see dashboard-text.js).

import { RateChart } from "./dashboard-charts.js";
import { instanceTable, byState, fromBeat } from "./dashboard-instances.js";
import { BoundedMap } from "./dashboard-lists.js";
import { el, setClass, setText, visible } from "./dashboard-text.js";
import {
  FILTERS, filterQuery, matchesError, matchesGroup, matchesInstance, readFilters, seenFacets,
  writeFilters,
} from "./dashboard-filters.js";
import { connectLive } from "./dashboard-live.js";
import { SKEW_S, errorFeed, groupTable, invalidationFeed, renderDetail } from "./dashboard-views.js";

const config = JSON.parse(document.getElementById("config").textContent);
const urls = config.urls || {};
const PAGE = 100; // errors shown at first, and fetched per "older" page
const MAX_ERRORS = 1000; // errors kept in memory at most (paging back stops there)
const MAX_INVALIDATIONS = 100;
const MAX_OPEN = 4; // instances opened at once (each draws charts)
// Renders wait at least 250 ms after the last one, longer the more messages arrive (a storm of
// hundreds a second renders once a second): the page's work stays bounded, however busy.
const RENDER_GAP_MS = [250, 1000];
const $ = (id) => document.getElementById(id);

const state = {
  filters: readFilters(),
  view: null,
  offset: 0, // server clock minus ours (seconds)
  instances: new Map(),
  errors: new BoundedMap(MAX_ERRORS),
  cap: PAGE,
  older: { next: undefined, busy: false, done: false, error: "" },
  groups: [],
  groupSource: "",
  invalidations: [],
  detail: null,
  open: new Set(),
  series: new Map(),
  live: false,
  connected: true,
  paused: false,
  missed: 0,
  version: 0,
};

const serverNow = () => Date.now() / 1000 + state.offset;

// --- filters (dashboard-filters.js), on this page's state -------------------------------------

const query = (extra) => filterQuery(state.filters, extra);
const writeUrl = () => writeFilters(state.filters);
const errorMatches = (e) => matchesError(state.filters, e);
const groupMatches = (g) => matchesGroup(state.filters, g);
const instanceMatches = (i) => matchesInstance(state.filters, i);

// --- rendering, batched --------------------------------------------------------------------

const dirty = new Set();
let scheduled = false;
let lastRender = 0;

let messages = 0; // since the last render
let lastBatch = 0; // messages the last render took in

function mark(...regions) {
  for (const region of regions) dirty.add(region);
  messages += regions.length ? 1 : 0;
  if (scheduled) return;
  scheduled = true;
  const [least, most] = RENDER_GAP_MS;
  const gap = Math.min(most, least + 5 * lastBatch);
  const wait = Math.max(0, gap - (performance.now() - lastRender));
  setTimeout(() => requestAnimationFrame(render), wait);
}

const views = {
  instances: instanceTable($("instances-body"), {
    open: state.open, series: state.series, now: serverNow, get: (id) => state.instances.get(id),
    get thisInstance() { return state.view?.this_instance; },
    onToggle: toggleInstance,
  }),
  groups: groupTable($("groups-body"), selectGroup, () => state.filters.group),
  errors: errorFeed($("errors"), selectGroup),
  invalidations: invalidationFeed($("invalidations")),
  chart: new RateChart($("rate-chart")),
};

const regionRenderers = {
  errors: renderErrors,
  instances() {
    const shown = [...state.instances.values()].filter(instanceMatches).sort(byState);
    $("no-instances").hidden = views.instances.sync(shown) > 0;
    const down = shown.filter((i) => i.state !== "healthy").length;
    setText($("summary"), `${shown.length} instance(s), ${down} not healthy`);
  },
  ages() { views.instances.ages([...state.instances.values()]); },
  groups() {
    const shown = state.groups.filter(groupMatches).slice(0, 100);
    $("no-groups").hidden = views.groups.sync(shown) > 0;
    setText($("groups-source"), state.groupSource ? `from ${state.groupSource}` : "");
  },
  invalidations() {
    $("no-invalidations").hidden = views.invalidations.sync(state.invalidations) > 0;
  },
  chart() { if (state.view) views.chart.set(state.view.errors_per_minute); },
  detail() {
    renderDetail($("detail"), state.detail, {
      durable: Boolean(config.durable), act: groupAction, close: () => selectGroup(""),
    });
  },
  filters: renderFilters,
};
const FRAME_BUDGET_MS = 6; // of script per frame: the rest of the regions go to the next one
const NEW_ROWS_PER_FRAME = 25; // error items made per frame (a storm's second: a few frames)

let cycle = null; // the regions this render still has to draw (it may span a few frames)

function render() {
  const started = performance.now();
  if (cycle === null) {
    cycle = new Set(dirty);
    dirty.clear();
  }
  for (const [region, draw] of Object.entries(regionRenderers)) {
    if (!cycle.has(region)) continue;
    cycle.delete(region);
    if (draw()) cycle.add(region); // more of it in the next frame
    if (performance.now() - started > FRAME_BUDGET_MS) break;
  }
  if ([...cycle].some((r) => r in regionRenderers)) {
    requestAnimationFrame(render); // the rest in the next frame, without waiting for the gap
    return;
  }
  cycle = null;
  renderHeader();
  scheduled = false;
  lastBatch = messages;
  messages = 0;
  lastRender = performance.now();
  if (dirty.size) mark(); // what arrived meanwhile, after the gap
}

function renderErrors() {
  // Kept: what is shown (state.cap, raised by paging back) and a page more, for filters.
  const all = [...state.errors.values()].sort((a, b) => b.received_at - a.received_at);
  while (all.length > Math.min(MAX_ERRORS, state.cap + PAGE)) state.errors.delete(all.pop().error_id);
  const shown = all.filter(errorMatches).slice(0, state.cap);
  $("no-errors").hidden = views.errors.sync(shown, NEW_ROWS_PER_FRAME) > 0;
  const older = state.older;
  const button = $("older");
  button.disabled = older.busy || older.done || state.cap >= MAX_ERRORS;
  setText(button, older.busy ? "loading…" : older.done ? "no older errors" :
    state.cap >= MAX_ERRORS ? `the newest ${MAX_ERRORS} are kept` : "older errors");
  setText($("older-note"), older.error);
  return views.errors.incomplete;
}

function renderHeader() {
  const rate = state.view?.errors || {};
  setText($("error-rate"), `${rate.count ?? 0} in the last ${Math.round((rate.window_s || 0) / 60)} min`);
  const link = $("link");
  const word = state.paused ? "paused" : !state.connected ? "Redis unreachable" :
    state.live ? "live" : "polling";
  setText(link, word);
  setClass(link, `pill ${state.paused ? "paused" : !state.connected ? "down" : state.live ? "live" : "polling"}`);
  setText($("pause"), state.paused ? "resume" : "pause");
  $("pause").setAttribute("aria-pressed", String(state.paused));
  setText($("missed"), state.paused && state.missed ? `${state.missed} update(s) held back` : "");
}

function renderFilters() {
  const facets = state.view?.facets || seenFacets(state.instances.values(), state.errors.values());
  for (const name of FILTERS) {
    const select = $(`filter-${name}`);
    const values = new Set([...(facets[name] || []).slice(0, 200).map(String), ...state.filters[name]]);
    const wanted = ["", ...[...values].sort()];
    const current = [...select.options].map((o) => o.value);
    if (JSON.stringify(current) !== JSON.stringify(wanted)) {
      select.replaceChildren(...wanted.map((v) => {
        const option = el("option", v === "" ? `all ${name === "severity" ? "severities" : `${name}s`}` : visible(v), null);
        option.value = v;
        return option;
      }));
    }
    select.value = state.filters[name][0] ?? "";
  }
  const search = $("filter-q");
  if (document.activeElement !== search) search.value = state.filters.q;
  $("filter-status").value = state.filters.status;
}

// --- data ----------------------------------------------------------------------------------

async function getJson(url, options = {}) {
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin", ...options });
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const error = new Error(body?.error ? visible(body.error) : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function fill(template, values) {
  return template.replace(/__([A-Z]+)__/g, (_, name) => encodeURIComponent(values[name] ?? ""));
}

function bump(item) {
  state.version += 1;
  item.version = state.version;
  return item;
}

function addError(error, receivedAt) {
  if (!error || typeof error !== "object") return;
  const e = { ...error };
  e.error_id = String(e.error_id ?? `${receivedAt}:${state.version}`);
  if (typeof e.received_at !== "number") e.received_at = receivedAt ?? serverNow();
  if (e.skewed === undefined && typeof e.timestamp === "number") {
    e.skewed = Math.abs(e.timestamp - e.received_at) > SKEW_S;
  }
  if (!state.errors.has(e.error_id)) state.errors.set(e.error_id, e);
}

function applyView(view) {
  state.view = view;
  state.connected = view.connected !== false;
  state.offset = (view.now ?? view.generated_at ?? Date.now() / 1000) - Date.now() / 1000;
  const seen = new Set();
  for (const inst of view.instances || []) {
    const id = String(inst.id);
    seen.add(id);
    state.instances.set(id, bump({ ...inst, id }));
  }
  for (const id of state.instances.keys()) if (!seen.has(id)) state.instances.delete(id);
  while (state.instances.size > 5000) state.instances.delete(state.instances.keys().next().value);
  for (const error of view.errors?.recent || []) addError(error);
  state.invalidations = (view.invalidations || []).slice(0, MAX_INVALIDATIONS);
  if (!urls.groups) setGroups(view.groups || [], "memory");
  mark("instances", "errors", "invalidations", "chart", "filters");
}

function setGroups(groups, source) {
  state.groups = groups.slice(0, 500);
  state.groupSource = source;
  mark("groups");
}

async function refresh() {
  if (state.paused) return;
  try {
    const view = await getJson(`${urls.view}?${query()}`);
    if (!state.paused) applyView(view);
  } catch {
    state.connected = false;
    mark("header");
  }
  if (urls.groups && !state.paused) {
    try {
      const body = await getJson(`${urls.groups}?${query({ status: state.filters.status, limit: 100 })}`);
      setGroups(body.groups || [], body.source || "");
    } catch {
      if (state.view) setGroups(state.view.groups || [], "memory");
    }
  }
}

async function loadOlder() {
  const older = state.older;
  if (older.busy || older.done || !urls.errors) {
    if (!urls.errors) older.error = "paging back needs the server's api/errors";
    mark("errors");
    return;
  }
  // Reading back pauses the live feed: in a storm new errors would push the older ones out
  // of the bounded list as fast as they come. Resuming returns to the newest.
  if (!state.paused) setPaused(true);
  // The first page starts at the oldest error shown that has a cursor (the view's memory
  // cursors; none with the durable log, whose pages start from its newest row).
  let before = older.next;
  if (before === undefined && !config.durable) {
    const paged = [...state.errors.values()].filter((e) => typeof e.cursor === "string" && errorMatches(e));
    paged.sort((a, b) => a.received_at - b.received_at);
    before = paged[0]?.cursor;
  }
  older.busy = true;
  mark("errors");
  try {
    const body = await getJson(`${urls.errors}?${query({ before, limit: PAGE })}`);
    for (const error of body.errors || []) addError(error, error.received_at ?? error.timestamp);
    older.next = body.next_before ?? null;
    older.done = !body.next_before || !(body.errors || []).length;
    state.cap = Math.min(MAX_ERRORS, state.cap + PAGE);
    older.error = "";
  } catch (err) {
    older.error = `could not load older errors: ${err.message}`;
  }
  older.busy = false;
  mark("errors");
}

async function loadDetail() {
  const fingerprint = state.filters.group;
  if (!fingerprint) { state.detail = null; mark("detail"); return; }
  const detail = state.detail?.fingerprint === fingerprint ? state.detail : { fingerprint };
  state.detail = detail;
  try {
    if (!urls.group) throw new Error("no group endpoint");
    const body = await getJson(fill(urls.group, { FP: fingerprint }));
    Object.assign(detail, { group: body.group, events: body.events || [] });
  } catch (err) {
    const group = state.groups.find((g) => String(g.fingerprint) === fingerprint);
    const events = [...state.errors.values()].filter((e) => String(e.fingerprint) === fingerprint);
    Object.assign(detail, { group: group || detail.group, events: events.slice(0, 20),
                            error: group ? "" : visible(err.message) });
  }
  mark("detail");
}

async function groupAction(action) {
  const detail = state.detail;
  if (!detail || !urls.group_action) return;
  detail.busy = true;
  detail.error = "";
  mark("detail");
  try {
    const body = await getJson(fill(urls.group_action, { FP: detail.fingerprint, ACTION: action }), {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf_token || "" },
      body: "{}",
    });
    if (body?.group) detail.group = body.group;
    await refresh();
  } catch (err) {
    detail.error = `${action} failed: ${err.message}`;
  }
  detail.busy = false;
  mark("detail");
}

function selectGroup(fingerprint) {
  state.filters.group = fingerprint || "";
  writeUrl();
  if (!fingerprint) state.detail = null;
  mark("detail", "groups");
  if (fingerprint) {
    loadDetail();
    $("detail").scrollIntoView({ block: "nearest" });
  }
}

async function loadSeries(id) {
  if (!urls.instance_series) {
    state.series.set(id, { error: "charts need the server's api/instances/…/series", version: Infinity });
  } else {
    try {
      const body = await getJson(fill(urls.instance_series, { ID: id }));
      state.series.set(id, { metrics: body.metrics || {}, version: Date.now() });
    } catch (err) {
      state.series.set(id, { error: `no series: ${err.message}`, version: Date.now() });
    }
  }
  const inst = state.instances.get(id);
  if (inst) bump(inst);
  mark("instances");
}

function toggleInstance(id) {
  if (state.open.has(id)) {
    state.open.delete(id);
    state.series.delete(id);
  } else {
    state.open.add(id);
    if (state.open.size > MAX_OPEN) {
      const first = state.open.values().next().value;
      state.open.delete(first);
      state.series.delete(first);
      const closed = state.instances.get(first);
      if (closed) bump(closed);
    }
    loadSeries(id);
  }
  const inst = state.instances.get(id);
  if (inst) bump(inst);
  mark("instances");
}

// --- live updates --------------------------------------------------------------------------

const handlers = {
  tickstock_error(error) {
    const now = serverNow();
    addError(error, now);
    const group = state.groups.find((g) => g.fingerprint && g.fingerprint === error.fingerprint);
    if (group) {
      group.count = (group.count ?? 0) + 1;
      group.last_seen = now;
      mark("groups");
    }
    mark("errors");
  },
  tickstock_health(beat) {
    const id = String(beat?.instance?.id ?? "");
    if (!id) return;
    state.instances.set(id, bump(fromBeat(beat, state.instances.get(id), serverNow())));
    mark("instances");
  },
  cache_invalidated(inv) {
    state.invalidations = [inv, ...state.invalidations].slice(0, MAX_INVALIDATIONS);
    mark("invalidations");
  },
};

function onEvent(name, payload) {
  if (state.paused) { state.missed += 1; mark("header"); return; }
  if (Object.hasOwn(handlers, name) && payload && typeof payload === "object") handlers[name](payload);
}

function onLive(live) {
  state.live = live;
  if (live) refresh();
  mark("header");
}

// --- controls ------------------------------------------------------------------------------

function filtersChanged() {
  writeUrl();
  state.errors.clear();
  state.cap = PAGE;
  state.older = { next: undefined, busy: false, done: false, error: "" };
  mark("errors", "groups", "instances", "filters");
  refresh();
}

for (const name of FILTERS) {
  $(`filter-${name}`).addEventListener("change", (e) => {
    state.filters[name] = e.target.value ? [e.target.value] : [];
    filtersChanged();
  });
}
let typing = 0;
$("filter-q").addEventListener("input", (e) => {
  clearTimeout(typing);
  typing = setTimeout(() => { state.filters.q = e.target.value; filtersChanged(); }, 250);
});
$("filter-status").addEventListener("change", (e) => { state.filters.status = e.target.value; filtersChanged(); });
$("filter-clear").addEventListener("click", () => {
  for (const name of FILTERS) state.filters[name] = [];
  Object.assign(state.filters, { q: "", status: "" });
  filtersChanged();
});
function setPaused(paused) {
  state.paused = paused;
  state.missed = 0;
  if (!paused) {
    state.cap = PAGE; // back to the newest errors
    state.older = { next: undefined, busy: false, done: false, error: "" };
    refresh();
    mark("errors");
  }
  mark("header");
}

$("pause").addEventListener("click", () => setPaused(!state.paused));
$("older").addEventListener("click", loadOlder);
$("filters").addEventListener("submit", (e) => e.preventDefault());
window.addEventListener("resize", () => views.chart.resize());

// --- start -----------------------------------------------------------------------------------

mark("filters");
refresh().then(() => { if (state.filters.group) loadDetail(); });
connectLive(config.socket || {}, { onEvent, onLive });
// Without a live link, poll the view; with one, refresh the whole view now and then (groups,
// rates, staleness) while the events keep the page current in between.
const pollMs = Math.max(250, Number(config.poll_ms) || 1000);
let lastPoll = 0;
setInterval(() => {
  const due = state.live ? 10000 : pollMs;
  if (Date.now() - lastPoll >= due - 50) {
    lastPoll = Date.now();
    refresh();
  }
}, pollMs);
setInterval(() => {
  if (!state.paused) mark("ages");
  for (const id of state.open) {  // each open instance's charts, every ten seconds
    if (!state.paused && Date.now() - (state.series.get(id)?.version ?? 0) > 10000) loadSeries(id);
  }
}, 1000);
