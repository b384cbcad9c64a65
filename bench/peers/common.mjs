// The workload of `cogo bench bus`, shared by the Node peers (pg-boss.mjs, graphile-worker.mjs).
// A peer supplies enqueue/worker/queue-depth functions; this file times the four phases and prints
// one JSON line on stdout. Logs go to stderr. Job identity is the payload's `n`, so duplicates and
// losses are counted by the benchmark itself, not by the peer.
import pg from 'pg';

export const settings = {
  host: process.env.PEERS_DATABASE_HOST || '127.0.0.1',
  port: Number(process.env.PEERS_DATABASE_PORT || 5432),
  user: process.env.PEERS_DATABASE_USER || 'postgres',
  jobs: Number(process.env.PEERS_JOBS || 20000),
  concurrency: Number(process.env.PEERS_CONCURRENCY || 16),
  batch: 50, // fetch batch size where the peer has batch fetching
  singles: 1000, // phase 3
  latencyJobs: 200, // phase 4
  latencySpacingMs: 10,
};

export const now = () => performance.now(); // monotonic, in ms
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export const log = (...args) => console.error(...args);

export function connectionString(database) {
  const { user, host, port } = settings;
  return `postgres://${encodeURIComponent(user)}@${host}:${port}/${database}`;
}

/** Drop and recreate the peer's scratch database (connects to the `postgres` database). */
export async function resetDatabase(database) {
  await admin(async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${database}`);
  });
}

export async function dropDatabase(database) {
  await admin((client) => client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
}

async function admin(fn) {
  const client = new pg.Client({ connectionString: connectionString('postgres') });
  await client.connect();
  try {
    await fn(client);
  } finally {
    await client.end();
  }
}

/** Nearest-rank percentile on a sorted array, rounded to µs (same rule as `cogo bench bus`). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p));
  return Math.round(sorted[i] * 1000) / 1000;
}

async function waitUntil(what, condition, timeoutMs = 120000) {
  const deadline = now() + timeoutMs;
  while (!(await condition())) {
    if (now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/**
 * Run the four phases. `peer` is:
 *   { name, version, notes, bulkBatch,
 *     enqueueMany(ns), enqueueOne(n), startWorkers(handle), stopWorkers(), remaining() }
 * where `handle(n)` must be called by the peer's job handler as soon as it starts a job, and
 * `remaining()` returns how many jobs are still not completed in the peer's tables.
 */
export async function runWorkload(peer) {
  const { jobs, singles, latencyJobs, latencySpacingMs } = settings;
  const seen = new Map(); // n -> times handled
  const enqueuedAt = new Map(); // n -> time just before enqueue (phase 4 only)
  const latencies = [];
  let firstStart = null;
  const handle = (n) => {
    const t = now();
    if (firstStart === null) firstStart = t;
    seen.set(n, (seen.get(n) || 0) + 1);
    const sent = enqueuedAt.get(n);
    if (sent !== undefined) latencies.push(t - sent);
  };
  // payloads are only ever 0..total-1, so `seen.size` counts distinct jobs handled so far
  const handledAll = (to) => () => seen.size >= to;
  const drained = async () => (await peer.remaining()) === 0;

  // 1. bulk enqueue
  log(`${peer.name}: enqueueing ${jobs} jobs in batches of ${peer.bulkBatch}`);
  let t = now();
  for (let from = 0; from < jobs; from += peer.bulkBatch) {
    const ns = [];
    for (let n = from; n < Math.min(jobs, from + peer.bulkBatch); n++) ns.push(n);
    await peer.enqueueMany(ns);
  }
  const bulkPerS = jobs / ((now() - t) / 1000);

  // 2. drain: from the first handler start to the moment the peer's tables show nothing pending
  log(`${peer.name}: draining with concurrency ${settings.concurrency}`);
  await peer.startWorkers(handle);
  await waitUntil('the drain', handledAll(jobs));
  await waitUntil('the drain to be recorded', drained);
  const drainPerS = jobs / ((now() - firstStart) / 1000);

  // 3. single enqueues, one at a time, while the workers run
  log(`${peer.name}: ${singles} single enqueues`);
  const times = [];
  for (let i = 0; i < singles; i++) {
    t = now();
    await peer.enqueueOne(jobs + i);
    times.push(now() - t);
  }
  const singleTotal = times.reduce((a, b) => a + b, 0) / 1000;
  await waitUntil('the single jobs', handledAll(jobs + singles));
  await waitUntil('the single jobs to be recorded', drained);

  // 4. enqueue -> handler start, workers idle, one job every ~10 ms
  log(`${peer.name}: ${latencyJobs} jobs spaced ${latencySpacingMs} ms for latency`);
  await sleep(500); // let every worker go back to waiting
  const base = jobs + singles;
  const start = now();
  for (let i = 0; i < latencyJobs; i++) {
    const n = base + i;
    enqueuedAt.set(n, now());
    await peer.enqueueOne(n);
    const wait = start + (i + 1) * latencySpacingMs - now();
    if (wait > 0) await sleep(wait);
  }
  await waitUntil('the latency jobs', handledAll(base + latencyJobs), 30000);
  await waitUntil('the latency jobs to be recorded', drained, 30000);

  await peer.stopWorkers();
  const total = base + latencyJobs;
  let duplicates = 0;
  for (const count of seen.values()) duplicates += count - 1;
  const left = await peer.remaining();
  const lost = Math.max(total - seen.size, left);
  times.sort((a, b) => a - b);
  latencies.sort((a, b) => a - b);
  return {
    peer: peer.name,
    version: peer.version,
    jobs,
    concurrency: settings.concurrency,
    enqueue_bulk_per_s: Math.round(bulkPerS),
    enqueue_single_per_s: Math.round(singles / singleTotal),
    enqueue_single_p50_ms: percentile(times, 0.5),
    drain_per_s: Math.round(drainPerS),
    latency_ms: { p50: percentile(latencies, 0.5), p95: percentile(latencies, 0.95), p99: percentile(latencies, 0.99) },
    lost,
    duplicates,
    notes: peer.notes,
  };
}

/** Entry point for a peer script: reset its database, run, print one JSON line, always clean up. */
export async function main(name, database, makePeer) {
  let peer;
  try {
    await resetDatabase(database);
    peer = await makePeer(connectionString(database));
    const result = await runWorkload(peer);
    process.stdout.write(JSON.stringify(result) + '\n');
  } catch (err) {
    log(err);
    process.stdout.write(JSON.stringify({ peer: name, error: String(err?.message || err) }) + '\n');
    process.exitCode = 1;
  } finally {
    try {
      await peer?.close?.();
      await dropDatabase(database);
    } catch (err) {
      log(`${name}: cleanup: ${err?.message || err}`);
    }
  }
  // a peer may keep timers or pools alive after close; the result is printed, so leave now
  process.exit(process.exitCode ?? 0);
}
