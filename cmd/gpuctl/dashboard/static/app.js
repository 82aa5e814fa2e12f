// gpuctl status page: polls api/status (a relative URL, so the page works
// behind a reverse proxy's path prefix) and renders one card per host.
// Text from hosts is only ever set as textContent.
"use strict";

const POLL_MS = 2000;
let skew = 0; // server clock minus ours
let last = null; // last answer
let lastOK = 0;
let timer = null;
const notes = {}; // host -> {text, bad} from the wake button

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function now() { return Date.now() + skew; }

function dur(ms) {
  if (ms === null || ms === undefined || isNaN(ms)) return "–";
  const neg = ms < 0;
  ms = Math.abs(ms);
  let out;
  if (ms < 1000) out = Math.round(ms) + " ms";
  else if (ms < 10000) out = (ms / 1000).toFixed(1) + " s";
  else if (ms < 60000) out = Math.round(ms / 1000) + " s";
  else if (ms < 3600000) {
    const m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
    out = m + " min" + (m < 10 && s ? " " + s + " s" : "");
  } else {
    const h = Math.floor(ms / 3600000), m = Math.round((ms % 3600000) / 60000);
    out = h + " h" + (m ? " " + m + " min" : "");
  }
  return neg ? "-" + out : out;
}

function ago(t) {
  if (!t) return "never";
  const d = now() - Date.parse(t);
  if (d < 5000) return "just now";
  return dur(d) + " ago";
}

function clock(t) {
  const d = new Date(t), today = new Date(now());
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  if (d.toDateString() === today.toDateString()) return hm;
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
}

const STATE_WORDS = {
  "ready": "ready",
  "degraded": "degraded",
  "booting": "booting",
  "off": "off",
  "in-use-other-os": "in its other OS",
  "unknown": "unknown",
};

function checkRows(h) {
  if (!h.checks || h.checks.length === 0) return null;
  return el("section", { class: "checks" },
    el("h3", { text: "Readiness checks" }),
    el("ul", { class: "rows" }, h.checks.map(c => {
      const cls = c.ok ? "ok" : (c.transient ? "wait" : "fail");
      return el("li", { class: cls, "data-check": c.name },
        el("span", { class: "mark", text: c.ok ? "✓" : (c.transient ? "…" : "✗"), "aria-label": c.ok ? "passed" : "failed" }),
        el("span", { class: "name", text: c.name }),
        el("span", { class: "detail", text: c.detail || "" }));
    })));
}

function gpuSection(h) {
  if (!h.gpu || h.gpu.length === 0) return null;
  return el("section", { class: "gpu" }, el("h3", { text: "GPU" }), h.gpu.map(g => {
    const total = g.memory_total_mib, used = g.memory_used_mib;
    const bar = el("div", { class: "meter" }, el("span"));
    if (total) bar.firstChild.style.width = Math.min(100, 100 * (used || 0) / total).toFixed(1) + "%";
    const bits = [];
    if (g.utilization_gpu_percent !== null && g.utilization_gpu_percent !== undefined) bits.push(g.utilization_gpu_percent + "% busy");
    if (g.temperature_c !== null && g.temperature_c !== undefined) bits.push(g.temperature_c + " °C");
    if (g.pstate) bits.push(g.pstate);
    if (g.driver_version) bits.push("driver " + g.driver_version);
    return el("div", {},
      el("div", { class: "wake-head" }, el("span", { class: "name", text: g.name || "GPU " + g.index }),
        el("span", { class: "muted", text: total ? `${bytes((used || 0) * 1048576)} / ${bytes(total * 1048576)}` : "" })),
      bar,
      el("div", { class: "detail", text: bits.join(" · ") }));
  }));
}

function loadedSection(h) {
  if (h.loaded === null || h.loaded === undefined) {
    if (h.loaded_error) return el("section", {}, el("h3", { text: "Loaded models" }), el("p", { class: "note bad", text: h.loaded_error }));
    return null;
  }
  const body = h.loaded.length === 0
    ? el("p", { class: "note", text: "No model in memory." })
    : el("table", { class: "models" },
      el("thead", {}, el("tr", {}, el("th", { text: "model" }), el("th", { class: "num", text: "VRAM" }), el("th", { class: "num", text: "unloads" }))),
      el("tbody", {}, h.loaded.map(m => {
        const left = Date.parse(m.expires_at) - now();
        const vram = m.size_bytes && m.vram_bytes < m.size_bytes
          ? `${bytes(m.vram_bytes)} (${Math.round(100 * m.vram_bytes / m.size_bytes)}% GPU)` : bytes(m.vram_bytes);
        return el("tr", { "data-model": m.name },
          el("td", { class: "mono", text: m.name }),
          el("td", { class: "num", text: vram }),
          el("td", { class: "num", text: left > 0 ? "in " + dur(left) : "now", title: m.expires_at }));
      })));
  return el("section", { class: "loaded" }, el("h3", { text: "Loaded models" }), body);
}

