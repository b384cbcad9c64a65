// COGO dashboard: plain modules, no framework, no build step; everything it shows comes from the
// API of the server that serves it. Text from the API is always set as text, never as HTML.

const TOKEN_KEY = "cogo.token";
const FINAL_GOAL = new Set(["succeeded", "failed", "cancelled"]);
const MAX_EVENTS = 500;

// ---------- small DOM helpers ----------

/** An element: h("td", {class: "num"}, "12"); attributes starting with "on" are listeners. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function fmtMs(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${value.toFixed(2)} ms`;
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60_000) return `${(value / 1000).toFixed(1)} s`;
  if (value < 3_600_000) return `${Math.round(value / 60_000)} min`;
  return `${(value / 3_600_000).toFixed(1)} h`;
}

function ago(at) {
  if (!at) return "–";
  const ms = Date.now() - new Date(at).getTime();
  if (ms < 0) return `in ${fmtMs(-ms)}`;
  return `${fmtMs(ms)} ago`;
}

function clock(at) {
  const d = new Date(at);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function short(text, n = 160) {
  const t = typeof text === "string" ? text : JSON.stringify(text);
  if (t === undefined) return "";
  return t.length > n ? t.slice(0, n - 1) + "…" : t;
}

const badge = (status) => h("span", { class: `badge ${status}` }, String(status).replaceAll("_", " "));
const pct = (part, whole) => (whole ? `${((100 * part) / whole).toFixed(1)} %` : "–");

function table(headers, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { class: x.endsWith("#") ? "num" : "" }, x.replace(/#$/, ""))))),
      h("tbody", {}, rows),
    ),
  );
}

function toast(text, bad = false) {
  const el = h("div", { class: `toast${bad ? " bad" : ""}`, role: "status" }, text);
  document.body.append(el);
  setTimeout(() => el.remove(), 5000);
}

// ---------- connection, token and API ----------

const token = {
  get: () => localStorage.getItem(TOKEN_KEY) || "",
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

/** What the API answered when it was not a success. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let connState = "";
function setConn(state, detail = "") {
  const el = $("conn");
  const banner = $("banner");
  if (state === connState && !detail) return;
  connState = state;
  el.className = `conn ${state}`;
  banner.hidden = true;
  banner.className = "banner";
  if (state === "live") el.textContent = "live";
  else if (state === "down") {
    el.textContent = "unreachable";
    banner.hidden = false;
    banner.textContent =
      `COGO does not answer at ${location.origin}${detail ? ` (${detail})` : ""}. ` +
      "Is `cogo up` (or `cogo serve`) still running? The dashboard retries on its own.";
  } else if (state === "token") {
    el.textContent = "token needed";
    banner.hidden = false;
    banner.className = "banner warn";
    banner.textContent = token.get()
      ? "The server refused this token (wrong or revoked). Give another one below."
      : "The dashboard needs an API token to read COGO. Give it below.";
    showTokenForm(true);
  }
}

function showTokenForm(show) {
  $("token-form").hidden = !show;
  if (show) $("token-input").focus();
}

function authHeaders() {
  const t = token.get();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** GET or POST a JSON route; network failures mark the server unreachable, 401 asks for a token. */
async function api(path, { method = "GET", body, signal } = {}) {
  if (!token.get()) {
    // nothing to ask with: say so instead of collecting 401s
    setConn("token");
    throw new ApiError(401, "a token is needed");
  }
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: { ...authHeaders(), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    setConn("down", "network error");
    throw new ApiError(0, "COGO is unreachable");
  }
  let data = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    setConn("token");
    throw new ApiError(401, data?.message || "a token is needed");
  }
  if (!response.ok) {
    if (response.status >= 500 && response.status !== 503) setConn("down", `HTTP ${response.status}`);
    else if (connState !== "token") setConn("live");
    throw new ApiError(response.status, data?.message || `HTTP ${response.status}`);
  }
  setConn("live");
  return data;
}

