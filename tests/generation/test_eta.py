"""The ETA estimator: the cost model's fit, the dispatcher replay, and the service's ETAs on a
fake clock against a fake step engine whose step costs a known linear function of its rows.

With costs that are exactly linear, every ETA a member is shown must equal, to rounding, the
fake time at which its job starts: any drift between the replay and the dispatcher (who joins
when, who goes first, the step in flight) shows as a difference of whole steps.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from generation.continuous import StepOutcome
from generation.eta import CostModel, EtaEstimator, LineFit, Work, estimate_waits
from generation.events import GenerationResult, JobQueued, JobStarted
from generation.job import QueuedJob
from generation.params import GenerationParams, Limits
from generation.queue_policy import FairQueuePolicy
from generation.request import GenerationRequest, Operation
from generation.service import GenerationService

# -- the fit ------------------------------------------------------------------------------


def test_line_fit_answers_seen_loads_and_interpolates_the_rest() -> None:
    fit = LineFit(prior_slope=0.5)
    assert fit(4) == 2.0  # nothing measured: the prior
    fit.add(2, 1.6)
    assert fit(2) == pytest.approx(1.6)
    assert fit(4) == pytest.approx(3.2)  # one point: proportional
    fit.add(10, 4.0)  # 1.0 + 0.3 x
    assert fit(6) == pytest.approx(2.8)
    assert fit(32) == pytest.approx(10.6)
    assert fit(0) == 0.0


def test_line_fit_follows_a_point_that_changes_and_ignores_bad_samples() -> None:
    fit = LineFit(prior_slope=1.0, alpha=0.5)
    for _ in range(20):
        fit.add(8, 2.0)
    for _ in range(20):
        fit.add(8, 4.0)  # the machine got busier
    assert fit(8) == pytest.approx(4.0, rel=1e-4)
    fit.add(8, float("nan"))
    fit.add(8, -1.0)
    assert fit(8) == pytest.approx(4.0, rel=1e-4)


def test_line_fit_falls_back_to_the_origin_when_the_line_would_go_negative() -> None:
    fit = LineFit(prior_slope=1.0)
    fit.add(2, 2.0)
    fit.add(4, 1.0)  # noise: slower at the smaller load
    assert fit(3) > 0 and fit(100) > 0


def test_stale_points_weigh_less_than_fresh_ones() -> None:
    fit = LineFit(prior_slope=1.0, half_life=5)
    fit.add(2, 1.0)
    fit.add(4, 2.0)
    for _ in range(50):  # only load 8 measured since, twice as slow as the old line says
        fit.add(8, 8.0)
    fit.add(6, 6.0)
    # The line follows the two fresh points (y = x), not the two stale ones (y = x / 2).
    assert fit(7) == pytest.approx(7.0, rel=0.05)


# -- the replay ----------------------------------------------------------------------------


def linear_cost(a: float, b: float, admit: float = 0.0, finish: float = 0.0) -> CostModel:
    """A cost model that has measured step = a + b x, admit = `admit` x, finish = `finish` x."""
    cost = CostModel()
    for x in (1.0, 50.0):
        cost.step.add(x, a + b * x)
        cost.admit.add(x, admit * x)
        cost.finish.add(x, finish * x)
    return cost


def work(images: int, steps: int, size: tuple[int, int] = (64, 64), **kw: object) -> Work:
    return Work(images, 2.0 * images, steps, size, **kw)  # type: ignore[arg-type]


def test_waiting_jobs_join_when_a_member_leaves_and_pay_the_step_in_flight() -> None:
    cost = linear_cost(a=1.0, b=0.5)  # a step of load x: 1 + 0.5 x seconds
    running = [work(4, 3), work(4, 5)]  # load 16: 9 s per step
    waiting = [work(4, 10), work(2, 10), work(4, 10, size=(32, 32))]
    waits = estimate_waits(running, waiting, cost, max_images=8, elapsed=4.0)
    # The 3-step member leaves after the step in flight (5 s left) and 2 more (18 s): 23 s.
    assert waits[0] == pytest.approx(23.0)
    # No room for 2 more images until the 5-step member leaves: 2 more steps at load 16.
    assert waits[1] == pytest.approx(41.0)
    # The other size waits for the batch to drain: 8 steps of load 12 (7 s each), then 2 of
    # load 4 (3 s each).
    assert waits[2] == pytest.approx(41.0 + 8 * 7.0 + 2 * 3.0)
    # A job queued after all: the last batch's 10 steps of load 8 (5 s each).
    assert waits[3] == pytest.approx(103.0 + 10 * 5.0)


def test_variations_wait_for_an_empty_batch_and_run_alone() -> None:
    cost = linear_cost(a=0.0, b=1.0, finish=0.5)
    running = [work(1, 2)]  # load 2
    waiting = [work(1, 4, stepwise=False), work(1, 1)]
    waits = estimate_waits(running, waiting, cost, max_images=8)
    assert waits[0] == pytest.approx(2 * 2 + 1.0)  # two steps, then its decode
    assert waits[1] == pytest.approx(waits[0] + 4 * 2 + 1.0)


def test_without_step_batching_jobs_run_one_after_another() -> None:
    cost = linear_cost(a=0.0, b=1.0)
    waits = estimate_waits([], [work(1, 3), work(1, 3)], cost, max_images=8, stepwise=False)
    assert waits == pytest.approx([0.0, 6.0, 12.0])


def test_estimator_subtracts_the_time_spent_in_the_step_now_running() -> None:
    now = [100.0]
    eta = EtaEstimator(linear_cost(a=2.0, b=0.0, admit=0.25), clock=lambda: now[0])
    running, waiting = [work(4, 1)], [work(8, 5)]
    eta.advance_started(joined_images=4)  # the step in flight also admits 4 images: 1 s
    assert eta.waits(running, waiting, max_images=8)[0] == pytest.approx(3.0)
    now[0] += 1.5
    assert eta.waits(running, waiting, max_images=8)[0] == pytest.approx(1.5)
    now[0] += 10  # later than expected: "any moment now", never negative
    assert eta.waits(running, waiting, max_images=8)[0] == 0.0


def test_estimator_learns_step_cost_from_wall_time_less_admission_and_decode() -> None:
    now = [0.0]
    eta = EtaEstimator(clock=lambda: now[0])
    for load, images in ((4.0, 2), (16.0, 8)):
        eta.advance_started()
        now[0] += 0.3 + 0.1 * load + 0.05 * images + 0.2
        eta.advance_done(
            load=load,
            joined_images=images,
            admit_seconds=0.05 * images,
            finished_load=load,
            finish_seconds=0.2,
        )
    assert eta.cost.step(4.0) == pytest.approx(0.7)
    assert eta.cost.step(10.0) == pytest.approx(1.3)
    assert eta.cost.admit(8) == pytest.approx(0.4)


# -- the service, on a fake clock ------------------------------------------------------------

STEP_FIXED, STEP_PER_ROW, ADMIT_PER_IMAGE, FINISH_PER_ROW = 0.4, 0.05, 0.02, 0.03


class FakeClock:
    """Seconds that pass only when the fake engine says; `lock` holds them still."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.RLock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


