// Hand-written SVG charts: line charts over time and a bar histogram. No library.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2f6fde", "#e8590c", "#1a7f4b", "#9c36b5", "#c0392b", "#0b7285", "#5c940d"];
  const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function size(svg) {
    const box = svg.getBoundingClientRect();
    return { w: Math.max(box.width, 200), h: Math.max(box.height, 120) };
  }

  function nice(max) {
    if (!(max > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(max)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (Math.abs(v) >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 2 : 1);
  }

  function frame(svg, yMax, w, h, format) {
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.replaceChildren();
    const plotH = h - PAD.top - PAD.bottom;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - f);
      svg.append(node("line", { class: "axis", x1: PAD.left, x2: w - PAD.right, y1: y, y2: y }));
      svg.append(node("text", { x: PAD.left - 4, y: y + 3, "text-anchor": "end" }, (format || fmt)(yMax * f)));
    }
    return plotH;
  }

  function legend(el, names) {
    if (!el) return;
    el.replaceChildren(...names.map((name, i) => {
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      span.append(swatch, name);
      return span;
    }));
  }

  const known = (v) => typeof v === "number" && Number.isFinite(v);

  // The newest value of `values` (null, undefined and NaN are no value), its time in `times` and
  // its index, or null: what a legend or a tile shows for a series whose newest second had none.
  function latest(times, values) {
    for (let i = values.length - 1; i >= 0; i -= 1) {
      if (known(values[i])) return { value: values[i], t: times[i], i };
    }
    return null;
  }

  // series: [{name, values: [number|null]}], times: [seconds since epoch];
  // opts: {legend: element, yMax: number, format: value -> text (axis and legend)}
  function lines(svg, times, series, opts) {
    const { w, h } = size(svg);
    const format = (opts && opts.format) || fmt;
    const all = series.flatMap((s) => s.values).filter(known);
    const yMax = (opts && opts.yMax) || nice(Math.max(0, ...all) * 1.1);
    const plotH = frame(svg, yMax, w, h, format);
    const n = times.length;
    const x = (i) => PAD.left + (n > 1 ? (i / (n - 1)) : 1) * (w - PAD.left - PAD.right);
    const y = (v) => PAD.top + plotH * (1 - Math.max(0, Math.min(v, yMax)) / yMax);
    let drawn = 0;
    series.forEach((s, k) => {
      const color = COLORS[k % COLORS.length];
      let path = "";
      // a null breaks the line (no value in that second): a value between two gaps is a path
      // of a single "M", which draws nothing, so it is drawn as a dot
      s.values.forEach((v, i) => {
        if (!known(v)) return;
        const gapBefore = i === 0 || !known(s.values[i - 1]);
        const gapAfter = i === s.values.length - 1 || !known(s.values[i + 1]);
        if (gapBefore && gapAfter) {
          svg.append(node("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: color, "data-series": s.name }));
        } else {
          path += `${gapBefore ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        }
        drawn += 1;
      });
      if (path) svg.append(node("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.8, "data-series": s.name }));
    });
    if (n) {
      const span = Math.round(times[n - 1] - times[0]);
      svg.append(node("text", { x: PAD.left, y: h - 5 }, `-${span}s`));
      svg.append(node("text", { x: w - PAD.right, y: h - 5, "text-anchor": "end" }, "now"));
    }
    if (!drawn) svg.append(node("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "no data yet"));
    svg.setAttribute("data-points", String(drawn));
    legend(opts && opts.legend, series.map((s) => {
      const last = latest(times, s.values);
      return `${s.name} ${last === null ? "–" : format(last.value)}`;
    }));
  }

  function bars(svg, labels, values, opts) {
    const { w, h } = size(svg);
    const yMax = nice(Math.max(1, ...values) * 1.05);
    const plotH = frame(svg, yMax, w, h);
    const slot = (w - PAD.left - PAD.right) / Math.max(values.length, 1);
    values.forEach((v, i) => {
      const bh = plotH * (v / yMax);
      svg.append(node("rect", { x: PAD.left + i * slot + 2, y: PAD.top + plotH - bh, width: Math.max(slot - 4, 1), height: bh, fill: COLORS[0], "data-count": v }));
      svg.append(node("text", { x: PAD.left + i * slot + slot / 2, y: h - 5, "text-anchor": "middle" }, labels[i]));
    });
    svg.setAttribute("data-points", String(values.reduce((a, b) => a + b, 0)));
    if (opts && opts.legend) opts.legend.textContent = opts.caption || "";
  }

  return { lines, bars, latest };
})();
