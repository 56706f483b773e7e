"""The `GenerationBackend` contract: what the bot relies on, checked against every backend.

Each test runs once per entry of `BACKENDS` (`tests/generation/contract/backends.py`); a new
backend, such as the GPU worker pool of a later issue, joins by adding its factory there, one
line, and must pass this suite unchanged. Jobs run on the tiny random-weight model (its images
are noise; only sizes, seeds and event order are checked), through wrappers that make it fail
or wait when a test needs that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

import pytest

from generation.engine import DiffusersEngine
from generation.errors import GenerationError, JobCancelledError, QueueFullError, RequestError
from generation.events import (
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    JobState,
    JobStep,
)
from generation.interfaces import Engine, GenerationBackend
from generation.job import QueuedJob
from generation.loading import ModelSpec
from generation.request import Operation
from tests.generation.conftest import small_request
from tests.generation.contract.backends import (
    BACKENDS,
    BackendFactory,
    FailingEngine,
    GatedEngine,
    QueueOptions,
)

Start = Callable[..., Awaitable[GenerationBackend]]


@pytest.fixture(params=BACKENDS)
async def start(
    request: pytest.FixtureRequest, tiny_spec: ModelSpec
) -> AsyncIterator[Start]:
    """`await start(wrap=None, **queue_options)`: a started backend of this run's kind on a
    fresh tiny engine (`wrap(engine)` replaces it), closed after the test."""
    factory: BackendFactory = request.param
    async with AsyncExitStack() as stack:

        async def build(
            wrap: Callable[[Engine], Engine] | None = None, **options: object
        ) -> GenerationBackend:
            engine: Engine = DiffusersEngine(tiny_spec)
            if wrap is not None:
                engine = wrap(engine)
            queue = QueueOptions(**options)  # type: ignore[arg-type]
            return await stack.enter_async_context(factory(engine, queue))

        yield build


class Gates:
    """Wraps engines in `GatedEngine`s and opens them all at once (also after each test, so
    no backend is left waiting when it is closed)."""

    def __init__(self) -> None:
        self.engines: list[GatedEngine] = []

    def wrap(self, engine: Engine) -> Engine:
        gated = GatedEngine(engine)
        self.engines.append(gated)
        return gated

    def open(self) -> None:
        for engine in self.engines:
            engine.gate.set()


@pytest.fixture
def gates(start: Start) -> Iterator[Gates]:
    """Set up after `start`, so torn down before it: the gates open before backends close."""
    keeper = Gates()
    yield keeper
    keeper.open()


async def events_of(job: QueuedJob) -> list[JobEvent]:
    return [event async for event in job.events()]


async def first_step(job: QueuedJob) -> None:
    async for event in job.events():
        if isinstance(event, JobStep):
            return


async def test_submit_runs_the_job_and_events_come_in_order(start: Start) -> None:
    """Queued first, then started, steps counting up, and exactly one final event, last."""
    backend = await start()
    job = backend.submit(small_request(steps=3, count=2, seed=5), owner="guild:1")
    events = await asyncio.wait_for(events_of(job), 60)
    assert isinstance(events[0], JobQueued) and events[0].position >= 1
    kinds = [type(event) for event in events]
    assert kinds.index(JobStarted) > 0 and kinds[-1] is JobFinished
    steps = [(e.step, e.total) for e in events if isinstance(e, JobStep)]
    assert steps and [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert all(total == steps[0][1] for _, total in steps)
    assert sum(isinstance(e, JobFinished | JobFailed | JobCancelled) for e in events) == 1
    assert job.state is JobState.FINISHED


async def test_result_has_one_image_per_seed(start: Start) -> None:
    """The result holds `count` images at the asked size, their seeds seed..seed+count-1."""
    backend = await start()
    job = backend.submit(small_request(count=2, seed=41), owner="guild:1")
    assert job.request.params.seed == 41  # the handle carries the validated request
    result = await asyncio.wait_for(job.result(), 60)
    assert result.seeds == [41, 42] and len(result.nsfw) == 2
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.model_id == backend.model_id and result.request.params.seed == 41


async def test_a_missing_seed_is_drawn_at_submission(start: Start) -> None:
    """A request without a seed gets a concrete one before it is queued."""
    backend = await start()
    job = backend.submit(small_request(seed=None, count=1))
    assert job.request.params.seed is not None
    assert (await asyncio.wait_for(job.result(), 60)).seeds == [job.request.params.seed]


async def test_job_ids_are_the_callers_and_live_jobs_are_found(start: Start) -> None:
    """A given job id is used; `job()` finds the live job and forgets it once it ended."""
    backend = await start()
    job = backend.submit(small_request(count=1), owner="guild:1", job_id="c" * 32)
    assert job.id == "c" * 32 and backend.job(job.id) is job
    with pytest.raises(RequestError):
        backend.submit(small_request(count=1), job_id="c" * 32)
    await asyncio.wait_for(job.result(), 60)
    assert backend.job(job.id) is None


async def test_cancel_a_queued_job(start: Start, gates: Gates) -> None:
    """A waiting job cancels at once: it ends cancelled, leaves the queue, never runs."""
    backend = await start(wrap=gates.wrap)  # the first job holds the worker until opened
    running = backend.submit(small_request(count=1), owner="guild:1")
    await asyncio.wait_for(_started(running), 30)
    waiting = backend.submit(small_request(count=1), owner="guild:2")
    stats = backend.queue_stats()
    assert (stats.waiting, stats.waiting_images) == (1, 1)
    assert waiting.cancel()
    events = await asyncio.wait_for(events_of(waiting), 10)
    assert isinstance(events[-1], JobCancelled)
    assert not any(isinstance(e, JobStarted) for e in events)
    with pytest.raises(JobCancelledError):
        await waiting.result()
    assert backend.queue_stats().waiting == 0
    assert not waiting.cancel()  # ended: nothing more to cancel
    gates.open()
    assert len((await asyncio.wait_for(running.result(), 60)).images) == 1


async def test_cancel_a_running_job(start: Start) -> None:
    """A running job stops at its next step and ends cancelled; the backend goes on."""
    backend = await start()
    job = backend.submit(small_request(steps=40, count=1), owner="guild:1")
    await asyncio.wait_for(first_step(job), 60)
    assert [j.id for j in backend.running()] == [job.id]
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(job.result(), 60)
    assert isinstance(job.history[-1], JobCancelled)
    after = backend.submit(small_request(count=1), owner="guild:1")
    assert len((await asyncio.wait_for(after.result(), 60)).images) == 1


async def test_a_bad_request_is_refused_at_submission(start: Start) -> None:
    """Invalid parameters raise `RequestError` naming the problem; nothing is queued."""
    backend = await start()
    with pytest.raises(RequestError, match="steps must be between 1 and 50"):
        backend.submit(small_request(steps=500))
    with pytest.raises(RequestError, match="prompt is empty"):
        backend.submit(small_request("   "))
    assert backend.queue_stats().waiting == 0 and backend.running() == []


async def test_a_full_queue_is_refused(start: Start, gates: Gates) -> None:
    """Past the queue's size `submit` raises `QueueFullError`; the queued jobs are kept."""
    backend = await start(wrap=gates.wrap, max_queue=1)
    running = backend.submit(small_request(count=1), owner="guild:1")
    await asyncio.wait_for(_started(running), 30)
    queued = backend.submit(small_request(count=1), owner="guild:2")
    with pytest.raises(QueueFullError):
        backend.submit(small_request(count=1), owner="guild:3")
    assert backend.queue_stats().waiting == 1
    assert backend.estimate_wait(1) >= 0.0
    gates.open()
    for job in (running, queued):
        assert len((await asyncio.wait_for(job.result(), 60)).images) == 1


