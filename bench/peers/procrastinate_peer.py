"""procrastinate peer: one worker with `concurrency` async slots, LISTEN/NOTIFY on (its default).
procrastinate fetches one job per query; it has no batch fetch."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import procrastinate

from peers_common import SETTINGS, Peer, main


async def make_peer(dsn: str) -> Peer:
    concurrency = SETTINGS["concurrency"]
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=4, max_size=concurrency + 4)
    )
    handler = {}

    @app.task(name="noop")
    async def noop(n: int) -> None:
        handler["handle"](n)

    await app.open_async()
    await app.schema_manager.apply_schema_async()
    worker: dict[str, asyncio.Task] = {}

    async def start_workers(handle) -> None:
        handler["handle"] = handle
        worker["task"] = asyncio.create_task(
            app.run_worker_async(
                concurrency=concurrency,
                wait=True,
                listen_notify=True,
                install_signal_handlers=False,
                delete_jobs="never",
            )
        )

    async def stop_workers() -> None:
        worker["task"].cancel()
        try:
            await worker["task"]
        except asyncio.CancelledError:
            pass

    async def remaining() -> int:
        row = await app.connector.execute_query_one_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
        return row["n"]

    return Peer(
        name="procrastinate",
        version=version("procrastinate"),
        notes=f"batch_defer_async() batches of 1000; run_worker_async concurrency {concurrency}, "
        "one job per fetch (no batch fetch); LISTEN/NOTIFY; psycopg 3, uvloop",
        bulk_batch=1000,
        enqueue_many=lambda ns: noop.batch_defer_async(*({"n": n} for n in ns)),
        enqueue_one=lambda n: noop.defer_async(n=n),
        start_workers=start_workers,
        stop_workers=stop_workers,
        remaining=remaining,
        close=app.close_async,
    )


if __name__ == "__main__":
    main("procrastinate", "cogo_bench_procrastinate", make_peer)
