// The instances table: sorted by state (unhealthy, offline, stale, degraded first), in a box
// that scrolls on its own; a row opens to the instance's health components and its charts.

import { metricCharts } from "./dashboard-charts.js";
import { KeyedList } from "./dashboard-lists.js";
import {
  ago, cut, duration, el, elIsolated, isolate, num, setClass, setIsolated, setText, visible,
} from "./dashboard-text.js";

const RANK = { unhealthy: 0, offline: 1, stale: 2, degraded: 3, unknown: 4, healthy: 5 };

export function byState(a, b) {
  const ra = RANK[a.state] ?? 4;
  const rb = RANK[b.state] ?? 4;
  if (ra !== rb) return ra - rb;
  return String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0;
}

/** An instance as the view shows it, from a heartbeat received over Socket.IO. */
export function fromBeat(beat, known, now) {
  const instance = beat.instance || {};
  const health = beat.health || {};
  return {
    ...(known || {}),
    id: String(instance.id ?? beat.source ?? "?"),
    component: beat.component,
    host: instance.host,
    pid: instance.pid,
    state: beat.status,
    status: beat.status,
    last_seen: now,
    interval_s: beat.interval_s ?? known?.interval_s,
    uptime_s: instance.uptime_s,
    metrics: beat.metrics || {},
    components: health.components || {},
    beats: (known?.beats ?? 0) + 1,
    lost_beats: known?.lost_beats ?? 0,
    restarts: known?.restarts ?? 0,
  };
}

const COLUMNS = ["id", "component", "state", "where", "seen", "uptime", "health", "metrics", "beats"];

function createRow(onToggle) {
  const row = el("div", null, "instance grid-row");
  row.setAttribute("role", "row");
  row.cells_ = {};
  for (const name of COLUMNS) {
    const td = el("div", null, name);
    td.setAttribute("role", "cell");
    row.cells_[name] = td;
    row.append(td);
  }
  const id = row.cells_.id;
  id.append(el("span", null, "toggle"), el("bdi", null, "iid"), el("small", null, "this"));
  row.cells_.state.append(el("span", null, "pill"));
  row.tabIndex = 0;
  row.addEventListener("click", () => onToggle(row.dataset.key));
  row.addEventListener("keydown", (e) => { if (e.key === "Enter") onToggle(row.dataset.key); });
  return row;
}

// A component's lowercase state: ``state`` since the beats carry TickStockAppV2's "OK" /
// "DEGRADED" / "UNHEALTHY" in ``status``; older beats have only ``status``.
function componentState(c) {
  return c?.state ?? c?.status ?? "?";
}

function componentsText(components) {
  return Object.entries(components || {}).slice(0, 12).map(([name, c]) =>
    `${isolate(name, 40)}: ${isolate(componentState(c), 20)}` +
    (c?.details ? ` (${isolate(c.details, 60)})` : "")).join(" · ");
}

function metricsText(metrics) {
  return Object.entries(metrics || {}).slice(0, 12)
    .map(([k, v]) => `${isolate(k, 40)}: ${isolate(num(v), 40)}`).join("  ");
}

function updateRow(row, inst, ctx) {
  const c = row.cells_;
  const [toggle, id, self] = c.id.children;
  setText(toggle, ctx.open.has(inst.id) ? "▾ " : "▸ ");
  setText(id, cut(visible(inst.id), 80));
  setText(self, inst.id === ctx.thisInstance ? " (this page)" : "");
  setText(c.component, inst.component ?? "", 80);
  const pill = c.state.firstChild;
  setText(pill, inst.state ?? "?");
  setClass(pill, `pill ${visible(inst.state ?? "")}`);
  setIsolated(c.where, `${isolate(inst.host ?? "?", 80)} · pid ${isolate(inst.pid ?? "?", 20)}`);
  updateAge(row, inst, ctx);
  setText(c.uptime, duration(inst.uptime_s));
  setIsolated(c.health, componentsText(inst.components));
  setIsolated(c.metrics, metricsText(inst.metrics));
  setText(c.beats, `${inst.beats ?? "?"} (${inst.lost_beats ?? 0} / ${inst.restarts ?? 0})`);
}

