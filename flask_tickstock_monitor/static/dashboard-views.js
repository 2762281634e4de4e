// The error views: the groups table, the error feed, a group's detail and the invalidations
// feed. Rows are keyed and updated in place (see dashboard-lists.js); all text is textContent.

import { newSparkline, sparkline } from "./dashboard-charts.js";
import { KeyedList } from "./dashboard-lists.js";
import {
  clock, cut, el, elIsolated, isolate, longText, pre, setClass, setIsolated, setText, visible,
} from "./dashboard-text.js";

export const SKEW_S = 300;

/** Where an error came from: host and pid (sent, or from its origin "host:pid"). */
function hostPid(error) {
  let { host, pid } = error;
  if ((host === undefined || pid === undefined) && typeof error.origin === "string") {
    const at = error.origin.lastIndexOf(":");
    if (at > 0) {
      host = host ?? error.origin.slice(0, at);
      pid = pid ?? error.origin.slice(at + 1);
    }
  }
  return [host, pid];
}

function isSkewed(error) {
  if (error.skewed !== undefined) return Boolean(error.skewed);
  const ts = error.timestamp;
  return typeof ts !== "number" || Math.abs(ts - (error.received_at ?? ts)) > SKEW_S;
}

/** One error event as a list item (the feed and a group's recent events): few elements, since
 * a storm makes many of them; the received strings share text nodes, each one isolated. */
export function errorItem(error, onGroup) {
  const item = el("li", null, `error-item ${visible(error.severity)}`);
  const head = el("div", null, "head");
  head.append(el("span", error.severity, "sev"),
              elIsolated("span", `${isolate(error.component ?? error.source, 80)} ` +
                         `${isolate(error.error_type ?? "", 80)}`, "what"));
  if (isSkewed(error)) head.append(el("span", "clock skew", "pill skewed"));
  if (error.fingerprint && onGroup) {
    const link = el("button", `group ${cut(visible(error.fingerprint), 12)}`, "linkish");
    link.type = "button";
    link.addEventListener("click", () => onGroup(String(error.fingerprint)));
    head.append(link);
  }
  const [host, pid] = hostPid(error);
  const fields = [`received ${clock(error.received_at ?? error.timestamp)}`];
  if (isSkewed(error)) fields.push(`stamped ${clock(error.timestamp)}`);
  for (const [label, value] of [["instance", error.instance_id ?? error.source],
    ["host", host], ["pid", pid], ["release", error.release],
    ["env", error.environment], ["id", error.error_id]]) {
    if (value !== undefined && value !== null && value !== "") fields.push(`${label} ${isolate(value, 120)}`);
  }
  item.append(head, longText(error.message, 300, "message"),
              elIsolated("div", fields.join(" · "), "meta"));
  const context = error.context;
  const hasContext = context && typeof context === "object" && Object.keys(context).length > 0;
  if (error.traceback || hasContext) {
    // A plain button until first opened (a <details> per item costs layout in a storm).
    const label = [error.traceback && "traceback", hasContext && "context"].filter(Boolean).join(" · ");
    const button = el("button", `▸ ${label}`, "linkish expand");
    button.type = "button";
    button.addEventListener("click", () => {
      const details = el("details");
      details.open = true;
      details.append(el("summary", label));
      if (error.traceback) details.append(pre(error.traceback));
      if (hasContext) details.append(pre(JSON.stringify(context, null, 2)));
      button.replaceWith(details);
    });
    item.append(button);
  }
  return item;
}

/** The error feed: newest received first, keyed by error id (items never change). */
export function errorFeed(container, onGroup) {
  return new KeyedList(container, {
    key: (e) => String(e.error_id ?? `${e.received_at}:${e.message}`),
    create: (e) => errorItem(e, onGroup),
    update: () => {},
    version: () => 0,
  });
}

const MARKS = [["new", "new"], ["regression", "regression"]];

function groupRow(onSelect) {
  const row = el("tr", null, "group");
  const cells = ["status", "message", "count", "spark", "first", "last"].map((name) => {
    const td = el("td", null, name);
    row.append(td);
    return td;
  });
  const [status, message] = cells;
  status.append(el("span", null, "pill"), el("span", null, "marks"));
  message.append(el("div", null, "message"), el("small", null, "type"));
  cells[3].append(newSparkline());
  row.cells_ = cells;
  row.tabIndex = 0;
  row.addEventListener("click", () => onSelect(row.dataset.key));
  row.addEventListener("keydown", (e) => { if (e.key === "Enter") onSelect(row.dataset.key); });
  return row;
}