async def test_a_failing_engine_fails_the_job_not_the_backend(start: Start) -> None:
    """An engine error ends the job with `JobFailed` and a member-readable message; the
    backend takes and ends the next job the same way (it did not stop)."""

    def failing(engine: Engine) -> Engine:
        return FailingEngine(engine, RuntimeError("the GPU fell off"))

    backend = await start(wrap=failing)
    for _ in range(2):
        job = backend.submit(small_request(count=1), owner="guild:1")
        with pytest.raises(GenerationError, match="the GPU fell off"):
            await asyncio.wait_for(job.result(), 60)
        assert isinstance(job.history[-1], JobFailed) and job.state is JobState.FAILED


async def test_close_cancels_waiting_jobs_and_refuses_new_ones(
    start: Start, gates: Gates
) -> None:
    """Closing lets the running job finish, cancels the waiting ones, refuses new work."""
    backend = await start(wrap=gates.wrap)
    running = backend.submit(small_request(count=1), owner="guild:1")
    waiting = backend.submit(small_request(count=1), owner="guild:2")
    await asyncio.wait_for(_started(running), 30)
    closing = asyncio.create_task(backend.close())
    await asyncio.sleep(0)
    gates.open()
    await asyncio.wait_for(closing, 60)
    assert running.state is JobState.FINISHED
    assert waiting.state is JobState.CANCELLED
    with pytest.raises(QueueFullError):
        backend.submit(small_request(count=1))


async def test_stop_finishes_the_running_job_and_keeps_the_backend_until_close(
    start: Start, gates: Gates
) -> None:
    """`stop` (the bot's shutdown, before it posts the last results): the running job
    finishes, waiting ones are cancelled, new work is refused; `close` afterwards is clean."""
    backend = await start(wrap=gates.wrap)
    running = backend.submit(small_request(count=1), owner="guild:1")
    waiting = backend.submit(small_request(count=1), owner="guild:2")
    await asyncio.wait_for(_started(running), 30)
    stopping = asyncio.create_task(backend.stop(grace=60))
    await asyncio.sleep(0)
    assert waiting.state is JobState.CANCELLED
    with pytest.raises(QueueFullError):
        backend.submit(small_request(count=1))
    gates.open()
    await asyncio.wait_for(stopping, 60)
    assert running.state is JobState.FINISHED
    await asyncio.wait_for(backend.stop(), 10)  # twice is harmless
    await asyncio.wait_for(backend.close(), 60)


async def test_the_backend_describes_itself(start: Start) -> None:
    """Model id and note, limits and queue figures, as the bot shows them in /info."""
    backend = await start()
    assert backend.model_id == "builtin:tiny-random"
    assert backend.model_note and "noise" in backend.model_note
    assert backend.limits.max_steps == 50
    stats = backend.queue_stats()
    assert (stats.waiting, stats.running) == (0, 0)
    # What the bot offers follows `supports`: image jobs everywhere; /describe only where a
    # captioner is configured (none here: the in-process engine has none, the pool never).
    assert backend.supports(Operation.GENERATE)
    assert not backend.supports(Operation.DESCRIBE)


async def _started(job: QueuedJob) -> None:
    async for event in job.events():
        if isinstance(event, JobStarted):
            return