/** An artifact file as a blob URL (images need the token, so a plain <img src> cannot load them). */
async function artifactUrl(path) {
  const response = await fetch(`/api/artifacts/${path}`, { headers: authHeaders() });
  if (!response.ok) throw new ApiError(response.status, `artifact ${path}: HTTP ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

/** Runs `load` now and then every `ms` while the view is shown; errors show in `onError`. */
function every(ms, signal, load, onError) {
  (async () => {
    while (!signal.aborted) {
      try {
        await load();
      } catch (err) {
        if (signal.aborted || err.name === "AbortError") return;
        onError?.(err);
      }
      await sleep(ms);
    }
  })();
}

/** Follows the server-sent event stream with the token, resuming after the last id on reconnect. */
async function followEvents(params, signal, onEvent) {
  let last = null;
  while (!signal.aborted) {
    try {
      const headers = authHeaders();
      if (last) headers["last-event-id"] = last;
      const response = await fetch(`/api/events/stream?${params}`, { headers, signal });
      if (response.status === 401) {
        setConn("token");
        await sleep(2000);
        continue;
      }
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        onEvent(null, new ApiError(response.status, data.message || `HTTP ${response.status}`));
        await sleep(3000);
        continue;
      }
      setConn("live");
      onEvent(null, null, true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replaceAll("\r\n", "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null;
          let data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (id) last = id;
          if (data) {
            try {
              onEvent(JSON.parse(data));
            } catch {
              /* a non-JSON frame (the stream's own notice) */
            }
          }
        }
      }
    } catch (err) {
      if (signal.aborted || err.name === "AbortError") return;
      setConn("down", "the event stream dropped");
    }
    await sleep(1000);
  }
}

// ---------- confirmation dialog ----------

/** Asks before an action; resolves to the reason (or "") when confirmed, null when cancelled. */
function confirmAction(title, text, okLabel, { danger = false, reason = false } = {}) {
  return new Promise((resolve) => {
    const modal = $("modal");
    $("modal-title").textContent = title;
    $("modal-text").textContent = text;
    $("modal-reason-label").hidden = !reason;
    $("modal-reason").value = "";
    const ok = $("modal-ok");
    ok.textContent = okLabel;
    ok.className = danger ? "danger" : "";
    modal.hidden = false;
    ok.focus();
    const done = (value) => {
      modal.hidden = true;
      ok.onclick = null;
      $("modal-cancel").onclick = null;
      resolve(value);
    };
    ok.onclick = () => done($("modal-reason").value.trim());
    $("modal-cancel").onclick = () => done(null);
  });
}

// ---------- charts ----------

/** Calls (bars, failures in red) and p50/p95 latency (lines) per bucket. */
function latencyChart(series) {
  const W = 720;
  const H = 220;
  const pad = { l: 44, r: 52, t: 10, b: 24 };
  const buckets = series.buckets || [];
  const n = Math.max(buckets.length, 1);
  const maxCalls = Math.max(1, ...buckets.map((b) => b.calls));
  const maxMs = Math.max(1, ...buckets.map((b) => b.p95 ?? b.p50 ?? 0));
  const iw = W - pad.l - pad.r;
  const ih = H - pad.t - pad.b;
  const bw = iw / n;
  const x = (i) => pad.l + i * bw;
  const yCalls = (v) => pad.t + ih - (v / maxCalls) * ih;
  const yMs = (v) => pad.t + ih - (v / maxMs) * ih;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "MCP calls and latency over time" });
  for (const f of [0, 0.5, 1]) {
    const y = pad.t + ih - f * ih;
    svg.append(s("line", { class: "grid", x1: pad.l, x2: W - pad.r, y1: y, y2: y }));
    svg.append(s("text", { x: pad.l - 6, y: y + 4, "text-anchor": "end" }, String(Math.round(f * maxCalls))));
    svg.append(s("text", { x: W - pad.r + 6, y: y + 4 }, fmtMs(f * maxMs)));
  }
  buckets.forEach((b, i) => {
    if (!b.calls) return;
    const ok = b.calls - b.fails;
    const title = s("title", {}, `${clock(b.start)}: ${b.calls} calls, ${b.fails} failed, p50 ${fmtMs(b.p50)}, p95 ${fmtMs(b.p95)}`);
    svg.append(s("rect", { class: "calls", x: x(i) + 1, width: Math.max(bw - 2, 1), y: yCalls(ok), height: pad.t + ih - yCalls(ok) }, title));
    if (b.fails) {
      svg.append(s("rect", { class: "fails", x: x(i) + 1, width: Math.max(bw - 2, 1), y: yCalls(b.calls), height: yCalls(ok) - yCalls(b.calls) }));
    }
  });
  for (const key of ["p50", "p95"]) {
    let d = "";
    buckets.forEach((b, i) => {
      if (b[key] === null || b[key] === undefined) return;
      const px = (x(i) + bw / 2).toFixed(1);
      const py = yMs(b[key]).toFixed(1);
      d += `${d ? "L" : "M"}${px},${py}`;
      // a dot per bucket, so a lone bucket still shows
      svg.append(s("circle", { class: `${key} dot`, cx: px, cy: py, r: 2.5 }));
    });
    if (d) svg.append(s("path", { class: key, d }));
  }
  if (buckets.length) {
    const labels = [0, Math.floor(buckets.length / 2), buckets.length - 1];
    for (const i of labels) {
      svg.append(s("text", { x: x(i) + bw / 2, y: H - 6, "text-anchor": "middle" }, new Date(buckets[i].start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  }
  return h(
    "div",
    {},
    svg,
    h(
      "div",
      { class: "legend" },
      h("span", {}, h("span", { class: "swatch calls" }), "calls"),
      h("span", {}, h("span", { class: "swatch fails" }), "failed"),
      h("span", {}, h("span", { class: "swatch p50" }), "p50"),
      h("span", {}, h("span", { class: "swatch p95" }), "p95"),
      h("span", {}, `bucket ${fmtMs(series.bucketMs)}`),
    ),
  );
}

/** The neighbourhood of an entity: the start in the middle, the others on rings by depth. */
function graphPicture(start, graph) {
  const W = 640;
  const H = 420;
  const cx = W / 2;
  const cy = H / 2;
  const nodes = graph.nodes || [];
  const pos = new Map();
  const byDepth = new Map();
  for (const node of nodes) {
    if (node.id === start.id) continue;
    const d = Math.max(node.depth || 1, 1);
    if (!byDepth.has(d)) byDepth.set(d, []);
    byDepth.get(d).push(node);
  }
  pos.set(start.id, [cx, cy]);
  const rings = Math.max(byDepth.size, 1);
  for (const [depth, ring] of byDepth) {
    const r = (Math.min(W, H) / 2 - 40) * (depth / rings);
    ring.forEach((node, i) => {
      const a = (2 * Math.PI * i) / ring.length - Math.PI / 2;
      pos.set(node.id, [cx + r * Math.cos(a), cy + r * Math.sin(a)]);
    });
  }
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `graph around ${start.name}` });
  for (const edge of graph.edges || []) {
    const a = pos.get(edge.source);
    const b = pos.get(edge.target);
    if (!a || !b) continue;
    svg.append(s("line", { class: "edge", x1: a[0], y1: a[1], x2: b[0], y2: b[1] }, s("title", {}, edge.kind)));
  }
  for (const node of [start, ...nodes.filter((n) => n.id !== start.id)]) {
    const p = pos.get(node.id);
    if (!p) continue;
    svg.append(s("circle", { class: `node${node.id === start.id ? " start" : ""}`, cx: p[0], cy: p[1], r: node.id === start.id ? 8 : 5 }, s("title", {}, `${node.kind}: ${node.name}`)));
    svg.append(s("text", { x: p[0] + 8, y: p[1] + 3 }, short(node.name, 28)));
  }
  return svg;
}

// ---------- views ----------

/** Overview: agents, queues, throughput, circuits. */
function overview(root, signal) {
  const cards = h("div", { class: "cards" });
  const queues = h("div");
  const agents = h("div");
  root.append(
    h("h1", {}, "Overview"),
    cards,
    h("div", { class: "grid2" }, h("section", { class: "panel" }, h("h2", {}, "Queues"), queues), h("section", { class: "panel" }, h("h2", {}, "Agents"), agents)),
  );
  every(2000, signal, async () => {
    const [summary, presence] = await Promise.all([api("/api/metrics/summary", { signal }), api("/api/agents", { signal })]);
    const sum = summary.summary;
    const bus = sum.bus;
    const done = bus.queues.reduce((n, q) => n + (q.done_last_minute || 0), 0);
    const card = (label, value, bad = false) => h("div", { class: `card${bad ? " bad" : ""}`, "data-card": label }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    cards.replaceChildren(
      card("agents online", `${sum.agents.online} / ${sum.agents.total}`, sum.agents.online === 0),
      card("ready", bus.ready),
      card("in flight", bus.claimed),
      card("delayed", bus.delayed),
      card("oldest ready", fmtMs(bus.oldestReadyAgeMs), (bus.oldestReadyAgeMs || 0) > 60_000),
      card("done / min", done),
      card("open circuits", sum.circuits.openCount, sum.circuits.openCount > 0),
      card("MCP calls (24 h)", sum.mcp.calls),
    );
    queues.replaceChildren(
      table(
        ["service / role", "ready#", "in flight#", "delayed#", "oldest ready#", "done/min#", "failed/min#"],
        bus.queues.map((q) =>
          h(
            "tr",
            { "data-queue": `${q.service}/${q.role}` },
            h("td", {}, `${q.service} / ${q.role}`),
            h("td", { class: "num" }, q.ready),
            h("td", { class: "num" }, q.claimed),
            h("td", { class: "num" }, q.delayed),
            h("td", { class: "num" }, fmtMs(q.oldest_ready_age_ms)),
            h("td", { class: "num" }, q.done_last_minute ?? 0),
            h("td", { class: "num" }, q.failed_last_minute ?? 0),
          ),
        ),
        "No queued work and nothing finished in the last minute.",
      ),
    );
    agents.replaceChildren(
      table(
        ["agent", "service", "roles", "status", "heartbeat", "host"],
        presence.agents.map((a) =>
          h(
            "tr",
            { "data-agent": a.agent_id },
            h("td", { class: "mono" }, short(a.agent_id, 40)),
            h("td", {}, a.service),
            h("td", {}, a.roles.join(", ")),
            h("td", {}, badge(a.status)),
            h("td", {}, ago(a.last_heartbeat)),
            h("td", { class: "hide-narrow" }, a.host),
          ),
        ),
        "No agent has registered.",
      ),
    );
    root.dataset.ready = "overview";
  }, (err) => showError(root, err));
}

function showError(root, err) {
  let box = root.querySelector(":scope > .view-error");
  if (!box) {
    box = h("p", { class: "view-error error" });
    root.prepend(box);
  }
  box.textContent = err.status === 403 ? `Not allowed with this token: ${err.message}` : err.message;
}

function clearError(root) {
  root.querySelector(":scope > .view-error")?.remove();
}

/** MCP: per-tool figures, latency over time, breakers, health. */
function mcp(root, signal) {
  let selected = null;
  let windowMs = 3_600_000;
  const tools = h("div");
  const chart = h("div");
  const chartTitle = h("h2", {}, "Latency over time: all tools");
  const breakers = h("div");
  const health = h("div", {}, h("p", { class: "empty" }, "Pinging the toolsets…"));
  const windows = [["15 min", 900_000], ["1 h", 3_600_000], ["6 h", 21_600_000], ["24 h", 86_400_000]];
  const windowPick = h(
    "select",
    { "aria-label": "window", onchange: (e) => { windowMs = Number(e.target.value); refresh(); } },
    windows.map(([label, ms]) => h("option", { value: ms, selected: ms === windowMs }, label)),
  );
  root.append(
    h("h1", {}, "MCP"),
    h("section", { class: "panel" }, h("div", { class: "row" }, chartTitle, windowPick), chart),
    h("section", { class: "panel" }, h("h2", {}, "Tools (last 24 h)"), h("p", { class: "muted" }, "Select a tool to chart it; select it again for all tools."), tools),
    h("div", { class: "grid2" }, h("section", { class: "panel" }, h("h2", {}, "Circuit breakers"), breakers), h("section", { class: "panel" }, h("h2", {}, "Toolset health"), health)),
  );
  let lastSummary = null;
  const drawTools = () => {
    if (!lastSummary) return;
    const detail = Object.entries(lastSummary.detail || {});
    tools.replaceChildren(
      table(
        ["tool", "calls#", "failed#", "fail rate#", "p50#", "p95#", "failures by kind"],
        detail.map(([tool, f]) =>
          h(
            "tr",
            {
              class: `clickable${tool === selected ? " selected" : ""}`,
              "data-tool": tool,
              onclick: () => { selected = selected === tool ? null : tool; drawTools(); refresh(); },
            },
            h("td", { class: "mono" }, tool),
            h("td", { class: "num" }, f.calls),
            h("td", { class: "num" }, f.fails),
            h("td", { class: "num" }, pct(f.fails, f.calls)),
            h("td", { class: "num" }, fmtMs(f.p50)),
            h("td", { class: "num" }, fmtMs(f.p95)),
            h("td", {}, Object.entries(f.failsByKind || {}).map(([k, v]) => `${k} ${v}`).join(", ")),
          ),
        ),
        "No MCP call recorded in the last 24 hours.",
      ),
    );
  };
  const refresh = async () => {
    const since = new Date(Date.now() - windowMs).toISOString();
    const q = new URLSearchParams({ since, buckets: "60" });
    if (selected) q.set("tool", selected);
    const [summary, series, all] = await Promise.all([
      api("/api/metrics/mcp/summary", { signal }),
      api(`/api/metrics/mcp/series?${q}`, { signal }),
      api("/api/metrics/summary", { signal }),
    ]);
    lastSummary = summary.mcp;
    chartTitle.textContent = `Latency over time: ${selected || "all tools"}`;
    chart.replaceChildren(latencyChart(series.series));
    drawTools();
    const circuits = all.summary.circuits;
    const rows = Object.entries(circuits.openByKey || {}).map(([key, c]) =>
      h(
        "tr",
        { "data-breaker": key },
        h("td", { class: "mono" }, key),
        h("td", {}, badge("open")),
        h("td", {}, c.openUntil ? `half-opens ${ago(c.openUntil)}` : "–"),
        h("td", { class: "hide-narrow" }, c.agents.length),
      ),
    );
    for (const key of circuits.halfOpenKeys || []) {
      rows.push(h("tr", { "data-breaker": key }, h("td", { class: "mono" }, key), h("td", {}, badge("half_open")), h("td", {}, "probing now"), h("td", { class: "hide-narrow" }, "")));
    }
    breakers.replaceChildren(table(["key", "state", "next", "processes#"], rows, "Every breaker is closed."));
    clearError(root);
    root.dataset.ready = "mcp";
  };
  every(3000, signal, refresh, (err) => showError(root, err));
  every(15000, signal, async () => {
    const answer = await api("/api/mcp/health", { signal });
    health.replaceChildren(
      table(
        ["toolset", "state", "latency#", "detail"],
        answer.toolsets.map((t) =>
          h(
            "tr",
            { "data-toolset": t.toolset },
            h("td", {}, t.toolset),
            h("td", {}, badge(t.ok ? "ok" : "bad")),
            h("td", { class: "num" }, fmtMs(t.latency_ms)),
            h("td", { class: "muted" }, short(t.error || t.transport || "", 120)),
          ),
        ),
        "No toolset is configured (mcp.json).",
      ),
    );
  }, (err) => health.replaceChildren(h("p", { class: "error" }, `Health: ${err.message}`)));
}

/** Live events, following the stream; filters by trace, type and tenant. */
function events(root, signal, params) {
  const filters = { trace_id: params.get("trace") || "", event_type: params.get("type") || "", tenant: params.get("tenant") || "" };
  let paused = false;
  let count = 0;
  let stream = new AbortController();
  signal.addEventListener("abort", () => stream.abort());
  const body = h("tbody");
  const counter = h("span", { class: "muted" }, "waiting for events…");
  const inputs = Object.fromEntries(
    Object.entries({ trace_id: "trace id", event_type: "event type", tenant: "tenant" }).map(([key, label]) => [
      key,
      h("input", { name: key, placeholder: label, "aria-label": label, value: filters[key], spellcheck: "false" }),
    ]),
  );
  const pauseButton = h("button", { type: "button", class: "ghost", onclick: () => { paused = !paused; pauseButton.textContent = paused ? "Resume" : "Pause"; } }, "Pause");
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        for (const key of Object.keys(filters)) filters[key] = inputs[key].value.trim();
        const q = new URLSearchParams();
        if (filters.trace_id) q.set("trace", filters.trace_id);
        if (filters.event_type) q.set("type", filters.event_type);
        if (filters.tenant) q.set("tenant", filters.tenant);
        history.replaceState(null, "", `#/events${q.size ? "?" + q : ""}`);
        start();
      },
    },
    Object.values(inputs),
    h("button", { type: "submit" }, "Filter"),
    pauseButton,
    counter,
  );
  root.append(
    h("h1", {}, "Live events"),
    form,
    h("section", { class: "panel events" }, h("table", {}, h("thead", {}, h("tr", {}, ["time", "type", "service / role", "tenant", "trace", "detail"].map((x) => h("th", {}, x)))), body)),
  );
  const row = (e) =>
    h(
      "tr",
      { class: "fresh", "data-event": e.event_type, "data-seq": e.seq },
      h("td", { class: "mono" }, clock(e.created_at)),
      h("td", {}, badge(e.event_type.replace(/^.*_(?=succeeded|failed|scheduled|claimed|dead_lettered|requeued|cancelled)/, "")), " ", e.event_type),
      h("td", {}, `${e.service} / ${e.role}`),
      h("td", {}, e.tenant),
      h("td", { class: "mono" }, e.trace_id ? h("a", { href: `#/traces/${e.trace_id}`, title: e.trace_id }, "…" + e.trace_id.slice(-12)) : "–"),
      h("td", { class: "muted" }, short(e.reason || summarizePayload(e.payload), 140)),
    );
  const start = () => {
    stream.abort();
    stream = new AbortController();
    body.replaceChildren();
    count = 0;
    counter.textContent = "waiting for events…";
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    // the last two minutes first (when they fit in one page), then follow from there
    const since = new Date(Date.now() - 120_000).toISOString();
    api(`/api/events?${new URLSearchParams({ ...Object.fromEntries(q), since, limit: "200" })}`, { signal: stream.signal })
      .then((page) => {
        // a full page means there were more: then only what comes next is shown
        const items = (page.items || []).length >= 200 ? [] : page.items || [];
        for (const e of items) body.prepend(row(e));
        while (body.children.length > MAX_EVENTS) body.lastChild.remove();
        count += items.length;
        counter.textContent = `${count} events`;
        if (items.length) q.set("after", String(items[items.length - 1].seq));
        root.dataset.ready = "events";
        clearError(root);
        followEvents(q, stream.signal, (event, err, connected) => {
          if (err) return showError(root, err);
          if (connected) return clearError(root);
          if (!event || paused) return;
          body.prepend(row(event));
          while (body.children.length > MAX_EVENTS) body.lastChild.remove();
          count += 1;
          counter.textContent = `${count} events`;
        });
      })
      .catch((err) => {
        if (err.name !== "AbortError") showError(root, err);
      });
  };
  start();
}

