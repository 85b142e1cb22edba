// The live dashboard: polls GET /v1/stats every second and redraws without reloading.
"use strict";

const { el, json } = Persona;
const POLL_MS = 1000;

function tile(label, value) {
  return el("div", { class: "card tile" }, el("div", { class: "v" }, value), el("div", { class: "k" }, label));
}

const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%");
const pctShort = (v) => `${Math.round(100 * v)}%`;  // a chart's axis and legend

// The p95 tile: the newest p95 of the latency chart's window (a second without requests has
// none), with its age when it is not the newest second's; "–" only when the window has none.
function p95Tile(s) {
  const found = Charts.latest(s.map((p) => p.t), s.map((p) => p.latency_ms.p95));
  if (found === null) return tile(`p95 latency (none in ${s.length} s)`, "–");
  // a point a second: an older point is at least a second older
  const seconds = Math.max(1, Math.round(s[s.length - 1].t - found.t));
  const ago = found.i === s.length - 1 ? "" : ` (${seconds} s ago)`;
  return tile(`p95 latency${ago}`, found.value.toFixed(2) + " ms");
}
const byKey = (series, field) => {
  const names = [...new Set(series.flatMap((p) => Object.keys(p[field] || {})))].sort();
  return names.map((name) => ({ name, values: series.map((p) => (p[field] || {})[name] ?? null) }));
};

// Every worker and reader publishes its figures (the stats board); the tiles and charts add them
// up, and this table says which process each came from and how old its figures are.
function processTable(rows) {
  return el("table", { class: "kv", id: "process-table" },
    el("tr", {}, ["process", "kind", "host", "figures from", "status", "events folded", "API requests"].map((h) => el("th", {}, h))),
    rows.map((p) => el("tr", { "data-kind": p.kind },
      el("td", { title: p.process }, (p.label || p.process) + (p.this ? " (this page)" : "")),
      el("td", {}, p.kind), el("td", {}, p.host),
      el("td", {}, p.this ? "now" : `${p.age_s} s ago`), el("td", {}, p.ready ? "ready" : p.ready_detail),
      el("td", {}, p.kind === "worker" ? Number(p.events).toLocaleString() : "–"),
      el("td", {}, Number(p.requests).toLocaleString()))));
}

function draw(stats) {
  const s = stats.series;
  const t = s.map((p) => p.t);
  const totals = stats.totals;
  const lagTotal = Object.values(totals.lag).reduce((a, b) => a + b, 0);
  document.getElementById("tiles").replaceChildren(
    tile("status", stats.ready ? "ready" : stats.ready_detail),
    tile("events processed", totals.events.toLocaleString()),
    tile("consumer lag", lagTotal.toLocaleString()),
    tile("dead letters", totals.dead_lettered.toLocaleString()),
    tile("cache hit rate", pct(totals.cache_hit_rate)),
    tile("fallback rate", pct(totals.fallback_rate)),
    tile("API requests", totals.requests.toLocaleString()),
    p95Tile(s),
  );
  document.getElementById("processes").replaceChildren(processTable(stats.processes || []));
  document.getElementById("models").textContent = "models: " + Object.entries(stats.models).map(([n, v]) => `${n} ${v}`).join(" · ");
  const L = (id) => ({ legend: document.getElementById("legend-" + id) });
  const events = byKey(s, "events_per_s");
  Charts.lines(document.getElementById("chart-events"), t, events.length ? events : [{ name: "events/s", values: s.map(() => 0) }], L("events"));
  const lag = byKey(s, "lag");
  Charts.lines(document.getElementById("chart-lag"), t, lag.length ? lag : [{ name: "lag", values: s.map(() => 0) }], L("lag"));
  Charts.lines(document.getElementById("chart-dead"), t, [{ name: "dead letters", values: s.map((p) => p.dead_lettered) }], L("dead"));
  Charts.lines(document.getElementById("chart-cache"), t, [
    { name: "hit rate", values: s.map((p) => p.cache_hit_rate) },
    { name: "fallback rate", values: s.map((p) => p.fallback_rate) },
  ], { ...L("cache"), yMax: 1, format: pctShort });
  Charts.lines(document.getElementById("chart-requests"), t, [{ name: "requests/s", values: s.map((p) => p.requests_per_s) }], L("requests"));
  Charts.lines(document.getElementById("chart-latency"), t, ["p50", "p95", "p99"].map((q) => ({ name: q, values: s.map((p) => p.latency_ms[q]) })), L("latency"));
  const edges = stats.churn.edges;
  Charts.bars(document.getElementById("chart-churn"), edges.slice(0, -1).map((e) => e.toFixed(1)), stats.churn.counts,
    { legend: document.getElementById("legend-churn"), caption: `${stats.churn.sampled} profiles sampled (bins of churn probability)` });
  Charts.lines(document.getElementById("chart-triggers"), t, [{ name: "triggers", values: s.map((p) => p.triggers) }], L("triggers"));
  // recorded but not sent, for being older than PERSONA_TRIGGER_MAX_AGE_HOURS (by trigger)
  const stale = Object.entries(stats.triggers_stale || {}).sort(([a], [b]) => (a < b ? -1 : 1));
  document.getElementById("triggers-stale").replaceChildren("not sent, too old: ",
    stale.length ? stale.flatMap(([n, v], i) => [i ? " · " : "", el("bdi", {}, n), ` ${Number(v).toLocaleString()}`]) : "none");
  const experiments = stats.experiments;
  document.getElementById("experiments").replaceChildren(experiments.length
    ? el("table", { class: "kv" }, el("tr", {}, ["block", "variant", "served", "fallback", "clicks", "clicks / served", "conversions"].map((h) => el("th", {}, h))),
      experiments.flatMap((x) => x.variants.map((v) => el("tr", {}, el("td", {}, x.block), el("td", {}, v.variant),
        el("td", {}, String(v.served)), el("td", {}, pct(v.fallback_rate)), el("td", {}, String(v.clicks ?? 0)),
        el("td", {}, pct(v.click_rate)), el("td", {}, v.conversions ?? "–")))))
    : el("p", { class: "muted" }, "No experiment is running: every block is served with one variant."));
  document.getElementById("updated").textContent = "updated " + new Date(stats.generated * 1000).toLocaleTimeString();
  document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls") || 0) + 1));
}

async function refresh() {
  try {
    draw(await json("/v1/stats"));
  } catch (error) {
    if (error.message !== "unauthorized") document.getElementById("updated").textContent = "stats unavailable: " + error.message;
  }
}

Persona.start(() => {
  refresh();
  setInterval(refresh, POLL_MS);
});
