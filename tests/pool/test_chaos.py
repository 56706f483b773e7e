"""Chaos: 40 jobs from 10 members through the whole core (gate, quota, history, image store)
on PostgreSQL and the pool with two `imagine worker` processes; one worker is SIGKILLed in the
middle of a job and started again.

Every job must end exactly once, delivered or refunded, the killed job must run again from the
same seeds, and the quota ledger must balance: reserved = charged + refunded, job by job.
Images come from the tiny random-weight model (noise); the safety checker is off so that no
image is withheld (a withheld image's refund after the charge would be a third ledger case).
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator, JobPlan, OutcomeStatus, Requester
from bot.core.threads import Threads
from bot.db.models import JobStatus
from bot.db.session import open_database
from bot.services import build_services
from generation.pool.backend import PoolBackend
from generation.tiny import TINY_MODEL_ID
from tests.pool.conftest import Workers, pool_config
from tests.requests import make_request

pytestmark = pytest.mark.pool

MEMBERS = [(guild, user) for guild in (1, 2) for user in range(1, 6)]  # 10 members, 2 servers
JOBS_EACH = 4


async def doing_on(dsn: str, pid: int) -> int:
    """Jobs currently running on the worker process `pid`."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs j JOIN imagine_pool_workers w "
            "ON w.worker_id = j.worker_id WHERE j.status = 'doing' AND w.pid = %s",
            (pid,),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_sigkilled_worker_mid_job_loses_nothing_and_charges_once(
    pg_url: str, tiny_cache: Path, tmp_path: Path
) -> None:
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    # Started first: loading torch and the model is the slowest part of the test.
    workers = Workers(dsn, tiny_cache, tmp_path, IMAGINE_MODEL__SAFETY_CHECKER="false")
    victim = workers.start("victim")
    workers.start("steady")
    db_engine, sessions = await open_database(pg_url)
    services = build_services(sessions, default_limit=1000)
    backend = PoolBackend(
        pool_config(dsn, tmp_path, max_queued_per_user=JOBS_EACH), TINY_MODEL_ID
    )
    threads = Threads()
    orchestrator = JobOrchestrator(services, backend, ImageStore(tmp_path / "images", threads))
    try:
        await backend.start()
        submissions = []
        for round_ in range(JOBS_EACH):
            for guild, user in MEMBERS:
                request = make_request(
                    f"prompt {guild}/{user}/{round_}",
                    width=64, height=64, steps=6 + round_ % 2, count=1 + user % 2,
                )
                requester = Requester(guild_id=guild, channel_id=guild * 10, user_id=user)
                submissions.append(await orchestrator.submit(requester, JobPlan(request)))
        followers = [asyncio.create_task(orchestrator.run(sub)) for sub in submissions]
        # Two cancellations (queued or already running): refunded, never charged.
        cancelled = {submissions[-1].job_id, submissions[-2].job_id}
        for job_id in cancelled:
            assert orchestrator.cancel(job_id)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not await doing_on(dsn, victim.pid):
            assert loop.time() < deadline, f"the victim never ran a job\n{workers.logs()}"
            assert victim.poll() is None, workers.logs()
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        await asyncio.sleep(1)
        workers.start("restarted")

        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*followers), 240)
        except TimeoutError:
            raise AssertionError(f"jobs did not all end\n{workers.logs()}") from None
    finally:
        workers.stop_all()
        await backend.close(grace=5)
        await db_engine.dispose()
        threads.close()

    # Exactly one outcome per job; the cancelled ones cancelled, every other one delivered.
    assert len(outcomes) == 40
    assert len({o.job_id for o in outcomes}) == 40
    by_id = {o.job_id: o for o in outcomes}
    statuses = Counter(o.status for o in outcomes)
    assert statuses == {OutcomeStatus.SUCCEEDED: 38, OutcomeStatus.CANCELLED: 2}, statuses
    assert {job_id for job_id, o in by_id.items() if o.status is OutcomeStatus.CANCELLED} == (
        cancelled
    )
    for sub in submissions:
        outcome = by_id[sub.job_id]
        if outcome.status is OutcomeStatus.SUCCEEDED:
            assert list(outcome.seeds) == sub.request.seeds  # re-runs use the same seeds
            assert len(outcome.images) == sub.request.params.count

    # The ledger balances job by job: one reserve, then one charge or one refund of it all.
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        rows = await (
            await conn.execute(
                "SELECT job_id, kind, n FROM usage_ledger WHERE job_id IS NOT NULL"
            )
        ).fetchall()
        retried = await (
            await conn.execute(
                "SELECT count(*) FROM procrastinate_events WHERE type = 'deferred_for_retry'"
            )
        ).fetchone()
        history = dict(
            await (await conn.execute("SELECT id, status FROM jobs")).fetchall()
        )
        leftovers = await (
            await conn.execute("SELECT count(*) FROM imagine_pool_results")
        ).fetchone()
    ledger: dict[str, dict[str, int]] = {}
    for job_id, kind, n in rows:
        assert kind not in ledger.setdefault(job_id, {}), (job_id, kind)
        ledger[job_id][kind] = n
    assert set(ledger) == set(by_id)
    for job_id, entries in ledger.items():
        settled = set(entries) - {"reserve"}
        assert len(settled) == 1, (job_id, entries)
        assert entries["reserve"] == sum(entries[k] for k in settled)
        expected_kind = "refund" if job_id in cancelled else "charge"
        assert settled == {expected_kind}
    assert history == {
        job_id: (JobStatus.CANCELLED if job_id in cancelled else JobStatus.SUCCEEDED).value
        for job_id in by_id
    }
    reserved = sum(e["reserve"] for e in ledger.values())
    charged = sum(e.get("charge", 0) for e in ledger.values())
    refunded = sum(e.get("refund", 0) for e in ledger.values())
    assert reserved == charged + refunded
    # The killed worker's job was put back and run again; nothing was left behind.
    assert retried is not None and retried[0] >= 1
    assert leftovers == (0,)