function summarizePayload(payload) {
  if (!payload || typeof payload !== "object") return "";
  const parts = [];
  for (const key of ["toolset", "tool", "latency_ms", "error_kind", "kind", "attempt", "key", "state", "error"]) {
    if (payload[key] !== undefined && payload[key] !== null) parts.push(`${key}=${typeof payload[key] === "object" ? JSON.stringify(payload[key]) : payload[key]}`);
  }
  return parts.join(" ");
}

/** Dead letters with their last error, and requeue (admin token, confirmed). */
function dlq(root, signal) {
  const list = h("div");
  root.append(h("h1", {}, "Dead-letter queue"), h("p", { class: "muted" }, "Messages that failed for good. Requeue puts one back on its queue with its attempts reset; it needs the admin token."), h("section", { class: "panel" }, list));
  const load = async () => {
    const page = await api("/api/dlq?limit=200", { signal });
    list.replaceChildren(
      table(
        ["dead-lettered", "service / role", "intent", "reason", "last error", "message", ""],
        page.items.map((d) =>
          h(
            "tr",
            { "data-dead-letter": d.message_id },
            h("td", {}, ago(d.dead_lettered_at)),
            h("td", {}, `${d.service} / ${d.role}`),
            h("td", {}, d.intent),
            h("td", {}, d.reason),
            h("td", { class: "error" }, short(d.last_error || "–", 200)),
            h("td", { class: "mono" }, h("a", { href: `#/traces/${d.original?.trace_id || ""}` }, short(d.message_id, 13))),
            h(
              "td",
              {},
              d.requeued_at
                ? h("span", { class: "muted" }, `requeued ${ago(d.requeued_at)}`)
                : h("button", { type: "button", "data-requeue": d.message_id, onclick: () => requeue(d) }, "Requeue"),
            ),
          ),
        ),
        "The dead-letter queue is empty.",
      ),
    );
    clearError(root);
    root.dataset.ready = "dlq";
  };
  const requeue = async (d) => {
    const ok = await confirmAction("Requeue this message?", `${d.service}/${d.role} ${d.intent} (${d.message_id}) goes back to its queue with its attempts reset. Last error: ${short(d.last_error || "none", 200)}`, "Requeue");
    if (ok === null) return;
    try {
      await api(`/api/dlq/${encodeURIComponent(d.message_id)}/requeue`, { method: "POST" });
      toast(`Requeued ${d.message_id}`);
      await load();
    } catch (err) {
      toast(err.status === 403 || err.status === 401 ? `Requeue needs the admin token: ${err.message}` : `Requeue failed: ${err.message}`, true);
    }
  };
  every(3000, signal, load, (err) => showError(root, err));
}

