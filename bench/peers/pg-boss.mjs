// pg-boss peer: one queue with NOTIFY on, `localConcurrency` workers each fetching batches of 50.
// Every local worker wakes on each NOTIFY and fetches, so with 16 of them a single send() and the
// enqueue->start latency are several times slower on 2 cores than with localConcurrency 1.
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { PgBoss } from 'pg-boss';
import { log, main, settings } from './common.mjs';

const QUEUE = 'bench';
const { version } = JSON.parse(readFileSync(new URL('./node_modules/pg-boss/package.json', import.meta.url)));

main('pg-boss', 'cogo_bench_pg_boss', async (url) => {
  const boss = new PgBoss({ connectionString: url, max: settings.concurrency + 4, useListenNotify: true, schedule: false });
  boss.on('error', (err) => log('pg-boss error:', err));
  await boss.start();
  await boss.createQueue(QUEUE, { notify: true });
  const probe = new pg.Client({ connectionString: url }); // for counting what is left
  await probe.connect();
  return {
    name: 'pg-boss',
    version,
    notes: `insert() batches of 1000; work() localConcurrency ${settings.concurrency}, batchSize ${settings.batch}, burstWhenBatchFull; LISTEN/NOTIFY (queue notify); node ${process.versions.node}`,
    bulkBatch: 1000,
    enqueueMany: (ns) => boss.insert(QUEUE, ns.map((n) => ({ data: { n } }))),
    enqueueOne: (n) => boss.send(QUEUE, { n }),
    startWorkers: (handle) =>
      boss.work(
        QUEUE,
        { localConcurrency: settings.concurrency, batchSize: settings.batch, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true },
        async (jobs) => {
          for (const job of jobs) handle(job.data.n);
        },
      ),
    stopWorkers: () => boss.offWork(QUEUE),
    remaining: async () =>
      Number((await probe.query(`SELECT count(*) FROM pgboss.job WHERE name = $1 AND state <> 'completed'`, [QUEUE])).rows[0].count),
    close: async () => {
      await probe.end();
      await boss.stop({ graceful: false, close: true });
    },
  };
});
