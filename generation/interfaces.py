"""The two seams of the package, as Protocols.

- `Engine`: the synchronous pipeline holder that runs on the worker thread (`DiffusersEngine`,
  or a fake in tests).
- `GenerationBackend`: what the bot talks to (submit, events, cancel, result). The in-process
  `GenerationService` is one implementation; a pool of remote GPU workers can be another, so
  nothing here mentions threads, executors or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from generation.continuous import StepOutcome
    from generation.events import GenerationResult, QueueStats, WorkerInfo
    from generation.job import QueuedJob
    from generation.params import Limits
    from generation.request import GenerationRequest, Operation

#: Called on the worker thread after each denoising step with (step, total), 1-based.
ProgressCallback = Callable[[int, int], None]
#: Polled on the worker thread between steps; True stops the pipeline call early.
StopCheck = Callable[[], bool]


class Engine(Protocol):
    """Holds one loaded pipeline; every method runs on the (single) worker thread."""

    @property
    def model_id(self) -> str: ...

    def load(self) -> None:
        """Load the model (may download it); raises `ModelNotFoundError`."""
        ...

    def supports(self, operation: Operation) -> bool:
        """Whether requests of `operation` can run (their optional model is configured)."""
        ...

    def warmup(self, width: int, height: int) -> GenerationResult:
        """Run one tiny generation so the first real job does not pay for lazy set-up."""
        ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_step: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[GenerationResult]:
        """Run validated requests sharing one `batch_key` as one pipeline call.

        Returns one result per request, in order. Raises `JobCancelledError` when `should_stop`
        stopped the call, `OutOfMemoryError` when the accelerator ran out of memory (the engine
        stays usable), `RequestError` for requests that cannot run together.
        """
        ...

    def close(self) -> None:
        """Release the pipeline and accelerator memory."""
        ...


@runtime_checkable
class StepEngine(Protocol):
    """An engine that can also run a step-level batch (`generation.continuous`)."""

    def supports_steps(self, request: GenerationRequest) -> bool:
        """Whether `request` may join the step batch; may be called from any thread."""
        ...

    def advance(
        self, joins: Sequence[tuple[str, GenerationRequest]], leaves: Sequence[str]
    ) -> StepOutcome:
        """Drop `leaves`, add `joins` (same size as the batch), run one step, decode the
        members that are done. Errors of single jobs come back in the outcome."""
        ...


class GenerationBackend(Protocol):
    """What the bot needs from an image generator, local or remote.

    All methods run on the event loop's thread and never block it. Implementations: the
    in-process `GenerationService` (one GPU worker thread); a pool of remote GPU workers can be
    another. Every implementation must pass the contract suite in
    ``tests/generation/contract/``.
    """

    @property
    def model_id(self) -> str:
        """The model the images are made with (a Hub id, a folder, or ``builtin:...``)."""
        ...

    @property
    def model_note(self) -> str | None:
        """A line to show with results (e.g. "random-weight test model: images are noise")."""
        ...

    @property
    def limits(self) -> Limits:
        """The bounds requests are validated against."""
        ...

    async def start(self) -> None:
        """Get ready to run jobs (load the model, connect); raises `GenerationError`."""
        ...

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs, cancel the waiting ones, let running ones finish (within `grace`
        seconds, then cancel them); the backend stays loaded until `close`. Safe to call
        twice. The bot's shutdown stops, posts the last results, then closes."""
        ...

    async def close(self, grace: float | None = None) -> None:
        """`stop` (with `grace`), then release everything. Safe to call twice."""
        ...

    def submit(
        self,
        request: GenerationRequest,
        owner: str = "",
        job_id: str | None = None,
        tier: str = "fast",
    ) -> QueuedJob:
        """Validate and queue (under `job_id` when given) for `owner` (fairness is per owner)
        in `tier` (`fast`, or `relax`: started only when no fast job waits).

        Raises `RequestError` (bad request, unknown tier, job id in use) or `QueueFullError` (the
        queue or the owner's share of it is full, or the backend is shutting down). The handle's
        first event is `JobQueued`; its `request` is the validated one (concrete seed).
        """
        ...

    async def enlist(
        self,
        connection: AsyncConnection,
        request: GenerationRequest,
        owner: str,
        job_id: str,
        tier: str = "fast",
    ) -> None:
        """Record the job durably inside the caller's open database transaction, so that it
        exists exactly when the caller's other writes (quota reservation, history row) commit.

        `connection`: the SQLAlchemy `AsyncConnection` of that transaction; `request`: the
        validated request (concrete seed) the caller then passes to `submit`, with the same
        `owner`, `job_id` and `tier`, before it commits. `submit` then only starts following
        the job; without an `enlist` first (a restart re-queueing stored jobs) it queues the
        job itself.
        The in-process service records nothing (its durable record is the caller's job row);
        a pool adds its queue entry through `connection`. Raises `GenerationError` when the
        job cannot be recorded (the caller rolls back).
        """
        ...

    def job(self, job_id: str) -> QueuedJob | None:
        """A queued or running job by id; None once it has ended."""
        ...

    def supports(self, operation: Operation) -> bool:
        """Whether the generator can run `operation` (Zoom/Pan and Upscale need extra models)."""
        ...

    def running(self) -> list[QueuedJob]:
        """The jobs being generated now."""
        ...

    def workers(self) -> Sequence[WorkerInfo] | None:
        """The GPU workers serving the queue (a pool; () while none is up), or None when the
        backend generates in this process."""
        ...

    def queue_stats(self) -> QueueStats:
        """Jobs and images waiting and running."""
        ...

    def estimate_wait(self, position: int) -> float:
        """Rough seconds until the job at queue `position` (1 = next) starts."""
        ...
