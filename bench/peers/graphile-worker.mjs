// graphile-worker peer: one runner with `concurrency` jobs at once, a local queue of 50 (batch
// fetch), batched completions, LISTEN/NOTIFY as it does by default.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { Logger, makeWorkerUtils, run } from 'graphile-worker';
import { log, main, settings } from './common.mjs';

const TASK = 'noop';
const { version } = JSON.parse(readFileSync(new URL('./node_modules/graphile-worker/package.json', import.meta.url)));
// warnings and errors to stderr, nothing else
const logger = new Logger(() => (level, message) => {
  if (level === 'error' || level === 'warning') log(`graphile-worker ${level}: ${message}`);
});

main('graphile-worker', 'cogo_bench_graphile_worker', async (url) => {
  const utils = await makeWorkerUtils({ connectionString: url, logger });
  await utils.migrate();
  const probe = new pg.Client({ connectionString: url }); // for counting what is left
  await probe.connect();
  let runner;
  return {
    name: 'graphile-worker',
    version,
    notes: `addJobs() batches of 1000; concurrency ${settings.concurrency}, localQueue.size ${settings.batch}, completeJobBatchDelay 0; LISTEN/NOTIFY; node ${process.versions.node}`,
    bulkBatch: 1000,
    enqueueMany: (ns) => utils.addJobs(ns.map((n) => ({ identifier: TASK, payload: { n } }))),
    enqueueOne: (n) => utils.addJob(TASK, { n }),
    startWorkers: async (handle) => {
      runner = await run({
        connectionString: url,
        concurrency: settings.concurrency,
        maxPoolSize: settings.concurrency + 4,
        noHandleSignals: true,
        pollInterval: 2000,
        logger,
        crontab: '',
        taskList: { [TASK]: async (payload) => handle(payload.n) },
        preset: { worker: { localQueue: { size: settings.batch }, completeJobBatchDelay: 0 } },
      });
    },
    stopWorkers: () => runner.stop(),
    remaining: async () => Number((await probe.query('SELECT count(*) FROM graphile_worker._private_jobs')).rows[0].count),
    close: async () => {
      await probe.end();
      await utils.release();
    },
  };
});
