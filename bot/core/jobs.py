"""The life of one job, with no Discord in it: check, reserve, record, queue, settle.

`JobOrchestrator.submit` is the one way into the generation queue (new jobs, rerolls,
variations, and images re-made from their seeds for U, V and `/show`). It runs the gate in a
fixed order, so a refused request leaves nothing behind:

1. the bot is not shutting down (`Restarting`), then moderation (bot enabled, channel
   allowed, member not banned, no blocked word);
2. validation (steps, size, guidance...) with a concrete seed drawn;
3. the tier (`fast`/`relax`, see `bot.services.tiers`): the one asked for, or the default;
   fast falls back to relax, with a note, when the member may not use fast or has no fast
   time left (never a refusal);
4. in one database transaction: the quota reservation for the images asked for (none for a
   re-made image: the member paid for it with its grid; it is still recorded, so it counts as
   GPU work; relax jobs count against the image quota like fast ones: the image quota limits
   how much a member makes, the tiers only decide who goes first on the GPU), the history
   record with the message that shows the job (so a restart can update it), and the
   generation queue in that tier (owner = "guild:user", so fairness is per member): the
   backend's `enlist` records the job through the same connection (a worker pool defers its
   task there) and `submit` queues it. Everything commits together or nothing does, so a job
   is queued exactly when it is charged for;
5. the live registry (for Cancel).

Jobs are durable: on shutdown (`stop`) the waiting ones stay queued in the database with their
reservation, and `recover` at the next start queues them again in their original order, runs
again (from their seeds) the ones that were running, or fails and refunds those too old.

Then `JobOrchestrator.run` follows the job's events and settles it: images stored on disk,
quota charged (withheld NSFW images refunded), a fast job's measured GPU seconds charged to
the member's fast time (not when every image was withheld), history updated; a failure or a
cancellation refunds everything and charges no fast time. Any step after the reservation
that fails gives the images back.

The Discord side (`bot.cogs.imagine`) only turns interactions into `Requester`/`JobPlan`
and outcomes into messages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from bot.core.image_store import SOURCE, ImageStore
from bot.core.tools import TOOLS, tool_request
from bot.db.models import JobKind, JobStatus, NsfwPolicy, Tier
from bot.errors import Restarting, ServiceError
from bot.services import Services
from bot.services.history import JobRecord, JobView, ShownAt
from generation.errors import GenerationError, NumericalError
from generation.events import (
    GenerationResult,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobStarted,
    JobState,
)
from generation.interfaces import GenerationBackend
from generation.job import QueuedJob
from generation.params import GenerationParams
from generation.request import GenerationRequest, Operation

__all__ = [
    "SUGGESTIONS",
    "ImageFate",
    "JobOrchestrator",
    "JobPlan",
    "Outcome",
    "OutcomeStatus",
    "Recovery",
    "Requester",
    "Submission",
    "decide_fates",
    "describe_request",
    "request_from_job",
]

log = logging.getLogger(__name__)

#: Prompt suggestions a /describe shows (the captioner offers more; moderation may drop some).
SUGGESTIONS = 4

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
    #: A member's image the job starts from (image prompts): stored with the job.
    source_image: Image.Image | None = field(default=None, repr=False, compare=False)
    #: The tier asked for (`--fast`/`--relax`); None: the configured default.
    tier: str | None = None


@dataclass(frozen=True)
class Submission:
    """A submitted job: its id (database, quota ledger, buttons and backend alike), the
    backend's handle on the queued job, who asked and what."""

    job_id: str
    queued: QueuedJob = field(repr=False)
    requester: Requester
    plan: JobPlan
    #: The tier the job runs in, and why it is relax when fast was asked for (or the default).
    tier: str = "fast"
    tier_note: str | None = None

    @property
    def request(self) -> GenerationRequest:
        """The validated request (concrete seed)."""
        return self.queued.request


class OutcomeStatus(enum.Enum):
    SUCCEEDED = "succeeded"  # at least one image may be shown
    BLOCKED = "blocked"  # every image was withheld by the NSFW policy
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The bot shut down while the job waited: it stays queued (and reserved) for the next run.
    SUSPENDED = "suspended"


