// The dashboard in a real headless Chromium (Debian's, driven by playwright-core from npm), against a
// running `cogo up` that the Rust test started and filled with data. Every view must render that
// data, the DLQ requeue and a goal approval must work end to end, live events must appear within a
// second, and the console must stay free of errors. Screenshots of each view go to COGO_SHOTS.
//
// Environment: COGO_URL, COGO_TOKEN (admin), COGO_SHOTS (a directory), COGO_NODE_DIR (where
// playwright-core is installed), COGO_DEAD_LETTER (a message id in the DLQ), COGO_GOAL (a goal id
// that waits for approval), COGO_PID (the server, stopped at the end to see the unreachable state).
// Prints one JSON line of measurements; exits 1 with the reasons when a check fails.
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("COGO_URL");
const token = env("COGO_TOKEN");
const shots = env("COGO_SHOTS");
const deadLetter = env("COGO_DEAD_LETTER");
const goalId = env("COGO_GOAL");
const serverPid = Number(env("COGO_PID"));
const require = createRequire(path.join(env("COGO_NODE_DIR"), "package.json"));
const { chromium } = require("playwright-core");

fs.mkdirSync(shots, { recursive: true });
const failures = [];
const figures = {};
const check = (ok, what) => {
  if (!ok) failures.push(what);
  return ok;
};
const api = async (route, init = {}) => {
  const response = await fetch(base + route, {
    ...init,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...(init.headers || {}) },
  });
  const body = await response.json();
  if (!response.ok) throw new Error(`${route}: ${response.status} ${JSON.stringify(body)}`);
  return body;
};

const browser = await chromium.launch({
  executablePath: process.env.COGO_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
const page = await context.newPage();
const consoleErrors = [];
let watching = true;
page.on("console", (msg) => {
  if (watching && msg.type() === "error") consoleErrors.push(msg.text());
});
page.on("pageerror", (err) => {
  if (watching) consoleErrors.push(`page error: ${err.message}`);
});
const ready = (view, timeout = 15_000) => page.waitForSelector(`#view[data-ready="${view}"]`, { timeout });
const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: false });
const step = async (name, body) => {
  try {
    await body();
  } catch (err) {
    failures.push(`${name}: ${err.message.split("\n")[0]}`);
    await shot(`failed-${name}`).catch(() => {});
  }
};

// no token yet: the dashboard says what it needs, and makes no API call that would fail
await step("token", async () => {
  const start = Date.now();
  await page.goto(base + "/", { waitUntil: "load" });
  figures.first_load_ms = Date.now() - start;
  await page.waitForSelector("#token-form:not([hidden])", { timeout: 5000 });
  check((await page.textContent("#conn")).includes("token"), "the state says a token is needed");
  check((await page.textContent("#banner")).includes("needs an API token"), "the banner asks for a token");
  await shot("token");
  await page.fill("#token-input", token);
  await page.click("#token-form button[type=submit]");
});

await step("overview", async () => {
  await ready("overview");
  await page.waitForFunction(() => !document.querySelector('[data-card="agents online"] .value')?.textContent.startsWith("0 "), null, { timeout: 10_000 });
  const agents = await page.textContent('[data-card="agents online"] .value');
  check(/^[1-9]\d* \/ \d+$/.test(agents.trim()), `agents online shows a count (${agents})`);
  check((await page.$$("[data-agent]")).length >= 1, "the agents table lists the running agents");
  check((await page.$$("[data-queue]")).length >= 1, "the queues table lists queues with work");
  check((await page.textContent("#conn")).trim() === "live", "the state is live");
  await shot("overview");
});

await step("mcp", async () => {
  await page.click('[data-nav="mcp"]');
  await ready("mcp");
  await page.waitForSelector('[data-tool="everything.echo"]', { timeout: 10_000 });
  const calls = Number(await page.textContent('[data-tool="everything.echo"] td:nth-child(2)'));
  check(calls >= 3, `everything.echo shows its calls (${calls})`);
  check((await page.$$(".chart rect.calls")).length >= 1, "the chart has call bars");
  check((await page.$$(".chart path.p95")).length === 1, "the chart has a p95 line");
  await page.click('[data-tool="everything.echo"]');
  await page.waitForFunction(() => document.querySelector("#view h2")?.textContent.includes("everything.echo"), null, { timeout: 10_000 });
  await page.waitForSelector('[data-toolset="everything"]', { timeout: 20_000 });
  check((await page.textContent('[data-toolset="everything"]')).includes("ok"), "the everything toolset is healthy");
  await shot("mcp");
});

