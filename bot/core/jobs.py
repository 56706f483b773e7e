"""The life of one job, with no Discord in it: check, reserve, record, queue, settle.

`JobOrchestrator.submit` runs the gate in a fixed order, so a refused request leaves nothing
behind:

1. moderation (bot enabled, channel allowed, member not banned, no blocked word);
2. validation (steps, size, guidance...) with a concrete seed drawn;
3. quota reservation for the images asked for;
4. the generation queue (owner = "guild:user", so the service's round-robin is per member);
5. the history record.

Then `JobOrchestrator.run` follows the job's events and settles it: images stored on disk,
quota charged (withheld NSFW images refunded), history updated; a failure or a cancellation
refunds everything. Any step after the reservation that fails gives the images back.

The Discord side (`bot.cogs.imagine`) only turns interactions into `Requester`/`JobPlan`
and outcomes into messages.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from bot.core.image_store import ImageStore
from bot.db.models import JobKind, NsfwPolicy
from bot.services import Services
from bot.services.history import JobRecord, JobView
from generation.errors import GenerationError
from generation.events import (
    GenerationResult,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobStarted,
)
from generation.interfaces import GenerationBackend
from generation.job import QueuedJob
from generation.request import GenerationRequest

__all__ = [
    "ImageFate",
    "JobOrchestrator",
    "JobPlan",
    "Outcome",
    "OutcomeStatus",
    "Requester",
    "Submission",
    "decide_fates",
    "request_from_job",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[JobEvent], Awaitable[None]]


@dataclass(frozen=True)
class Requester:
    """Who asked, and where: everything the gate and the NSFW policy need."""

    guild_id: int
    channel_id: int
    user_id: int
    role_ids: tuple[int, ...] = ()
    channel_nsfw: bool = False
    #: The channel a thread belongs to: the allow-list names channels, not their threads.
    parent_channel_id: int | None = None

    @property
    def allow_list_channel_id(self) -> int:
        return self.parent_channel_id or self.channel_id

    @property
    def owner(self) -> str:
        """The queue owner: fairness is per member per server."""
        return f"{self.guild_id}:{self.user_id}"


@dataclass(frozen=True)
class JobPlan:
    """What to run and how it relates to earlier jobs (`image_index` is 1-based)."""

    request: GenerationRequest
    kind: JobKind = JobKind.TXT2IMG
    parent_job_id: str | None = None
    image_index: int | None = None


@dataclass(frozen=True)
class Submission:
    """A submitted job: its id (database, quota ledger, buttons and backend alike), the
    backend's handle on the queued job, who asked and what."""

    job_id: str
    queued: QueuedJob = field(repr=False)
    requester: Requester
    plan: JobPlan

    @property
    def request(self) -> GenerationRequest:
        """The validated request (concrete seed)."""
        return self.queued.request


class OutcomeStatus(enum.Enum):
    SUCCEEDED = "succeeded"  # at least one image may be shown
    BLOCKED = "blocked"  # every image was withheld by the NSFW policy
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImageFate(enum.Enum):
    """What the NSFW policy decided for one image."""

    SHOW = "show"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"


@dataclass(frozen=True)
class Outcome:
    """How a job ended, with what the message needs."""

    job_id: str
    status: OutcomeStatus
    images: tuple[Image.Image, ...] = field(default=(), repr=False)
    fates: tuple[ImageFate, ...] = ()
    seeds: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    error: str | None = None
    refunded: int = 0

    @property
    def withheld(self) -> tuple[int, ...]:
        """1-based indexes of the images not posted."""
        return tuple(i for i, fate in enumerate(self.fates, 1) if fate is ImageFate.WITHHOLD)

    @property
    def spoiler(self) -> bool:
        return ImageFate.SPOILER in self.fates


def request_from_job(
    job: JobView, *, init_image: Image.Image | None = None, **changes: Any
) -> GenerationRequest:
    """A stored job's parameters as a new request (no seed unless given), with `changes` to
    its parameters and `init_image` as the source image of image-to-image work.

    The one place reroll, variations and re-made images read a job back into a request.
    """
    params = replace(job.params, **{"seed": None, **changes})
    return GenerationRequest(params, init_image=init_image)


def decide_fates(
    nsfw: Sequence[bool], policy: NsfwPolicy, channel_nsfw: bool
) -> tuple[ImageFate, ...]:
    """Apply a server's NSFW policy to the safety checker's flags, image by image."""
    fates = []
    for flagged in nsfw:
        if not flagged:
            fates.append(ImageFate.SHOW)
        elif policy is NsfwPolicy.SPOILER:
            fates.append(ImageFate.SPOILER)
        elif policy is NsfwPolicy.AGE_RESTRICTED and channel_nsfw:
            fates.append(ImageFate.SHOW)
        else:
            fates.append(ImageFate.WITHHOLD)
    return tuple(fates)


