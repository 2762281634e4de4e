// Filters (severity, component, instance, release, environment, text, group status) kept in
// the page's URL, sent to the API, and applied to what arrives live as well.

export const FILTERS = ["severity", "component", "instance", "release", "environment"];

/** The filters in the page's URL: lists per dimension, and ``q``, ``status``, ``group``. */
export function readFilters() {
  const params = new URLSearchParams(location.search);
  const filters = { q: params.get("q") || "", status: params.get("status") || "",
                    group: params.get("group") || "" };
  for (const name of FILTERS) {
    filters[name] = params.getAll(name).flatMap((v) => v.split(",")).filter(Boolean);
  }
  return filters;
}

/** Query parameters for the API: the filters (comma-separated lists), plus ``extra``. */
export function filterQuery(filters, extra = {}) {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name].length) params.set(name, filters[name].join(","));
  if (filters.q) params.set("q", filters.q);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== "") params.set(k, v);
  return params;
}

/** Puts the filters in the page's URL (without a history entry), so a view can be linked. */
export function writeFilters(filters) {
  const params = filterQuery(filters, { status: filters.status, group: filters.group });
  const search = params.toString();
  history.replaceState(null, "", `${location.pathname}${search ? `?${search}` : ""}`);
}

function has(values, value) {
  return values.length === 0 || values.includes(String(value ?? ""));
}

function hasAny(values, counts, single) {
  if (values.length === 0) return true;
  if (single !== undefined && values.includes(String(single))) return true;
  return values.some((v) => counts && Object.hasOwn(counts, v));
}

function text(value) {
  return String(value ?? "").toLowerCase();
}

export function matchesError(f, e) {
  const q = f.q.toLowerCase();
  return has(f.severity, e.severity) && has(f.component, e.component) &&
    has(f.instance, e.instance_id ?? e.source) && has(f.release, e.release) &&
    has(f.environment, e.environment ?? "production") &&
    (!q || text(e.message).includes(q) || text(e.error_type).includes(q) ||
     text(e.fingerprint).includes(q));
}

/** A group matches when any of its events could: its breakdowns hold the value. */
export function matchesGroup(f, g) {
  const q = f.q.toLowerCase();
  return hasAny(f.severity, g.severities, g.severity ?? g.last_event?.severity) &&
    hasAny(f.component, g.components) && hasAny(f.instance, g.instances) &&
    hasAny(f.release, g.releases) && hasAny(f.environment, g.environments) &&
    (!f.status || (g.status ?? "open") === f.status) &&
    (!q || text(g.message).includes(q) || text(g.error_type).includes(q) ||
     text(g.fingerprint).includes(q));
}

export function matchesInstance(f, inst) {
  return has(f.instance, inst.id) && has(f.component, inst.component);
}

/** The filter values seen in the page's own data, for a server that sends no facets. */
export function seenFacets(instances, errors) {
  const seen = Object.fromEntries(FILTERS.map((name) => [name, new Set()]));
  for (const inst of instances) {
    seen.instance.add(inst.id);
    if (inst.component) seen.component.add(inst.component);
  }
  for (const e of errors) {
    for (const [name, value] of [["severity", e.severity], ["component", e.component],
      ["instance", e.instance_id ?? e.source], ["release", e.release],
      ["environment", e.environment ?? "production"]]) {
      if (typeof value === "string" && seen[name].size < 200) seen[name].add(value);
    }
  }
  return Object.fromEntries(FILTERS.map((name) => [name, [...seen[name]]]));
}