await step("events", async () => {
  await page.click('[data-nav="events"]');
  await ready("events");
  // live: an enqueued call's first event shows up in the list (best of three, each within 3 s)
  const delays = [];
  for (let i = 0; i < 3; i++) {
    await page.evaluate(() => window.scrollTo(0, 0));
    const start = Date.now();
    const { trace_id: trace } = await api("/api/mcp/enqueue", {
      method: "POST",
      body: JSON.stringify({ toolset: "everything", tool: "echo", params: { message: `live ${i}` } }),
    });
    await page.waitForFunction((t) => [...document.querySelectorAll("[data-event] a")].some((a) => a.getAttribute("href").endsWith(t)), trace, { timeout: 3000 });
    delays.push(Date.now() - start);
  }
  figures.live_event_ms = delays;
  check(Math.min(...delays) <= 1000, `a live event appears within a second (${delays.join(", ")} ms)`);
  // filter by type: only that type is listed
  await page.fill('input[name="event_type"]', "mcp_call_succeeded");
  await page.click(".filters button[type=submit]");
  await ready("events");
  await page.waitForSelector('[data-event="mcp_call_succeeded"]', { timeout: 5000 });
  const types = await page.$$eval("[data-event]", (rows) => [...new Set(rows.map((r) => r.dataset.event))]);
  check(types.length === 1 && types[0] === "mcp_call_succeeded", `the type filter holds (${types})`);
  await shot("events");
});

await step("dlq", async () => {
  await page.click('[data-nav="dlq"]');
  await ready("dlq");
  const row = `[data-dead-letter="${deadLetter}"]`;
  await page.waitForSelector(row, { timeout: 10_000 });
  check((await page.textContent(row)).includes("nope"), "the dead letter's last error names the unknown toolset");
  await shot("dlq");
  await page.click(`[data-requeue="${deadLetter}"]`);
  await page.waitForSelector("#modal:not([hidden])");
  check((await page.textContent("#modal-text")).includes(deadLetter), "the confirmation names the message");
  await page.click("#modal-ok");
  await page.waitForSelector(".toast", { timeout: 5000 });
  check((await page.textContent(".toast")).includes("Requeued"), "the requeue is confirmed");
  const events = await api(`/api/events?message_id=${deadLetter}&limit=100`);
  check(events.items.some((e) => e.event_type.endsWith("_requeued")), "the store recorded the requeue");
});

await step("goals", async () => {
  await page.click('[data-nav="goals"]');
  await ready("goals");
  await page.waitForSelector(`[data-goal="${goalId}"]`, { timeout: 10_000 });
  check((await page.$$("[data-pending]")).length === 1, "the goal waiting for approval is on top");
  await shot("goals");
  await page.click(`[data-goal="${goalId}"] a`);
  await ready("goal");
  await page.waitForSelector("[data-approval]", { timeout: 10_000 });
  check((await page.$$('[data-decision="plan"]')).length >= 1, "the timeline shows the plan decision");
  await shot("goal-approval");
  // approve every command step the orchestrator asks for, until the goal ends
  const deadline = Date.now() + 240_000;
  for (;;) {
    const status = await page.textContent("#view h1 .badge");
    if (["succeeded", "failed", "cancelled"].includes(status.trim())) break;
    if (Date.now() > deadline) throw new Error(`the goal did not end (${status})`);
    const approve = await page.$("[data-approve]");
    if (approve) {
      await approve.click();
      await page.waitForSelector("#modal:not([hidden])");
      await page.fill("#modal-reason", "approved in the browser test");
      await page.click("#modal-ok");
      await page.waitForSelector("[data-approve]", { state: "detached", timeout: 10_000 }).catch(() => {});
    }
    await page.waitForTimeout(500);
  }
  // how the small local model plans the rest is not this test's business; the approval is
  const goal = (await api(`/api/goals/${goalId}`)).goal;
  figures.goal = { status: goal.status, answer: goal.answer, error: goal.error };
  check((await page.$$("[data-step]")).length >= 1, "the steps are shown");
  const trace = await api(`/api/traces/${goal.trace_id}`);
  const runs = trace.messages.filter((m) => m.intent === "execute");
  check(runs.length >= 1 && runs.every((m) => m.attempts === 1), `each approved command ran once (${runs.length})`);
  check((await page.$$('[data-timeline-event^="execute_"]')).length >= 1, "the timeline shows the command's run");
  const approvals = Object.values(goal.state.approvals || {});
  check(approvals.length >= 1 && approvals.every((a) => a.decision?.approved && a.decision.reason === "approved in the browser test"), "the approvals carry the reason given in the browser");
  await shot("goal");
});