/** Goals, newest first; the ones waiting for an operator on top. */
function goals(root, signal) {
  const waiting = h("div");
  const list = h("div");
  root.append(h("h1", {}, "Goals"), waiting, h("section", { class: "panel" }, list));
  every(2000, signal, async () => {
    const page = await api("/api/goals?limit=100", { signal });
    const items = page.goals || [];
    const pending = items.filter((g) => g.status === "awaiting_approval");
    waiting.replaceChildren(
      pending.length
        ? h(
            "section",
            { class: "panel approval", "data-pending": pending.length },
            h("h2", {}, `${pending.length} goal${pending.length > 1 ? "s" : ""} waiting for approval`),
            pending.map((g) => h("p", {}, h("a", { href: `#/goals/${g.id}` }, short(g.goal, 120)), " ", h("span", { class: "muted" }, ago(g.updated_at)))),
          )
        : "",
    );
    list.replaceChildren(
      table(
        ["status", "goal", "steps#", "replans#", "created", "answer or error"],
        items.map((g) => {
          const used = g.state?.used || {};
          return h(
            "tr",
            { "data-goal": g.id },
            h("td", {}, badge(g.status)),
            h("td", {}, h("a", { href: `#/goals/${g.id}` }, short(g.goal, 100))),
            h("td", { class: "num" }, used.steps ?? 0),
            h("td", { class: "num" }, used.replans ?? 0),
            h("td", {}, ago(g.created_at)),
            h("td", { class: g.error ? "error" : "muted" }, short(g.answer || g.error || "", 120)),
          );
        }),
        "No goal yet: give one with `cogo run \"…\"` or POST /api/goals.",
      ),
    );
    clearError(root);
    root.dataset.ready = "goals";
  }, (err) => showError(root, err));
}