def _logged(outcome: Outcome) -> Outcome:
    """One log line per settled job (the bot's structured log: key=value or JSON)."""
    log.info(
        "job settled",
        extra={
            "job": outcome.job_id,
            "status": outcome.status.value,
            "images": len(outcome.images),
            "refunded": outcome.refunded,
            **({"error": outcome.error} if outcome.error else {}),
        },
    )
    return outcome


class JobOrchestrator:
    """Submits jobs through the gate and settles them; holds the live ones for cancelling."""

    def __init__(
        self, services: Services, generation: GenerationBackend, images: ImageStore
    ) -> None:
        self._services = services
        self._generation = generation
        self._images = images
        self._live: dict[str, Submission] = {}

    # -- information ----------------------------------------------------------------------

    @property
    def generation(self) -> GenerationBackend:
        return self._generation

    def live(self, job_id: str) -> Submission | None:
        """A job submitted by this process and not settled yet."""
        return self._live.get(job_id)

    def live_for(self, guild_id: int, user_id: int) -> list[Submission]:
        """The member's queued and running jobs, oldest first."""
        return [
            sub
            for sub in self._live.values()
            if sub.requester.guild_id == guild_id and sub.requester.user_id == user_id
        ]

    # -- submitting -----------------------------------------------------------------------

    async def submit(self, requester: Requester, plan: JobPlan) -> Submission:
        """Run the gate and queue the job; raises ServiceError/RequestError/QueueFullError.

        Nothing is reserved or recorded when it raises.
        """
        services = self._services
        request = plan.request
        await services.moderation.check(
            requester.guild_id,
            requester.user_id,
            request.params.prompt,
            request.params.negative_prompt,
            channel_id=requester.allow_list_channel_id,
        )
        request = request.validated(self._generation.limits)
        job_id = uuid.uuid4().hex
        await services.quota.reserve(
            requester.guild_id, requester.user_id, requester.role_ids, request.params.count, job_id
        )
        try:
            queued = self._generation.submit(request, owner=requester.owner, job_id=job_id)
        except BaseException:
            await services.quota.refund(job_id)
            raise
        submission = Submission(job_id, queued, requester, replace(plan, request=queued.request))
        try:
            await services.history.create_job(self._record(submission))
        except BaseException:
            queued.cancel()
            await services.quota.refund(job_id)
            raise
        self._live[job_id] = submission
        return submission

    def cancel(self, job_id: str) -> bool:
        """Cancel a live job (queued, or running: it stops at its next step).

        Settling (refund, history) happens in `run` when the job's final event arrives.
        """
        submission = self._live.get(job_id)
        return submission is not None and submission.queued.cancel()

    # -- settling -------------------------------------------------------------------------

    async def run(
        self, submission: Submission, on_progress: ProgressCallback | None = None
    ) -> Outcome:
        """Follow the job to its end, pass progress events on, settle and describe it.

        A failing progress callback does not stop the job; an error while settling refunds
        the images and reports the job failed.
        """
        try:
            async for event in submission.queued.events():
                if isinstance(event, JobStarted):
                    await self._quietly(self._services.history.mark_running(submission.job_id))
                if isinstance(event, JobFinished):
                    return _logged(await self._succeeded(submission, event.result))
                if isinstance(event, JobFailed):
                    return _logged(await self._failed(submission, event.error))
                if isinstance(event, JobCancelled):
                    return _logged(await self._cancelled(submission))
                if on_progress is not None:
                    await self._progress(on_progress, event)
            raise GenerationError("The job ended without a result.")  # pragma: no cover
        except asyncio.CancelledError:
            submission.queued.cancel()
            await asyncio.shield(self._settle_abandoned(submission, "The bot shut down."))
            raise
        except Exception as exc:
            log.exception("settling job %s failed", submission.job_id)
            return await self._failed(submission, f"Internal error: {type(exc).__name__}")
        finally:
            self._live.pop(submission.job_id, None)

    async def recover(self) -> int:
        """At start-up: fail the jobs a previous run left unfinished and refund them."""
        unfinished = await self._services.history.fail_unfinished()
        for job in unfinished:
            await self._services.quota.refund(job.id)
        if unfinished:
            log.info("refunded %d job(s) left unfinished by the previous run", len(unfinished))
        return len(unfinished)

    async def regenerate(
        self, job: JobView, index: int, owner: str | None = None
    ) -> Image.Image:
        """Re-make image `index` (1-based) of a stored job from its parameters and seed.

        For U/V buttons whose image file is gone. Not charged: the member already paid for
        the image. Variations need their source image, found (or re-made) the same way.
        `owner` is the queue owner of the member who asked (default: the job's requester), so
        the re-make takes that member's turn and counts toward their per-member queue limit.
        """
        if job.seeds is None or not 1 <= index <= len(job.seeds):
            raise GenerationError("That image has no recorded seed, so it cannot be re-made.")
        init_image = None
        if job.kind is JobKind.VARIATION and job.parent_job_id and job.image_index is not None:
            init_image = await self.source_image(
                job.parent_job_id, job.image_index + 1, owner=owner
            )
        # A variation whose source job is gone is re-made from its prompt alone.
        strength = job.params.strength if init_image is not None else None
        request = request_from_job(
            job, seed=job.seeds[index - 1], count=1, init_image=init_image, strength=strength
        )
        owner = owner or f"{job.guild_id}:{job.user_id}"
        result = await self._generation.submit(request, owner=owner).result()
        image = result.images[0]
        await self._images.save(job.id, [(index, image)])
        return image

    async def source_image(
        self, job_id: str, index: int, owner: str | None = None
    ) -> Image.Image:
        """Image `index` of a job, from disk or re-made (for `owner`, see `regenerate`);
        raises NotFound for unknown jobs."""
        image = await self._images.load(job_id, index)
        if image is not None:
            return image
        job = await self._services.history.require(job_id)
        return await self.regenerate(job, index, owner)

    # -- internals ------------------------------------------------------------------------

    async def _progress(self, callback: ProgressCallback, event: JobEvent) -> None:
        try:
            await callback(event)
        except Exception:
            log.exception("progress callback failed")

    async def _succeeded(self, submission: Submission, result: GenerationResult) -> Outcome:
        services, requester = self._services, submission.requester
        settings = await services.moderation.get_settings(requester.guild_id)
        fates = decide_fates(result.nsfw, settings.nsfw_policy, requester.channel_nsfw)
        kept = [
            (i, image)
            for i, (image, fate) in enumerate(zip(result.images, fates, strict=True), 1)
            if fate is not ImageFate.WITHHOLD
        ]
        await self._images.save(submission.job_id, kept)
        await services.history.mark_succeeded(
            submission.job_id, result.seeds, result.nsfw, result.gpu_seconds
        )
        await services.quota.charge(submission.job_id)
        withheld = len(result.images) - len(kept)
        refunded = 0
        if withheld:
            refunded = await services.quota.refund(submission.job_id, withheld)
        status = OutcomeStatus.SUCCEEDED
        if not kept:
            status = OutcomeStatus.BLOCKED
            await services.history.mark_blocked(
                submission.job_id, "flagged by the safety checker", result.nsfw
            )
        return Outcome(
            job_id=submission.job_id,
            status=status,
            images=tuple(result.images),
            fates=fates,
            seeds=tuple(result.seeds),
            warnings=tuple(result.warnings),
            refunded=refunded,
        )

    async def _failed(self, submission: Submission, error: str) -> Outcome:
        refunded = await self._services.quota.refund(submission.job_id)
        await self._quietly(self._services.history.mark_failed(submission.job_id, error))
        return Outcome(submission.job_id, OutcomeStatus.FAILED, error=error, refunded=refunded)

    async def _cancelled(self, submission: Submission) -> Outcome:
        refunded = await self._services.quota.refund(submission.job_id)
        await self._quietly(self._services.history.mark_cancelled(submission.job_id))
        return Outcome(submission.job_id, OutcomeStatus.CANCELLED, refunded=refunded)

    async def _settle_abandoned(self, submission: Submission, error: str) -> None:
        await self._quietly(self._services.quota.refund(submission.job_id))
        await self._quietly(self._services.history.mark_failed(submission.job_id, error))

    @staticmethod
    async def _quietly(step: Awaitable[object]) -> None:
        """A bookkeeping step whose failure must not hide the job's real outcome."""
        try:
            await step
        except Exception:
            log.exception("job bookkeeping failed")

    def _record(self, submission: Submission) -> JobRecord:
        plan, who = submission.plan, submission.requester
        return JobRecord(
            id=submission.job_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            params=submission.request.params,
            model_id=self._generation.model_id,
            kind=plan.kind,
            parent_job_id=plan.parent_job_id,
            image_index=plan.image_index - 1 if plan.image_index is not None else None,
        )