function updateAge(row, inst, ctx) {
  setText(row.cells_.seen, ago(inst.last_seen, ctx.now()));
}

function createDetail(item, ctx) {
  const row = el("div", null, "instance-detail");
  const cell = el("div");
  const components = el("div", null, "components");
  const charts = el("div", null, "charts");
  cell.append(el("h4", "Health components"), components, el("h4", "Last hour"), charts);
  row.append(cell);
  row.parts_ = { components, charts };
  updateDetail(row, item, ctx);
  return row;
}

function updateDetail(row, item, ctx) {
  const { components, charts } = row.parts_;
  const list = el("ul");
  for (const [name, c] of Object.entries(item.inst.components || {}).slice(0, 32)) {
    const li = el("li");
    li.append(el("bdi", cut(visible(name), 80)), " ",
              el("span", componentState(c), `pill ${visible(componentState(c))}`));
    const rest = Object.entries(c || {}).filter(([k]) => k !== "state");
    for (const [k, v] of rest.slice(0, 12)) {
      const text = typeof v === "string" ? v : JSON.stringify(v);
      li.append(" ", elIsolated("span", `${isolate(k, 40)}: ${isolate(text, 300)}`, "component-detail"));
    }
    list.append(li);
  }
  if (!list.childElementCount) list.append(el("li", "no health components reported", "empty"));
  components.replaceChildren(list);
  const series = ctx.series.get(item.inst.id);
  if (series === undefined) {
    charts.replaceChildren(el("span", "loading…", "empty"));
  } else if (series.error) {
    charts.replaceChildren(el("span", series.error, "empty"));
  } else if (charts.drawn !== series) {
    charts.drawn = series;
    metricCharts(charts, series.metrics);
    if (!charts.childElementCount) charts.append(el("span", "no numeric metric yet", "empty"));
  }
}

/**
 * The instances table. ``ctx``: {open: Set of ids, series: Map id -> {metrics}|{error},
 * thisInstance, now(), get(id) -> instance, onToggle(id)}.
 */
export function instanceTable(tbody, ctx) {
  // Rows in sight of the instances' scroll box (and the page's viewport): only those are kept
  // current as beats arrive; the others catch up when they scroll into sight.
  const inSight = new Set();
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const key = entry.target.dataset.key;
      if (entry.isIntersecting) {
        inSight.add(key);
        list.reveal(key);
        if (entry.target.cells_) updateAge(entry.target, ctx.get(key) || {}, ctx);
      } else {
        inSight.delete(key);
      }
    }
  }, { root: tbody.closest(".scroll"), rootMargin: "200px 0px" });
  const list = new KeyedList(tbody, {
    shown: (node) => inSight.has(node.dataset.key),
    key: (item) => (item.inst ? `${item.inst.id}\u0000detail` : String(item.id)),
    create: (item) => {
      const row = item.inst ? createDetail(item, ctx) : createRow(ctx.onToggle);
      if (!item.inst) updateRow(row, item, ctx);
      row.dataset.key = item.inst ? `${item.inst.id}\u0000detail` : String(item.id);
      observer.observe(row);
      return row;
    },
    update: (row, item) => (item.inst ? updateDetail(row, item, ctx) : updateRow(row, item, ctx)),
    version: (item) => item.version,
    dispose: (row) => {
      observer.unobserve(row);
      inSight.delete(row.dataset.key);
      for (const plot of row.parts_?.charts.plots || []) plot.destroy();
    },
  });
  return {
    sync(instances) {
      const items = [];
      for (const inst of instances) {
        items.push(inst);
        if (ctx.open.has(inst.id)) {
          const series = ctx.series.get(inst.id);
          items.push({ inst, version: `${inst.version}|${series?.version ?? "-"}` });
        }
      }
      return list.sync(items);
    },
    /** Only the ages, once a second. */
    ages(instances) {
      for (const inst of instances) {
        const row = list.rows.get(String(inst.id));
        if (row !== undefined && inSight.has(row.node.dataset.key)) updateAge(row.node, inst, ctx);
      }
    },
  };
}
