// /ui/sessions/{id}: loss, lr and grad-norm curves that grow as steps arrive (the
// history, then its Server-Sent Events read with fetch() so the key travels in a header),
// the workers, the config, and the checkpoint.
"use strict";
(() => {
  const sid = decodeURIComponent(location.pathname.split("/").pop());
  const base = `/v1/sessions/${encodeURIComponent(sid)}`;
  const d = { v: [], t: [], loss: [], logloss: [], lr: [], gn: [] };
  const workers = {}; // async sessions: worker -> {t, steps, version, staleness}
  let since = -1, info = null, charts = [], pending = false, started = false;
  let rateMark = null;
  const $ = (id) => document.getElementById(id);
  $("sid").textContent = sid;

  function add(p) {
    if (d.v.length && p.version <= d.v[d.v.length - 1]) return; // a repeat after a reconnect
    d.v.push(p.version); d.t.push(p.t);
    d.loss.push(p.loss); d.logloss.push(p.loss !== null && p.loss > 0 ? p.loss : null);
    d.lr.push(p.lr); d.gn.push(p.grad_norm);
    since = Math.max(since, p.version);
    if (p.worker) {
      const w = workers[p.worker] || (workers[p.worker] = { steps: 0 });
      Object.assign(w, { t: p.t, version: p.version, staleness: p.staleness, steps: w.steps + 1 });
    }
    for (const c of p.contributors || []) {
      const w = workers[c] || (workers[c] = { steps: 0 });
      Object.assign(w, { t: p.t, version: p.version, staleness: 0, steps: w.steps + 1 });
    }
  }

  function xs() { return $("x-axis").value === "time" ? d.t : d.v; }

  function makeCharts() {
    for (const c of charts) c.destroy();
    const time = $("x-axis").value === "time";
    const spec = [["loss-chart", d.logloss, "loss", "#d35400", 3], ["lr-chart", d.lr, "lr", "#2f6fdf", 1], ["gn-chart", d.gn, "grad norm", "#16a085", 1]];
    charts = spec.map(([id, ys, label, stroke, distr]) => {
      const host = $(id);
      host.replaceChildren();
      return new uPlot({
        width: Math.max(300, host.clientWidth || 420), height: 220,
        scales: { x: { time }, y: { distr } },
        series: [{ label: time ? "time" : "version" }, { label, stroke, width: 1.5, spanGaps: true, points: { show: false } }],
        axes: [{}, { size: 60 }],
        legend: { live: true },
      }, [xs(), ys], host);
    });
    charts.ys = spec.map((s) => s[1]);
  }

  function redraw() {
    pending = false;
    charts.forEach((c, i) => c.setData([xs(), charts.ys[i]]));
    const host = $("loss-chart");
    host.dataset.points = String(d.v.length);
    let last = null;
    for (let i = d.loss.length - 1; i >= 0; i--) if (d.loss[i] !== null) { last = d.loss[i]; break; }
    host.dataset.lastLoss = last === null ? "" : String(last);
    host.dataset.lastVersion = String(since);
    $("s-version").textContent = String(Math.max(since, info ? info.version : 0));
    $("s-loss").textContent = optd.num(last);
    if (d.lr.length) $("s-lr").textContent = optd.num(d.lr[d.lr.length - 1]);
    $("points-note").textContent = `${d.v.length} points`;
  }
  function schedule() { if (!pending) { pending = true; requestAnimationFrame(redraw); } }

  async function loadHistory() {
    for (;;) {
      const page = await optd.json(`${base}/history?since=${since}&limit=20000`);
      page.points.forEach(add);
      since = Math.max(since, page.next_since);
      if (!page.more) return page;
    }
  }

  // Server-Sent Events over fetch(): EventSource cannot send the Authorization header.
  async function stream() {
    for (;;) {
      try {
        const r = await optd.api(`${base}/events?since=${since}`, { headers: { Accept: "text/event-stream" } });
        if (r.status === 404) { gone(); return; }
        $("s-live").textContent = "live"; $("s-live").className = "ok";
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let event = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (event === "point") { add(JSON.parse(data)); schedule(); }
            else if (event === "end" && JSON.parse(data).deleted) { gone(); return; }
          }
        }
      } catch (e) {
        if (e.message === "unauthorized") return;
        $("s-live").textContent = "reconnecting"; $("s-live").className = "bad";
        await new Promise((res) => setTimeout(res, 1000));
      }
    }
  }

  function gone() {
    $("s-live").textContent = "gone"; $("s-live").className = "bad";
    $("error").hidden = false; $("error").textContent = "This session does not exist (or was deleted).";
  }

  // The configured schedule as a curve (app/optim/schedules.py, k = steps taken before)
  function factor(sc, k) {
    const t = k + 1, w = sc.warmup_steps || 0;
    switch (sc.name) {
      case "linear_warmup": return Math.min(1, t / sc.warmup_steps);
      case "cosine": {
        if (t <= w) return t / w;
        const p = Math.min(1, (k - w) / (sc.total_steps - w)), m = sc.min_lr_ratio || 0;
        return m + (1 - m) * (1 + Math.cos(Math.PI * p)) / 2;
      }
      case "inverse_sqrt": return t <= w ? t / w : Math.sqrt(Math.max(w, 1) / t);
      case "step": return Math.pow(sc.gamma ?? 0.1, Math.floor(k / sc.step_size));
      case "exponential": return Math.pow(sc.gamma, k);
      default: return 1;
    }
  }
  let drawnSchedule = null, scheduleChart = null;
  function drawSchedule() {
    const sc = info.schedule || { name: "constant" };
    const key = JSON.stringify([sc, info.hyperparams.lr]);
    if (key === drawnSchedule) return;
    drawnSchedule = key;
    const end = Math.max(100, sc.total_steps ? Math.round(sc.total_steps * 1.1) : Math.round(info.step * 1.5));
    const ks = [], lrs = [];
    for (let i = 0; i <= 400; i++) { const k = Math.round((end * i) / 400); ks.push(k); lrs.push(info.hyperparams.lr * factor(sc, k)); }
    $("schedule-name").textContent = sc.name;
    const host = $("schedule-chart");
    if (scheduleChart) scheduleChart.destroy();
    host.replaceChildren();
    scheduleChart = new uPlot({
      width: Math.max(300, host.clientWidth || 420), height: 220,
      scales: { x: { time: false } },
      series: [{ label: "step" }, { label: "lr", stroke: "#8e44ad", width: 1.5, points: { show: false } }],
      axes: [{}, { size: 60 }],
    }, [ks, lrs], host);
  }

  async function refreshInfo() {
    try {
      const r = await optd.api(base);
      if (r.status === 404) { gone(); return; }
      info = await r.json();
      const now = Date.now() / 1000;
      if (rateMark && now > rateMark[1]) $("s-rate").textContent = optd.num((info.version - rateMark[0]) / (now - rateMark[1]), 1);
      rateMark = [info.version, now];
      const keys = ["optimizer", "hyperparams", "schedule", "max_grad_norm", "check_finite", "groups", "dtype",
        "mode", "workers", "min_workers", "round_timeout_s", "worker_lease_s", "max_staleness", "staleness_lr",
        "labels", "ttl_s", "num_params", "state_bytes", "step", "version", "created_at"];
      $("config").textContent = JSON.stringify(Object.fromEntries(keys.map((k) => [k, info[k]])), null, 2);
      drawSchedule();
      await refreshWorkers();
      schedule();
    } catch (e) { /* the next refresh tries again */ }
    setTimeout(refreshInfo, 2000);
  }

  async function refreshWorkers() {
    const tbody = document.querySelector("#workers tbody");
    const rows = [];
    if (info.mode === "sync") {
      const w = await optd.json(`${base}/workers`);
      const r = w.round || {};
      $("round").textContent = r.version === undefined ? "" :
        `open round on version ${r.version}: have ${r.have}/${r.need}` + (r.closes_in_s !== null && r.closes_in_s !== undefined ? `, closes in ${optd.num(r.closes_in_s, 1)} s` : "");
      for (const m of w.workers) {
        rows.push([m.worker, m.live ? "yes" : "no", `${optd.num(m.last_seen_s, 1)} s ago`, String(m.rounds), String(m.last_version ?? "—"), "—"]);
      }
    } else {
      for (const [name, m] of Object.entries(workers).sort()) {
        const live = Date.now() / 1000 - m.t < 60;
        rows.push([name, live ? "yes" : "no", optd.ago(m.t), String(m.steps), String(m.version), m.staleness === null ? "—" : String(m.staleness)]);
      }
    }
    tbody.replaceChildren(...rows.map((r) => optd.el("tr", { "data-worker": r[0] }, ...r.map((c) => optd.el("td", { text: c })))));
  }

  $("download").addEventListener("click", async () => {
    const r = await optd.api(`${base}/state`, { headers: { Accept: "application/x-safetensors" } });
    if (!r.ok) return;
    const a = optd.el("a", { href: URL.createObjectURL(await r.blob()), download: `${sid}-v${r.headers.get("ETag") ? r.headers.get("ETag").replace(/"/g, "") : "last"}.safetensors` });
    document.body.append(a); a.click(); a.remove();
  });
  $("x-axis").addEventListener("change", () => { makeCharts(); schedule(); });

  async function start() {
    if (started) return;
    try {
      const r = await optd.api(base);
      if (r.status === 404) { gone(); return; }
      started = true;
      const page = await loadHistory();
      makeCharts();
      redraw();
      window.optdFirstRenderMs = performance.now(); // read by the browser test
      console.log(`optd: first render of ${d.v.length} points (stride ${page.stride}) at ${Math.round(performance.now())} ms`);
      refreshInfo();
      stream();
    } catch (e) {
      if (e.message !== "unauthorized") { $("error").hidden = false; $("error").textContent = String(e); }
    }
  }
  window.addEventListener("resize", () => { makeCharts(); schedule(); drawnSchedule = null; if (info) drawSchedule(); });
  optd.setupLogin(start);
  if (optd.key()) $("logout").hidden = false;
  start();
})();
