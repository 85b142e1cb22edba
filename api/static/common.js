// Shared by the preview and the dashboard: the key (sessionStorage, sent as a Bearer header),
// fetch helpers and a tiny DOM builder that never parses strings as HTML.
"use strict";

const Persona = (() => {
  const STORE = "persona.key";

  function fromFragment() {
    // "#key=...&user=..." (scripts, tests): keep the key for this tab, then drop the fragment.
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("key")) {
      sessionStorage.setItem(STORE, params.get("key"));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return params;
  }

  const key = () => sessionStorage.getItem(STORE);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // signed in (the tab holds a key): the app and "Sign out"; else the sign-in form alone
  function signedIn(yes) {
    document.getElementById("app").classList.toggle("hidden", !yes);
    document.getElementById("sign-out").classList.toggle("hidden", !yes);
    document.getElementById("login").classList.toggle("hidden", yes);
  }

  function showLogin(message) {
    signedIn(false);
    document.getElementById("login-error").textContent = message || "";
  }

  async function api(path, accept) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + (key() || ""), Accept: accept || "application/json" },
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(STORE);
      showLogin(response.status === 401
        ? "The key was refused: paste a key with the content:read scope."
        : "This key lacks the content:read scope.");
      throw new Error("unauthorized");
    }
    return response;
  }

  async function json(path) {
    const response = await api(path);
    const body = await response.json();
    if (!response.ok) throw new Error(body.detail || body.title || response.statusText);
    return body;
  }

  function start(ready) {
    const params = fromFragment();
    let started = false;
    const onReady = (p) => { if (!started) { started = true; ready(p); } };
    document.getElementById("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = document.getElementById("login-key").value.trim();
      if (!value) return;
      sessionStorage.setItem(STORE, value.includes(":") ? value.split(":")[1] : value);
      signedIn(true);
      onReady(params);
    });
    document.getElementById("sign-out").addEventListener("click", () => {
      sessionStorage.removeItem(STORE);
      showLogin("Signed out.");
    });
    if (key()) {
      signedIn(true);
      onReady(params);
    } else {
      showLogin("");
    }
  }

  return { api, json, el, start };
})();
