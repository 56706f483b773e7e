"""A pool job is a procrastinate task deferred in the bot's own transaction: it exists exactly
when its quota reservation and history row do.

On a real PostgreSQL (one database for the bot's tables and the pool's), through both drivers
the bot's SQLAlchemy engine can use: asyncpg (procrastinate's query on the asyncpg connection,
`generation.pool.enlist.AsyncpgConnector`) and psycopg (procrastinate's own `connection=`
deferral). A transaction that rolls back, whatever the reason, leaves no task; one that commits
leaves exactly one, identical to what `defer_async` writes; a real `imagine worker` runs it.
The tiny model has random weights: its images are noise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator, JobPlan, OutcomeStatus, Requester
from bot.core.threads import Threads
from bot.db.session import create_engine, session_factory
from bot.errors import QuotaExceeded
from bot.services import Services, build_services
from generation.errors import GenerationError, QueueFullError
from generation.events import JobCancelled
from generation.pool.backend import OTHER_DATABASE, PoolBackend
from generation.request import GenerationRequest
from generation.tiny import TINY_MODEL_ID
from tests.generation.conftest import tiny_cache  # noqa: F401  (session fixture)
from tests.pool.conftest import Workers, libpq, pool_config, wait_for
from tests.postgres import PostgresServer
from tests.requests import make_request

pytestmark = pytest.mark.pool

DRIVERS = ("asyncpg", "psycopg")
#: The columns a worker reads from a task row (besides its id and state).
TASK_COLUMNS = (
    "queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at, status::text, "
    "attempts"
)


def small(prompt: str = "a red fox", **fields: object) -> GenerationRequest:
    values: dict[str, object] = {"width": 64, "height": 64, "steps": 3, "count": 2, "seed": 7}
    values.update(fields)
    return make_request(prompt, **values)


@dataclass
class Bot:
    """The core of one bot process on the shared database: services, pool client, gate."""

    engine: AsyncEngine
    services: Services
    backend: PoolBackend
    orchestrator: JobOrchestrator
    dsn: str


@pytest.fixture
async def bot(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> AsyncIterator[Bot]:
    """The gate on `pg_url` (migrated) through the driver `request.param` (default asyncpg),
    with a member quota of 4 images, and a started pool backend on the same database (its
    schema created by `start`); at most 2 waiting jobs per member."""
    driver = getattr(request, "param", "asyncpg")
    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    engine = create_engine(pg_url.replace("+asyncpg", f"+{driver}"))
    services = build_services(session_factory(engine), default_limit=4)
    backend = PoolBackend(pool_config(dsn, tmp_path, max_queued_per_user=2), TINY_MODEL_ID)
    threads = Threads()
    orchestrator = JobOrchestrator(services, backend, ImageStore(tmp_path / "images", threads))
    await backend.start()
    try:
        yield Bot(engine, services, backend, orchestrator, dsn)
    finally:
        await backend.close(grace=1)
        await engine.dispose()
        threads.close()


async def rows(dsn: str, sql: str, *params: object) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await (await conn.execute(sql, params)).fetchall()


async def tasks(dsn: str) -> list[str]:
    """The bot job ids of every procrastinate task in the database."""
    return [r[0] for r in await rows(dsn, "SELECT args->>'job_id' FROM procrastinate_jobs")]


async def stored(dsn: str) -> tuple[list[str], list[str]]:
    """(history job ids, reserved ledger job ids)."""
    history = [r[0] for r in await rows(dsn, "SELECT id FROM jobs")]
    reserved = [
        r[0] for r in await rows(dsn, "SELECT job_id FROM usage_ledger WHERE kind = 'reserve'")
    ]
    return history, reserved


ALICE = Requester(guild_id=1, channel_id=10, user_id=100)


@pytest.mark.parametrize("bot", DRIVERS, indirect=True)
async def test_committed_job_has_exactly_one_task_and_refused_ones_none(bot: Bot) -> None:
    first = await bot.orchestrator.submit(ALICE, JobPlan(small()))
    assert await tasks(bot.dsn) == [first.job_id]
    assert await stored(bot.dsn) == ([first.job_id], [first.job_id])

    # Refused by the quota (2 + 4 > 4): reserved nothing, recorded nothing, queued nothing.
    with pytest.raises(QuotaExceeded):
        await bot.orchestrator.submit(ALICE, JobPlan(small(count=4)))
    assert await tasks(bot.dsn) == [first.job_id]
    assert await stored(bot.dsn) == ([first.job_id], [first.job_id])
    assert bot.backend.pending_for(ALICE.owner) == 1


@pytest.mark.parametrize("bot", DRIVERS, indirect=True)
async def test_error_after_the_task_is_deferred_rolls_it_back(bot: Bot) -> None:
    """The member's share of the queue is full (2 waiting): `submit` refuses after `enlist`
    deferred the third task in the same transaction, so the task goes with the rollback."""
    bob = Requester(guild_id=1, channel_id=10, user_id=200)
    kept = [
        (await bot.orchestrator.submit(bob, JobPlan(small(count=1)))).job_id for _ in range(2)
    ]
    with pytest.raises(QueueFullError):
        await bot.orchestrator.submit(bob, JobPlan(small(count=1)))
    assert sorted(await tasks(bot.dsn)) == sorted(kept)
    history, reserved = await stored(bot.dsn)
    assert sorted(history) == sorted(reserved) == sorted(kept)
    assert bot.backend.pending_for(bob.owner) == 2


@pytest.mark.parametrize("bot", DRIVERS, indirect=True)
async def test_task_is_invisible_until_commit_and_gone_after_rollback(bot: Bot) -> None:
    request = small().validated(bot.backend.limits)
    async with bot.services.transaction() as session:
        await bot.backend.enlist(await session.connection(), request, "1:1", "committed")
        job = bot.backend.submit(request, owner="1:1", job_id="committed")
        assert await tasks(bot.dsn) == []  # other connections do not see it yet
    assert await tasks(bot.dsn) == ["committed"]
    assert bot.backend.job("committed") is job

    with pytest.raises(RuntimeError, match="injected"):
        async with bot.services.transaction() as session:
            await bot.backend.enlist(await session.connection(), request, "1:1", "rolled-back")
            orphan = bot.backend.submit(request, owner="1:1", job_id="rolled-back")
            raise RuntimeError("injected after the enlist")
    assert await tasks(bot.dsn) == ["committed"]
    # The caller cancels the handle after the rollback: it ends at once, refunded by nobody
    # since nothing was reserved, and the backend forgets it.
    assert orphan.cancel()
    await wait_for(lambda: orphan.done(), 10, "the orphan to end")
    assert isinstance(orphan.history[-1], JobCancelled)
    assert bot.backend.job("rolled-back") is None
    assert bot.backend.job("committed") is job


async def test_enlisted_rows_are_the_rows_defer_async_writes(bot: Bot) -> None:
    """The same request deferred three ways (procrastinate's `defer_async` on the pool's
    connection, and enlisted through asyncpg and through psycopg) gives identical rows,
    but for the job id (in the arguments and the queueing lock) and the owner."""
    request = small(prompt="same row").validated(bot.backend.limits)
    # One owner each: a member may have only 2 jobs waiting here.
    bot.backend.submit(request, owner="1:plain", job_id="plain")  # defer_async, background
    engines = {"asyncpg": bot.engine}
    psycopg_engine = create_engine(
        bot.engine.url.render_as_string(hide_password=False).replace("+asyncpg", "+psycopg")
    )
    engines["psycopg"] = psycopg_engine
    try:
        for driver, engine in engines.items():
            async with engine.begin() as connection:
                await bot.backend.enlist(connection, request, f"1:{driver}", driver)
                bot.backend.submit(request, owner=f"1:{driver}", job_id=driver)
    finally:
        await psycopg_engine.dispose()

    async def row(job_id: str) -> tuple:
        for _ in range(100):
            found = await rows(
                bot.dsn,
                f"SELECT {TASK_COLUMNS} FROM procrastinate_jobs WHERE args->>'job_id' = %s",
                job_id,
            )
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no task for {job_id}")

    def comparable(values: tuple, job_id: str) -> tuple:
        queue, task, priority, lock, queueing_lock, args, *rest = values
        assert queueing_lock == args.pop("job_id") == job_id
        assert args.pop("owner") == f"1:{job_id}"
        return (queue, task, priority, lock, args, *rest)

    reference = comparable(await row("plain"), "plain")
    assert reference[:2] == ("imagine", "imagine.generate")
    for driver in DRIVERS:
        assert comparable(await row(driver), driver) == reference, driver


async def test_a_pool_in_another_database_refuses_to_enlist(
    bot: Bot, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    other = postgres_server.create_database()
    elsewhere = PoolBackend(
        pool_config(libpq(postgres_server, other), tmp_path / "other"), TINY_MODEL_ID
    )
    await elsewhere.start()
    try:
        request = small().validated(elsewhere.limits)
        with pytest.raises(GenerationError, match="not the bot's database") as caught:
            async with bot.services.transaction() as session:
                await elsewhere.enlist(await session.connection(), request, "1:1", "lost")
        assert str(caught.value) == OTHER_DATABASE
        assert await tasks(bot.dsn) == []
        assert await tasks(libpq(postgres_server, other)) == []
    finally:
        await elsewhere.close(grace=1)
        postgres_server.drop_database(other)


@pytest.mark.parametrize("bot", DRIVERS, indirect=True)
async def test_an_enlisted_job_is_run_by_a_real_worker_and_charged_once(
    bot: Bot, tiny_cache: Path, tmp_path: Path  # noqa: F811
) -> None:
    """Through the whole gate: reserved, recorded and deferred in one transaction, then a
    worker process claims it, the bot delivers the images and charges them (the safety
    checker is off, so no noise image is withheld and refunded)."""
    workers = Workers(bot.dsn, tiny_cache, tmp_path, IMAGINE_MODEL__SAFETY_CHECKER="false")
    workers.start("a")
    try:
        submission = await bot.orchestrator.submit(ALICE, JobPlan(small()))
        outcome = await asyncio.wait_for(bot.orchestrator.run(submission), 120)
    except TimeoutError:
        raise AssertionError(f"the job did not end\n{workers.logs()}") from None
    finally:
        workers.stop_all()
    assert outcome.status is OutcomeStatus.SUCCEEDED, outcome
    assert list(outcome.seeds) == [7, 8] and len(outcome.images) == 2
    ledger = await rows(
        bot.dsn, "SELECT kind, n FROM usage_ledger WHERE job_id = %s ORDER BY id",
        submission.job_id,
    )
    assert [(str(kind), n) for kind, n in ledger] == [("reserve", 2), ("charge", 2)]
    [(status,)] = await rows(
        bot.dsn, "SELECT status::text FROM procrastinate_jobs WHERE args->>'job_id' = %s",
        submission.job_id,
    )
    assert status == "succeeded"


@pytest.mark.parametrize("bot", DRIVERS, indirect=True)
async def test_a_job_id_already_waiting_is_refused_by_its_queueing_lock(bot: Bot) -> None:
    """procrastinate's queueing lock (= job id) holds on both drivers: deferring a waiting
    job id again is refused as procrastinate's `AlreadyEnqueued`, and rolls back."""
    request = small().validated(bot.backend.limits)
    async with bot.services.transaction() as session:
        await bot.backend.enlist(await session.connection(), request, "1:1", "twice")
        bot.backend.submit(request, owner="1:1", job_id="twice")
    with pytest.raises(GenerationError, match="AlreadyEnqueued"):
        async with bot.services.transaction() as session:
            await bot.backend.enlist(await session.connection(), request, "1:1", "twice")
    assert await tasks(bot.dsn) == ["twice"]
