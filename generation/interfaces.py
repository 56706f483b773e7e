"""The two seams of the package, as Protocols.

- `Engine`: the synchronous pipeline holder that runs on the worker thread (`DiffusersEngine`,
  or a fake in tests).
- `GenerationBackend`: what the bot talks to (submit, events, cancel, result). The in-process
  `GenerationService` is one implementation; a pool of remote GPU workers can be another, so
  nothing here mentions threads, executors or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL.Image import Image

    from generation.events import GenerationResult
    from generation.job import Job
    from generation.request import GenerationRequest, Limits

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


class GenerationBackend(Protocol):
    """What the bot needs from an image generator, local or remote."""

    @property
    def model_id(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def submit(
        self, request: GenerationRequest, owner: str = "", job_id: str | None = None
    ) -> Job:
        """Validate and queue (under `job_id` when given); raises `RequestError` or
        `QueueFullError`."""
        ...

    def queue_length(self) -> int: ...

    def pending_for(self, owner: str) -> int: ...

    def estimate_wait(self, position: int) -> float: ...

    async def encode_grid(
        self, images: Sequence[Image], fmt: str = "png", limit_bytes: int | None = None
    ) -> tuple[bytes, str]: ...
