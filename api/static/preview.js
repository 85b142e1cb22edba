// The preview page: a user's blocks as an e-mail shows them (sandboxed iframe) and as ad JSON,
// the profile beside them, and why: recent items -> neighbours -> recommendations, churn features.
"use strict";

const { el, json, api } = Persona;
const BLOCKS = ["recommendations", "cart_reminder", "winback"];
const enc = encodeURIComponent;

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

async function loadUsers() {
  try {
    const body = await json("/v1/users?limit=50");
    const list = document.getElementById("user-list");
    list.replaceChildren(...body.users.map((u) => el("option", { value: u.user_id }, `${u.events} events`)));
    return body.users;
  } catch (error) {
    return [];
  }
}

function badgeFor(meta) {
  if (!meta) return null;
  return meta.fallback
    ? el("span", { class: "badge fallback" }, `fallback: ${meta.reason}`)
    : el("span", { class: "badge personal" }, "personalized");
}

async function blockCard(user, name, meta) {
  const base = `/v1/users/${enc(user)}/blocks/${name}`;
  const [htmlResponse, jsonResponse] = await Promise.all([api(base + "?format=html", "text/html"), api(base + "?format=json")]);
  const html = await htmlResponse.text();
  const ad = await jsonResponse.text();
  let pretty = ad;
  try { pretty = JSON.stringify(JSON.parse(ad), null, 2); } catch (error) { /* shown as is */ }
  const frame = el("iframe", { class: "email", sandbox: "", title: `${name} e-mail block`, "data-block": name });
  frame.srcdoc = html;  // sandbox="": no scripts, no forms, no same-origin access
  return el("div", { class: "card block", id: `block-${name}` },
    el("h2", {}, name, el("span", { class: "badge" }, `variant ${htmlResponse.headers.get("X-Persona-Variant") || "default"}`), badgeFor(meta)),
    frame,
    el("details", {}, el("summary", {}, "Ad JSON"), el("pre", { class: "json", "data-block": name }, pretty)));
}

function kvTable(rows) {
  return el("table", { class: "kv" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

function profileView(profile) {
  const cart = Object.entries(profile.cart).map(([item, qty]) => `${item} × ${qty}`).join(", ") || "empty";
  const events = Object.entries(profile.events).map(([type, n]) => `${type} ${n}`).join(", ");
  const consent = Object.entries(profile.consent).map(([p, ok]) => `${p} ${ok ? "yes" : "no"}`).join(", ");
  return kvTable([
    ["user", profile.user_id],
    ["events", events],
    ["cart", cart],
    ["orders", `${profile.orders ?? "?"} (spent ${profile.monetary ?? "?"})`],
    ["consent", consent],
    ["last seen", profile.last_seen ? new Date(profile.last_seen).toISOString().slice(0, 16).replace("T", " ") : "?"],
    ["models", Object.entries(profile.models).map(([n, v]) => `${n} ${v}`).join(", ")],
  ]);
}

function churnView(churn) {
  const maxAbs = Math.max(0.01, ...churn.top_features.map((f) => Math.abs(f.weight)));
  return el("div", { id: "churn" },
    el("div", {}, el("span", { class: "score", id: "churn-score" }, churn.score.toFixed(3)),
      el("span", { class: "muted" }, ` churn risk · winback from ${churn.threshold}`)),
    el("h3", {}, "What moves it (log-odds)"),
    el("table", { class: "kv" }, churn.top_features.map((f) => el("tr", {},
      el("th", {}, f.feature), el("td", {}, String(f.value)),
      el("td", {}, svgBar(f.weight / maxAbs), ` ${f.weight > 0 ? "+" : ""}${f.weight.toFixed(2)}`)))));
}

function svgBar(share) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", "80");
  svg.setAttribute("height", "10");
  const rect = document.createElementNS(ns, "rect");
  const w = Math.abs(share) * 40;
  rect.setAttribute("x", String(share >= 0 ? 40 : 40 - w));
  rect.setAttribute("width", String(Math.max(w, 1)));
  rect.setAttribute("height", "10");
  rect.setAttribute("fill", share >= 0 ? "#c0392b" : "#1a7f4b");
  svg.append(rect);
  return svg;
}

function whyView(why) {
  const recent = el("ol", { class: "recs", id: "recent" }, why.recent_items.map((r) =>
    el("li", {}, r.title || r.item_id, el("span", { class: "muted" }, ` ${r.item_id}`))));
  const recs = el("ol", { class: "recs", id: "why-recs" }, why.recommendations.map((r) =>
    el("li", { "data-item": r.item_id }, el("span", { class: "title" }, r.title || r.item_id),
      el("div", { class: "why" }, r.because.length
        ? "because of " + r.because.map((b) => `${b.title || b.item_id} (similarity ${b.similarity.toFixed(2)})`).join(", ")
        : "from the best-sellers (no neighbour of a recent item)"))));
  const blocks = kvTable(Object.entries(why.blocks).map(([name, b]) =>
    [name, `variant ${b.variant}, ${b.fallback ? "fallback (" + b.reason + ")" : "personalized"}` +
      (b.rules && b.rules.length ? `; changed by rules ${b.rules.join(", ")}` : "")]));
  return el("div", {},
    churnView(why.churn),
    el("h3", {}, "Recent items (newest first)"), recent,
    el("h3", {}, "Recommendations and the neighbours behind them"), recs,
    el("h3", {}, "Blocks"), blocks,
    el("p", { class: "muted" }, "models: " + Object.entries(why.models).map(([n, v]) => `${n} ${v}`).join(", ")));
}

async function show(user) {
  if (!user) return;
  setStatus(`loading ${user}…`);
  history.replaceState(null, "", `/ui/preview?user=${enc(user)}`);
  document.getElementById("user-id").value = user;
  const preview = document.getElementById("preview");
  try {
    const profileResponse = await api(`/v1/users/${enc(user)}/profile`);
    let why = null;
    if (profileResponse.ok) {
      const profile = await profileResponse.json();
      document.getElementById("profile").replaceChildren(profileView(profile));
      if (profile.personalized === false) {  // no personalization consent: /explain answers 403
        document.getElementById("why").replaceChildren(el("p", { class: "muted" }, "No personalization consent: nothing is derived from this profile, every block is the fallback (best-sellers)."));
      } else {
        why = await json(`/v1/users/${enc(user)}/explain`);
        document.getElementById("why").replaceChildren(whyView(why));
      }
    } else {
      document.getElementById("profile").replaceChildren(el("p", { class: "muted" }, "No events seen for this user: every block is the fallback (best-sellers)."));
      document.getElementById("why").replaceChildren();
    }
    const cards = await Promise.all(BLOCKS.map((name) => blockCard(user, name, why && why.blocks[name])));
    document.getElementById("blocks").replaceChildren(...cards);
    preview.classList.remove("hidden");
    preview.setAttribute("data-user", user);
    setStatus(`${user} · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error.message !== "unauthorized") setStatus(`could not load ${user}: ${error.message}`, true);
  }
}

Persona.start(async (params) => {
  document.getElementById("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    show(document.getElementById("user-id").value.trim());
  });
  const users = await loadUsers();
  const wanted = new URLSearchParams(location.search).get("user") || params.get("user");
  show(wanted || (users[0] && users[0].user_id));
});