function idleSection(h) {
  if (!h.on_demand) return null;
  const s = el("section", { class: "idle" }, el("h3", { text: "Idle shutdown" }));
  const v = h.idle_view;
  if (!v) {
    s.append(el("p", { class: "note", text: "Not checked yet: gpuctl shutdown --if-idle (cron) has not looked at this host." }));
    return s;
  }
  s.append(el("p", { class: "reason", text: v.line }));
  const kv = el("dl", { class: "kv" });
  if (v.power_off_after && h.state !== "off") {
    const at = Date.parse(v.power_off_after);
    kv.append(el("dt", { text: "powers off" }),
      el("dd", { text: at > now() ? `after ${clock(v.power_off_after)} (in ${dur(at - now())}), at the next shutdown check` : "at the next shutdown check, if still idle" }));
  }
  kv.append(el("dt", { text: "rules" }), el("dd", { text: `off once idle for over ${dur(v.idle_after_s * 1000)}, never within ${dur(v.min_uptime_s * 1000)} of boot` }));
  if (h.idle && h.idle.last_check) kv.append(el("dt", { text: "checked" }), el("dd", { text: ago(h.idle.last_check) }));
  if (h.idle && h.idle.last_error) kv.append(el("dt", { text: "last error" }), el("dd", { class: "note bad", text: h.idle.last_error }));
  s.append(kv);
  // A box that is off (or in its other OS) has no live signals: the
  // last check's clocks would only mislead.
  const down = h.state === "off" || h.state === "in-use-other-os" || (h.idle && h.idle.phase === "off");
  if (v.signals.length && !down) {
    s.append(el("div", { class: "chips" }, v.signals.map(sig => {
      const cls = sig.failed ? "failed" : (sig.idle_since ? "idle" : "busy");
      const what = sig.failed ? "unreadable" : (sig.idle_since ? "idle " + dur(now() - Date.parse(sig.idle_since)) : "busy");
      return el("span", { class: "chip " + cls, "data-signal": sig.name, title: sig.idle_since || "" }, sig.name + ": " + what);
    })));
  }
  if (h.idle && h.idle.busy_reasons && h.idle.busy_reasons.length) {
    s.append(el("ul", { class: "rows two" }, h.idle.busy_reasons.map(r =>
      el("li", { class: "wait" }, el("span", { class: "mark", text: "•" }), el("span", { class: "detail", text: r })))));
  }
  return s;
}

function wakesSection(h) {
  if (!h.wakes || h.wakes.length === 0) return null;
  const total = w => Math.max(1, ...(w.phases || []).map(p => p.start_ms + p.duration_ms));
  const longest = Math.max(...h.wakes.map(total));
  const seen = new Set();
  const list = el("ul", { class: "wakes" }, h.wakes.map(w => {
    const t = total(w);
    const ok = w.state === "ready";
    const bar = el("div", { class: "bar", role: "img", "aria-label": (w.phases || []).map(p => `${p.name} ${dur(p.duration_ms)}`).join(", ") });
    const inner = el("div", { class: "fill" });
    inner.style.width = (100 * t / longest).toFixed(1) + "%";
    for (const p of (w.phases || [])) {
      seen.add(p.name);
      const seg = el("span", { class: "p-" + p.name, title: `${p.name}: ${dur(p.duration_ms)}` });
      seg.style.width = (100 * p.duration_ms / t).toFixed(2) + "%";
      inner.append(seg);
    }
    bar.append(inner);
    return el("li", {},
      el("div", { class: "wake-head" },
        el("span", { text: clock(w.started) + (w.woke ? " · booted" : " · already up") }),
        el("span", { class: ok ? "res-ready" : "res-bad", text: ok ? (w.ready_after_ms ? "ready in " + dur(w.ready_after_ms) : "ready") : w.state })),
      bar,
      el("div", { class: "detail", text: (w.phases || []).map(p => `${p.name} ${dur(p.duration_ms)}`).join(" · ") }),
      !ok && w.reason ? el("div", { class: "detail", text: w.reason }) : null);
  }));
  const legend = el("div", { class: "legend" }, ["lock", "probe", "boot", "checks", "pull"].filter(n => seen.has(n)).map(n =>
    el("span", {}, el("i", { class: "p-" + n }), n)));
  return el("section", { class: "wakes-section" }, el("h3", { text: "Recent wakes" }), list, legend);
}

function proxySection(h, page) {
  const a = page.proxy && page.proxy.hosts ? page.proxy.hosts[h.name] : null;
  const kv = el("dl", { class: "kv" },
    el("dt", { text: "in flight" }), el("dd", { "data-inflight": String(h.in_flight), text: String(h.in_flight) }));
  if (a) {
    kv.append(el("dt", { text: "requests" }), el("dd", { text: `${a.requests} since gpuctl serve started` }));
    if (a.last_start) kv.append(el("dt", { text: "last request" }), el("dd", { text: ago(a.last_end && a.in_flight === 0 ? a.last_end : a.last_start) }));
  }
  return el("section", { class: "proxy" }, el("h3", { text: "Requests through gpuctl serve" }), kv);
}

