// The preview page: a customer's blocks as the e-mail shows them (sandboxed iframe, full height,
// at 600 px or a phone's 375 px) and as ad JSON, fallback badges with the reason, the customer
// beside them, and why in shop language (the "shop" part of /explain: api/shop_words.py).
"use strict";

const { el, json, api } = Persona;
const BLOCKS = ["recommendations", "cart_reminder", "winback"];
const enc = encodeURIComponent;
// Unicode's direction controls (engine/text.py's _BIDI, the same list: tests/api/test_ui.py)
const DIRECTION_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

// JSON text to show: direction controls written as JSON escapes (\u202e), which JSON allows in
// strings and reads back the same, so a right-to-left override in a title cannot reverse the rest
// of its line. Outside strings JSON has none; text that is not JSON is shown escaped the same.
function readableJson(text) {
  return text.replace(DIRECTION_CONTROLS, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

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

// Why a block is the fallback, in words: from the "why" (known users) or, for a user with no
// events or no consent, from the answer of /explain (404 / 403), which says it for every block.
function badgeFor(fallback) {
  return fallback
    ? el("span", { class: "badge fallback", "data-badge": "fallback" }, "fallback")
    : el("span", { class: "badge personal", "data-badge": "personalized" }, "personalized");
}

// The e-mail as sent: the block's HTML in a sandboxed iframe (no scripts, no forms; same origin
// only so this page can read its height), as tall as its content, at 600 px or a phone's 375 px.
function fitHeight(frame) {
  try {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) frame.style.height = `${doc.documentElement.scrollHeight + 4}px`;
  } catch (error) { /* not readable: keep the height it has */ }
}

async function blockCard(user, name, meta, fallbackWhy) {
  const base = `/v1/users/${enc(user)}/blocks/${name}`;
  const [htmlResponse, jsonResponse] = await Promise.all([api(base + "?format=html", "text/html"), api(base + "?format=json")]);
  const html = await htmlResponse.text();
  const ad = await jsonResponse.text();
  let pretty = ad;
  try { pretty = JSON.stringify(JSON.parse(ad), null, 2); } catch (error) { /* shown as is */ }
  pretty = readableJson(pretty);
  const fallback = htmlResponse.headers.get("X-Persona-Fallback") === "1";
  const reasonText = fallback ? (meta && meta.reason_text) || fallbackWhy || "" : "";
  const frame = el("iframe", { class: "email", sandbox: "allow-same-origin", title: `${name} e-mail block`, "data-block": name });
  frame.addEventListener("load", () => fitHeight(frame));
  // the block as it sits in a sender's message: in a page without the browser's 8 px margin
  frame.srcdoc = `<!doctype html><html><head><meta charset="utf-8"><style>body{margin:0}</style></head><body>${html}</body></html>`;
  const rules = meta && meta.rules && meta.rules.length ? el("p", { class: "muted" }, `changed by the merchandising rules ${meta.rules.join(", ")}`) : null;
  return el("div", { class: "card block", id: `block-${name}` },
    el("h2", {}, name.replace("_", " "), el("span", { class: "badge" }, `variant ${htmlResponse.headers.get("X-Persona-Variant") || "default"}`), badgeFor(fallback)),
    reasonText ? el("p", { class: "reason", "data-reason": name }, reasonText) : null,
    rules,
    el("div", { class: "frame-box" }, frame),
    el("details", {}, el("summary", {}, "Ad JSON"), el("pre", { class: "json", "data-block": name }, pretty)));
}

function setWidth(width) {
  document.body.setAttribute("data-width", String(width));
  for (const button of document.querySelectorAll("[data-set-width]")) {
    button.classList.toggle("here", button.getAttribute("data-set-width") === String(width));
  }
  for (const frame of document.querySelectorAll("iframe.email")) {
    frame.style.width = `${width}px`;
    fitHeight(frame);
  }
}

function kvTable(rows) {
  return el("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

function customerView(profile, shop) {
  const consent = Object.entries(profile.consent).map(([p, ok]) => `${p} ${ok ? "yes" : "no"}`).join(", ");
  if (!shop) {  // no personalization consent: what they sent, nothing derived
    return kvTable([["customer", profile.user_id], ["orders", String(profile.orders)], ["consent", consent]]);
  }
  const c = shop.customer;
  const cart = c.cart.map((l) => `${l.quantity} × ${l.title}${l.price ? ` (${l.price})` : ""}`).join(", ") || "empty";
  return kvTable([
    ["customer", profile.user_id],
    ["orders", `${c.orders}${c.spent.length ? ` · ${c.spent.join(" + ")} spent` : ""}`],
    ["cart", cart],
    ["visits", `${c.visits} · last seen ${c.last_seen} · customer since ${c.customer_since}`],
    ["consent", consent],
  ]);
}

function riskView(risk) {
  return el("div", { id: "churn" },
    el("div", {}, el("span", { class: `score risk-${risk.level}`, id: "churn-score" }, `${risk.percent}%`),
      el("span", { class: "muted" }, ` risk of leaving (${risk.level}) · ${risk.winback ? "gets the win-back e-mail" : `win-back from ${risk.threshold_percent}%`}`)),
    el("ul", { class: "drivers", id: "risk-drivers" }, risk.drivers.map((d) =>
      el("li", { class: d.effect.startsWith("raises") ? "up" : "down" }, `${d.text}: ${d.effect}`))));
}

function whyView(shop) {
  const recent = el("ol", { class: "recs", id: "recent" }, shop.recent.map((r) =>
    el("li", {}, r.title, el("span", { class: "muted" }, ` · ${r.when}`))));
  const recs = el("ol", { class: "recs", id: "why-recs" }, shop.recommendations.map((r) =>
    el("li", { "data-item": r.item_id }, el("span", { class: "title" }, r.title),
      r.price ? el("span", { class: "muted" }, ` · ${r.price}`) : null,
      el("div", { class: "why" }, r.because))));
  return el("div", {},
    riskView(shop.risk),
    el("h3", {}, "Recommended, and because of what"), recs,
    el("h3", {}, "Looked at lately (newest first)"), recent);
}

async function show(user) {
  if (!user) return;
  setStatus(`loading ${user}…`);
  const width = document.body.getAttribute("data-width");
  history.replaceState(null, "", `/ui/preview?user=${enc(user)}${width ? `&width=${width}` : ""}`);
  document.getElementById("user-id").value = user;
  const preview = document.getElementById("preview");
  try {
    const profileResponse = await api(`/v1/users/${enc(user)}/profile`);
    const whyResponse = await api(`/v1/users/${enc(user)}/explain`);
    const why = whyResponse.ok ? await whyResponse.json() : null;
    const shop = why && why.shop;
    // 404 (no events) or 403 (no consent): the problem says why every block is the fallback
    const fallbackWhy = why ? "" : (await whyResponse.json()).detail || "";
    if (profileResponse.ok) {
      document.getElementById("profile").replaceChildren(customerView(await profileResponse.json(), shop));
    } else {
      document.getElementById("profile").replaceChildren(el("p", { class: "muted" }, "An unknown customer: no events were seen for this id."));
    }
    document.getElementById("why").replaceChildren(shop ? whyView(shop) : el("p", { class: "muted", id: "no-why" }, fallbackWhy));
    const cards = await Promise.all(BLOCKS.map((name) => blockCard(user, name, shop && shop.blocks[name], fallbackWhy)));
    document.getElementById("blocks").replaceChildren(...cards);
    setWidth(Number(document.body.getAttribute("data-width") || 600));
    preview.classList.remove("hidden");
    preview.setAttribute("data-user", user);
    setStatus(`${user} · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error.message !== "unauthorized") setStatus(`could not load ${user}: ${error.message}`, true);
  }
}

Persona.start(async (params) => {
  for (const button of document.querySelectorAll("[data-set-width]")) {
    button.addEventListener("click", () => setWidth(Number(button.getAttribute("data-set-width"))));
  }
  document.getElementById("user-form").addEventListener("submit", (event) => {
    event.preventDefault();
    show(document.getElementById("user-id").value.trim());
  });
  const width = new URLSearchParams(location.search).get("width") || params.get("width");
  if (width === "375" || width === "600") document.body.setAttribute("data-width", width);
  const users = await loadUsers();
  const wanted = new URLSearchParams(location.search).get("user") || params.get("user");
  show(wanted || (users[0] && users[0].user_id));
});
