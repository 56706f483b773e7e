"""PostgreSQL storage per /imagine job, and the storage path's rate from one process.

Starts a throwaway PostgreSQL (tests/postgres.py: the installed server binaries, durability
off), migrates it, then runs N jobs through the real services, 8 at a time, each the whole
storage path of a delivered job: quota reserve, history record, running, succeeded, charge.
Prints the rate and the bytes each table (with its indexes) holds per job.

    python benchmarks/postgres_storage.py [--jobs 2000] [--concurrency 8]

With fsync off the rate is an upper bound for this machine; the sizes do not depend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.postgres, from a checkout

from bot.db.session import create_engine, session_factory
from bot.services import build_services
from bot.services.history import JobRecord
from generation.params import GenerationParams
from tests.postgres import PostgresServer, app_template, find_bin_dir

PROMPT = "a watercolour fox in the snow, highly detailed, number {i}"


async def run(url: str, jobs: int, concurrency: int) -> None:
    engine = create_engine(url)
    services = build_services(session_factory(engine), default_limit=None)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        job_id = uuid.uuid4().hex
        guild, user = 1000 + i % 50, 5000 + i % 400
        async with slots:
            await services.quota.reserve(guild, user, [], 4, job_id)
            await services.history.create_job(
                JobRecord(guild, 42, user, GenerationParams(PROMPT.format(i=i), seed=i),
                          "runwayml/stable-diffusion-v1-5", id=job_id)
            )
            await services.history.mark_running(job_id)
            await services.history.mark_succeeded(job_id, range(i, i + 4), [False] * 4, 1.2)
            await services.quota.charge(job_id)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    elapsed = time.perf_counter() - start
    async with engine.connect() as conn:
        sizes = (await conn.execute(text(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_statio_user_tables "
            "ORDER BY 2 DESC"
        ))).all()
    await engine.dispose()
    print(f"{jobs} jobs, {concurrency} at a time: {elapsed:.1f} s, {jobs / elapsed:.0f} jobs/s")
    for name, size in sizes:
        print(f"  {name:16s} {size / 1024:8.0f} KiB  {size / jobs:6.0f} B/job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries (install the Debian package postgresql)")
    server = PostgresServer(bin_dir).start()
    try:
        database = server.create_database(template=app_template(server))
        asyncio.run(run(server.url(database), args.jobs, args.concurrency))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