function etaBlock(h) {
  const eta = h.boot_eta;
  if (!h.on_demand) return null;
  if (h.state === "booting") {
    const since = Date.parse((h.page_wake && !h.page_wake.finished && h.page_wake.started) || h.since);
    const el_ = now() - since;
    const box = el("div", { class: "eta" }, eta
      ? `Booting for ${dur(el_)}; usually ready after ${eta.median} (median of ${eta.samples} wake${eta.samples === 1 ? "" : "s"}).`
      : `Booting for ${dur(el_)}.`);
    if (eta) {
      const p = el("div", { class: "progress" }, el("span"));
      p.firstChild.style.width = Math.min(100, 100 * el_ / eta.median_ms).toFixed(1) + "%";
      box.append(p);
    }
    return box;
  }
  if (!eta) return el("div", { class: "eta muted" }, "Boot time: no wake recorded yet.");
  return el("div", { class: "eta muted" }, `Boots in about ${eta.median} (median of ${eta.samples} wake${eta.samples === 1 ? "" : "s"}).`);
}

function actionsBlock(h, page) {
  if (!page.actions || !h.on_demand) return null;
  const pw = h.page_wake;
  const waking = pw && !pw.finished;
  const box = el("div", { class: "actions" });
  if (h.state === "off" || h.state === "unknown" || waking) {
    box.append(el("button", {
      class: "wake", type: "button", disabled: waking, "data-wake": h.name,
      onclick: () => wake(h.name),
    }, waking ? "Waking…" : "Wake"));
  }
  const n = notes[h.name];
  if (pw && pw.finished && pw.error) box.append(el("span", { class: "note bad", text: "Last wake failed: " + pw.error }));
  else if (n) box.append(el("span", { class: "note" + (n.bad ? " bad" : ""), text: n.text }));
  return box.childNodes.length ? box : null;
}

function card(h, page) {
  const since = h.since && !h.since.startsWith("0001-") ? `since ${clock(h.since)} (${ago(h.since)})` : "";
  return el("article", { class: "card s-" + h.state, "data-host": h.name, "data-state": h.state },
    el("header", {},
      el("h2", { text: h.name }),
      el("span", { class: "tag", text: h.on_demand ? "on demand" : "always on" }),
      el("span", { class: "badge", text: STATE_WORDS[h.state] || h.state })),
    since ? el("p", { class: "since", text: since }) : null,
    el("p", { class: "reason", text: h.reason }),
    actionsBlock(h, page),
    etaBlock(h),
    checkRows(h),
    gpuSection(h),
    loadedSection(h),
    idleSection(h),
    proxySection(h, page),
    wakesSection(h));
}

function render(page) {
  const main = document.getElementById("hosts");
  main.replaceChildren(...page.hosts.map(h => card(h, page)));
  const ready = page.hosts.filter(h => h.state === "ready").length;
  document.getElementById("summary").textContent =
    `${ready} of ${page.hosts.length} host${page.hosts.length === 1 ? "" : "s"} ready · checked ${ago(page.checked_at)}`;
  const inflight = page.hosts.reduce((n, h) => n + h.in_flight, 0);
  document.getElementById("proxy").textContent = page.proxy
    ? `gpuctl serve: ${inflight} request${inflight === 1 ? "" : "s"} in flight, running since ${clock(page.proxy.started)}.`
    : "";
  const st = page.hosts.map(h => h.state);
  document.title = `gpuctl · ${ready}/${page.hosts.length} ready` + (st.includes("booting") ? " · booting" : "");
}

function setLive(ok, text) {
  const l = document.getElementById("live");
  l.dataset.live = ok ? "ok" : "error";
  document.getElementById("live-text").textContent = text;
}

async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch("api/status", { cache: "no-store", headers: { "Accept": "application/json" } });
    const page = await res.json();
    if (!res.ok) throw new Error(page.error || res.statusText);
    skew = Date.parse(page.now) - Date.now();
    last = page;
    lastOK = Date.now();
    render(page);
    setLive(true, "live");
  } catch (e) {
    const stale = last ? ` (showing what was seen ${dur(Date.now() - lastOK)} ago)` : "";
    setLive(false, "gpuctl serve is not answering: " + e.message + stale);
  }
  if (document.visibilityState !== "hidden") timer = setTimeout(poll, POLL_MS);
}

async function wake(name) {
  notes[name] = { text: "Sending the wake…" };
  if (last) render(last);
  try {
    const res = await fetch("api/wake/" + encodeURIComponent(name), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
    });
    const out = await res.json();
    notes[name] = res.ok ? { text: "Wake sent." } : { text: out.error || res.statusText, bad: true };
  } catch (e) {
    notes[name] = { text: "Could not reach gpuctl serve: " + e.message, bad: true };
  }
  poll();
}

document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") poll(); });
poll();
