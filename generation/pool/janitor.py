"""Detecting dead workers and putting their jobs back, shared by workers and bot processes.

A worker that stops sending heartbeats for `stalled_after_seconds` (SIGKILL, lost machine,
frozen driver) is pruned from procrastinate's worker table; every job it held in `doing` goes
back to `todo` through procrastinate's `retry_job` (attempts + 1, same arguments, so the same
seeds), or fails once it was lost `max_attempts` times. Run by every worker on each heartbeat
and by the bot's backend on each poll, so jobs are recovered even while no worker is up.
"""

from __future__ import annotations

import json
import logging

from generation.pool import queries
from generation.pool.settings import PoolConfig

log = logging.getLogger(__name__)


async def requeue_stalled(conn, config: PoolConfig) -> int:  # psycopg.AsyncConnection
    """Re-queue (or fail) the jobs of dead workers; returns how many jobs were touched."""
    seconds = config.stalled_after_seconds
    async with conn.transaction():
        pruned = await (await conn.execute(queries.PRUNE_WORKERS, {"seconds": seconds})).fetchall()
        rows = await (
            await conn.execute(queries.STALLED_JOBS, {"queue": config.queue, "seconds": seconds})
        ).fetchall()
        for pid, attempts, job_id in rows:
            if attempts + 1 >= config.max_attempts:
                meta = {"error": f"The GPU worker was lost {attempts + 1} times; giving up."}
                await conn.execute(
                    queries.SAVE_RESULT,
                    {"job_id": job_id, "id": pid, "status": "failed",
                     "meta": json.dumps(meta), "images": None},
                )
                await conn.execute(queries.FINISH_JOB, {"id": pid, "status": "failed"})
                log.warning("job %s failed: its worker was lost %d times", job_id, attempts + 1)
            else:
                await conn.execute(queries.RETRY_JOB, {"id": pid})
                log.warning("job %s re-queued: its worker stopped sending heartbeats", job_id)
    if pruned:
        log.warning("pruned %d silent worker(s): %s", len(pruned), [r[0] for r in pruned])
    return len(rows)
