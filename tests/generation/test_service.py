"""The asyncio service on the tiny model: queueing, events, fairness, cancelling, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import torch
from PIL import Image

from generation.engine import DiffusersEngine
from generation.errors import JobCancelledError, OutOfMemoryError, QueueFullError, RequestError
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
from generation.fastpath import FastPath
from generation.job import QueuedJob
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService, ServiceClosedError
from tests.generation.conftest import make_service, small_request


async def collect(job: QueuedJob) -> list[JobEvent]:
    return [event async for event in job.events()]


def assert_well_ordered(events: list[JobEvent], steps: int) -> None:
    """Queued (one or more), started, steps 1..n, finished: nothing else, in that order."""
    kinds = [type(e) for e in events]
    started = kinds.index(JobStarted)
    assert started >= 1 and set(kinds[:started]) == {JobQueued}
    assert [e for e in events if isinstance(e, JobStep)] == [
        JobStep(i, steps) for i in range(1, steps + 1)
    ]
    assert kinds[started + 1 : -1] == [JobStep] * steps
    assert kinds[-1] is JobFinished


async def test_concurrent_submits_all_complete_with_ordered_events(
    service: GenerationService,
) -> None:
    """Several members' jobs all finish, each with queued/started/steps/finished in order."""
    jobs = [
        service.submit(small_request(f"prompt {i}", seed=100 + i), owner=f"u{i}") for i in range(4)
    ]
    assert service.queue_stats().waiting == 4
    assert [job.position for job in jobs] == [1, 2, 3, 4]
    histories = await asyncio.gather(*(collect(job) for job in jobs))
    for job, events in zip(jobs, histories, strict=True):
        assert_well_ordered(events, steps=3)
        result = await job.result()
        assert result.seeds == [job.request.params.seed, job.request.params.seed + 1]
        assert len(result.images) == 2 and result.request is job.request
        assert job.state is JobState.FINISHED
    # A late listener still sees the whole story.
    assert await collect(jobs[0]) == histories[0]
    assert service.queue_stats().waiting == 0 and service.job(jobs[0].id) is None


async def test_same_seed_reproduces_through_the_service(service: GenerationService) -> None:
    """Same request and seed give the same pixels; a different seed gives others."""
    first = await service.submit(small_request(seed=7)).result()
    again = await service.submit(small_request(seed=7)).result()
    other = await service.submit(small_request(seed=8)).result()
    assert [im.tobytes() for im in first.images] == [im.tobytes() for im in again.images]
    assert first.images[0].tobytes() != other.images[0].tobytes()


async def test_random_seed_is_reported(service: GenerationService) -> None:
    """A request without a seed gets one at submission, reported in the result."""
    job = service.submit(small_request(seed=None, count=1))
    assert job.request.params.seed is not None
    assert (await job.result()).seeds == [job.request.params.seed]


