// /ui: every session the key may see, refreshed every 2 s, filterable by label.
"use strict";
(() => {
  const REFRESH_MS = 2000;
  const MAX_SESSIONS = 10000;
  const seen = {}; // sid -> [version, seconds] of the previous refresh (steps/s)
  const live = {}; // sid -> live workers (sync sessions)
  const input = document.getElementById("label-filter");
  const tbody = document.querySelector("#sessions tbody");
  input.value = new URLSearchParams(location.search).getAll("label").join(", ");
  let timer = null, first = true;

  function labels() {
    return input.value.split(",").map((s) => s.trim()).filter((s) => s.includes("="));
  }

  async function load() {
    let all = [], cursor = null;
    do {
      const q = new URLSearchParams({ limit: "1000" });
      for (const l of labels()) q.append("label", l);
      if (cursor) q.set("cursor", cursor);
      const page = await optd.json("/v1/sessions?" + q);
      all = all.concat(page.sessions);
      cursor = page.next_cursor;
    } while (cursor && all.length < MAX_SESSIONS);
    return all;
  }

  async function workersLive(sessions) {
    // sync sessions name their members (GET .../workers); ask for the 50 most recent
    const sync = sessions.filter((s) => s.mode === "sync").slice(0, 50);
    await Promise.all(sync.map(async (s) => {
      try {
        const w = await optd.json(`/v1/sessions/${s.id}/workers`);
        live[s.id] = w.workers.filter((m) => m.live).length;
      } catch (e) { /* gone meanwhile */ }
    }));
  }

  function row(s, now) {
    const prev = seen[s.id];
    const rate = prev && now > prev[1] ? (s.version - prev[0]) / (now - prev[1]) : null;
    seen[s.id] = [s.version, now];
    const labelsCell = optd.el("td");
    for (const [k, v] of Object.entries(s.labels || {})) labelsCell.append(optd.el("span", { class: "label", text: `${k}=${v}` }));
    const link = optd.el("a", { href: `/ui/sessions/${s.id}`, text: s.id });
    const tr = optd.el("tr", { "data-sid": s.id, "data-version": String(s.version) },
      optd.el("td", {}, link),
      optd.el("td", { text: s.optimizer + (s.mode === "sync" ? " · sync" : "") }),
      labelsCell,
      optd.el("td", { class: "num", text: String(s.version) }),
      optd.el("td", { class: "num", text: optd.num(s.last_loss) }),
      optd.el("td", { class: "num", text: rate === null ? "—" : optd.num(rate, 1) }),
      optd.el("td", { class: "num", text: s.mode === "sync" && s.id in live ? String(live[s.id]) : "—" }),
      optd.el("td", { text: optd.ago(s.updated_at) }));
    return tr;
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const sessions = await load();
      sessions.sort((a, b) => b.updated_at - a.updated_at || (a.id < b.id ? -1 : 1));
      const now = Date.now() / 1000;
      const frag = document.createDocumentFragment();
      for (const s of sessions) frag.append(row(s, now));
      tbody.replaceChildren(frag);
      document.getElementById("sessions").dataset.count = String(sessions.length);
      document.getElementById("count").textContent = `${sessions.length} session${sessions.length === 1 ? "" : "s"}`;
      if (first) {
        first = false;
        window.optdFirstRenderMs = performance.now();  // read by the browser test
        console.log(`optd: first render of ${sessions.length} sessions at ${Math.round(performance.now())} ms`);
      }
      workersLive(sessions);  // shown on the next refresh
    } catch (e) {
      if (e.message === "unauthorized") return;  // the login is showing
      document.getElementById("count").textContent = "cannot list sessions: " + e.message;
    }
    optd.serverView();
    timer = setTimeout(refresh, REFRESH_MS);
  }

  input.addEventListener("change", () => {
    const q = new URLSearchParams();
    for (const l of labels()) q.append("label", l);
    history.replaceState(null, "", "/ui" + (labels().length ? "?" + q : ""));
    for (const k of Object.keys(seen)) delete seen[k];
    refresh();
  });
  optd.setupLogin(refresh);
  if (optd.key()) document.getElementById("logout").hidden = false;
  refresh();
})();
