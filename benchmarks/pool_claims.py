"""How long the pool's fair claim takes on PostgreSQL with many jobs waiting.

Every worker claims under one advisory lock per queue, so claims are serialised: their
duration bounds how many batches per second the whole pool can start (the capacity plan in the
README uses this). Fills the queue with `--waiting` jobs from `--members` members over
`--servers` servers (through `PoolBackend.submit`, i.e. procrastinate's defer), then claims
batches of up to 8 images with an in-process worker that runs no model, and prints the
per-claim latency.

    python benchmarks/pool_claims.py                           # a throwaway PostgreSQL 15
    python benchmarks/pool_claims.py --dsn postgresql://...   # an existing, EMPTY database
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.params import GenerationParams
from generation.pool.backend import PoolBackend
from generation.pool.settings import PoolConfig
from generation.pool.worker import PoolWorker
from generation.request import GenerationRequest
from tests.pool.conftest import NoModel


async def measure(dsn: str, waiting: int, members: int, servers: int, claims: int) -> dict:
    # No heartbeats here: the claiming worker must not be taken for dead while measured.
    config = PoolConfig(
        dsn=dsn, max_queue=waiting + 1, max_queued_per_user=waiting,
        stalled_after_seconds=3600,
    )
    backend = PoolBackend(config, "none")
    await backend.start()
    started = time.perf_counter()
    for i in range(waiting):
        member = i % members
        request = GenerationRequest(
            GenerationParams(f"p{i}", seed=i, steps=25, count=4 if i % 3 else 2)
        )
        backend.submit(request, owner=f"{member % servers}:{member}")
    while backend.status.waiting < waiting:
        if time.perf_counter() - started > 600:
            raise TimeoutError("the jobs were not all deferred within 10 minutes")
        await asyncio.sleep(0.1)
    fill = time.perf_counter() - started
    worker = PoolWorker(NoModel(), config)
    durations = []
    images = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await worker.register(conn)
        for _ in range(claims):
            t0 = time.perf_counter()
            batch = await worker.claim(conn)
            durations.append(time.perf_counter() - t0)
            images.append(sum(job.request.params.count for job in batch))
    await backend.close(grace=0)
    durations.sort()
    return {
        "waiting": waiting,
        "members": members,
        "servers": servers,
        "defer_per_job_ms": 1000 * fill / waiting,
        "claims": claims,
        "claim_ms_median": 1000 * statistics.median(durations),
        "claim_ms_p95": 1000 * durations[int(0.95 * (len(durations) - 1))],
        "images_per_claim": statistics.mean(images),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an empty PostgreSQL database (default: a throwaway one)")
    parser.add_argument("--waiting", type=int, default=2000)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        from tests.postgres import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            parser.error("no PostgreSQL binaries found: pass --dsn")
        server = PostgresServer(bin_dir).start()
        name = server.create_database()
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/{name}"
    try:
        result = asyncio.run(measure(dsn, args.waiting, args.members, args.servers, args.claims))
    finally:
        if server is not None:
            server.stop()
    for key, value in result.items():
        print(f"{key:>18}: {value:.2f}" if isinstance(value, float) else f"{key:>18}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
