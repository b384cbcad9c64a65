"""pgmq peer: pgmq's own SQL, as shipped in the PyPI package `pgmq` (pgmq/sql/pgmq.sql) and
installed as plain SQL functions (no C extension), driven over asyncpg.

pgmq is a queue, not a job runner, so the worker loop is ours: `concurrency` asyncio workers, each
on its own connection, pgmq.read() up to 50 messages (visibility timeout 30 s), handle them and
pgmq.delete() them in one call. Idle workers wait for pgmq's insert NOTIFY (enable_notify_insert
with throttle 0, i.e. one NOTIFY per inserting transaction), with a 1 s poll as a backstop.
That trigger runs per inserted row and costs send_batch(): about 30k/s without it here against
about 5k/s with it, but without it a waiting worker only sees a new job at its next poll."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version

import asyncpg
from pgmq.install import get_embedded_install_sql, get_embedded_sql_version, install_pgmq_sql

from peers_common import SETTINGS, Peer, main

QUEUE = "bench"


async def make_peer(dsn: str) -> Peer:
    concurrency, batch = SETTINGS["concurrency"], SETTINGS["batch"]
    install_pgmq_sql(get_embedded_install_sql(), dsn=dsn)
    producer = await asyncpg.connect(dsn)  # enqueues and counts
    await producer.execute("SELECT pgmq.create($1)", QUEUE)
    await producer.execute("SELECT pgmq.enable_notify_insert($1, 0)", QUEUE)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    listener = await asyncpg.connect(dsn)
    wake = {"event": asyncio.Event()}  # replaced on every NOTIFY; a worker waits on the one it saw
    stopping = asyncio.Event()
    workers: list[asyncio.Task] = []

    def on_notify(*_args: object) -> None:
        event, wake["event"] = wake["event"], asyncio.Event()
        event.set()

    await listener.add_listener(f"pgmq.q_{QUEUE}.INSERT", on_notify)

    async def worker(handle) -> None:
        async with pool.acquire() as conn:
            while not stopping.is_set():
                event = wake["event"]
                rows = await conn.fetch("SELECT msg_id, message FROM pgmq.read($1, 30, $2)", QUEUE, batch)
                if rows:
                    for row in rows:
                        handle(json.loads(row["message"])["n"])
                    await conn.execute("SELECT pgmq.delete($1, $2::bigint[])", QUEUE, [r["msg_id"] for r in rows])
                    continue
                try:
                    await asyncio.wait_for(event.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass

    async def start_workers(handle) -> None:
        workers.extend(asyncio.create_task(worker(handle)) for _ in range(concurrency))

    async def stop_workers() -> None:
        stopping.set()
        on_notify()
        await asyncio.gather(*workers)

    async def close() -> None:
        await listener.close()
        await pool.close()
        await producer.close()

    async def remaining() -> int:
        return await producer.fetchval(f"SELECT count(*) FROM pgmq.q_{QUEUE}")

    return Peer(
        name="pgmq",
        version=get_embedded_sql_version(),
        notes=f"SQL-only install from PyPI pgmq {version('pgmq')}; send_batch() of 1000; {concurrency} workers "
        f"read {batch} + delete batch, vt 30 s; NOTIFY on insert (throttle 0; its per-row trigger slows send_batch) + 1 s poll; asyncpg, uvloop",
        bulk_batch=1000,
        enqueue_many=lambda ns: producer.execute(
            "SELECT pgmq.send_batch($1, $2::jsonb[])", QUEUE, [json.dumps({"n": n}) for n in ns]
        ),
        enqueue_one=lambda n: producer.execute("SELECT pgmq.send($1, $2::jsonb)", QUEUE, json.dumps({"n": n})),
        start_workers=start_workers,
        stop_workers=stop_workers,
        remaining=remaining,
        close=close,
    )


if __name__ == "__main__":
    main("pgmq", "cogo_bench_pgmq", make_peer)