/** One goal: answer, approvals, plans and steps with their tool calls, and the timeline. */
function goal(root, signal, id) {
  let shown = "";
  const images = new Map();
  signal.addEventListener("abort", () => images.forEach((url) => URL.revokeObjectURL(url)));
  every(1500, signal, async () => {
    const detail = await api(`/api/goals/${encodeURIComponent(id)}`, { signal });
    const g = detail.goal;
    const trace = await api(`/api/traces/${g.trace_id}`, { signal });
    const key = `${g.version}:${trace.events.length}:${detail.decisions.length}`;
    if (key === shown) return;
    shown = key;
    const messages = new Map(trace.messages.map((m) => [m.id, m]));
    const state = g.state || {};
    const used = state.used || {};
    const budget = state.budget || {};
    const view = [];
    view.push(
      h("p", {}, h("a", { href: "#/goals" }, "← Goals")),
      h("h1", {}, badge(g.status), " ", g.goal),
      h(
        "p",
        { class: "muted" },
        `created ${ago(g.created_at)} · tenant ${g.tenant} · steps ${used.steps ?? 0}/${budget.max_steps ?? "?"} · replans ${used.replans ?? 0}/${budget.max_replans ?? "?"} · tokens ${used.tokens ?? 0} · trace `,
        h("a", { href: `#/traces/${g.trace_id}`, class: "mono" }, g.trace_id),
      ),
    );
    if (g.answer) view.push(h("section", { class: "panel", "data-answer": "" }, h("h2", {}, "Answer"), h("p", {}, g.answer)));
    if (g.error) view.push(h("section", { class: "panel error", "data-error": "" }, h("h2", {}, "Why it failed"), h("p", {}, g.error)));
    const approvals = Object.entries(state.approvals || {}).filter(([, a]) => !a.decision);
    for (const [step, a] of approvals) {
      view.push(
        h(
          "section",
          { class: "approval", "data-approval": step },
          h("h2", {}, `Step ${step} waits for approval`),
          h("p", {}, "Tool ", h("code", {}, a.tool), ` asked ${ago(a.requested_at)} with:`),
          h("pre", {}, JSON.stringify(a.params, null, 2)),
          h(
            "div",
            { class: "row" },
            h("button", { type: "button", class: "good", "data-approve": step, onclick: () => decide(g, step, a, true) }, "Approve"),
            h("button", { type: "button", class: "danger", "data-reject": step, onclick: () => decide(g, step, a, false) }, "Reject"),
          ),
        ),
      );
    }
    const plans = state.plans || [];
    for (const plan of plans.slice().reverse()) {
      view.push(
        h(
          "section",
          { class: "panel", "data-plan": plan.revision },
          h("h2", {}, `Plan ${plan.revision}${plan.revision === plans.length ? "" : " (replaced)"}`),
          h("div", { class: "steps" }, plan.steps.map((step) => stepCard(step, messages))),
        ),
      );
    }
    view.push(h("section", { class: "panel" }, h("h2", {}, "Timeline"), timeline(detail.decisions, trace.events)));
    root.replaceChildren(...view);
    root.dataset.ready = "goal";
    for (const img of root.querySelectorAll("img[data-artifact]")) loadImage(img);
  }, (err) => showError(root, err));
  const loadImage = async (img) => {
    const path = img.dataset.artifact;
    try {
      if (!images.has(path)) images.set(path, await artifactUrl(path));
      img.src = images.get(path);
    } catch (err) {
      img.replaceWith(h("span", { class: "error" }, err.message));
    }
  };
  const decide = async (g, step, a, approve) => {
    const reason = await confirmAction(
      approve ? "Approve this step?" : "Reject this step?",
      `${a.tool} ${short(a.params, 200)}${approve ? " runs now." : " will not run; the orchestrator replans or ends the goal."}`,
      approve ? "Approve" : "Reject",
      { danger: !approve, reason: true },
    );
    if (reason === null) return;
    try {
      await api(`/api/goals/${encodeURIComponent(g.id)}/approvals/${encodeURIComponent(step)}`, {
        method: "POST",
        body: { approve, ...(reason ? { reason } : {}) },
      });
      toast(approve ? `Approved ${step}` : `Rejected ${step}`);
      shown = "";
    } catch (err) {
      toast(err.status === 403 || err.status === 401 ? `Approvals need the admin token: ${err.message}` : err.message, true);
    }
  };
}

