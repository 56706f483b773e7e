"""What a job produces: its result, its states and the progress events it emits.

All plain frozen dataclasses with no reference to threads, loops or torch, so the same types
can describe a job run in-process or on a remote GPU worker.

A job's events, in order::

    JobQueued(position) ...       once at submission, again whenever its position changes
    JobStarted()                  the worker took it
    JobStep(step, total) ...      after each denoising step
    JobFinished | JobFailed | JobCancelled     exactly one, last
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.request import GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class GenerationResult:
    """The images of one job, in order, with what is needed to reproduce or judge each.

    `seeds[i]` re-makes `images[i]` alone (same model, device and settings). `nsfw[i]` is the
    safety checker's flag; flagged images are returned unmodified, the caller decides.
    `safety_checked` is False when the checker was off or the model has none (then every flag
    is False). `gpu_seconds` is this job's share of the worker time of the pipeline call it ran
    in (shared calls are split by image count). `failures` maps the 0-based index of each
    image that came out unusable (NaN, infinite or uniformly black pixels) to the reason, in
    words for the member; `images[i]` is then a black placeholder, not to be shown or charged.
    `captions`: a DESCRIBE request's prompt suggestions, best first (its `images` is empty).
    """

    images: list[Image] = field(repr=False)
    seeds: list[int]
    nsfw: list[bool]
    warnings: list[str]
    request: GenerationRequest
    model_id: str
    gpu_seconds: float
    safety_checked: bool = True
    failures: dict[int, str] = field(default_factory=dict)
    captions: list[str] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        return bool(self.images) and len(self.failures) >= len(self.images)


@dataclass(frozen=True)
class QueueStats:
    """A backend's queue at one moment: jobs (and their images) waiting and running."""

    waiting: int
    running: int
    waiting_images: int = 0
    running_images: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """One GPU worker of a pool, as `/info` shows it: where it runs, how many jobs it runs
    now, and `silent_seconds` since its last heartbeat."""

    worker_id: int
    host: str
    device: str
    gpu: str
    model_id: str
    running: int
    silent_seconds: float


@dataclass(frozen=True)
class JobQueued:
    """Waiting; `position` 1 is next to start. `eta_seconds` is a rough estimate, or None.

    `note` is a sentence for the member about the wait when there is something to say (a pool
    with no GPU worker connected), else None.
    """

    position: int
    eta_seconds: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class JobStarted:
    """The worker took the job; `batch_images` counts all images in the shared pipeline call.

    `note` is a sentence for the member when the start waits on something (an optional model
    loading on its first use), else None.
    """

    batch_images: int = 0
    note: str | None = None


@dataclass(frozen=True)
class JobStep:
    """Denoising step `step` of `total` (1-based) is done."""

    step: int
    total: int


@dataclass(frozen=True)
class JobFinished:
    result: GenerationResult


@dataclass(frozen=True)
class JobFailed:
    """The job failed; `error` is a message fit to show the member."""

    error: str


@dataclass(frozen=True)
class JobCancelled:
    reason: str = "cancelled"


JobEvent = JobQueued | JobStarted | JobStep | JobFinished | JobFailed | JobCancelled
FINAL_EVENTS = (JobFinished, JobFailed, JobCancelled)
