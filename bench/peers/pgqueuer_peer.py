"""pgqueuer peer: one QueueManager dequeuing batches of 50 and running each job as an asyncio task
(pgqueuer's concurrency model), LISTEN/NOTIFY on (its default); asyncpg driver.

No per-entrypoint `concurrency_limit` is set: pgqueuer counts a finished job as picked until its
status buffer flushes (every 100 ms or `batch_size` jobs), so a limit of 16 with batches of 50
caps the drain near 160 jobs/s here (about 1200 jobs/s with batch_size 16). The figure reported
is pgqueuer as one would run it for throughput."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from importlib.metadata import version

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job

from peers_common import SETTINGS, Peer, main


async def make_peer(dsn: str) -> Peer:
    batch = SETTINGS["batch"]
    producer = Queries(AsyncpgDriver(await asyncpg.connect(dsn)))  # enqueues, installs, counts
    await producer.install()
    qm = QueueManager(Queries(AsyncpgDriver(await asyncpg.connect(dsn))))
    running: dict[str, asyncio.Task] = {}

    async def start_workers(handle) -> None:
        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            handle(int(job.payload))

        running["task"] = asyncio.create_task(qm.run(batch_size=batch, dequeue_timeout=timedelta(seconds=5)))

    async def stop_workers() -> None:
        qm.shutdown.set()
        await running["task"]

    async def remaining() -> int:
        rows = await producer.driver.fetch("SELECT count(*) AS n FROM pgqueuer")
        return int(rows[0]["n"])

    def enqueue_many(ns: list[int]):
        return producer.enqueue(["noop"] * len(ns), [str(n).encode() for n in ns], [0] * len(ns))

    return Peer(
        name="pgqueuer",
        version=version("pgqueuer"),
        notes=f"enqueue() lists of 1000; QueueManager.run batch_size {batch}, no concurrency_limit "
        "(a limit of 16 caps the drain near 160/s); LISTEN/NOTIFY; asyncpg, uvloop",
        bulk_batch=1000,
        enqueue_many=enqueue_many,
        enqueue_one=lambda n: producer.enqueue("noop", str(n).encode()),
        start_workers=start_workers,
        stop_workers=stop_workers,
        remaining=remaining,
    )


if __name__ == "__main__":
    main("pgqueuer", "cogo_bench_pgqueuer", make_peer)
