// Charts: the errors-per-minute chart and the per-instance metric charts (uPlot, vendored),
// and the groups' sparklines (a few SVG points, redrawn only when the counts change).

import { cut, visible } from "./dashboard-text.js";

const SEVERITY_COLOURS = {
  critical: "#82071e", error: "#cf222e", warning: "#bf8700", info: "#0969da", debug: "#6e7781",
};
const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a"];
const SVG = "http://www.w3.org/2000/svg";

export const chartsAvailable = () => typeof window.uPlot === "function";

function widthOf(node, fallback) {
  return Math.max(200, Math.floor(node.clientWidth || fallback));
}

/** The errors-per-minute chart, a line per severity; ``set(epm)`` takes the view's block. */
export class RateChart {
  constructor(node) {
    this.node = node;
    this.plot = null;
    this.shape = "";
    this.data = "";
  }

  set(epm) {
    if (!chartsAvailable() || !epm || !epm.series) return;
    const names = Object.keys(epm.series).slice(0, 8);
    const start = epm.series_start;
    const step = epm.bucket_s || 60;
    const total = epm.total || [];
    const xs = total.map((_, i) => start + i * step);
    const data = [xs, ...names.map((n) => epm.series[n])];
    const key = JSON.stringify(data);
    if (key === this.data) return;
    this.data = key;
    const shape = names.join("\u0000");
    if (this.plot === null || shape !== this.shape) {
      if (this.plot) this.plot.destroy();
      this.shape = shape;
      this.plot = new window.uPlot({
        width: widthOf(this.node, 600),
        height: 160,
        legend: { show: true },
        scales: { x: { time: true } },
        series: [{}, ...names.map((name, i) => ({
          label: cut(visible(name), 40),
          stroke: SEVERITY_COLOURS[name] || PALETTE[i % PALETTE.length],
          width: 1.5,
          points: { show: false },
        }))],
        axes: [{}, { size: 40 }],
      }, data, this.node);
    } else {
      this.plot.setData(data);
    }
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: widthOf(this.node, 600), height: 160 });
  }
}

/** Small charts of one instance's metrics over the last hour (``[[t, v], …]`` per metric). */
export function metricCharts(node, metrics, limit = 12) {
  for (const plot of node.plots || []) plot.destroy();
  node.plots = [];
  node.replaceChildren();
  if (!chartsAvailable()) return;
  const names = Object.keys(metrics || {}).filter((n) => Array.isArray(metrics[n]) && metrics[n].length);
  names.sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
  for (const [i, name] of names.slice(0, limit).entries()) {
    const points = metrics[name];
    const box = document.createElement("div");
    box.className = "metric-chart";
    node.append(box);
    node.plots.push(new window.uPlot({
      width: 260,
      height: 110,
      legend: { show: false },
      title: cut(visible(name), 60),
      scales: { x: { time: true } },
      series: [{}, { label: cut(visible(name), 60), stroke: PALETTE[i % PALETTE.length], width: 1.2,
                     points: { show: points.length < 3 } }],
      axes: [{ size: 24, font: "10px system-ui" }, { size: 40, font: "10px system-ui" }],
    }, [points.map((p) => p[0]), points.map((p) => p[1])], box));
  }
}

function rank(name) {
  return name === "memory_usage_mb" ? 0 : name === "redis_latency_ms" ? 1 : 2;
}

/** An SVG sparkline of per-minute counts, redrawn only when they change. */
export function sparkline(svg, counts) {
  const values = Array.isArray(counts) ? counts : [];
  const key = values.join(",");
  if (svg.dataset.values === key) return svg;
  svg.dataset.values = key;
  const max = Math.max(1, ...values);
  const w = 120;
  const h = 22;
  const step = values.length > 1 ? w / (values.length - 1) : w;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
  let line = svg.firstChild;
  if (!line) {
    line = document.createElementNS(SVG, "polyline");
    svg.append(line);
  }
  line.setAttribute("points", points.join(" "));
  return svg;
}

export function newSparkline() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 120 22");
  svg.setAttribute("width", "100%");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("height", "22");
  svg.setAttribute("aria-hidden", "true");
  return svg;
}
