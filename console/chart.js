// <sb-stacked-bars>: spend per day as bars stacked by series (models or providers), drawn as a
// small SVG. Each bar part has a <title> (its day, series and amount); the same figures are in
// the tables beside the chart for screen readers and keyboard users.
import { h, svg } from "./dom.js";
import { usd } from "./format.js";

const HEIGHT = 220;
const MIN_WIDTH = 300;
const LEFT = 110; // room for the amounts on the axis
const BOTTOM = 24;
const TOP = 8;
const COLORS = 8; // .s0 ... .s7 in console.css; more series share the last color as "other"

class StackedBars extends HTMLElement {
  /** {days: ["YYYY-MM-DD"], series: [{name, values: [nano-USD per day]}], label} */
  set data(data) {
    this._data = data;
    this._width = 0;
    this.draw();
  }

  // Drawn at the element's own width, so that text stays its size in any window.
  connectedCallback() {
    this._resized = new ResizeObserver(() => this.draw());
    this._resized.observe(this);
  }

  disconnectedCallback() {
    this._resized.disconnect();
  }

  draw() {
    const width = Math.max(MIN_WIDTH, Math.round(this.clientWidth));
    if (!this._data || width === this._width) return;
    this._width = width;
    this.replaceChildren(...render(this._data, width));
  }
}

function render({ days, series, label }, width) {
  const shown = topSeries(series);
  const totals = days.map((_, i) => shown.reduce((sum, s) => sum + BigInt(s.values[i] ?? 0), 0n));
  const max = totals.reduce((a, b) => (b > a ? b : a), 0n);
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const scale = max > 0n ? plotHeight / Number(max) : 0;
  const slot = (width - LEFT) / Math.max(days.length, 1);
  const bars = days.flatMap((day, i) => {
    let y = HEIGHT - BOTTOM;
    return shown.map((s, k) => {
      const amount = BigInt(s.values[i] ?? 0);
      const height = Number(amount) * scale;
      y -= height;
      if (amount === 0n) return null;
      const rect = svg("rect", { x: LEFT + i * slot + slot * 0.1, y, width: slot * 0.8, height, class: `s${k}` });
      rect.append(svg("title", {}, `${day} ${s.name}: ${usd(amount)}`));
      return rect;
    });
  });
  const total = totals.reduce((a, b) => a + b, 0n);
  const summary = `${label}: ${usd(total)} from ${days[0] ?? ""} to ${days[days.length - 1] ?? ""}`;
  const chart = svg(
    "svg",
    { viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": summary },
    axis(days, max, slot, width),
    bars,
  );
  const legend = h(
    "ul",
    { class: "legend", "aria-label": "Legend" },
    shown.map((s, k) => h("li", {}, svg("svg", { viewBox: "0 0 10 10", "aria-hidden": "true" }, svg("rect", { width: 10, height: 10, class: `s${k}` })), s.name)),
  );
  return [chart, legend];
}

/** The largest series first; beyond the palette, the rest are summed as "other". */
function topSeries(series) {
  const total = (s) => s.values.reduce((a, v) => a + BigInt(v ?? 0), 0n);
  const sorted = [...series].sort((a, b) => (total(b) > total(a) ? 1 : total(b) < total(a) ? -1 : 0));
  if (sorted.length <= COLORS) return sorted;
  const rest = sorted.slice(COLORS - 1);
  const other = rest[0].values.map((_, i) => rest.reduce((a, s) => a + BigInt(s.values[i] ?? 0), 0n));
  return [...sorted.slice(0, COLORS - 1), { name: `${rest.length} others`, values: other }];
}

function axis(days, max, slot, width) {
  const base = HEIGHT - BOTTOM;
  const ticks = [0n, max / 2n, max].filter((v, i, all) => i === 0 || v !== all[i - 1]);
  const lines = ticks.map((value) => {
    const y = max > 0n ? base - (Number(value) / Number(max)) * (base - TOP) : base;
    return svg(
      "g",
      {},
      svg("line", { x1: LEFT, x2: width, y1: y, y2: y }),
      svg("text", { x: LEFT - 6, y: y + 4, "text-anchor": "end" }, usd(value)),
    );
  });
  const every = Math.ceil(days.length / Math.max(2, Math.floor((width - LEFT) / 60)));
  const labels = days.map((day, i) =>
    i % every === 0 ? svg("text", { x: LEFT + i * slot + slot / 2, y: HEIGHT - 6, "text-anchor": "middle" }, day.slice(5)) : null,
  );
  return svg("g", { class: "axis", "aria-hidden": "true" }, lines, labels);
}

customElements.define("sb-stacked-bars", StackedBars);
