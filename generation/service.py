"""`GenerationService`: the asyncio face of one pipeline running on one worker thread.

The bot (and the CLI) submit requests and get `QueuedJob`s back; a dispatcher task on the event loop
asks the queue policy for the next batch of jobs and hands it to the engine on the worker
thread. This module is the one place where work crosses between the loop and that thread:

- loop -> worker: `loop.run_in_executor(self._gpu, ...)` (load, warm-up, generate, advance,
  close);
- worker -> loop: `loop.call_soon_threadsafe(...)` for step progress; results come back
  through the executor future.

Two ways to run jobs. The default, for engines that can (`StepEngine`, e.g. `DiffusersEngine`):
step-level batching, where the dispatcher calls `engine.advance` once per denoising step,
letting waiting jobs of the same size join the running batch between steps (in the policy's
fair order, never skipping the job whose turn it is) and finished jobs leave at once. Otherwise
(img2img variations, engines without steps): one pipeline call per batch from `next_batch`.

After the model is loaded and warmed up, `gc.freeze()` moves the ~500k objects the model brings
into the permanent generation, so full collections no longer walk them with the event loop's
thread held (they stalled it 97-511 ms each before).

The event loop never runs model code. Encoding the images is the caller's business (the bot
does it in its own thread helper), so the GPU thread goes straight on to the next batch.

A CUDA out-of-memory error fails only the job(s) concerned (a shared call or step is first
split and retried), and the worker goes on with the next jobs.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from generation.errors import (
    GenerationError,
    JobCancelledError,
    NumericalError,
    OutOfMemoryError,
    QueueFullError,
    RequestError,
)
from generation.eta import EtaEstimator, Work
from generation.events import (
    GenerationResult,
    JobCancelled,
    JobFinished,
    JobQueued,
    JobStarted,
    JobState,
    JobStep,
    QueueStats,
)
from generation.interfaces import Engine, StepEngine
from generation.job import QueuedJob
from generation.params import GenerationParams, Limits
from generation.queue_policy import DEFAULT_TIER, TIERS, FairQueuePolicy, QueuePolicy
from generation.request import GenerationRequest, Operation
from generation.tiny import TINY_MODEL_ID, TINY_MODEL_NOTE

if TYPE_CHECKING:
    from generation.continuous import StepOutcome

__all__ = ["GenerationService", "QueuedJob", "ServiceClosedError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

class ServiceClosedError(QueueFullError):
    """The service is shutting down (or not started) and takes no new jobs."""


class GenerationService:
    """Queue + one worker thread + one engine. All methods run on the event loop's thread.

    `policy` picks the next job(s) (default: `FairQueuePolicy`); `limits` validate requests.
    Jobs may be submitted before `start()`; they wait until the model is loaded.
    `continuous` (default on) uses step-level batching when the engine supports it, with at
    most `max_batch_images` images in the running batch (default: the policy's
    `max_batch_images`, 8; 1 job at a time when the policy's `batching` is off). `freeze_gc`
    freezes the objects alive after warm-up out of the garbage collector's way.
    `warm_buckets` (default: `warmup`) compiles the engine's batch buckets at start (engines
    with a `warm_buckets(width, height)` method; a no-op where nothing is compiled). `eta`
    learns step costs and estimates the waits shown to members (default: `EtaEstimator()`;
    tests pass one with a fake clock).
    """

    def __init__(
        self,
        engine: Engine,
        policy: QueuePolicy[QueuedJob] | None = None,
        *,
        limits: Limits | None = None,
        warmup: bool = True,
        warmup_size: tuple[int, int] = (512, 512),
        continuous: bool = True,
        max_batch_images: int | None = None,
        freeze_gc: bool = True,
        warm_buckets: bool | None = None,
        eta: EtaEstimator | None = None,
    ) -> None:
        self._engine = engine
        self._steps: StepEngine | None = (
            engine if continuous and isinstance(engine, StepEngine) else None
        )
        self._freeze_gc = freeze_gc
        # Not `policy or ...`: an empty policy has len() 0 and is falsy.
        self._policy: QueuePolicy[QueuedJob] = policy if policy is not None else FairQueuePolicy()
        if max_batch_images is None:
            max_batch_images = getattr(self._policy, "max_batch_images", 8)
        self._max_images = max_batch_images
        self._one_job = not getattr(self._policy, "batching", True)
        self._limits = limits or Limits()
        self._warmup = warmup
        self._warm_buckets = warmup if warm_buckets is None else warm_buckets
        self._warmup_size = warmup_size
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-gpu")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._accepting = True
        self._stopped = False
        self._closed = False
        self._live: dict[str, QueuedJob] = {}
        self._running: list[QueuedJob] = []
        self._progress: dict[str, tuple[int, int]] = {}
        self._eta = eta if eta is not None else EtaEstimator()

    # -- information ----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    @property
    def model_note(self) -> str | None:
        """A line to show with results when the model is the built-in test model."""
        return TINY_MODEL_NOTE if self.model_id == TINY_MODEL_ID else None

    @property
    def limits(self) -> Limits:
        return self._limits

    def supports(self, operation: Operation) -> bool:
        """Whether `operation` can run (its model is configured; it loads on first use)."""
        return self._engine.supports(operation)

    @property
    def started(self) -> bool:
        return self._dispatcher is not None

    def pending_for(self, owner: str) -> int:
        """Jobs of `owner` waiting (not counting running ones), as limited by the policy."""
        return self._policy.pending_for(owner)

    def running(self) -> list[QueuedJob]:
        """The jobs in the pipeline call now running (empty between calls)."""
        return list(self._running)

    def workers(self) -> None:
        """None: this backend has no separate workers (the GPU is this process's)."""
        return None

    def queue_stats(self) -> QueueStats:
        """Jobs and images waiting and running, for status displays."""
        return QueueStats(
            waiting=len(self._policy),
            running=len(self._running),
            waiting_images=sum(job.request.params.count for job in self._policy.order()),
            running_images=sum(job.request.params.count for job in self._running),
        )

    def job(self, job_id: str) -> QueuedJob | None:
        """A queued or running job by id (None once it has ended)."""
        return self._live.get(job_id)

    def estimate_wait(self, position: int) -> float:
        """Seconds until the job at queue `position` (1 = next) starts, roughly.

        See `_waits`; a position past the queue's end gets the wait after every queued job.
        """
        waits = self._waits(extra=True)
        return waits[min(max(position, 1), len(waits)) - 1][1]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model on the worker thread, warm it up, and start serving the queue.

        Raises `ModelNotFoundError` (or another `GenerationError`) when the model cannot load.
        """
        if self._dispatcher is not None:
            return
        if self._stopped:
            raise ServiceClosedError("The image generator has been shut down.")
        self._loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await self._on_worker(self._engine.load)
        seconds = round(time.perf_counter() - started, 1)
        log.info("model ready", extra={"model": self.model_id, "seconds": seconds})
        width, height = self._warmup_size
        if self._warmup:
            # Not fed to the speed estimate: first calls pay one-off set-up costs. The engine
            # reports the stage (see `generation.progress`).
            await self._on_worker(self._engine.warmup, width, height)
        warm = getattr(self._engine, "warm_buckets", None)
        if self._warm_buckets and warm is not None:
            await self._on_worker(warm, width, height)
        if self._warmup and self._steps is not None:
            await self._calibrate(self._steps, width, height)
        if self._freeze_gc:
            # Everything alive now (model, modules, tokenizer) lives until shutdown.
            gc.collect()
            gc.freeze()
            log.info("gc: froze %d objects after loading", gc.get_freeze_count())
        self._dispatcher = asyncio.create_task(self._dispatch(), name="imagine-dispatch")

    async def _calibrate(self, engine: StepEngine, width: int, height: int) -> None:
        """Time one 1-image job, then a full batch (jobs of up to `max_count` images filling
        `max_batch_images`), through the (now warm) step batch: the first ETAs then come from
        this machine's step cost at both ends of the batch sizes, not from a guess."""
        most = min(self._limits.max_count, self._max_images)
        full = [most] if self._one_job else [
            min(most, self._max_images - done) for done in range(0, self._max_images, most)
        ]

        def calibration(index: int, count: int) -> tuple[str, GenerationRequest]:
            params = GenerationParams(
                "calibration", seed=0, steps=3, count=count, width=width, height=height
            )
            return f"calibration-{index}", GenerationRequest(params).validated(self._limits)

        for counts in ([1], full):
            try:
                requests = [calibration(index, count) for index, count in enumerate(counts)]
            except RequestError:  # a warm-up size outside the limits: keep the default guess
                return
            pending = {key for key, _ in requests}
            for _ in range(10):  # 3 steps, then the decode (overlapped or not)
                self._eta.advance_started(sum(r.params.count for _, r in requests))
                outcome = await self._on_worker(engine.advance, requests, [])
                self._observe(outcome, requests)
                requests = []
                pending -= {*outcome.finished, *outcome.failed}
                if not pending:
                    break
        log.info(
            "speed: %.3f s per step of one image, %.3f s of %d images, at %dx%d",
            self._eta.cost.step(2 * width * height / self._limits.native_pixels),
            self._eta.cost.step(2 * self._max_images * width * height / self._limits.native_pixels),
            self._max_images,
            width,
            height,
        )

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs, cancel the waiting ones and let the running batch finish.

        With `grace` seconds, a running batch still going after that is cancelled (it stops at
        its next step). The model stays loaded until `close`: the bot posts the last batch's
        results in between. Safe to call twice.
        """
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        for job in self._policy.order():
            self._policy.remove(job)
            self._end(job, JobCancelled("cancelled because the image generator is shutting down"))
        self._wakeup.set()
        if self._dispatcher is not None:
            if grace is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._dispatcher), grace)
                except TimeoutError:
                    for job in self._running:
                        job.cancel_requested = True
            await self._dispatcher

    async def close(self, grace: float | None = None) -> None:
        """`stop` (with `grace`), then unload the model and end the worker thread.

        Safe to call more than once, and after a failed `start()`.
        """
        if self._closed:
            return
        self._closed = True
        await self.stop(grace)
        if self._loop is not None:
            await self._on_worker(self._engine.close)
        if self._freeze_gc and self._dispatcher is not None:
            gc.unfreeze()  # let the unloaded model be collected
        self._gpu.shutdown(wait=False)

    # -- jobs -----------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        owner: str = "",
        job_id: str | None = None,
        tier: str = DEFAULT_TIER,
    ) -> QueuedJob:
        """Validate `request` and queue it for `owner`; raises `RequestError`/`QueueFullError`.

        `tier` is `fast` (default) or `relax`: relax jobs start only when no fast job waits.

        The returned job's `request` is the validated one (with its concrete seed). Its first
        event is `JobQueued(position)`. `job_id` lets a caller that records the job before
        queueing it (quota reservations, history) use one id everywhere; default: a new uuid.
        """
        if job_id is not None and job_id in self._live:
            raise RequestError(f"job id {job_id} is already in use")
        if not self._accepting:
            raise ServiceClosedError(
                "The image generator is shutting down and takes no new requests."
            )
        if tier not in TIERS:
            raise RequestError(f"Unknown tier {tier!r}; choose one of: {', '.join(TIERS)}.")
        job = QueuedJob(request.validated(self._limits), owner, self._cancel, job_id, tier)
        self._policy.push(job)
        self._live[job.id] = job
        log.debug("job %s queued for %r: %d image(s)", job.id, owner, job.request.params.count)
        self._publish_positions()
        self._wakeup.set()
        return job

    async def enlist(
        self,
        connection: object,
        request: GenerationRequest,
        owner: str,
        job_id: str,
        tier: str = DEFAULT_TIER,
    ) -> None:
        """Nothing to record: this queue lives in memory, and the job's durable record is the
        history row the caller writes in the same transaction (a restart queues it again
        from there). See `GenerationBackend.enlist`."""

    def _cancel(self, job: QueuedJob) -> bool:
        if job.state is JobState.QUEUED and self._policy.remove(job):
            self._end(job, JobCancelled())
            self._publish_positions()
            return True
        if job.state is JobState.RUNNING:
            job.cancel_requested = True
            return True
        return False

    # -- the dispatcher (event loop side) -------------------------------------------------

    async def _dispatch(self) -> None:
        if self._steps is not None:
            await self._dispatch_steps(self._steps)
            return
        while True:
            batch = self._policy.next_batch()
            if not batch:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._guarded(self._run_batch, batch)

    async def _dispatch_steps(self, engine: StepEngine) -> None:
        """Step-level batching: one `engine.advance` per denoising step (see module doc)."""
        running: dict[str, QueuedJob] = {}
        while True:
            joins = self._admit(engine, running)
            if not running:
                head = next(iter(self._policy.order()), None)
                if head is not None:  # a job the step batch cannot run (a variation)
                    batch = self._policy.next_batch()
                    await self._guarded(self._run_batch, batch)
                    continue
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            leaves = [key for key, job in running.items() if job.cancel_requested]
            for key in leaves:
                self._end(running.pop(key), JobCancelled())
            self._running = list(running.values())
            requests = [(job.id, job.request) for job in joins if job.id in running]
            try:
                self._eta.advance_started(sum(r.params.count for _, r in requests))
                outcome = await self._on_worker(engine.advance, requests, leaves)
            except Exception as exc:  # a bug or a device failure: fail this batch, go on
                log.exception("step batch failed")
                error = GenerationError(f"Generation failed: {type(exc).__name__}: {exc}")
                self._fail(list(running.values()), error)
                running.clear()
                self._running = []
                continue
            self._observe(outcome, requests)
            self._settle(outcome, running)

    def _admit(self, engine: StepEngine, running: dict[str, QueuedJob]) -> list[QueuedJob]:
        """Move waiting jobs into the running step batch, in fair order, while they fit.

        Stops at the first job that does not fit (another size, too many images, a variation)
        so that the job whose turn it is never gets overtaken: the batch drains for it instead.
        Jobs whose steps are done (their images being decoded) take no room.
        """
        stepping = [job for job in running.values() if not self._steps_done(job)]
        images = sum(job.request.params.count for job in stepping)
        size = next((_size(j.request) for j in stepping), None)
        joins: list[QueuedJob] = []
        while True:
            head = next(iter(self._policy.order()), None)
            if head is None or not engine.supports_steps(head.request):
                break
            request = head.request
            if size is not None:
                full = images + request.params.count > self._max_images
                if self._one_job or full or size != (request.params.width, request.params.height):
                    break
            self._policy.take(head)
            joins.append(head)
            running[head.id] = head
            images += request.params.count
            size = (request.params.width, request.params.height)
        if joins:
            self._running = list(running.values())
            for job in joins:
                job.publish(JobStarted(batch_images=images))
            self._publish_positions()
            log.debug("%d job(s) joined the step batch (%d images)", len(joins), images)
        return joins

    def _settle(self, outcome: StepOutcome, running: dict[str, QueuedJob]) -> None:
        """Publish one step's progress, results and failures."""
        for key, (step, total) in outcome.progress.items():
            job = running.get(key)
            if job is not None and not job.cancel_requested:
                self._progress[key] = (step, total)
                job.publish(JobStep(step, total))
        for key, result in outcome.finished.items():
            job = running.pop(key, None)
            if job is not None:
                self._deliver(job, result)
        for key, error in outcome.failed.items():
            job = running.pop(key, None)
            if job is not None:
                self._fail([job], error)
        self._running = list(running.values())
        if outcome.finished or outcome.failed:
            self._publish_positions()

    async def _guarded(self, run: Callable[[list[QueuedJob]], Any], batch: list[QueuedJob]) -> None:
        try:
            await run(batch)
        except Exception:  # a bug here must not stop the queue
            log.exception("dispatcher error")
            for job in batch:
                job.fail(GenerationError("Internal error while generating; try again."))
                self._live.pop(job.id, None)

    async def _run_batch(self, jobs: list[QueuedJob]) -> None:
        self._running = list(jobs)
        for job in jobs:
            self._progress.pop(job.id, None)
        images = sum(job.request.params.count for job in jobs)
        # Engines with optional models say when the first use loads one (the wait is then
        # the load, not the queue); others have nothing to say.
        loading_note = getattr(self._engine, "loading_note", None)
        note = loading_note(jobs[0].request.operation) if loading_note is not None else None
        for job in jobs:
            job.publish(JobStarted(batch_images=images, note=note))
        self._publish_positions()
        log.debug("running %d job(s), %d image(s)", len(jobs), images)
        try:
            await self._run_jobs(jobs)
        finally:
            self._running = []

    async def _run_jobs(self, jobs: list[QueuedJob]) -> None:
        live = []
        for job in jobs:
            if job.cancel_requested:
                self._end(job, JobCancelled())
            else:
                live.append(job)
        if not live:
            return
        loop = self._require_loop()

        def on_step(step: int, total: int) -> None:  # worker thread
            loop.call_soon_threadsafe(self._publish_step, live, step, total)

        def should_stop() -> bool:  # worker thread
            return all(job.cancel_requested for job in live)

        requests = [job.request for job in live]
        try:
            results = await self._on_worker(self._engine.generate, requests, on_step, should_stop)
        except OutOfMemoryError as exc:
            if len(live) > 1:
                log.warning("out of memory for a shared call; retrying its jobs one by one")
                for job in live:
                    await self._run_jobs([job])
                return
            self._fail(live, exc)
        except JobCancelledError:
            for job in live:
                self._end(job, JobCancelled())
        except GenerationError as exc:
            self._fail(live, exc)
        except Exception as exc:
            log.exception("generation failed")
            self._fail(live, GenerationError(f"Generation failed: {type(exc).__name__}: {exc}"))
        else:
            for result in results:
                self._eta.pipeline_done(self._work(result.request), result.gpu_seconds)
            for job, result in zip(live, results, strict=True):
                self._deliver(job, result)

    def _deliver(self, job: QueuedJob, result: GenerationResult) -> None:
        """End `job` with its result (either way of running), or as failed when no image of
        it is usable (NaN/black: a failed job, refunded by the caller), or as cancelled."""
        if job.cancel_requested:
            self._end(job, JobCancelled())
        elif result.all_failed:
            reason = next(iter(result.failures.values()))
            self._fail([job], NumericalError(f"No usable image: {reason}."))
        else:
            self._end(job, JobFinished(result))

    def _publish_step(self, jobs: list[QueuedJob], step: int, total: int) -> None:
        for job in jobs:
            if not job.cancel_requested:
                self._progress[job.id] = (step, total)
                job.publish(JobStep(step, total))

    def _publish_positions(self) -> None:
        """Send `JobQueued` to every waiting job whose position changed."""
        for position, (job, eta) in enumerate(self._waits(), start=1):
            if job.position != position:
                job.publish(JobQueued(position, eta))

    def _waits(self, extra: bool = False) -> list[tuple[QueuedJob | None, float]]:
        """Each waiting job (policy order) with the seconds until it starts, estimated by
        `generation.eta` (the dispatcher replayed with step costs measured at each batch
        load); `extra` appends (None, the wait of a job queued after all of them)."""
        running = []
        for job in self._running:
            step, total = self._progress.get(job.id, (0, 0))
            running.append(self._work(job.request, step, total or None))
        order = self._policy.order()
        waits = self._eta.waits(
            running,
            [self._work(job.request) for job in order],
            max_images=self._max_images,
            stepwise=self._steps is not None,
            one_job=self._one_job,
        )
        pairs: list[tuple[QueuedJob | None, float]] = list(zip(order, waits, strict=False))
        if extra:
            pairs.append((None, waits[-1]))
        return pairs

    def _work(self, request: GenerationRequest, step: int = 0, total: int | None = None) -> Work:
        """`request` as the ETA sees it, `step` of `total` steps done (None: not started)."""
        params = request.params
        if request.operation is Operation.DESCRIBE:
            # A caption costs a fraction of one denoising step: no steps, no load, so it is
            # kept out of what the estimate learns.
            return Work(params.count, 0.0, 0, _size(request), False)
        if total is None:
            strength = params.strength if params.strength is not None else 1.0
            total = max(1, round(params.steps * strength))
        rows = params.count * (2 if params.guidance > 1.0 else 1)
        area = params.width * params.height / self._limits.native_pixels
        stepwise = self._steps is not None and self._steps.supports_steps(request)
        return Work(params.count, rows * area, max(0, total - step), _size(request), stepwise)

    def _steps_done(self, job: QueuedJob) -> bool:
        """Whether `job` ran all its steps in the step batch (its images are being decoded)."""
        step, total = self._progress.get(job.id, (0, 0))
        return total > 0 and step >= total

    def _end(self, job: QueuedJob, event: JobFinished | JobCancelled) -> None:
        job.publish(event)
        self._live.pop(job.id, None)
        self._progress.pop(job.id, None)
        log.debug("job %s %s", job.id, job.state.value)

    def _fail(self, jobs: Sequence[QueuedJob], error: GenerationError) -> None:
        for job in jobs:
            job.fail(error)
            self._live.pop(job.id, None)
            self._progress.pop(job.id, None)
            log.info("job %s failed: %s", job.id, error)

    # -- speed estimate -------------------------------------------------------------------

    def _observe(
        self, outcome: StepOutcome, joins: Sequence[tuple[str, GenerationRequest]]
    ) -> None:
        """Feed one advance's timings to the ETA's cost model (loads in native-area rows)."""
        area = outcome.pixels / self._limits.native_pixels
        self._eta.advance_done(
            load=outcome.rows * area,
            joined_images=sum(request.params.count for _, request in joins),
            admit_seconds=outcome.admit_seconds,
            finished_load=outcome.left_rows * area,
            finish_seconds=outcome.finish_seconds,
        )

    # -- crossing into threads ------------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def _on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._require_loop()
        return await loop.run_in_executor(self._gpu, functools.partial(fn, *args))


def _size(request: GenerationRequest) -> tuple[int, int]:
    return request.params.width, request.params.height