class LinearStepEngine:
    """A step engine whose every advance costs exactly a linear function of its work, on the
    fake clock (moved at the end of the advance); it records when each job joined."""

    model_id = "fake:linear"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.members: dict[str, list] = {}  # key -> [request, steps done]
        self.joined_at: dict[str, float] = {}

    def load(self) -> None: ...

    def close(self) -> None: ...

    def supports(self, operation: Operation) -> bool:
        return True

    def warmup(self, width: int, height: int) -> GenerationResult:
        raise NotImplementedError  # the tests run without warm-up

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # every job here is txt2img: the step batch runs it

    def supports_steps(self, request: GenerationRequest) -> bool:
        return True

    def advance(
        self, joins: Sequence[tuple[str, GenerationRequest]], leaves: Sequence[str]
    ) -> StepOutcome:
        for key in leaves:
            self.members.pop(key, None)
        admit = 0.0
        for key, request in joins:
            self.joined_at[key] = self.clock()
            self.members[key] = [request, 0]
            admit += ADMIT_PER_IMAGE * request.params.count
        rows = sum(rows_of(request) for request, _ in self.members.values())
        progress, finished, left = {}, {}, 0
        for key, member in list(self.members.items()):
            request = member[0]
            member[1] += 1
            progress[key] = (member[1], request.params.steps)
            if member[1] == request.params.steps:
                del self.members[key]
                left += rows_of(request)
                finished[key] = result_of(request)
        step = STEP_FIXED + STEP_PER_ROW * rows if rows else 0.0
        finish = FINISH_PER_ROW * left
        self.clock.advance(admit + step + finish)
        return StepOutcome(
            progress,
            finished,
            {},
            admit + step + finish,
            sum(r.params.count for r, _ in self.members.values()),
            admit_seconds=admit,
            finish_seconds=finish,
            rows=rows,
            left_rows=left,
            pixels=64 * 64,
        )