function stepCard(step, messages) {
  const message = step.message_id ? messages.get(step.message_id) : null;
  const result = message?.result || {};
  const dir = typeof result.artifacts === "string" ? result.artifacts.replace(/^artifacts\//, "") : null;
  return h(
    "div",
    { class: "step", "data-step": step.id },
    h("h3", {}, h("span", { class: "mono" }, step.id), badge(step.status), step.tool ? h("code", {}, step.tool) : "", step.description),
    h("div", { class: "muted" }, `success when: ${step.success_criteria}`, step.depends_on?.length ? ` · after ${step.depends_on.join(", ")}` : ""),
    step.params ? h("details", {}, h("summary", {}, "arguments"), h("pre", {}, JSON.stringify(step.params, null, 2))) : "",
    step.output ? h("details", { open: step.status === "succeeded" }, h("summary", {}, "output"), h("pre", {}, step.output)) : "",
    step.error ? h("p", { class: "error" }, step.error) : "",
    message ? h("div", { class: "muted" }, `message ${message.status}, attempt ${message.attempts}/${message.max_attempts}`, dir ? [" · artifacts ", h("a", { href: `#/artifacts/${dir}` }, dir)] : "") : "",
    dir && Array.isArray(result.images) && result.images.length
      ? h("div", { class: "shots" }, result.images.map((name) => h("img", { alt: `${step.tool} ${name}`, "data-artifact": `${dir}/${name}` })))
      : "",
  );
}

function timeline(decisions, events) {
  const items = [
    ...decisions.map((d) => ({ at: d.at, decision: d })),
    ...events.map((e) => ({ at: e.created_at, event: e })),
  ].sort((a, b) => new Date(a.at) - new Date(b.at));
  if (!items.length) return h("p", { class: "empty" }, "Nothing recorded yet.");
  return h(
    "ol",
    { class: "timeline" },
    items.map(({ at, decision, event }) => {
      if (decision) {
        const llm = decision.llm || [];
        return h(
          "li",
          { class: "decision", "data-decision": decision.kind },
          h("span", { class: "when mono" }, clock(at)),
          h("strong", {}, `decision ${decision.n}: ${decision.kind}`),
          decision.step ? ` (step ${decision.step})` : "",
          " — ",
          decision.why,
          h(
            "details",
            {},
            h("summary", {}, llm.length ? `inputs, output, ${llm.length} model call(s): ${llm.map((c) => `${c.model} #${String(c.prompt_hash || "").slice(0, 10)}`).join(", ")}` : "inputs and output"),
            h("pre", {}, JSON.stringify({ inputs: decision.inputs, context_ids: decision.context_ids, output: decision.output }, null, 2)),
          ),
        );
      }
      return h(
        "li",
        { class: event.event_type.endsWith("failed") || event.event_type.endsWith("dead_lettered") ? "failed" : "", "data-timeline-event": event.event_type },
        h("span", { class: "when mono" }, clock(at)),
        event.event_type,
        h("span", { class: "muted" }, ` ${event.service}/${event.role} ${short(event.reason || summarizePayload(event.payload), 120)}`),
      );
    }),
  );
}

/** A trace: its messages and events in order. */
function traceView(root, signal, id) {
  every(2000, signal, async () => {
    const trace = await api(`/api/traces/${encodeURIComponent(id)}`, { signal });
    root.replaceChildren(
      h("h1", {}, "Trace ", h("span", { class: "mono" }, id)),
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Messages"),
        table(
          ["created", "service / role", "intent", "status", "attempts#", "last error"],
          trace.messages.map((m) =>
            h("tr", { "data-message": m.id }, h("td", {}, ago(m.created_at)), h("td", {}, `${m.service} / ${m.role}`), h("td", {}, m.intent), h("td", {}, badge(m.status)), h("td", { class: "num" }, `${m.attempts}/${m.max_attempts}`), h("td", { class: "error" }, short(m.last_error || "", 160))),
          ),
          "No message on this trace.",
        ),
      ),
      h("section", { class: "panel" }, h("h2", {}, "Events"), timeline([], trace.events)),
    );
    root.dataset.ready = "trace";
  }, (err) => showError(root, err));
}

/** An artifact directory: its files, images shown, JSON opened. */
function artifactsView(root, signal, path) {
  const urls = [];
  signal.addEventListener("abort", () => urls.forEach((u) => URL.revokeObjectURL(u)));
  (async () => {
    try {
      const listing = await api(`/api/artifacts/${path}`, { signal });
      root.replaceChildren(h("h1", {}, "Artifacts ", h("span", { class: "mono" }, path)));
      for (const entry of listing.entries || []) {
        const file = `${path}/${entry.name}`;
        const box = h("section", { class: "panel", "data-file": entry.name }, h("h2", {}, entry.dir ? h("a", { href: `#/artifacts/${file}` }, `${entry.name}/`) : entry.name, h("span", { class: "muted" }, ` ${entry.bytes} bytes`)));
        root.append(box);
        if (entry.dir) continue;
        if (/\.(png|jpe?g|gif|webp)$/.test(entry.name)) {
          const url = await artifactUrl(file);
          urls.push(url);
          box.append(h("div", { class: "shots" }, h("img", { src: url, alt: entry.name })));
        } else if (/\.json$/.test(entry.name) && entry.bytes < 512 * 1024) {
          const data = await api(`/api/artifacts/${file}`, { signal });
          box.append(h("pre", {}, JSON.stringify(data, null, 2)));
        }
      }
      root.dataset.ready = "artifacts";
    } catch (err) {
      if (err.name !== "AbortError") showError(root, err);
    }
  })();
}

/** Knowledge: search with provenance, and the graph around an entity. */
function knowledge(root, signal) {
  const stats = h("p", { class: "muted" }, "…");
  const results = h("div");
  const graphBox = h("div", { class: "graph" });
  const q = h("input", { type: "search", name: "query", placeholder: "Search the indexed documents", "aria-label": "search", required: true, maxlength: 2000 });
  const mode = h("select", { name: "mode", "aria-label": "mode" }, ["hybrid", "fulltext", "vector"].map((m) => h("option", { value: m }, m)));
  const entity = h("input", { type: "search", name: "entity", placeholder: "Entity name (a document source, a heading, a symbol)", "aria-label": "entity", required: true, maxlength: 512 });
  const depth = h("select", { name: "depth", "aria-label": "depth" }, [1, 2, 3].map((d) => h("option", { value: d }, `${d} hop${d > 1 ? "s" : ""}`)));
  const showGraph = async (name) => {
    entity.value = name;
    graphBox.replaceChildren(h("p", { class: "muted" }, "…"));
    try {
      const answer = await api(`/api/knowledge/graph/neighbors?${new URLSearchParams({ name, depth: depth.value })}`, { signal });
      const nodes = answer.graph.nodes || [];
      graphBox.replaceChildren(
        h("p", {}, h("strong", {}, `${answer.start.kind}: ${answer.start.name}`), ` — ${nodes.length} entities, ${(answer.graph.edges || []).length} relations${answer.graph.truncated ? " (cut at the budget)" : ""}`),
        graphPicture(answer.start, answer.graph),
        table(
          ["depth#", "kind", "name"],
          nodes.filter((n) => n.id !== answer.start.id).slice(0, 200).map((n) => h("tr", { "data-entity": n.name }, h("td", { class: "num" }, n.depth), h("td", {}, n.kind), h("td", {}, h("a", { href: "#/knowledge", onclick: (e) => { e.preventDefault(); showGraph(n.name); } }, n.name)))),
          "No neighbours.",
        ),
      );
      root.dataset.graph = "shown";
    } catch (err) {
      if (err.name !== "AbortError") graphBox.replaceChildren(h("p", { class: "error" }, err.message));
    }
  };
  root.append(
    h("h1", {}, "Knowledge"),
    stats,
    h(
      "section",
      { class: "panel" },
      h(
        "form",
        {
          class: "search",
          onsubmit: async (e) => {
            e.preventDefault();
            results.replaceChildren(h("p", { class: "muted" }, "Searching…"));
            try {
              const answer = await api(`/api/knowledge/search?${new URLSearchParams({ query: q.value, mode: mode.value, top_k: "10" })}`, { signal });
              results.replaceChildren(
                ...(answer.hits.length
                  ? answer.hits.map((hit, i) =>
                      h(
                        "div",
                        { class: "hit", "data-hit": i + 1 },
                        h("div", {}, h("span", { class: "src" }, `${i + 1}. ${hit.chunk.source}`), hit.chunk.heading ? ` › ${hit.chunk.heading}` : "", h("span", { class: "muted" }, ` [${hit.chunk.start}..${hit.chunk.end}]`)),
                        h(
                          "div",
                          { class: "muted" },
                          `score ${hit.score.toFixed(3)}`,
                          hit.fulltext ? ` · full text #${hit.fulltext.rank} (${hit.fulltext.score.toFixed(3)})` : "",
                          hit.vector ? ` · vector #${hit.vector.rank} (${hit.vector.score.toFixed(3)})` : "",
                          " · ",
                          h("a", { href: "#/knowledge", onclick: (ev) => { ev.preventDefault(); showGraph(hit.chunk.source); } }, "graph"),
                        ),
                        h("p", {}, short(hit.chunk.text, 420)),
                      ),
                    )
                  : [h("p", { class: "empty" }, "No hit above the threshold.")]),
              );
              root.dataset.search = "done";
            } catch (err) {
              results.replaceChildren(h("p", { class: "error" }, err.status === 503 ? `Search is unavailable: ${err.message}` : err.message));
            }
          },
        },
        q,
        mode,
        h("button", { type: "submit" }, "Search"),
      ),
      results,
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Graph neighbourhood"),
      h("form", { class: "search", onsubmit: (e) => { e.preventDefault(); showGraph(entity.value.trim()); } }, entity, depth, h("button", { type: "submit" }, "Show")),
      graphBox,
    ),
  );
  api("/api/knowledge/stats", { signal })
    .then((answer) => {
      const st = answer;
      stats.textContent = `${st.documents} documents, ${st.chunks} chunks, ${st.entities} entities, ${st.relations} relations${st.embedding_model ? ` · embeddings ${st.embedding_model}` : ""}`;
      root.dataset.ready = "knowledge";
    })
    .catch((err) => {
      stats.textContent = err.status === 503 ? `Knowledge is unavailable: ${err.message}` : err.message;
      root.dataset.ready = "knowledge";
    });
}

// ---------- routing ----------

const ROUTES = [
  [/^\/?$/, "overview", (root, signal) => overview(root, signal)],
  [/^\/mcp$/, "mcp", (root, signal) => mcp(root, signal)],
  [/^\/events$/, "events", (root, signal, _m, params) => events(root, signal, params)],
  [/^\/dlq$/, "dlq", (root, signal) => dlq(root, signal)],
  [/^\/goals$/, "goals", (root, signal) => goals(root, signal)],
  [/^\/goals\/([A-Za-z0-9-]{1,64})$/, "goals", (root, signal, m) => goal(root, signal, m[1])],
  [/^\/traces\/([0-9a-f]{32})$/, "events", (root, signal, m) => traceView(root, signal, m[1])],
  [/^\/artifacts\/([A-Za-z0-9._\/-]{1,400})$/, "goals", (root, signal, m) => artifactsView(root, signal, m[1])],
  [/^\/knowledge$/, "knowledge", (root, signal) => knowledge(root, signal)],
];

let current = null;
function route() {
  current?.abort();
  current = new AbortController();
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const root = $("view");
  root.replaceChildren();
  delete root.dataset.ready;
  for (const [pattern, nav, mount] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
    mount(root, current.signal, m, new URLSearchParams(query));
    return;
  }
  root.append(h("h1", {}, "Not found"), h("p", {}, "No such view. ", h("a", { href: "#/" }, "Back to the overview")));
}

function init() {
  $("token-button").addEventListener("click", () => showTokenForm($("token-form").hidden));
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    token.set(value);
    $("token-input").value = "";
    showTokenForm(false);
    connState = "";
    route();
  });
  $("token-forget").addEventListener("click", () => {
    token.clear();
    connState = "";
    setConn("token");
  });
  window.addEventListener("hashchange", route);
  if (!token.get()) setConn("token");
  route();
}

init();
