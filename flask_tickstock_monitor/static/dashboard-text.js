// Received text made safe to show: always as textContent (never HTML), isolated for bidi, with
// control and invisible formatting characters made visible, and cut to a bounded length.

// C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates and marks; zero-width and
// line/paragraph separators: none of them may act on the page, all of them are shown.
// eslint-disable-next-line no-control-regex
const HIDDEN = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
// eslint-disable-next-line no-control-regex
const HIDDEN_LINE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

function shown(ch) {
  const code = ch.charCodeAt(0);
  if (code < 0x20) return String.fromCharCode(0x2400 + code); // ␀ … ␟ (␊ for a newline)
  if (code === 0x7f) return "\u2421"; // ␡
  return `\\u${code.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** Text with its control characters visible; ``multiline`` keeps newlines and tabs. */
export function visible(value, multiline = false) {
  const text = value === undefined || value === null ? "" : String(value);
  return text.replace(multiline ? HIDDEN : HIDDEN_LINE, shown);
}

/** At most ``limit`` characters of ``text`` (an ellipsis marks the cut). */
export function cut(text, limit) {
  return text.length <= limit ? text : `${text.slice(0, limit)}…`;
}

/** A new element; ``text`` (received or not) goes in as textContent, isolated for bidi. */
export function el(tag, text, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) setText(node, text);
  return node;
}

/**
 * ``value`` made visible, cut, and wrapped in bidi isolates (FSI … PDI): several received
 * strings can then share one text node (see ``elIsolated``) without reordering each other.
 */
export function isolate(value, limit = 200) {
  return `\u2068${cut(visible(value), limit)}\u2069`;
}

/** A new element whose text was already made safe with ``isolate``/``visible``. */
export function elIsolated(tag, safeText, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.dir = "auto";
  node.textContent = safeText;
  return node;
}

/** Sets text already made safe with ``isolate``/``visible``, unless it is already that. */
export function setIsolated(node, safeText) {
  if (node.textContent !== safeText) node.textContent = safeText;
  if (node.dir !== "auto") node.dir = "auto";
  return node;
}

/** Sets ``node``'s text (visible, one line) unless it is already that: cheap to call often. */
export function setText(node, text, limit = 400) {
  const value = cut(visible(text), limit);
  if (node.textContent !== value) node.textContent = value;
  if (node.dir !== "auto") node.dir = "auto";
  return node;
}

/** Sets a class name unless it is already that. */
export function setClass(node, className) {
  if (node.className !== className) node.className = className;
}

/**
 * Long received text shown cut, with a way to see it whole: a <details> whose summary is the
 * first ``limit`` characters and whose body (filled only when opened) holds all of it, wrapped.
 */
export function longText(text, limit = 300, className = "long") {
  const box = el("div", null, className);
  updateLongText(box, text, limit);
  return box;
}

export function updateLongText(box, value, limit = 300) {
  const text = value === undefined || value === null ? "" : String(value);
  if (box.full === text) return box;
  box.full = text;
  box.replaceChildren();
  if (text.length <= limit && !/[\n\r]/.test(text)) {
    setText(box, text, limit);
    return box;
  }
  const details = el("details");
  const summary = el("summary");
  summary.append(el("span", cut(visible(text).slice(0, limit), limit)),
                 el("small", ` (${size(text.length)} — show all)`, "more"));
  const body = el("pre");
  body.dir = "auto";
  details.addEventListener("toggle", () => {
    if (details.open && !body.textContent) body.textContent = visible(box.full, true);
  });
  details.append(summary, body);
  box.append(details);
  return box;
}

/** Multi-line received text (a traceback) in a <pre>, newlines kept, controls visible. */
export function pre(text, className) {
  const node = el("pre", null, className);
  node.dir = "auto";
  node.textContent = visible(text, true);
  return node;
}

export function size(chars) {
  return chars < 2048 ? `${chars} chars` : `${Math.round(chars / 1024)} K chars`;
}

// --- time --------------------------------------------------------------------------------

/** Seconds as "4.2 s ago" / "3 min ago" / "2 h ago", relative to ``now`` (the server's). */
export function ago(ts, now) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "never";
  const s = now - ts;
  if (s < -5) return "in the future";
  const a = Math.max(0, s);
  if (a < 60) return `${a.toFixed(a < 10 ? 1 : 0)} s ago`;
  if (a < 3600) return `${Math.floor(a / 60)} min ago`;
  if (a < 172800) return `${Math.floor(a / 3600)} h ago`;
  return `${Math.floor(a / 86400)} d ago`;
}

export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

/** A wall-clock time for ``ts`` (seconds); "?" for what no Date can hold. */
export function clock(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "?";
  const date = new Date(ts * 1000);
  if (Number.isNaN(date.getTime())) return "?";
  const sameDay = Math.abs(Date.now() - date.getTime()) < 43200000;
  return sameDay ? date.toLocaleTimeString() : date.toISOString().replace("T", " ").slice(0, 19);
}

/** A number shown compactly (metrics). */
export function num(value) {
  if (typeof value !== "number") return visible(JSON.stringify(value) ?? "");
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}
