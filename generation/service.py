"""`GenerationService`: the asyncio face of one pipeline running on one worker thread.

The bot (and the CLI) submit requests and get `QueuedJob`s back; a dispatcher task on the event loop
asks the queue policy for the next batch of jobs and hands it to the engine on the worker
thread. This module is the one place where work crosses between the loop and that thread:

- loop -> worker: `loop.run_in_executor(self._gpu, ...)` (load, warm-up, generate, close);
- worker -> loop: `loop.call_soon_threadsafe(...)` for step progress; results come back
  through the executor future.

The event loop never runs model code. Encoding the images is the caller's business (the bot
does it in its own thread helper), so the GPU thread goes straight on to the next batch.

A CUDA out-of-memory error fails only the job(s) concerned (a shared call is first retried one
job at a time), and the worker goes on with the next jobs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from generation.errors import (
    GenerationError,
    JobCancelledError,
    NumericalError,
    OutOfMemoryError,
    QueueFullError,
    RequestError,
)
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
from generation.interfaces import Engine
from generation.job import QueuedJob
from generation.params import Limits
from generation.queue_policy import FairQueuePolicy, QueuePolicy
from generation.request import GenerationRequest
from generation.tiny import TINY_MODEL_ID, TINY_MODEL_NOTE

__all__ = ["GenerationService", "QueuedJob", "ServiceClosedError"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds per "work unit" (one image, one denoising step, at the native pixel count) assumed
#: before anything was measured.
_DEFAULT_UNIT_SECONDS = 0.1
#: Weight of the newest measurement in the moving average.
_EMA_ALPHA = 0.3
#: A decode plus the safety check cost about as much as this many steps.
_FIXED_STEPS = 2


class ServiceClosedError(QueueFullError):
    """The service is shutting down (or not started) and takes no new jobs."""


class GenerationService:
    """Queue + one worker thread + one engine. All methods run on the event loop's thread.

    `policy` picks the next job(s) (default: `FairQueuePolicy`); `limits` validate requests.
    Jobs may be submitted before `start()`; they wait until the model is loaded.
    """

    def __init__(
        self,
        engine: Engine,
        policy: QueuePolicy[QueuedJob] | None = None,
        *,
        limits: Limits | None = None,
        warmup: bool = True,
        warmup_size: tuple[int, int] = (512, 512),
    ) -> None:
        self._engine = engine
        # Not `policy or ...`: an empty policy has len() 0 and is falsy.
        self._policy: QueuePolicy[QueuedJob] = policy if policy is not None else FairQueuePolicy()
        self._limits = limits or Limits()
        self._warmup = warmup
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
        self._running_progress = 0.0
        self._unit_seconds: float | None = None

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

    @property
    def started(self) -> bool:
        return self._dispatcher is not None

    def pending_for(self, owner: str) -> int:
        """Jobs of `owner` waiting (not counting running ones), as limited by the policy."""
        return self._policy.pending_for(owner)

    def running(self) -> list[QueuedJob]:
        """The jobs in the pipeline call now running (empty between calls)."""
        return list(self._running)

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

        From a moving average of measured seconds per image-step (scaled by pixel count), the
        remaining work of the running batch, and the jobs ahead in the policy's order.
        """
        ahead = self._policy.order()[: max(0, position - 1)]
        running = sum(self._job_seconds(job) for job in self._running)
        running *= 1.0 - self._running_progress
        return running + sum(self._job_seconds(job) for job in ahead)

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
        if self._warmup:
            width, height = self._warmup_size
            result = await self._on_worker(self._engine.warmup, width, height)
            # Not fed to the speed estimate: first calls pay one-off set-up costs.
            log.info("warm-up done", extra={"seconds": round(result.gpu_seconds, 2)})
        self._dispatcher = asyncio.create_task(self._dispatch(), name="imagine-dispatch")

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
        self._gpu.shutdown(wait=False)

    # -- jobs -----------------------------------------------------------------------------

    def submit(
        self, request: GenerationRequest, owner: str = "", job_id: str | None = None
    ) -> QueuedJob:
        """Validate `request` and queue it for `owner`; raises `RequestError`/`QueueFullError`.

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
        job = QueuedJob(request.validated(self._limits), owner, self._cancel, job_id)
        self._policy.push(job)
        self._live[job.id] = job
        log.debug("job %s queued for %r: %d image(s)", job.id, owner, job.request.params.count)
        self._publish_positions()
        self._wakeup.set()
        return job

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
        while True:
            batch = self._policy.next_batch()
            if not batch:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._run_batch(batch)
            except Exception:  # a bug here must not stop the queue
                log.exception("dispatcher error")
                for job in batch:
                    job.fail(GenerationError("Internal error while generating; try again."))
                    self._live.pop(job.id, None)

    async def _run_batch(self, jobs: list[QueuedJob]) -> None:
        self._running = list(jobs)
        self._running_progress = 0.0
        images = sum(job.request.params.count for job in jobs)
        for job in jobs:
            job.publish(JobStarted(batch_images=images))
        self._publish_positions()
        log.debug("running %d job(s), %d image(s)", len(jobs), images)
        try:
            await self._run_jobs(jobs)
        finally:
            self._running = []
            self._running_progress = 0.0

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
            self._record_speed(results)
            for job, result in zip(live, results, strict=True):
                if result.all_failed and not job.cancel_requested:
                    # Nothing usable: a failed job (refunded by the caller), not a result.
                    reason = next(iter(result.failures.values()))
                    self._fail([job], NumericalError(f"No usable image: {reason}."))
                    continue
                self._end(job, JobCancelled() if job.cancel_requested else JobFinished(result))

    def _publish_step(self, jobs: list[QueuedJob], step: int, total: int) -> None:
        self._running_progress = step / total if total else 0.0
        for job in jobs:
            if not job.cancel_requested:
                job.publish(JobStep(step, total))

    def _publish_positions(self) -> None:
        """Send `JobQueued` to every waiting job whose position changed."""
        eta = sum(self._job_seconds(job) for job in self._running) * (1 - self._running_progress)
        for position, job in enumerate(self._policy.order(), start=1):
            if job.position != position:
                job.publish(JobQueued(position, eta))
            eta += self._job_seconds(job)

    def _end(self, job: QueuedJob, event: JobFinished | JobCancelled) -> None:
        job.publish(event)
        self._live.pop(job.id, None)
        log.debug("job %s %s", job.id, job.state.value)

    def _fail(self, jobs: Sequence[QueuedJob], error: GenerationError) -> None:
        for job in jobs:
            job.fail(error)
            self._live.pop(job.id, None)
            log.info("job %s failed: %s", job.id, error)

    # -- speed estimate -------------------------------------------------------------------

    def _record_speed(self, results: Sequence[GenerationResult]) -> None:
        seconds = sum(result.gpu_seconds for result in results)
        native = self._limits.native_pixels
        units = sum(_work_units(result.request, native) for result in results)
        if units <= 0 or seconds <= 0:
            return
        measured = seconds / units
        previous = self._unit_seconds
        self._unit_seconds = (
            measured if previous is None else previous + _EMA_ALPHA * (measured - previous)
        )

    def _job_seconds(self, job: QueuedJob) -> float:
        unit = self._unit_seconds if self._unit_seconds is not None else _DEFAULT_UNIT_SECONDS
        return unit * _work_units(job.request, self._limits.native_pixels)

    # -- crossing into threads ------------------------------------------------------------

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def _on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._require_loop()
        return await loop.run_in_executor(self._gpu, functools.partial(fn, *args))


def _work_units(request: GenerationRequest, native_pixels: int) -> float:
    params = request.params
    steps = params.steps * (params.strength if params.strength is not None else 1.0)
    area = params.width * params.height / native_pixels
    return params.count * (steps + _FIXED_STEPS) * area