// a tool answer with an image: its artifact directory shows the image inline
await step("artifacts", async () => {
  const { id } = await api("/api/mcp/enqueue", { method: "POST", body: JSON.stringify({ toolset: "everything", tool: "get-tiny-image", params: {} }) });
  let message = null;
  for (let i = 0; i < 100 && message?.status !== "done"; i++) {
    message = await api(`/api/messages/${id}`);
    if (message.status !== "done") await new Promise((r) => setTimeout(r, 100));
  }
  check(message?.status === "done" && message.result.images.length >= 1, `the image call is done with an image (${message?.status})`);
  const dir = message.result.artifacts.replace(/^artifacts\//, "");
  await page.goto(`${base}/#/artifacts/${dir}`);
  await ready("artifacts");
  await page.waitForFunction(() => [...document.querySelectorAll(".shots img")].some((img) => img.complete && img.naturalWidth > 0), null, { timeout: 10_000 });
  check((await page.$$('[data-file="response.json"] pre')).length === 1, "the response JSON is shown");
  await shot("artifacts");
});

await step("knowledge", async () => {
  await page.click('[data-nav="knowledge"]');
  await ready("knowledge");
  check(/[1-9]\d* documents/.test(await page.textContent("#view > p")), "the stats count the indexed documents");
  await page.fill('input[name="query"]', "how does the circuit breaker recover");
  await page.click(".search button[type=submit]");
  await page.waitForSelector('[data-hit="1"]', { timeout: 15_000 });
  check((await page.textContent('[data-hit="1"]')).includes("breakers.md"), "the best hit is the breakers document");
  await page.click('[data-hit="1"] a');
  await page.waitForSelector("#view[data-graph=shown] .graph svg circle", { timeout: 10_000 });
  check((await page.$$("[data-entity]")).length >= 1, "the graph lists the neighbours");
  await shot("knowledge");
});

await step("phone", async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('[data-nav="overview"]');
  await ready("overview");
  const overflow = await page.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the overview fits a phone's width (overflows by ${overflow} px)`);
  await shot("phone-overview");
  await page.setViewportSize({ width: 1280, height: 860 });
});

// an asset is revalidated, not downloaded again
await step("cache", async () => {
  const first = await fetch(base + "/assets/app.js");
  const etag = first.headers.get("etag");
  const again = await fetch(base + "/assets/app.js", { headers: { "if-none-match": etag } });
  check(first.status === 200 && again.status === 304, `assets answer 304 to their ETag (${first.status}, ${again.status})`);
  figures.app_js_bytes = (await first.arrayBuffer()).byteLength;
});

check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(" | ")})`);

// the server goes away: the dashboard says so and keeps trying
watching = false;
await step("unreachable", async () => {
  await page.click('[data-nav="overview"]');
  await ready("overview");
  process.kill(serverPid, "SIGTERM");
  await page.waitForFunction(() => document.getElementById("conn").textContent === "unreachable", null, { timeout: 20_000 });
  check((await page.textContent("#banner")).includes("does not answer"), "the banner says the server does not answer");
  await shot("unreachable");
});

await browser.close();
console.log(JSON.stringify({ figures, failures }));
process.exit(failures.length ? 1 : 0);
