"""The workload of `cogo bench bus`, shared by the Python peers (the twin of common.mjs).

A peer supplies enqueue/worker/queue-depth coroutines; this module times the four phases and
prints one JSON line on stdout. Logs go to stderr. Job identity is the payload's `n`, so
duplicates and losses are counted by the benchmark itself, not by the peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import psycopg

SETTINGS = {
    "host": os.environ.get("PEERS_DATABASE_HOST", "127.0.0.1"),
    "port": int(os.environ.get("PEERS_DATABASE_PORT", "5432")),
    "user": os.environ.get("PEERS_DATABASE_USER", "postgres"),
    "jobs": int(os.environ.get("PEERS_JOBS", "20000")),
    "concurrency": int(os.environ.get("PEERS_CONCURRENCY", "16")),
    "batch": 50,  # fetch batch size where the peer has batch fetching
    "singles": 1000,  # phase 3
    "latency_jobs": 200,  # phase 4
    "latency_spacing_ms": 10,
}


def now() -> float:
    """Monotonic time in ms."""
    return time.perf_counter() * 1000.0


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def url(database: str) -> str:
    s = SETTINGS
    return f"postgresql://{s['user']}@{s['host']}:{s['port']}/{database}"


async def _admin(sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(url("postgres"), autocommit=True) as conn:
        await conn.execute(sql)


async def reset_database(database: str) -> None:
    await _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    await _admin(f"CREATE DATABASE {database}")


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile, rounded to µs (same rule as `cogo bench bus`)."""
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, round((len(sorted_values) - 1) * p))
    return round(sorted_values[i], 3)


@dataclass
class Peer:
    """What a peer script provides. `handle(n)` must be called when a job handler starts;
    `remaining()` counts the jobs not yet completed in the peer's tables."""

    name: str
    version: str
    notes: str
    bulk_batch: int
    enqueue_many: Callable[[list[int]], Awaitable[object]]
    enqueue_one: Callable[[int], Awaitable[object]]
    start_workers: Callable[[Callable[[int], None]], Awaitable[None]]
    stop_workers: Callable[[], Awaitable[None]]
    remaining: Callable[[], Awaitable[int]]
    close: Callable[[], Awaitable[None]] = field(default=lambda: asyncio.sleep(0))


async def _wait_until(what: str, condition: Callable[[], Awaitable[bool]], timeout_ms: float = 120_000) -> None:
    deadline = now() + timeout_ms
    while not await condition():
        if now() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run_workload(peer: Peer) -> dict:
    s = SETTINGS
    jobs, singles, latency_jobs, spacing = s["jobs"], s["singles"], s["latency_jobs"], s["latency_spacing_ms"]
    seen: dict[int, int] = {}  # n -> times handled
    enqueued_at: dict[int, float] = {}  # n -> time just before enqueue (phase 4 only)
    latencies: list[float] = []
    first_start: list[float] = []

    def handle(n: int) -> None:
        t = now()
        if not first_start:
            first_start.append(t)
        seen[n] = seen.get(n, 0) + 1
        sent = enqueued_at.get(n)
        if sent is not None:
            latencies.append(t - sent)

    # payloads are only ever 0..total-1, so len(seen) counts distinct jobs handled so far
    def handled_all(to: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(seen) >= to

        return check

    async def drained() -> bool:
        return await peer.remaining() == 0

    # 1. bulk enqueue
    log(f"{peer.name}: enqueueing {jobs} jobs in batches of {peer.bulk_batch}")
    t = now()
    for start in range(0, jobs, peer.bulk_batch):
        await peer.enqueue_many(list(range(start, min(jobs, start + peer.bulk_batch))))
    bulk_per_s = jobs / ((now() - t) / 1000)

    # 2. drain: from the first handler start to the moment the peer's tables show nothing pending
    log(f"{peer.name}: draining with concurrency {s['concurrency']}")
    await peer.start_workers(handle)
    await _wait_until("the drain", handled_all(jobs))
    await _wait_until("the drain to be recorded", drained)
    drain_per_s = jobs / ((now() - first_start[0]) / 1000)

    # 3. single enqueues, one at a time, while the workers run
    log(f"{peer.name}: {singles} single enqueues")
    times = []
    for i in range(singles):
        t = now()
        await peer.enqueue_one(jobs + i)
        times.append(now() - t)
    single_total = sum(times) / 1000
    await _wait_until("the single jobs", handled_all(jobs + singles))
    await _wait_until("the single jobs to be recorded", drained)

    # 4. enqueue -> handler start, workers idle, one job every ~10 ms
    log(f"{peer.name}: {latency_jobs} jobs spaced {spacing} ms for latency")
    await asyncio.sleep(0.5)  # let every worker go back to waiting
    base = jobs + singles
    start = now()
    for i in range(latency_jobs):
        n = base + i
        enqueued_at[n] = now()
        await peer.enqueue_one(n)
        wait = start + (i + 1) * spacing - now()
        if wait > 0:
            await asyncio.sleep(wait / 1000)
    await _wait_until("the latency jobs", handled_all(base + latency_jobs), 30_000)
    await _wait_until("the latency jobs to be recorded", drained, 30_000)

    await peer.stop_workers()
    total = base + latency_jobs
    duplicates = sum(c - 1 for c in seen.values())
    lost = max(total - len(seen), await peer.remaining())
    times.sort()
    latencies.sort()
    return {
        "peer": peer.name,
        "version": peer.version,
        "jobs": jobs,
        "concurrency": s["concurrency"],
        "enqueue_bulk_per_s": round(bulk_per_s),
        "enqueue_single_per_s": round(singles / single_total),
        "enqueue_single_p50_ms": percentile(times, 0.5),
        "drain_per_s": round(drain_per_s),
        "latency_ms": {p: percentile(latencies, q) for p, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "lost": lost,
        "duplicates": duplicates,
        "notes": peer.notes,
    }


def main(name: str, database: str, make_peer: Callable[[str], Awaitable[Peer]]) -> None:
    """Entry point for a peer script: reset its database, run, print one JSON line, clean up."""

    async def go() -> int:
        peer = None
        code = 0
        try:
            await reset_database(database)
            peer = await make_peer(url(database))
            result = await run_workload(peer)
            print(json.dumps(result), flush=True)
        except Exception as err:  # report any failure as the peer's error line
            log(f"{name}: {type(err).__name__}: {err}")
            print(json.dumps({"peer": name, "error": f"{type(err).__name__}: {err}"}), flush=True)
            code = 1
        finally:
            try:
                if peer is not None:
                    await peer.close()
                await _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            except Exception as err:
                log(f"{name}: cleanup: {err}")
        return code

    try:
        import uvloop  # the event loop these libraries recommend; installed with pgqueuer

        code = uvloop.run(go())
    except ImportError:
        code = asyncio.run(go())
    sys.exit(code)