class ImageFate(enum.Enum):
    """What the NSFW policy decided for one image."""

    SHOW = "show"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"
    #: Not the policy's: the model computed no usable image (NaN, black); never posted,
    #: never charged.
    FAILED = "failed"


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
    #: Fast GPU seconds charged for the job (0: a relax job, or nothing charged).
    fast_seconds: float = 0.0
    #: A /describe job's prompt suggestions (moderated, best first).
    suggestions: tuple[str, ...] = ()

    @property
    def withheld(self) -> tuple[int, ...]:
        """1-based indexes of the images not posted (withheld by the policy, or failed)."""
        hidden = (ImageFate.WITHHOLD, ImageFate.FAILED)
        return tuple(i for i, fate in enumerate(self.fates, 1) if fate in hidden)

    @property
    def flagged(self) -> tuple[int, ...]:
        """1-based indexes of the images withheld by the NSFW policy."""
        return tuple(i for i, fate in enumerate(self.fates, 1) if fate is ImageFate.WITHHOLD)

    @property
    def failed(self) -> tuple[int, ...]:
        """1-based indexes of the images the model failed to make (see `ImageFate.FAILED`)."""
        return tuple(i for i, fate in enumerate(self.fates, 1) if fate is ImageFate.FAILED)

    @property
    def spoiler(self) -> bool:
        return ImageFate.SPOILER in self.fates


@dataclass(frozen=True)
class Recovery:
    """What `JobOrchestrator.recover` found at start-up.

    `resumed`: jobs queued again (in their original order), with their stored view, to be
    followed like new ones; `ended`: jobs failed and refunded because they could not resume
    (their messages must say so); `undelivered`: ended jobs whose final message was never
    posted (their results are on disk).
    """

    resumed: tuple[tuple[Submission, JobView], ...] = ()
    ended: tuple[JobView, ...] = ()
    undelivered: tuple[JobView, ...] = ()


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
            **({"fast_seconds": round(outcome.fast_seconds, 3)} if outcome.fast_seconds else {}),
            **({"error": outcome.error} if outcome.error else {}),
        },
    )
    return outcome


def describe_request(params: GenerationParams, image: Image.Image) -> GenerationRequest:
    """The request that asks the captioner for prompt suggestions for `image` (/describe):
    one job (count 1), no prompt; the other parameters are unused."""
    return GenerationRequest(
        replace(params, prompt="", negative_prompt="", count=1, strength=None),
        init_image=image,
        operation=Operation.DESCRIBE,
    )