function updateGroupRow(row, group, selected) {
  const [status, message, count, spark, first, last] = row.cells_;
  const pill = status.firstChild;
  setText(pill, group.status ?? "open");
  setClass(pill, `pill ${visible(group.status ?? "open")}`);
  setText(status.lastChild, MARKS.filter(([k]) => group[k]).map(([, t]) => t).join(" "));
  setText(message.firstChild, group.message ?? "", 200);
  setIsolated(message.lastChild, `${isolate(group.error_type ?? "", 80)} · ${isolate(group.fingerprint, 16)}`);
  setText(count, group.count ?? 0);
  sparkline(spark.firstChild, group.series);
  setText(first, clock(group.first_seen));
  setText(last, clock(group.last_seen));
  row.classList.toggle("selected", selected);
}

/** The groups table, keyed by fingerprint. */
export function groupTable(tbody, onSelect, selected) {
  return new KeyedList(tbody, {
    key: (g) => String(g.fingerprint),
    create: (g) => {
      const row = groupRow(onSelect);
      updateGroupRow(row, g, selected() === String(g.fingerprint));
      return row;
    },
    update: (row, g) => updateGroupRow(row, g, selected() === String(g.fingerprint)),
    version: (g) => `${g.count}|${g.last_seen}|${g.status}|${g.new}|${g.regression}|` +
      `${(g.series || []).join(",")}|${selected() === String(g.fingerprint)}`,
  });
}

function breakdown(title, counts) {
  const box = el("div", null, "breakdown");
  box.append(el("h4", title));
  const list = el("ul");
  for (const [key, n] of Object.entries(counts || {}).slice(0, 20)) {
    const item = el("li");
    item.append(el("bdi", cut(visible(key), 120)), el("span", ` ${n}`, "n"));
    list.append(item);
  }
  if (!list.childElementCount) list.append(el("li", "–", "empty"));
  box.append(list);
  return box;
}

/**
 * Fills the group detail panel. ``detail``: {fingerprint, group, events, error, busy};
 * ``actions``: {durable, act(action), close(), onGroup}.
 */
export function renderDetail(panel, detail, actions) {
  panel.hidden = !detail;
  if (!detail) return;
  const group = detail.group || {};
  const head = el("div", null, "detail-head");
  const close = el("button", "close", "linkish");
  close.type = "button";
  close.addEventListener("click", actions.close);
  head.append(el("h3", `Group ${cut(visible(detail.fingerprint), 40)}`), close);
  const body = [head, longText(group.message ?? "", 300, "message"),
    elIsolated("div", `${isolate(group.error_type ?? "", 80)} · ${isolate(group.count ?? "?", 20)} ` +
      `events · status ${isolate(group.status ?? "?", 20)} · first ${clock(group.first_seen)} · ` +
      `last ${clock(group.last_seen)}`, "meta")];
  const buttons = el("div", null, "actions");
  if (actions.durable) {
    for (const action of ["resolve", "ignore", "reopen"]) {
      const button = el("button", action);
      button.type = "button";
      button.dataset.action = action;
      button.disabled = Boolean(detail.busy);
      button.addEventListener("click", () => actions.act(action));
      buttons.append(button);
    }
  } else {
    buttons.append(el("small", "resolve / ignore need the durable error log", "empty"));
  }
  if (detail.error) buttons.append(el("span", detail.error, "problem"));
  body.push(buttons);
  const grid = el("div", null, "breakdowns");
  grid.append(breakdown("Releases", group.releases), breakdown("Instances", group.instances),
              breakdown("Components", group.components),
              breakdown("Environments", group.environments));
  body.push(grid, el("h4", `Recent events (${(detail.events || []).length})`));
  const events = el("ol", null, "events");
  for (const event of (detail.events || []).slice(0, 20)) events.append(errorItem(event));
  body.push(events);
  panel.replaceChildren(...body);
}

function invalidationItem(inv) {
  const item = el("li", null, "invalidation");
  const list = (values) => (Array.isArray(values) ? values : []).slice(0, 50)
    .map((v) => isolate(v, 120)).join(", ");
  const what = inv.action === "clear" ? "cleared" : `keys ${list(inv.keys)}`;
  const from = inv.reason ? `gap: ${isolate(inv.reason, 120)}` :
    inv.local ? "local" : `from ${isolate(inv.origin ?? "?", 120)}`;
  item.append(
    elIsolated("div", `${isolate(inv.cache, 120)}: ${what}` +
      (inv.scope ? ` (scope ${isolate(inv.scope, 120)})` : "")),
    elIsolated("div", `${clock(inv.timestamp)} · ${from} · applied to ${list(inv.caches) || "nothing"}`,
      "meta"));
  return item;
}

/** The invalidations feed, keyed by invalidation id. */
export function invalidationFeed(container) {
  return new KeyedList(container, {
    key: (i) => String(i.invalidation_id ?? `${i.timestamp}:${i.cache}:${i.reason}`),
    create: invalidationItem,
    update: () => {},
    version: () => 0,
  });
}
