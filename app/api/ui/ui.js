// optd dashboard: what both pages share (the API key, authenticated calls, formatting,
// the server view). No build step, no dependencies besides the vendored uPlot.
"use strict";
const optd = (() => {
  const KEY = "optd-api-key";
  const key = () => sessionStorage.getItem(KEY);

  // fetch() with the key (Authorization: Bearer, as every /v1 call); a 401 shows the login
  async function api(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (key()) headers.Authorization = "Bearer " + key();
    const r = await fetch(path, Object.assign({}, opts, { headers }));
    if (r.status === 401) {
      showLogin(key() ? "That key was refused." : "");
      throw new Error("unauthorized");
    }
    return r;
  }
  async function json(path) {
    const r = await api(path);
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  }

  let onLogin = () => location.reload();
  function showLogin(message) {
    sessionStorage.removeItem(KEY);
    document.getElementById("app").hidden = true;
    const box = document.getElementById("login");
    box.hidden = false;
    document.getElementById("login-error").textContent = message || "";
  }
  function setupLogin(then) {
    onLogin = then;
    document.getElementById("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = document.getElementById("login-key").value.trim();
      if (!v) return;
      sessionStorage.setItem(KEY, v);
      document.getElementById("login").hidden = true;
      document.getElementById("app").hidden = false;
      onLogin();
    });
    const out = document.getElementById("logout");
    if (out) out.addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
  }

  const num = (x, d = 4) =>
    x === null || x === undefined ? "—" : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : (+x.toFixed(d)).toString();
  function ago(t) {
    if (!t) return "—";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }

  // The server view: steps/s and step latency from the process's own /metrics
  // (optd_steps_total, the optd_step_seconds histogram; over the last interval),
  // store health from /readyz. Both are public, like /metrics itself.
  let prev = null;
  function parseMetrics(text) {
    const out = { steps: 0, buckets: [], count: 0 };
    for (const line of text.split("\n")) {
      let m;
      if ((m = line.match(/^optd_steps_total (\S+)/))) out.steps = +m[1];
      else if ((m = line.match(/^optd_step_seconds_bucket\{le="([^"]+)"\} (\S+)/))) out.buckets.push([m[1] === "+Inf" ? Infinity : +m[1], +m[2]]);
      else if ((m = line.match(/^optd_step_seconds_count (\S+)/))) out.count = +m[1];
    }
    return out;
  }
  function quantile(buckets, q) {
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!total) return null;
    let lo = 0, below = 0;
    for (const [le, c] of buckets) {
      if (c >= q * total) {
        if (le === Infinity) return lo;
        return lo + (le - lo) * (c - below > 0 ? (q * total - below) / (c - below) : 0);
      }
      lo = le === Infinity ? lo : le; below = c;
    }
    return lo;
  }
  async function serverView() {
    const set = (id, v) => { const e = document.getElementById(id); if (e) e.textContent = v; };
    try {
      const r = await fetch("/readyz");
      const b = await r.json();
      set("srv-store", r.ok ? b.store + " ok" : "unavailable");
      document.getElementById("srv-store").className = r.ok ? "ok" : "bad";
    } catch (e) { set("srv-store", "unreachable"); }
    try {
      const now = { at: Date.now() / 1000, ...parseMetrics(await (await fetch("/metrics")).text()) };
      let win = now.buckets;
      if (prev) {
        const dt = now.at - prev.at;
        set("srv-rate", dt > 0 ? num((now.steps - prev.steps) / dt, 1) : "—");
        if (now.count > prev.count) win = now.buckets.map(([le, c], i) => [le, c - (prev.buckets[i] ? prev.buckets[i][1] : 0)]);
      }
      const ms = (q) => { const v = quantile(win, q); return v === null ? "—" : num(v * 1000, 2) + " ms"; };
      set("srv-p50", ms(0.5)); set("srv-p90", ms(0.9));
      prev = now;
    } catch (e) { /* keep the last figures */ }
  }

  return { api, json, key, setupLogin, showLogin, num, ago, el, serverView };
})();
