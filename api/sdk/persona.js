/* Persona browser tag (GET /v1/sdk.js). No dependencies; docs/serving.md, "The browser tag".
 *
 *   <script src="https://persona.example.com/v1/sdk.js" data-key="PUBLISHABLE_KEY"></script>
 * or persona.init({key: "...", endpoint: "https://persona.example.com", consentRequired: true}).
 *
 * persona.track(type, fields): fields item_id, quantity, price, currency go on the event, the rest
 * in props. Helpers: page(), product(id), category(name), search(query), addToCart(id, qty),
 * removeFromCart(id, qty), checkout(), purchase(id, qty) (the key needs events:collect-purchase),
 * identify(userId[, userHash]) (userHash: what the shop's server computed when
 * PERSONA_IDENTIFY_SECRET is set), consent(true|false), reset(), flush().
 * An anonymous id is kept in localStorage (or a first-party cookie where storage is blocked); with
 * consentRequired nothing is stored or sent until persona.consent(true). Events are batched and
 * sent with fetch (text/plain, ?key=, so no preflight), and with sendBeacon on pagehide.
 */
(function (w, d) {
  "use strict";
  if (w.persona && w.persona.version) return;
  var ANON = "persona_aid", USER = "persona_uid", CONSENT = "persona_consent";
  var BATCH = 20, QUEUE = 100, DELAY = 1000, TEXT = 2000;
  var WARNED = 5, REASON = 200, ANSWER = 1048576; // refusals named, a reason's characters, bytes read
  var FIELDS = { item_id: 1, quantity: 1, price: 1, currency: 1, session_id: 1 };
  var me = d.currentScript;
  var cfg = null, queue = [], timer = null, granted = false, anon = null, user = null;

  function uuid() {
    var c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var b = new Uint8Array(16), h = "";
    if (c && c.getRandomValues) c.getRandomValues(b);
    else for (var i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    for (var j = 0; j < 16; j++) h += (b[j] + 256).toString(16).slice(1);
    return h;
  }

  function load(name) {
    try {
      var v = w.localStorage.getItem(name);
      if (v) return v;
    } catch (e) { /* storage blocked: the cookie below */ }
    var m = d.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }

  function save(name, value) {
    if (!allowed()) return;
    try {
      w.localStorage.setItem(name, value);
      return;
    } catch (e) { /* storage blocked: a first-party cookie */ }
    var secure = w.location.protocol === "https:" ? "; Secure" : "";
    d.cookie = name + "=" + encodeURIComponent(value) + "; path=/; max-age=31536000; SameSite=Lax" + secure;
  }

  function forget(name) {
    try { w.localStorage.removeItem(name); } catch (e) { /* nothing stored there */ }
    d.cookie = name + "=; path=/; max-age=0";
  }

  function allowed() { return !!cfg && (!cfg.consentRequired || granted); }

  function anonymousId() {
    if (!anon) anon = (allowed() && load(ANON)) || "anon-" + uuid();
    save(ANON, anon);
    return anon;
  }

  function text(v) { return typeof v === "string" ? v.slice(0, TEXT) : v; }

  function track(type, fields) {
    if (!cfg) return;
    var event = { event_id: uuid(), type: type, user_id: user || anonymousId(), ts: Date.now(), source: "web" };
    var props = {}, any = false;
    for (var k in fields || {}) {
      if (!Object.prototype.hasOwnProperty.call(fields, k) || fields[k] == null) continue;
      if (FIELDS[k]) event[k] = fields[k];
      else { props[k] = text(fields[k]); any = true; }
    }
    if (any) event.props = props;
    if (queue.length >= QUEUE) queue.shift();
    queue.push(event);
    if (!allowed()) return;
    if (queue.length >= BATCH) flush();
    else if (!timer) timer = w.setTimeout(flush, DELAY);
  }

  function target() {
    return cfg.endpoint.replace(/\/+$/, "") + "/v1/collect?key=" + encodeURIComponent(cfg.key);
  }

  function send(events, beacon) {
    var body = JSON.stringify(events), url = target();
    if (beacon && w.navigator.sendBeacon) {
      try { if (w.navigator.sendBeacon(url, body)) return Promise.resolve("beacon"); } catch (e) { /* fetch */ }
    }
    if (!w.fetch) return Promise.resolve("unsent");
    return w.fetch(url, {
      method: "POST", body: body, mode: "cors", credentials: "omit", keepalive: body.length < 60000,
      headers: { "Content-Type": "text/plain;charset=UTF-8" }
    }).then(function (r) {
      return refusals(events, r).then(function () { return r.status; });
    }, function () { return "error"; });
  }

  // One console warning per answer naming the events /v1/collect refused (202 with `errors`):
  // at most WARNED of them, each reason cut to REASON characters, then how many more. An answer
  // the tag cannot read (not JSON, no list, over ANSWER bytes) says nothing; it never throws.
  // Control, line-break and bidi characters in the answer are shown as "?" (no console lines,
  // escapes or reversed text of its own).
  var CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
  function shown(text, most) { return String(text).slice(0, most).replace(CONTROLS, "?"); }
  function refusals(events, r) {
    try {
      var length = Number(r.headers.get("Content-Length"));
      if (r.status >= 400 && r.status < 600) return refusedAll(events, r, length);
      if (r.status !== 202 || length > ANSWER || !w.console || typeof w.console.warn !== "function") {
        return Promise.resolve();
      }
      return r.text().then(function (body) {
        try {
          var answer = JSON.parse(body), errors = answer && answer.errors;
          if (!Array.isArray(errors) || !errors.length) return;
          var named = [];
          for (var i = 0; i < errors.length && named.length < WARNED; i++) {
            var e = errors[i], at = e && e.index, reason = e && e.reason;
            var event = typeof at === "number" && at % 1 === 0 && at >= 0 && at < events.length ? events[at] : null;
            named.push((event ? shown(event.type, 40) + " (#" + at + ")" : "an event") + ": " +
              (typeof reason === "string" ? shown(reason, REASON) : "no reason given"));
          }
          var more = errors.length - named.length;
          w.console.warn("persona: /v1/collect refused " + errors.length + " of " + events.length +
            " events: " + named.join("; ") + (more > 0 ? "; and " + more + " more" : ""));
        } catch (ignored) { /* an answer the tag cannot read: nothing to say */ }
      }, function () { /* the body did not arrive */ });
    } catch (ignored) {
      return Promise.resolve();
    }
  }

  // One console warning for an answer refusing the whole batch (413, 429, 403, 400...): its
  // status and the problem's title and detail when they are text (each cut to REASON
  // characters); a body the tag cannot read gives the status alone. Never throws.
  function refusedAll(events, r, length) {
    if (!w.console || typeof w.console.warn !== "function") return Promise.resolve();
    function warn(problem) {
      var said = [];
      ["title", "detail"].forEach(function (f) {
        var v = problem && problem[f];
        if (typeof v === "string" && v) said.push(v.slice(0, REASON));
      });
      w.console.warn("persona: /v1/collect refused all " + events.length + " events: " + r.status +
        (said.length ? " " + said.join(": ") : ""));
    }
    try {
      if (length > ANSWER) { warn(null); return Promise.resolve(); }
      return r.text().then(function (body) {
        var problem = null;
        try { problem = JSON.parse(body); } catch (ignored) { /* not a problem document */ }
        try { warn(problem); } catch (ignored) { /* nothing to say */ }
      }, function () { try { warn(null); } catch (ignored) { /* nothing to say */ } });
    } catch (ignored) {
      return Promise.resolve();
    }
  }

  function flush(beacon) {
    if (timer) { w.clearTimeout(timer); timer = null; }
    if (!allowed() || !queue.length) return Promise.resolve([]);
    var sends = [];
    while (queue.length) sends.push(send(queue.splice(0, BATCH), beacon === true));
    return Promise.all(sends);
  }

  function item(type) {
    return function (id, quantity, fields) {
      var f = {};
      for (var k in fields || {}) if (Object.prototype.hasOwnProperty.call(fields, k)) f[k] = fields[k];
      f.item_id = String(id);
      if (quantity != null) f.quantity = quantity;
      track(type, f);
    };
  }

  function init(options) {
    if (!options || !options.key) throw new Error("persona.init needs {key}");
    var endpoint = options.endpoint || (me && me.src ? new URL(me.src).origin : w.location.origin);
    cfg = { key: options.key, endpoint: endpoint, consentRequired: !!options.consentRequired };
    granted = !cfg.consentRequired || load(CONSENT) === "1";
    user = allowed() ? load(USER) : null;
    if (options.pageView !== false) persona.page();
  }

  var persona = {
    version: "1",
    init: init,
    track: track,
    flush: flush,
    page: function (fields) {
      var f = { path: w.location.pathname, title: d.title };
      for (var k in fields || {}) if (Object.prototype.hasOwnProperty.call(fields, k)) f[k] = fields[k];
      track("page_view", f);
    },
    product: function (id, fields) { item("product_view")(id, null, fields); },
    category: function (name, fields) { track("category_view", Object.assign({ category: name }, fields)); },
    search: function (query, fields) { track("search", Object.assign({ query: query }, fields)); },
    addToCart: item("add_to_cart"),
    removeFromCart: item("remove_from_cart"),
    checkout: function (fields) { track("checkout", fields); },
    purchase: item("purchase"),
    identify: function (userId, userHash) {
      userId = String(userId);
      if (!cfg || userId === user) return;
      var props = { previous_id: anonymousId() };
      if (userHash) props.user_hash = String(userHash);
      track("identify", props);
      queue[queue.length - 1].user_id = userId;
      user = userId;
      save(USER, userId);
    },
    consent: function (yes) {
      granted = !!yes;
      if (!granted) {
        queue = [];
        forget(CONSENT);
        if (cfg && cfg.consentRequired) { forget(ANON); forget(USER); }
        return Promise.resolve([]);
      }
      save(CONSENT, "1");
      if (cfg) { anonymousId(); if (user) save(USER, user); }
      return flush();
    },
    reset: function () {
      user = null; anon = null; forget(USER); forget(ANON);
    },
    anonymousId: function () { return cfg ? anonymousId() : null; },
    userId: function () { return user; }
  };
  w.persona = persona;

  w.addEventListener("pagehide", function () { flush(true); });
  d.addEventListener("visibilitychange", function () { if (d.visibilityState === "hidden") flush(true); });
  if (me && me.getAttribute("data-key")) {
    init({ key: me.getAttribute("data-key"), consentRequired: me.getAttribute("data-consent") === "required" });
  }
})(window, document);
