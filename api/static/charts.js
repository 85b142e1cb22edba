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

  function frame(svg, yMax, w, h) {
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.replaceChildren();
    const plotH = h - PAD.top - PAD.bottom;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + plotH * (1 - f);
      svg.append(node("line", { class: "axis", x1: PAD.left, x2: w - PAD.right, y1: y, y2: y }));
      svg.append(node("text", { x: PAD.left - 4, y: y + 3, "text-anchor": "end" }, fmt(yMax * f)));
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

  // series: [{name, values: [number|null]}], times: [seconds since epoch]
  function lines(svg, times, series, opts) {
    const { w, h } = size(svg);
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
    const yMax = (opts && opts.yMax) || nice(Math.max(0, ...all) * 1.1);
    const plotH = frame(svg, yMax, w, h);
    const n = times.length;
    const x = (i) => PAD.left + (n > 1 ? (i / (n - 1)) : 1) * (w - PAD.left - PAD.right);
    const y = (v) => PAD.top + plotH * (1 - Math.min(v, yMax) / yMax);
    let drawn = 0;
    series.forEach((s, k) => {
      let path = "";
      let gap = true;  // a null breaks the line: no value in that second
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) { gap = true; return; }
        path += `${gap ? "M" : "L"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        gap = false;
        drawn += 1;
      });
      if (path) svg.append(node("path", { d: path, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 1.8, "data-series": s.name }));
    });
    if (n) {
      const span = Math.round(times[n - 1] - times[0]);
      svg.append(node("text", { x: PAD.left, y: h - 5 }, `-${span}s`));
      svg.append(node("text", { x: w - PAD.right, y: h - 5, "text-anchor": "end" }, "now"));
    }
    if (!drawn) svg.append(node("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "no data yet"));
    svg.setAttribute("data-points", String(drawn));
    legend(opts && opts.legend, series.map((s) => {
      const last = [...s.values].reverse().find((v) => v !== null && v !== undefined);
      return `${s.name} ${last === undefined ? "–" : fmt(last)}`;
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

  return { lines, bars };
})();
