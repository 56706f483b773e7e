"""The backend contract, run against both backends: the in-process `GenerationService` and the
`PoolBackend` with two `imagine worker` processes on a real PostgreSQL (tiny model, CPU: the
images are noise; shapes, seeds and events are what is checked).

When the shared contract suite (tests/generation/contract/) lands, the pool factory here joins
its list of backend factories.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from generation.errors import JobCancelledError, RequestError
from generation.events import JobCancelled, JobFinished, JobQueued, JobStarted, JobStep
from generation.interfaces import GenerationBackend
from generation.loading import ModelSpec
from generation.pool.backend import PoolBackend
from generation.request import GenerationRequest
from generation.tiny import TINY_MODEL_ID
from tests.generation.conftest import make_service, tiny_spec  # noqa: F401  (fixture)
from tests.pool.conftest import Workers, libpq, pool_config, wait_for
from tests.postgres import PostgresServer
from tests.requests import make_request


@pytest.fixture(scope="module")
def pool_workers(
    postgres_server: PostgresServer,
    tiny_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Two workers on one database for the whole module (loading torch is the slow part)."""
    name = postgres_server.create_database()
    started = Workers(libpq(postgres_server, name), tiny_cache, tmp_path_factory.mktemp("pool"))
    started.start("one")
    started.start("two")
    yield started
    started.stop_all()
    postgres_server.drop_database(name)


@pytest.fixture(params=["local", pytest.param("pool", marks=pytest.mark.pool)])
async def backend(
    request: pytest.FixtureRequest,
    tiny_spec: ModelSpec,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[GenerationBackend]:
    if request.param == "local":
        service = make_service(tiny_spec, max_queued_per_user=10)
        await service.start()
        yield service
        await service.close()
        return
    workers: Workers = request.getfixturevalue("pool_workers")
    pool = PoolBackend(pool_config(workers.dsn, tmp_path), TINY_MODEL_ID)
    await pool.start()
    try:
        await asyncio.wait_for(
            wait_for(lambda: len(pool.status.workers) == 2, 120, "two workers"), 125
        )
    except AssertionError:
        await pool.close(grace=1)
        raise AssertionError(workers.logs()) from None
    yield pool
    await pool.close(grace=5)


def small(**fields: object) -> GenerationRequest:
    values: dict[str, object] = {"width": 64, "height": 64, "steps": 3, "count": 2, "seed": 11}
    values.update(fields)
    return make_request("a lighthouse", **values)


async def test_submit_events_and_result(backend: GenerationBackend) -> None:
    job = backend.submit(small(), owner="1:1")
    assert job.request.params.seed == 11
    result = await asyncio.wait_for(job.result(), 60)
    assert result.seeds == [11, 12]
    assert [image.size for image in result.images] == [(64, 64)] * 2
    assert len(result.nsfw) == 2
    events = list(job.history)
    assert isinstance(events[0], JobQueued) and isinstance(events[-1], JobFinished)
    started = [i for i, e in enumerate(events) if isinstance(e, JobStarted)]
    steps = [e for e in events if isinstance(e, JobStep)]
    assert started and steps and started[0] < events.index(steps[0])
    assert steps[-1].step == steps[-1].total == 3
    seen = [event async for event in job.events()]  # a late follower sees it all
    assert seen == events


async def test_compatible_jobs_of_two_owners_both_finish(backend: GenerationBackend) -> None:
    first = backend.submit(small(seed=1), owner="1:1")
    second = backend.submit(small(seed=5), owner="1:2")
    results = await asyncio.wait_for(asyncio.gather(first.result(), second.result()), 60)
    assert [r.seeds for r in results] == [[1, 2], [5, 6]]


async def test_cancel_right_after_submit(backend: GenerationBackend) -> None:
    job = backend.submit(small(), owner="1:1")
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(job.result(), 30)
    assert isinstance(job.history[-1], JobCancelled)
    assert not job.cancel()


async def test_cancel_while_running_stops_early(backend: GenerationBackend) -> None:
    job = backend.submit(small(steps=100, width=256, height=256, count=1), owner="1:1")
    await asyncio.wait_for(
        wait_for(lambda: any(isinstance(e, JobStep) for e in job.history), 60), 65
    )
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(job.result(), 30)
    assert max(e.step for e in job.history if isinstance(e, JobStep)) < 100


async def test_bad_requests_are_refused_at_submit(backend: GenerationBackend) -> None:
    with pytest.raises(RequestError):
        backend.submit(small(steps=0), owner="1:1")
    with pytest.raises(RequestError):
        backend.submit(small(width=65), owner="1:1")
    assert backend.pending_for("1:1") == 0