def rows_of(request: GenerationRequest) -> int:
    return request.params.count * 2


def result_of(request: GenerationRequest) -> GenerationResult:
    count = request.params.count
    return GenerationResult(
        images=[Image.new("RGB", (8, 8), (90, 90, 90))] * count,
        seeds=request.seeds,
        nsfw=[False] * count,
        warnings=[],
        request=request,
        model_id="fake:linear",
        gpu_seconds=0.0,
    )


def fake_request(count: int, steps: int, seed: int) -> GenerationRequest:
    params = GenerationParams("p", seed=seed, steps=steps, count=count, width=64, height=64)
    return GenerationRequest(params).validated(Limits(native_pixels=64 * 64))


async def started(job: QueuedJob) -> None:
    async for event in job.events():
        if isinstance(event, JobStarted):
            return


async def until_idle(service: GenerationService, jobs: list) -> None:  # type: ignore[type-arg]
    await asyncio.wait_for(asyncio.gather(*(job.result() for job in jobs)), 30)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_first_eta_shown_is_when_the_job_starts(seed: int) -> None:
    """After a few jobs taught it the costs, every ETA shown at submission (new members,
    returning members, several servers, 1-4 images, 2-9 steps, submitted while a batch runs)
    equals the fake time at which that job started."""
    rng = random.Random(seed)
    clock = FakeClock()
    engine = LinearStepEngine(clock)
    service = GenerationService(
        engine,
        FairQueuePolicy(max_queued_per_user=5, max_batch_images=8),
        limits=Limits(native_pixels=64 * 64),
        warmup=False,
        freeze_gc=False,
        eta=EtaEstimator(clock=clock),
    )
    await service.start()
    try:
        # Teach it: the costs at two loads.
        for count in (1, 4):
            await until_idle(service, [service.submit(fake_request(count, 3, 0), "s0:teacher")])
        shown: dict[str, tuple[float, float]] = {}
        jobs = []

        def submit(owner: str) -> None:
            count, steps = rng.randint(1, 4), rng.randint(2, 9)
            with clock.lock:  # no step ends between the ETA and reading the time
                job = service.submit(fake_request(count, steps, len(jobs)), owner)
                shown[job.id] = (clock(), job.history[0].eta_seconds)  # type: ignore[union-attr]
            assert isinstance(job.history[0], JobQueued)
            jobs.append(job)

        for index in range(10):  # a burst from new members of three servers
            submit(f"s{index % 3}:m{index}")
        # Once all have started (no later arrival could delay them: fair queues let a new
        # server's job go before older jobs of other servers), more arrive mid-step: returning
        # members, and one new server.
        await asyncio.wait_for(asyncio.gather(*(started(job) for job in jobs)), 30)
        await asyncio.sleep(rng.random() / 100)
        for index in range(3):
            submit(f"s{index % 3}:m{index}")
        submit("s9:late")
        await until_idle(service, jobs)
    finally:
        await service.close()
    for job in jobs:
        submitted, eta = shown[job.id]
        actual = engine.joined_at[job.id] - submitted
        assert eta == pytest.approx(actual, abs=1e-6), job.owner
    assert any(eta > 0 for _, eta in shown.values())
