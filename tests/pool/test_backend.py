"""The pool backend against a real PostgreSQL and `imagine worker` subprocesses (tiny model,
CPU): submit, events, result, cancel (queued and running), errors, and what the bot sees while
no worker is up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest

from generation.errors import GenerationError, JobCancelledError, RequestError
from generation.events import JobCancelled, JobFinished, JobQueued, JobStarted, JobStep
from generation.pool.backend import PoolBackend
from generation.pool.settings import ResultsMode
from generation.request import GenerationRequest
from generation.tiny import TINY_MODEL_ID
from tests.pool.conftest import Workers, pool_config, wait_for
from tests.requests import make_request

pytestmark = pytest.mark.pool

T = TypeVar("T")


def small(prompt: str = "a red fox", **fields: object) -> GenerationRequest:
    values: dict[str, object] = {"width": 64, "height": 64, "steps": 3, "count": 2, "seed": 7}
    values.update(fields)
    return make_request(prompt, **values)


async def within(awaitable: Awaitable[T], seconds: float, workers: Workers) -> T:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"nothing after {seconds} s\n{workers.logs()}") from None


async def procrastinate_status(dsn: str, job_id: str) -> str:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE args->>'job_id' = %s", (job_id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def test_jobs_wait_for_a_worker_then_run_with_events_and_result(
    backend: PoolBackend, workers: Workers
) -> None:
    job = backend.submit(small(), owner="1:10")
    assert isinstance(job.history[0], JobQueued)
    await wait_for(lambda: backend.status.polled and backend.queue_length() == 1, 10, "a poll")
    assert backend.waiting_for_gpu  # no worker yet: the member is told so
    assert job.queue_note is not None and "No GPU worker" in job.queue_note
    assert backend.pending_for("1:10") == 1

    workers.start("a")
    result = await within(job.result(), 90, workers)
    assert result.seeds == [7, 8]
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.model_id == "builtin:tiny-random"
    kinds = [type(event) for event in job.history]
    assert kinds[0] is JobQueued and kinds[-1] is JobFinished
    assert kinds.index(JobStarted) < kinds.index(JobStep)
    steps = [event for event in job.history if isinstance(event, JobStep)]
    assert steps[-1].step == steps[-1].total == 3
    await wait_for(lambda: backend.status.workers, 10, "the worker in the status")
    [worker] = backend.status.workers
    assert (worker.device, worker.gpu, worker.model_id) == ("cpu", "cpu", "builtin:tiny-random")
    assert not backend.waiting_for_gpu
    assert backend.queue_length() == 0 and backend.pending_for("1:10") == 0
    # `imagine worker` logs as a service: its start-up stages as structured lines.
    logs = workers.logs()
    assert 'stage="load components"' in logs and 'stage="move to device"' in logs, logs


async def test_compatible_jobs_of_several_members_share_one_call(
    backend: PoolBackend, workers: Workers
) -> None:
    jobs = [backend.submit(small(seed=i), owner=f"1:{i}") for i in range(3)]
    other = backend.submit(small(steps=4), owner="1:9")  # not compatible: its own call
    await wait_for(lambda: backend.status.waiting == 4, 10, "four waiting jobs")
    workers.start("a")
    await within(asyncio.gather(*(job.result() for job in [*jobs, other])), 90, workers)
    batch_sizes = [
        next(e.batch_images for e in job.history if isinstance(e, JobStarted)) for job in jobs
    ]
    assert batch_sizes == [6, 6, 6]
    assert next(e for e in other.history if isinstance(e, JobStarted)).batch_images == 2


async def test_cancel_while_queued_ends_cancelled(backend: PoolBackend, pool_dsn: str) -> None:
    job = backend.submit(small(), owner="1:10")
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(job.result(), 10)
    assert isinstance(job.history[-1], JobCancelled)
    assert await procrastinate_status(pool_dsn, job.id) == "cancelled"
    assert not job.cancel()  # already over


async def test_cancel_reaches_the_running_worker(
    backend: PoolBackend, workers: Workers, pool_dsn: str
) -> None:
    workers.start("a")
    job = backend.submit(small(steps=100, width=256, height=256, count=1), owner="1:10")
    await within(
        wait_for(lambda: any(isinstance(e, JobStep) for e in job.history), 90), 95, workers
    )
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        await within(job.result(), 30, workers)
    # The worker stopped the pipeline and ended the job as aborted: no result was stored.
    assert await procrastinate_status(pool_dsn, job.id) == "aborted"
    steps = [e.step for e in job.history if isinstance(e, JobStep)]
    assert max(steps) < 100


async def test_errors_reach_the_caller(backend: PoolBackend, workers: Workers) -> None:
    with pytest.raises(RequestError, match="prompt is empty"):
        backend.submit(small(prompt="  "), owner="1:10")
    # The bot allows 200 steps, the workers 100: the worker refuses the job with its reason.
    job = backend.submit(small(steps=120), owner="1:10")
    workers.start("a")
    with pytest.raises(GenerationError, match="steps must be between 1 and 100"):
        await within(job.result(), 90, workers)
    assert job.history[-1].error.startswith("The job could not be read")  # type: ignore[union-attr]


async def test_resubmitted_job_id_reattaches_and_results_go_through_a_shared_folder(
    pool_dsn: str, tiny_cache: Path, tmp_path: Path
) -> None:
    """A bot that restarted submits its unfinished job again: the pool keeps the one job (its
    place, its seeds) instead of queueing a second; images travel through `results_dir`."""
    config = pool_config(pool_dsn, tmp_path, results=ResultsMode.FOLDER)
    before, after = PoolBackend(config, TINY_MODEL_ID), PoolBackend(config, TINY_MODEL_ID)
    await before.start()
    await after.start()
    workers = Workers(pool_dsn, tiny_cache, tmp_path, IMAGINE_POOL__RESULTS="folder")
    try:
        first = before.submit(small(), owner="1:10")
        await wait_for(lambda: after.status.waiting == 1, 10, "the first submission")
        before._live.clear()  # the first process "dies": it forgets the job without aborting it
        again = after.submit(small(), owner="1:10", job_id=first.id)
        workers.start("a")
        result = await within(again.result(), 90, workers)
        assert result.seeds == [7, 8]
        async with await psycopg.AsyncConnection.connect(pool_dsn) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE args->>'job_id' = %s", (first.id,)
            )
            assert await cursor.fetchone() == (1,)
        # Delivered results are deleted, folder included.
        await wait_for(lambda: not any((tmp_path / "results").glob("*")), 10, "cleanup")
    finally:
        workers.stop_all()
        await after.close(grace=5)
        await before.close(grace=5)
