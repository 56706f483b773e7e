"""The pool's claim query on a real PostgreSQL: global fairness (servers, then members, take
turns; each member's jobs in order) and batching of compatible jobs, checked claim by claim
with an in-process worker that never runs a model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from generation.pool.backend import PoolBackend
from generation.pool.worker import PoolWorker
from generation.request import GenerationRequest
from tests.pool.conftest import NoModel, pool_config, wait_for
from tests.requests import make_request

pytestmark = pytest.mark.pool


def request(steps: int = 3, count: int = 1) -> GenerationRequest:
    return make_request("p", width=64, height=64, steps=steps, count=count, seed=1)


@pytest.fixture
async def conn(pool_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(pool_dsn, autocommit=True) as connection:
        yield connection


async def submitted(
    backend: PoolBackend, jobs: list[tuple[str, GenerationRequest]], relax: tuple[int, ...] = ()
) -> dict:
    """Submit `jobs` in order (those at the indexes in `relax` as relax jobs)."""
    by_id = {}
    for index, (owner, req) in enumerate(jobs):
        job = backend.submit(req, owner=owner, tier="relax" if index in relax else "fast")
        by_id[job.id] = owner
        await wait_for(lambda: backend.queue_length() == len(by_id) and backend.status.polled, 10)
        await wait_for(lambda: backend.status.waiting == len(by_id), 10, "the job in the table")
    return by_id


async def claims(worker: PoolWorker, conn: psycopg.AsyncConnection) -> list[list[str]]:
    order = []
    while batch := await worker.claim(conn):
        order.append([job.owner for job in batch])
    return order


async def test_servers_then_members_take_turns_across_the_pool(
    backend: PoolBackend, conn: psycopg.AsyncConnection, pool_dsn: str, tmp_path: Path
) -> None:
    # Server 1: member a queues three jobs first, then b one. Server 2: c queues one.
    await submitted(
        backend,
        [("1:a", request()), ("1:a", request()), ("1:a", request()), ("1:b", request()),
         ("2:c", request())],
    )
    worker = PoolWorker(NoModel(), pool_config(pool_dsn, tmp_path, max_batch_images=1))
    await worker.register(conn)
    # Server 1 first (its job came first), then server 2; inside server 1, a then b, then a's
    # remaining jobs in their order.
    assert await claims(worker, conn) == [["1:a"], ["2:c"], ["1:b"], ["1:a"], ["1:a"]]


async def test_relax_jobs_are_claimed_after_every_fast_job(
    backend: PoolBackend, conn: psycopg.AsyncConnection, pool_dsn: str, tmp_path: Path
) -> None:
    """A relax job queued first still waits for fast jobs queued after it, across servers."""
    await submitted(
        backend,
        [("1:a", request()), ("2:b", request()), ("3:c", request()), ("1:d", request())],
        relax=(0, 1),
    )
    worker = PoolWorker(NoModel(), pool_config(pool_dsn, tmp_path, max_batch_images=1))
    await worker.register(conn)
    # Fast first (server 3's job came first); then the relax jobs, the server served least
    # recently first: server 1 was just served (d), so server 2's job goes before a's.
    assert await claims(worker, conn) == [["3:c"], ["1:d"], ["2:b"], ["1:a"]]


async def test_the_least_recently_served_member_goes_first(
    backend: PoolBackend, conn: psycopg.AsyncConnection, pool_dsn: str, tmp_path: Path
) -> None:
    worker = PoolWorker(NoModel(), pool_config(pool_dsn, tmp_path, max_batch_images=1))
    await worker.register(conn)
    await submitted(backend, [("1:a", request())])
    assert await claims(worker, conn) == [["1:a"]]
    # a was served a moment ago; b, a newcomer, goes before a's next job though a queued first.
    await submitted(backend, [("1:a", request()), ("1:b", request())])
    assert await claims(worker, conn) == [["1:b"], ["1:a"]]


async def test_compatible_jobs_are_batched_in_fair_order(
    backend: PoolBackend, conn: psycopg.AsyncConnection, pool_dsn: str, tmp_path: Path
) -> None:
    await submitted(
        backend,
        [
            ("1:a", request(count=4)),
            ("1:a", request(count=1)),
            ("1:b", request(steps=5, count=2)),  # other steps: never with the others
            ("2:c", request(count=2)),
            ("2:d", request(count=2)),
        ],
    )
    worker = PoolWorker(NoModel(), pool_config(pool_dsn, tmp_path, max_batch_images=8))
    await worker.register(conn)
    batches = await claims(worker, conn)
    # Fair order: a (server 1), c (server 2), b (server 1), d (server 2), a's second job.
    # The first call takes a (4) + c (2), skips b (other steps) and fills up with d (2): 8
    # images. Then b alone, then a's second job (it waited behind b in a's server).
    assert batches == [["1:a", "2:c", "2:d"], ["1:b"], ["1:a"]]