class JobOrchestrator:
    """Submits jobs through the gate and settles them; holds the live ones for cancelling.

    `charge_describe`: a /describe job counts as one image against the quota (refunded when
    it fails); by default it is free (recorded, never reserved).
    """

    def __init__(
        self,
        services: Services,
        generation: GenerationBackend,
        images: ImageStore,
        *,
        charge_describe: bool = False,
    ) -> None:
        self._services = services
        self._generation = generation
        self._images = images
        #: Kinds that reserve nothing: re-made images (paid for with their grid), and
        #: /describe unless the admin charges it.
        free = {JobKind.REMAKE} if charge_describe else {JobKind.REMAKE, JobKind.DESCRIBE}
        self._free = frozenset(free)
        self._live: dict[str, Submission] = {}
        self._accepting = True
        # Waiting jobs the shutdown takes out of the queue: kept queued in the database.
        self._suspended: set[str] = set()

    # -- information ----------------------------------------------------------------------

    @property
    def generation(self) -> GenerationBackend:
        return self._generation

    @property
    def accepting(self) -> bool:
        """False once `stop` began: new work is refused with `Restarting`."""
        return self._accepting

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

    async def admit(self, requester: Requester, prompt: str, negative_prompt: str = "") -> None:
        """The first step of the gate, for callers that must refuse before they defer (e.g.
        `/show` before re-making a lost image): raises `Restarting` or a moderation
        `ServiceError` (disabled, channel not allowed, banned, blocked word)."""
        if not self._accepting:
            raise Restarting()
        await self._services.moderation.check(
            requester.guild_id,
            requester.user_id,
            prompt,
            negative_prompt,
            channel_id=requester.allow_list_channel_id,
        )

    def charges(self, kind: JobKind) -> bool:
        """Whether a job of `kind` reserves quota (so a failure of one is refunded)."""
        return kind not in self._free

    async def submit(
        self, requester: Requester, plan: JobPlan, *, shown_at: ShownAt | None = None
    ) -> Submission:
        """Run the gate and queue the job; raises ServiceError/RequestError/QueueFullError.

        `shown_at`: the interaction that will show the job (its message id follows with
        `shown`). A `JobKind.REMAKE` plan (and a free /describe) reserves nothing. Nothing is
        reserved or left queued when it raises.
        """
        services = self._services
        request = plan.request
        params = request.params
        await self.admit(requester, params.prompt, params.negative_prompt)
        request = request.validated(self._generation.limits)
        plan = replace(plan, request=request)
        job_id = uuid.uuid4().hex
        choice = await services.tiers.choose(
            requester.guild_id, requester.user_id, requester.role_ids, plan.tier
        )
        owner = requester.owner
        queued: QueuedJob | None = None
        source_saved = False
        try:
            async with services.transaction() as session:
                if plan.kind not in self._free:
                    await services.quota.reserve(
                        requester.guild_id,
                        requester.user_id,
                        requester.role_ids,
                        request.params.count,
                        job_id,
                        session=session,
                    )
                await services.history.create_job(
                    self._record(job_id, requester, plan, choice.tier), session=session
                )
                if shown_at is not None or requester.channel_nsfw:
                    await services.history.set_shown_at(
                        job_id, shown_at, channel_nsfw=requester.channel_nsfw, session=session
                    )
                if plan.source_image is not None:
                    source_saved = True
                    await self._images.save(job_id, [(SOURCE, plan.source_image)])
                await self._generation.enlist(
                    await session.connection(), request, owner, job_id, tier=choice.tier
                )
                queued = self._generation.submit(
                    request, owner=owner, job_id=job_id, tier=choice.tier
                )
        except BaseException:
            # After the rollback (the session is closed): nothing is reserved or recorded.
            if queued is not None:
                queued.cancel()
            if source_saved:  # no job row refers to it any more
                await self._quietly(self._images.delete(job_id))
            raise
        submission = Submission(
            job_id,
            queued,
            requester,
            replace(plan, request=queued.request),
            tier=choice.tier,
            tier_note=choice.note,
        )
        self._live[job_id] = submission
        return submission

    async def shown(self, job_id: str, message_id: int) -> None:
        """The message showing the job was sent: remember its id (for restarts)."""
        await self._quietly(self._services.history.set_message_id(job_id, message_id))

    def cancel(self, job_id: str) -> bool:
        """Cancel a live job (queued, or running: it stops at its next step).

        Settling (refund, history) happens in `run` when the job's final event arrives.
        """
        submission = self._live.get(job_id)
        return submission is not None and submission.queued.cancel()

    async def stop(self, grace: float | None = None) -> None:
        """Shutdown, first half: refuse new work, keep the waiting jobs queued in the database
        (their followers end with `OutcomeStatus.SUSPENDED`), let the running batch finish
        within `grace` seconds. The generator stays usable for encoding the last results."""
        self._accepting = False
        # No await between marking and the generator's cancelling of its queue, so a job
        # cannot start in between and be taken for a waiting one.
        for submission in self._live.values():
            if submission.queued.state is JobState.QUEUED:
                self._suspended.add(submission.job_id)
        await self._generation.stop(grace)

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
                    if submission.job_id in self._suspended:
                        return _logged(Outcome(submission.job_id, OutcomeStatus.SUSPENDED))
                    return _logged(await self._cancelled(submission))
                if on_progress is not None:
                    await self._progress(on_progress, event)
            raise GenerationError("The job ended without a result.")  # pragma: no cover
        except asyncio.CancelledError:
            if submission.job_id not in self._suspended:
                submission.queued.cancel()
                await asyncio.shield(self._settle_abandoned(submission, "The bot shut down."))
            raise
        except Exception as exc:
            log.exception("settling job %s failed", submission.job_id)
            return await self._failed(submission, f"Internal error: {type(exc).__name__}")
        finally:
            self._live.pop(submission.job_id, None)

    async def delivered(
        self, job_id: str, channel_id: int | None = None, message_id: int | None = None
    ) -> None:
        """The job's final message reached its member (a result: at `channel_id`/`message_id`)."""
        await self._quietly(
            self._services.history.mark_delivered(job_id, channel_id, message_id)
        )

    async def undeliverable(self, job_id: str) -> int:
        """No route reached the member: the result stays stored and retrievable (`/show`),
        recorded as not delivered (admins see it in history), and its images are refunded:
        nobody is charged for a result they never got (its fast time is given back too).
        Returns the images refunded."""
        await self._quietly(self._services.tiers.refund(job_id))
        return await self._services.quota.refund(job_id)

    # -- restarts -------------------------------------------------------------------------

    async def recover(self, rerun_max_age: float, now: dt.datetime | None = None) -> Recovery:
        """At start-up: queue again what a previous run left queued or running.

        Jobs that were running come first (they were ahead), then the queued ones oldest first;
        none is reserved again. A running job that started more than `rerun_max_age` seconds
        before `now` is failed and refunded instead, as is one that cannot be queued again.
        Re-made images nobody waits for any more are dropped.
        """
        history = self._services.history
        now = now or dt.datetime.now(dt.UTC)
        resumed: list[tuple[Submission, JobView]] = []
        ended: list[JobView] = []
        for job in await history.unfinished():
            if job.kind is JobKind.REMAKE:
                await self._quietly(history.mark_cancelled(job.id))
                await self.delivered(job.id)
                continue
            if job.status is JobStatus.RUNNING:
                started = job.started_at or job.created_at
                if (now - started).total_seconds() > rerun_max_age:
                    ended.append(await self._end_stale(job, "it was interrupted by a restart"))
                    continue
            try:
                submission = await self._resubmit(job)
            except (GenerationError, ServiceError) as exc:
                log.warning("job %s could not be queued again: %s", job.id, exc)
                ended.append(await self._end_stale(job, f"it could not be queued again: {exc}"))
                continue
            if job.status is JobStatus.RUNNING:
                await self._quietly(history.mark_queued_again(job.id))
            resumed.append((submission, job))
        undelivered = tuple(await history.undelivered())
        if resumed or ended:
            log.info(
                "after the restart: %d job(s) queued again, %d failed and refunded",
                len(resumed),
                len(ended),
            )
        return Recovery(tuple(resumed), tuple(ended), undelivered)

    async def _resubmit(self, job: JobView) -> Submission:
        """Queue a stored job again under its own id, seeds and reservation."""
        requester = Requester(
            job.guild_id, job.channel_id, job.user_id, channel_nsfw=job.channel_nsfw
        )
        index = job.image_index + 1 if job.image_index is not None else None
        request = await self._request_again(job, requester, seed=job.params.seed)
        # The tier it was queued in (its fall-back to relax, if any, was decided then).
        queued = self._generation.submit(
            request, owner=requester.owner, job_id=job.id, tier=job.tier.value
        )
        plan = JobPlan(
            queued.request, kind=job.kind, parent_job_id=job.parent_job_id, image_index=index
        )
        submission = Submission(job.id, queued, requester, plan, tier=job.tier.value)
        self._live[job.id] = submission
        return submission

    async def _end_stale(self, job: JobView, why: str) -> JobView:
        error = f"The bot restarted: {why}."
        refunded = await self._services.quota.refund(job.id)
        await self._quietly(self._services.history.mark_failed(job.id, error))
        log.info("job %s failed after the restart (%s); %d refunded", job.id, why, refunded)
        return replace(job, status=JobStatus.FAILED, error=error)

    # -- re-made images -------------------------------------------------------------------

    async def regenerate(self, job: JobView, index: int, requester: Requester) -> Image.Image:
        """Re-make image `index` (1-based) of a stored job from its parameters and seed.

        For U/V buttons and `/show` when the image file is gone. It goes through the gate as
        `requester` (the member who asked: moderation applies, it takes their queue turn);
        it is not charged, since the member already paid for the image, but it is recorded
        as a `remake` job. Variations need their source image, found (or re-made) the same way.
        """
        if job.kind is JobKind.DESCRIBE:
            raise GenerationError("A /describe job made prompt suggestions, not images.")
        if job.seeds is None or not 1 <= index <= len(job.seeds):
            raise GenerationError("That image has no recorded seed, so it cannot be re-made.")
        request = await self._request_again(
            job, requester, seed=job.seeds[index - 1], count=1
        )
        plan = JobPlan(request, kind=JobKind.REMAKE, parent_job_id=job.id, image_index=index)
        outcome = await self.run(await self.submit(requester, plan))
        if outcome.failed:
            raise NumericalError(
                "That image cannot be made again: the model computed invalid numbers for it."
            )
        if outcome.status is OutcomeStatus.SUCCEEDED and outcome.images:
            return outcome.images[0]
        raise GenerationError(outcome.error or "The image could not be made again; try later.")

    async def _request_again(
        self, job: JobView, requester: Requester, **changes: Any
    ) -> GenerationRequest:
        """The request that makes `job`'s images again, with `changes` (seed, count) to its
        parameters: a tool's or a variation's from its source image (found or re-made for
        `requester`), the rest from the parameters alone. Raises `GenerationError` when a
        tool's source image is gone."""
        index = job.image_index + 1 if job.image_index is not None else None
        tool = TOOLS.get(job.kind)
        from_parent = tool is not None or job.kind is JobKind.VARIATION
        init_image = None
        if from_parent and job.parent_job_id and index is not None:
            init_image = await self.source_image(job.parent_job_id, index, requester)
        if job.kind in (JobKind.IMAGE_PROMPT, JobKind.DESCRIBE):
            init_image = await self.image_prompt_source(job.id)
        if job.kind is JobKind.DESCRIBE:
            assert init_image is not None
            return describe_request(replace(job.params, **changes), init_image)
        if tool is not None:
            if init_image is None:
                raise GenerationError("The image this one was made from is gone.")
            count = changes.pop("count", job.params.count)
            limits = self._generation.limits
            return tool_request(tool, job, init_image, limits, count=count, **changes)
        # A variation whose source job is gone is re-made from its prompt alone.
        strength = job.params.strength if init_image is not None else None
        return request_from_job(job, init_image=init_image, strength=strength, **changes)

    async def image_prompt_source(self, job_id: str) -> Image.Image:
        """The image a member gave to an image-prompt job; `GenerationError` when it is gone."""
        image = await self._images.load(job_id, SOURCE)
        if image is None:
            raise GenerationError("The image this job started from is no longer stored.")
        return image

    async def source_image(self, job_id: str, index: int, requester: Requester) -> Image.Image:
        """Image `index` of a job, from disk or re-made (for `requester`, see `regenerate`);
        raises NotFound for unknown jobs."""
        image = await self._images.load(job_id, index)
        if image is not None:
            return image
        job = await self._services.history.require(job_id)
        return await self.regenerate(job, index, requester)

    # -- internals ------------------------------------------------------------------------

    async def _progress(self, callback: ProgressCallback, event: JobEvent) -> None:
        try:
            await callback(event)
        except Exception:
            log.exception("progress callback failed")

    async def _succeeded(self, submission: Submission, result: GenerationResult) -> Outcome:
        services, requester = self._services, submission.requester
        plan = submission.plan
        if plan.kind is JobKind.REMAKE and plan.parent_job_id and plan.image_index:
            # The lost file of an image that was shown before: stored again where it was.
            await self._images.save(plan.parent_job_id, [(plan.image_index, result.images[0])])
            await services.history.mark_succeeded(
                submission.job_id, result.seeds, result.nsfw, result.gpu_seconds
            )
            await self.delivered(submission.job_id)
            return Outcome(
                submission.job_id,
                OutcomeStatus.SUCCEEDED,
                images=tuple(result.images),
                fates=(ImageFate.SHOW,) * len(result.images),
                seeds=tuple(result.seeds),
            )
        if plan.kind is JobKind.DESCRIBE:
            return await self._described(submission, result)
        settings = await services.moderation.get_settings(requester.guild_id)
        fates = tuple(
            ImageFate.FAILED if i in result.failures else fate
            for i, fate in enumerate(
                decide_fates(result.nsfw, settings.nsfw_policy, requester.channel_nsfw)
            )
        )
        kept = [
            (i, image)
            for i, (image, fate) in enumerate(zip(result.images, fates, strict=True), 1)
            if fate not in (ImageFate.WITHHOLD, ImageFate.FAILED)
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
        fast_seconds = 0.0
        if not kept:
            status = OutcomeStatus.BLOCKED
            reason = "flagged by the safety checker" if any(result.nsfw) else "no usable image"
            await services.history.mark_blocked(submission.job_id, reason, result.nsfw)
        elif submission.tier == "fast":
            # Measured by the backend: this job's share of the GPU time of the steps it ran in.
            fast_seconds = await services.tiers.charge(submission.job_id, result.gpu_seconds)
        return Outcome(
            job_id=submission.job_id,
            status=status,
            images=tuple(result.images),
            fates=fates,
            seeds=tuple(result.seeds),
            warnings=tuple(result.warnings),
            refunded=refunded,
            fast_seconds=fast_seconds,
        )

    async def _described(self, submission: Submission, result: GenerationResult) -> Outcome:
        """Settle a /describe job: the captions the server's moderation allows (a blocked word
        is never offered as a prompt), the first `SUGGESTIONS` of them kept with the job for
        its buttons; charged when reserved. None left: blocked and refunded."""
        services, job_id = self._services, submission.job_id
        allowed = await services.moderation.allowed_texts(
            submission.requester.guild_id, result.captions
        )
        suggestions = tuple(allowed[:SUGGESTIONS])
        await services.history.mark_succeeded(
            job_id, result.seeds, [], result.gpu_seconds, suggestions=suggestions
        )
        if not suggestions:
            refunded = await services.quota.refund(job_id)
            why = "every suggestion had a blocked word" if result.captions else "no caption"
            await services.history.mark_blocked(job_id, why)
            return Outcome(
                job_id,
                OutcomeStatus.BLOCKED,
                warnings=tuple(result.warnings),
                error=why,
                refunded=refunded,
            )
        await services.quota.charge(job_id)
        fast_seconds = 0.0
        if submission.tier == "fast" and submission.plan.kind not in self._free:
            # A charged /describe also counts its GPU time, as any fast job.
            fast_seconds = await services.tiers.charge(job_id, result.gpu_seconds)
        return Outcome(
            job_id,
            OutcomeStatus.SUCCEEDED,
            seeds=tuple(result.seeds),
            warnings=tuple(result.warnings),
            suggestions=suggestions,
            fast_seconds=fast_seconds,
        )

    async def _failed(self, submission: Submission, error: str) -> Outcome:
        refunded = await self._services.quota.refund(submission.job_id)
        # Charged only on success: a settlement that failed after the charge gives it back.
        await self._quietly(self._services.tiers.refund(submission.job_id))
        await self._quietly(self._services.history.mark_failed(submission.job_id, error))
        await self._nobody_to_tell(submission)
        return Outcome(submission.job_id, OutcomeStatus.FAILED, error=error, refunded=refunded)

    async def _cancelled(self, submission: Submission) -> Outcome:
        refunded = await self._services.quota.refund(submission.job_id)
        await self._quietly(self._services.history.mark_cancelled(submission.job_id))
        await self._nobody_to_tell(submission)
        return Outcome(submission.job_id, OutcomeStatus.CANCELLED, refunded=refunded)

    async def _nobody_to_tell(self, submission: Submission) -> None:
        """A re-made image has no message of its own: its caller tells the member."""
        if submission.plan.kind is JobKind.REMAKE:
            await self.delivered(submission.job_id)

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

    def _record(self, job_id: str, who: Requester, plan: JobPlan, tier: str) -> JobRecord:
        """The history row of a job (`plan.request` validated: concrete seed) in `tier`."""
        return JobRecord(
            id=job_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            user_id=who.user_id,
            params=plan.request.params,
            model_id=self._generation.model_id,
            kind=plan.kind,
            parent_job_id=plan.parent_job_id,
            image_index=plan.image_index - 1 if plan.image_index is not None else None,
            tier=Tier(tier),
        )