async def test_owners_take_turns(service: GenerationService) -> None:
    """A member's burst of jobs is interleaved with other members' jobs."""
    started: list[str] = []

    async def watch(name: str, job: QueuedJob) -> None:
        async for event in job.events():
            if isinstance(event, JobStarted):
                started.append(name)

    submitted = [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C")]
    jobs = {name: service.submit(small_request(count=1), owner=o) for name, o in submitted}
    await asyncio.gather(*(watch(name, job) for name, job in jobs.items()))
    assert started == ["a1", "b1", "c1", "a2", "a3"]


async def test_cancel_a_queued_job(service: GenerationService) -> None:
    """A waiting job can be cancelled; it ends with JobCancelled and never runs."""
    first = service.submit(small_request(), owner="A")
    second = service.submit(small_request(), owner="A")
    assert second.cancel() is True
    assert second.cancel() is False
    events = await collect(second)
    assert [type(e) for e in events] == [JobQueued, JobCancelled]
    with pytest.raises(JobCancelledError):
        await second.result()
    assert len((await first.result()).images) == 2
    assert first.cancel() is False
    assert service.pending_for("A") == 0


async def test_queue_limits(tiny_spec: ModelSpec) -> None:
    """Per-member and whole-queue limits refuse extra jobs with clear messages."""
    service = make_service(tiny_spec, max_queue=3, max_queued_per_user=2)  # not started
    service.submit(small_request(), owner="A")
    service.submit(small_request(), owner="A")
    with pytest.raises(QueueFullError, match="You already have 2 jobs waiting"):
        service.submit(small_request(), owner="A")
    service.submit(small_request(), owner="B")
    with pytest.raises(QueueFullError, match="The queue is full"):
        service.submit(small_request(), owner="C")
    assert service.pending_for("A") == 2 and service.queue_stats().waiting == 3
    await service.close()


async def test_submit_validates(service: GenerationService) -> None:
    """An invalid request is refused at submission with the validation message."""
    with pytest.raises(RequestError, match="steps must be between 1 and 100, got 500"):
        service.submit(small_request(steps=500))
    assert service.queue_stats().waiting == 0


async def test_estimate_wait_grows_with_position(tiny_spec: ModelSpec) -> None:
    """Later positions wait longer; queued events carry the estimate."""
    # Not started: nothing runs. Room for one 2-image job at a time, so each waits for the one
    # before it (with more room they would all start together at the next step).
    service = make_service(tiny_spec, max_batch_images=2)
    jobs = [service.submit(small_request(), owner=f"u{i}") for i in range(3)]
    assert service.estimate_wait(1) == 0
    assert 0 < service.estimate_wait(2) < service.estimate_wait(3)
    etas = [job.history[-1].eta_seconds for job in jobs]  # type: ignore[union-attr]
    assert etas[0] == 0 and etas[0] < etas[1] < etas[2]
    await service.close()


async def test_compatible_jobs_share_one_call(tiny_spec: ModelSpec) -> None:
    """With batching on, compatible jobs of different members run in one pipeline call."""
    service = make_service(tiny_spec, max_batch_images=8)
    await service.start()
    try:
        a = service.submit(small_request("a fox", seed=1), owner="A")
        b = service.submit(small_request("a whale", seed=50), owner="B")
        events_a, events_b = await asyncio.gather(collect(a), collect(b))
        assert JobStarted(batch_images=4) in events_a and JobStarted(batch_images=4) in events_b
        assert_well_ordered(events_a, steps=3)
        assert (await b.result()).seeds == [50, 51]
    finally:
        await service.close()


async def test_variation_through_the_service(service: GenerationService) -> None:
    """A request with an init image runs img2img and returns images of the request size."""
    source = Image.new("RGB", (64, 64), (200, 30, 30))
    result = await service.submit(small_request(init_image=source, steps=4)).result()
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    assert result.request.is_variation


@pytest.fixture
def oom_engine(tiny_spec: ModelSpec) -> Iterator[tuple[DiffusersEngine, list[int]]]:
    """An engine whose UNet raises torch.OutOfMemoryError on its first call after arming."""
    engine = DiffusersEngine(tiny_spec)
    armed: list[int] = []  # append 1 to make the next UNet call fail
    yield engine, armed


def arm_oom(engine: DiffusersEngine, armed: list[int]) -> None:
    unet = engine.model.txt2img.unet
    real_forward = unet.forward

    def forward(*args: object, **kwargs: object) -> object:
        if armed:
            armed.clear()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    unet.forward = forward


async def test_out_of_memory_fails_the_job_and_the_service_goes_on(
    oom_engine: tuple[DiffusersEngine, list[int]],
) -> None:
    """A job hit by OOM fails with a clear message; the next job still runs."""
    engine, armed = oom_engine
    service = GenerationService(engine, FairQueuePolicy(max_batch_images=1), warmup=False)
    await service.start()
    try:
        arm_oom(engine, armed)
        armed.append(1)
        failing = service.submit(small_request(), owner="A")
        following = service.submit(small_request(), owner="B")
        events = await collect(failing)
        assert isinstance(events[-1], JobFailed) and "ran out of memory" in events[-1].error
        with pytest.raises(OutOfMemoryError):
            await failing.result()
        assert len((await following.result()).images) == 2
    finally:
        await service.close()


async def test_out_of_memory_in_a_shared_call_retries_jobs_one_by_one(
    oom_engine: tuple[DiffusersEngine, list[int]],
) -> None:
    """When a batch runs out of memory its jobs are retried alone and can still succeed."""
    engine, armed = oom_engine
    service = GenerationService(engine, FairQueuePolicy(max_batch_images=8), warmup=False)
    await service.start()
    try:
        arm_oom(engine, armed)
        armed.append(1)
        a = service.submit(small_request(seed=1), owner="A")
        b = service.submit(small_request(seed=2), owner="B")
        assert len((await a.result()).images) == 2
        assert len((await b.result()).images) == 2
    finally:
        await service.close()


async def test_cancel_a_running_job(tiny_spec: ModelSpec) -> None:
    """A running job cancelled mid-way stops at its next step and ends cancelled."""
    engine = DiffusersEngine(tiny_spec)
    service = GenerationService(engine, FairQueuePolicy(max_batch_images=1), warmup=False)
    await service.start()
    gate = threading.Event()
    unet = engine.model.txt2img.unet
    real_forward = unet.forward
    calls: list[int] = []

    def forward(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            gate.wait(timeout=30)  # hold the worker inside step 2 until cancel() was called
        return real_forward(*args, **kwargs)

    unet.forward = forward
    try:
        job = service.submit(small_request(steps=10), owner="A")
        nxt = service.submit(small_request(count=1), owner="B")
        seen: list[JobEvent] = []
        async for event in job.events():
            seen.append(event)
            if isinstance(event, JobStep) and event.step == 1:
                assert job.cancel() is True
                gate.set()
        assert isinstance(seen[-1], JobCancelled)
        assert max(e.step for e in seen if isinstance(e, JobStep)) < 10
        with pytest.raises(JobCancelledError):
            await job.result()
        assert len((await nxt.result()).images) == 1
    finally:
        gate.set()
        unet.forward = real_forward
        await service.close()


async def test_close_finishes_running_and_cancels_queued(tiny_spec: ModelSpec) -> None:
    """Graceful shutdown: the running job finishes, waiting ones are cancelled, no new ones."""
    service = make_service(tiny_spec, max_batch_images=1)
    await service.start()
    running = service.submit(small_request(), owner="A")
    waiting = service.submit(small_request(), owner="B")
    async for event in running.events():
        if isinstance(event, JobStarted):
            break
    await service.close()
    assert running.state is JobState.FINISHED
    events = await collect(waiting)
    assert isinstance(events[-1], JobCancelled) and "shutting down" in events[-1].reason
    with pytest.raises(ServiceClosedError):
        service.submit(small_request())
    await service.close()  # twice is fine


async def test_submit_uses_a_given_job_id_once(service: GenerationService) -> None:
    """A caller-chosen job id becomes the job's id; reusing a live one is refused."""
    request = small_request(seed=1)
    job = service.submit(request, owner="a", job_id="f" * 32)
    assert job.id == "f" * 32
    with pytest.raises(RequestError, match="already in use"):
        service.submit(request, owner="b", job_id="f" * 32)
    await job.result()


async def test_a_job_joins_a_running_batch_between_steps(tiny_spec: ModelSpec) -> None:
    """Step-level batching: a job submitted while a long one runs starts within a few steps
    and finishes first; both report their own step counts."""
    service = make_service(tiny_spec, max_batch_images=8)
    await service.start()
    try:
        long = service.submit(small_request("long", steps=40, count=1), owner="A")
        async for event in long.events():
            if isinstance(event, JobStep):
                break
        short = service.submit(small_request("short", steps=2, count=1), owner="B")
        await short.result()
        steps_of_long = [e.step for e in long.history if isinstance(e, JobStep)]
        assert long.state is JobState.RUNNING and max(steps_of_long) < 40
        assert any(isinstance(e, JobStarted) and e.batch_images == 2 for e in short.history)
        assert_well_ordered(list(short.history), steps=2)
        await long.result()
        assert_well_ordered(list(long.history), steps=40)
    finally:
        await service.close()


async def test_decode_overlap_delivers_each_job_and_frees_its_room(tiny_spec: ModelSpec) -> None:
    """With the decode on the decoder thread, every job still gets its own result and events in
    order, a job whose steps are done makes room for the next one at once, and the images are
    the ones the plain path makes."""
    overlapped = GenerationService(
        DiffusersEngine(tiny_spec, FastPath(overlap_decode=True)),
        FairQueuePolicy(max_batch_images=2),
        warmup=True,
        warmup_size=(64, 64),
    )
    await overlapped.start()
    try:
        jobs = [
            overlapped.submit(small_request(f"p{i}", seed=10 * i, steps=2 + i), owner=f"u{i}")
            for i in range(3)
        ]
        histories = await asyncio.gather(*(collect(job) for job in jobs))
        for i, events in enumerate(histories):
            assert_well_ordered(events, steps=2 + i)
        results = [await job.result() for job in jobs]
    finally:
        await overlapped.close()
    plain = make_service(tiny_spec, max_batch_images=2)
    await plain.start()
    try:
        for i, result in enumerate(results):
            again = plain.submit(small_request(f"p{i}", seed=10 * i, steps=2 + i), owner="x")
            for got, want in zip(result.images, (await again.result()).images, strict=True):
                assert got.tobytes() == want.tobytes()
    finally:
        await plain.close()
