"""`/imagine`, `/describe`, and the buttons under their results (U, V, reroll, delete, cancel,
the tools, /describe's suggestions).

The Discord side of a job, in order:

1. parse the prompt's flags and merge them with the slash options (options win);
2. submit through the orchestrator (moderation, validation, quota, queue, history), which
   raises a member-facing error handled by the error cog when refused;
3. answer within Discord's 3 seconds with a public "queued" message: prompt, requester,
   position, ETA and a Cancel button;
4. follow the job in a background task, editing that message at most every 2 seconds;
5. deliver the grid (edit, else channel, else DM; see `bot.delivery`) with the buttons.

`/describe` (registered only when `[model] captioner_id` is set) is a job of its own kind
through the same flow: the image is fetched like an image prompt, the captioner's suggestions
are moderated and stored with the job, and each suggestion's button starts an `/imagine` of it.

Buttons carry the job id; their state comes from the database, so they survive restarts.
So do jobs: `resume_jobs` (at start-up) follows the jobs a previous run left queued or running
and posts the results it never delivered, editing their old messages through
`StoredInteraction`; on shutdown (`drain`) the followers post what the last batch made.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands
from PIL import Image

from bot.core.flags import (
    ImagineOptions,
    ParsedPrompt,
    image_strength,
    merge_options,
    parse_prompt,
)
from bot.core.image_fetch import ImageFetcher, find_image_links
from bot.core.image_store import SOURCE, withheld_tile
from bot.core.jobs import (
    ImageFate,
    JobPlan,
    Outcome,
    OutcomeStatus,
    Requester,
    Submission,
    decide_fates,
    describe_request,
    request_from_job,
)
from bot.core.remix import (
    IMAGE_IGNORED,
    RemixAction,
    RemixScope,
    edited_params,
    parse_remix,
    remix_text,
)
from bot.core.tools import TOOLS, tool_request
from bot.db.models import JobKind, JobStatus
from bot.errors import Banned, MemberError
from bot.presentation.access import requester_of
from bot.presentation.buttons import TOOL_LOOKS, PressRegistry
from bot.presentation.deadline import DeferStyle, arm
from bot.presentation.delivery import (
    Attachment,
    DeliveryMethod,
    OutgoingMessage,
    StoredInteraction,
    Target,
    Throttle,
    interaction_expired,
    is_dead,
    mark_dead,
    respond,
    upload_limit,
)
from bot.presentation.describe_command import build_describe_command
from bot.presentation.imagine_command import build_imagine_command
from bot.presentation.messages import (
    DESCRIBE_LABEL,
    Caption,
    cancelled_text,
    caption_of,
    describe_text,
    describing_text,
    failed_text,
    finished_text,
    moved_text,
    queued_text,
    running_text,
    suspended_text,
    upscale_text,
)
from bot.presentation.permissions import can_manage_messages
from bot.presentation.remix import RemixTarget, remix_modal, submitted_text
from bot.presentation.views import describe_view, grid_view, queued_view, single_view
from bot.services.history import JobView, ShownAt
from generation.events import JobEvent, JobQueued, JobStarted, JobState, JobStep
from generation.grid import encode, encode_grid
from generation.params import GenerationParams
from generation.request import GenerationRequest, Operation, parse_aspect, variation_steps

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["PROGRESS_INTERVAL", "ImagineCog"]

log = logging.getLogger(__name__)

#: Seconds between two edits of a job's message (Discord rate-limits message edits).
PROGRESS_INTERVAL = 2.0
WITHHELD = "That image was withheld by this server's safety settings."
ALREADY_CANCELLED = "Already cancelled. Nothing was counted against your quota."
#: Seconds a member's next interaction is given to be answered before pending results follow.
PENDING_WAIT = 5.0
PENDING_NOTE = "I could not deliver this result when it was ready; here it is:"
_MEMBER_ACTIONS = (discord.InteractionType.application_command, discord.InteractionType.component)

class ImagineCog(commands.Cog, name="Imagine"):
    """`/imagine`, and the `ImagineActions` the persistent buttons dispatch to."""

    def __init__(self, bot: ImagineBot, *, progress_interval: float = PROGRESS_INTERVAL) -> None:
        self.bot = bot
        self.progress_interval = progress_interval
        gen = bot.settings.generation
        self._command = build_imagine_command(
            self._imagine,
            max_steps=gen.max_steps,
            max_guidance=gen.max_guidance,
            min_steps=gen.min_steps,
        )
        # Offered only when a captioner is configured (like the tools' buttons).
        self._describe_command = (
            build_describe_command(self._describe)
            if bot.settings.model.captioner_id is not None
            else None
        )
        self._followers: set[asyncio.Task[None]] = set()
        # Members (user ids) with results that reached nobody.
        self._undelivered: set[int] = set()
        prompts = bot.settings.image_prompts
        self._fetcher = ImageFetcher(
            bot.threads,
            origins=tuple(prompts.origins),
            max_bytes=prompts.max_bytes,
            max_pixels=prompts.max_pixels,
        )
        self.presses = PressRegistry()  # one effect per button press (see PressRegistry)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self._command)
        if self._describe_command is not None:
            self.bot.tree.add_command(self._describe_command)
            if not self.bot.generation.supports(Operation.DESCRIBE):
                log.warning(
                    "model.captioner_id is set, but this image generator (a GPU worker pool) "
                    "cannot run /describe: members who use it are told so"
                )
        self.bot.imagine_actions = self
        self.bot.add_shutdown_hook(self.drain)
        # Loaded from setup_hook, after login: REST works, the gateway is not connected yet.
        await self.resume_jobs()

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self._command.name)
        if self._describe_command is not None:
            self.bot.tree.remove_command(self._describe_command.name)
        if self.bot.imagine_actions is self:
            self.bot.imagine_actions = None

    async def drain(self, seconds: float) -> None:
        """On shutdown: wait up to `seconds` for the job followers to post what the
        last batch made (and to tell waiting jobs' members they keep their place)."""
        if self._followers:
            await asyncio.wait(set(self._followers), timeout=seconds)

    async def resume_jobs(self) -> None:
        """At start-up: follow the jobs the previous run left, and post what it never did.

        Queued and running jobs are queued again (their messages show it at once); jobs that
        could not resume are failed and refunded, and undelivered results are posted, each in
        its old message while its interaction token lives, else in the channel.
        """
        bot = self.bot
        recovery = await bot.orchestrator.recover(bot.settings.jobs.rerun_max_age)
        for submission, job in recovery.resumed:
            target = StoredInteraction(bot, job)
            caption = caption_of(job, _label(job))
            position = submission.queued.position or 1
            text = queued_text(caption, position, _in(bot.generation.estimate_wait(position)))
            view = queued_view(job.id)
            queued = OutgoingMessage(text, mention=job.user_id, view=view)
            if not await bot.deliverer.update(target, queued):
                await bot.deliverer.retire(target, target.message_id, text, view)
            self._spawn(self._follow(target, submission, caption, target.message_id))
        for job in (*recovery.ended, *recovery.undelivered):
            self._spawn(self._deliver_stored(job))
        self._undelivered.update(job.user_id for job in recovery.undelivered)

    async def _deliver_stored(self, job: JobView) -> None:
        """Post the final message of a job that ended without one (before or at a restart)."""
        target = StoredInteraction(self.bot, job)
        try:
            outcome = await self._stored_outcome(job)
            await self._deliver(
                target, job.id, caption_of(job, _label(job)), outcome, target.message_id, job.kind
            )
        except Exception:
            log.exception("posting the result of job %s after the restart failed", job.id)

    async def _stored_outcome(self, job: JobView) -> Outcome:
        """A stored job's outcome as `_deliver` takes it (images read back from disk)."""
        if job.status is JobStatus.CANCELLED:
            return Outcome(job.id, OutcomeStatus.CANCELLED)
        if job.status is JobStatus.FAILED:
            charged = self.bot.orchestrator.charges(job.kind)
            return Outcome(
                job.id,
                OutcomeStatus.FAILED,
                error=job.error,
                refunded=job.params.count if charged else 0,
            )
        if job.kind is JobKind.DESCRIBE:
            suggestions = job.suggestions or ()
            status = OutcomeStatus.SUCCEEDED if suggestions else OutcomeStatus.BLOCKED
            return Outcome(
                job.id, status, seeds=job.seeds or (), error=job.error, suggestions=suggestions
            )
        settings = await self.bot.services.moderation.get_settings(job.guild_id)
        flags = list(job.nsfw or ())
        count = job.params.count
        flags += [False] * (count - len(flags))
        fates = list(decide_fates(flags[:count], settings.nsfw_policy, job.channel_nsfw))
        images = []
        for index in range(1, count + 1):
            image = await self.bot.images.load(job.id, index)
            if image is None:
                fates[index - 1] = ImageFate.WITHHOLD
                image = withheld_tile((job.params.width, job.params.height))
            images.append(image)
        status = OutcomeStatus.BLOCKED if job.status is JobStatus.BLOCKED else None
        if status is None:
            shown = any(fate is not ImageFate.WITHHOLD for fate in fates)
            status = OutcomeStatus.SUCCEEDED if shown else OutcomeStatus.BLOCKED
        return Outcome(
            job.id, status, images=tuple(images), fates=tuple(fates), seeds=job.seeds or ()
        )

    # -- /imagine -------------------------------------------------------------------------

    async def _imagine(
        self, interaction: discord.Interaction, prompt: str, options: ImagineOptions
    ) -> None:
        text, links = find_image_links(prompt)
        urls = [*([options.image_url] if options.image_url else []), *links]
        if len(urls) > 1:
            raise MemberError("Give one image prompt at a time (one attachment or one link).")
        parsed = parse_prompt(text, allow_empty=bool(urls))
        merged = merge_options(options, parsed.options)
        if not urls:
            if merged.image_weight is not None:
                raise MemberError("`--iw` weighs an image prompt: attach or link an image.")
            plan = JobPlan(self._request(parsed.prompt, merged), tier=merged.tier)
            await self._start(interaction, plan)
            return
        if not parsed.prompt and merged.image_weight == 0:
            # The image alone is the prompt, and --iw 0 ignores it: nothing left to draw.
            raise MemberError(IMAGE_IGNORED)
        # Refused before anything is fetched, reserved or queued: nothing is charged.
        self._fetcher.check_url(urls[0])
        source = await self._fetcher.fetch(urls[0])
        plan = JobPlan(
            self._request(parsed.prompt, merged, source),
            kind=JobKind.IMAGE_PROMPT,
            source_image=source,
            tier=merged.tier,
        )
        await self._start(interaction, plan, label="image prompt")

    # -- /describe ------------------------------------------------------------------------

    async def _describe(self, interaction: discord.Interaction, image_url: str) -> None:
        """/describe: the image fetched like an image prompt (refused before anything is
        reserved or queued: nothing charged), then a job of its own kind."""
        if not self.bot.generation.supports(Operation.DESCRIBE):
            raise MemberError(
                "/describe is not available here: this bot's GPU worker pool cannot run the "
                "captioning model. Ask an admin."
            )
        self._fetcher.check_url(image_url)
        source = await self._fetcher.fetch(image_url)
        request = describe_request(self.bot.settings.generation.params(""), source)
        plan = JobPlan(request, kind=JobKind.DESCRIBE, source_image=source)
        await self._start(interaction, plan, label=DESCRIBE_LABEL)

    async def check_suggestion(self, interaction: discord.Interaction, job_id: str) -> None:
        """A /describe job's suggestion buttons are for the member who asked for it."""
        job = await self.bot.services.history.get(job_id)
        if job is not None and job.user_id != interaction.user.id:
            raise MemberError(
                "Only the member who asked for these suggestions can use their buttons; "
                "run /describe with your image to get your own."
            )

    async def imagine_suggestion(
        self, interaction: discord.Interaction, job_id: str, index: int
    ) -> None:
        """A suggestion's button: `/imagine` with its text, through the whole gate
        (moderation again, quota, history), charged to the presser like any /imagine."""
        job = await self._job(interaction, job_id)
        suggestions = job.suggestions or ()
        if not 1 <= index <= len(suggestions):
            raise MemberError(f"This /describe has no suggestion #{index}.")
        parsed = parse_prompt(suggestions[index - 1])
        options = merge_options(ImagineOptions(), parsed.options)
        await self._start(
            interaction,
            JobPlan(self._request(parsed.prompt, options)),
            guild_id=job.guild_id,
            channel_id=job.channel_id,
        )

    def _request(
        self, prompt: str, options: ImagineOptions, source: Image.Image | None = None
    ) -> GenerationRequest:
        """A request from the member's options, the configuration filling the gaps.

        With an image prompt (`source`), the images start from it (img2img at the strength
        `--iw` gives) and take its aspect ratio unless one is asked for."""
        gen = self.bot.settings.generation
        given = options.given_params()
        aspect = options.aspect
        if aspect is None and source is not None:
            aspect = f"{source.width}:{source.height}"
        if aspect is not None:
            # Aspect ratios keep the configured default's area (the model's sweet spot).
            given["width"], given["height"] = parse_aspect(aspect, gen.limits())
        if source is None:
            return GenerationRequest(gen.params(prompt, **given))
        strength = image_strength(options.image_weight)
        # img2img runs steps x strength steps: enough to denoise a few, however few were asked.
        steps = given.get("steps") or gen.steps
        given.update(strength=strength, steps=variation_steps(steps, strength, gen.limits()))
        return GenerationRequest(gen.params(prompt, **given), init_image=source)

    # -- the job flow shared by /imagine, V and reroll ------------------------------------

    async def _start(
        self,
        interaction: discord.Interaction,
        plan: JobPlan,
        *,
        label: str = "",
        guild_id: int | None = None,
        channel_id: int | None = None,
    ) -> None:
        requester = await requester_of(interaction, guild_id, channel_id)
        submission = await self._submit(interaction, requester, plan)
        caption = Caption(
            submission.request.params,
            interaction.user.id,
            label,
            tier=submission.tier,
            tier_note=submission.tier_note,
        )
        position = submission.queued.position or 1
        eta = self.bot.generation.estimate_wait(position)
        message = OutgoingMessage(
            queued_text(caption, position, _in(eta), submission.queued.queue_note),
            mention=interaction.user.id,
            view=queued_view(submission.job_id),
        )
        original_id: int | None = None
        if is_dead(interaction):  # a late defer found the interaction dead
            self._drop_expired(interaction, submission, caption)
            return
        try:
            if interaction.response.is_done():  # deferred: a source image was re-made
                sent = await interaction.edit_original_response(
                    content=message.content,
                    view=message.view,
                    allowed_mentions=message.allowed_mentions,
                )
                original_id = sent.id
            else:
                callback = await interaction.response.send_message(
                    message.content, view=message.view, allowed_mentions=message.allowed_mentions
                )
                # A callback response, or the follow-up message when the deadline guard
                # deferred while this was being sent.
                original_id = getattr(callback, "message_id", None) or getattr(callback, "id", None)
        except BaseException as exc:
            if isinstance(exc, Exception) and interaction_expired(exc):
                self._drop_expired(interaction, submission, caption)
                return
            # Nobody will see this job (Discord refused, the connection dropped, the handler
            # was cancelled): drop it; the follower settles the refund.
            self.bot.orchestrator.cancel(submission.job_id)
            self._spawn(self._follow(interaction, submission, caption, None))
            raise
        self._spawn(self._follow(interaction, submission, caption, original_id))
        if original_id is not None:
            await self.bot.orchestrator.shown(submission.job_id, original_id)

    async def _submit(
        self, interaction: discord.Interaction, requester: Requester, plan: JobPlan
    ) -> Submission:
        """Submit through the gate. A slow gate is covered by the deadline guard
        (`bot.presentation.deadline`), which defers publicly in time. The job is stored with
        the interaction that will show it, so that a restart can still update its message."""
        shown_at = ShownAt(
            channel_id=interaction.channel_id or requester.channel_id,
            app_id=interaction.application_id,
            token=interaction.token,
            created_at=interaction.created_at,
        )
        return await self.bot.orchestrator.submit(requester, plan, shown_at=shown_at)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    def _drop_expired(
        self, interaction: discord.Interaction, submission: Submission, caption: Caption
    ) -> None:
        """The first answer came too late: the interaction is dead, so nothing more is sent
        to it (no error reply either). The job is cancelled and refunded (the member just
        asks again); one that already finished is posted in the channel instead."""
        if self.bot.orchestrator.cancel(submission.job_id):
            log.info(
                "job %s cancelled and refunded: interaction %s expired before it was answered",
                submission.job_id,
                interaction.id,
            )
            self._spawn(self._settle(submission))
            return
        log.info(
            "job %s finished before interaction %s was answered (expired): posted in the channel",
            submission.job_id,
            interaction.id,
        )
        self._spawn(self._deliver_without_interaction(submission, caption))

    async def _deliver_without_interaction(self, submission: Submission, caption: Caption) -> None:
        job = await self.bot.services.history.require(submission.job_id)
        target = StoredInteraction(self.bot, job, use_token=False)
        await self._follow(target, submission, caption, None)

    async def _settle(self, submission: Submission) -> None:
        """Settle a job nobody will see (its refund, its history); nothing is posted."""
        try:
            await self.bot.orchestrator.run(submission)
            await self.bot.orchestrator.delivered(submission.job_id)  # nobody to tell
        except Exception:
            log.exception("settling job %s failed", submission.job_id)

    async def _follow(
        self,
        interaction: Target,
        submission: Submission,
        caption: Caption,
        original_id: int | None,
    ) -> None:
        """Edit progress into the job's message, then deliver its outcome."""
        deliverer = self.bot.deliverer
        throttle = Throttle(self.progress_interval)
        view = queued_view(submission.job_id)

        async def on_progress(event: JobEvent) -> None:
            text = _progress_text(caption, event, submission.plan.kind)
            if text is None or not throttle.ready():
                return
            await deliverer.update(
                interaction, OutgoingMessage(text, mention=caption.user_id, view=view)
            )

        try:
            outcome = await self.bot.orchestrator.run(submission, on_progress)
            await self._deliver(
                interaction,
                submission.job_id,
                caption,
                outcome,
                original_id,
                submission.plan.kind,
            )
        except Exception:
            log.exception("following job %s failed", submission.job_id)

    async def _deliver(
        self,
        interaction: Target,
        job_id: str,
        caption: Caption,
        outcome: Outcome,
        original_id: int | None,
        kind: JobKind,
    ) -> None:
        deliverer, orchestrator = self.bot.deliverer, self.bot.orchestrator
        if outcome.status is OutcomeStatus.SUSPENDED:
            # Still queued (in the database); the next start resumes it and this message.
            text = suspended_text(caption)
            view = queued_view(job_id)
            message = OutgoingMessage(text, mention=caption.user_id, view=view)
            if not await deliverer.update(interaction, message):
                await deliverer.retire(interaction, original_id, text, view)
            return
        if outcome.status is OutcomeStatus.CANCELLED:
            message = OutgoingMessage(cancelled_text(caption), mention=caption.user_id)
            if await deliverer.update(interaction, message) or await deliverer.retire(
                interaction, original_id, message.content
            ):
                await orchestrator.delivered(job_id)
            return
        if outcome.status is OutcomeStatus.FAILED:
            text = failed_text(caption, outcome.error or "unknown error", outcome.refunded)
            message = OutgoingMessage(text, mention=caption.user_id)
        else:
            message = await self._result_message(interaction, job_id, caption, outcome, kind)
        delivered = await deliverer.deliver(interaction, message)
        if delivered.ok:
            where = delivered.message
            await orchestrator.delivered(
                job_id,
                where.channel.id if where is not None else None,
                where.id if where is not None else None,
            )
        if delivered.method is DeliveryMethod.CHANNEL and delivered.message is not None:
            await deliverer.retire(
                interaction, original_id, moved_text(caption, delivered.message.jump_url)
            )
        elif delivered.method is DeliveryMethod.DM:
            await deliverer.retire(interaction, original_id, moved_text(caption, "sent by DM"))
        elif not delivered.ok:
            refunded = await orchestrator.undeliverable(job_id)
            self._undelivered.add(caption.user_id)
            where = f"it could not be posted here or by DM; `/show job:{job_id}` posts it"
            await deliverer.retire(interaction, original_id, moved_text(caption, where))
            log.error(
                "job %s finished but could not be delivered (%s); its images are kept in %s, "
                "%d refunded; the member gets it with their next use of the bot",
                job_id,
                delivered.error,
                self.bot.images.root / job_id,
                refunded,
            )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A member whose results could not be delivered uses the bot again: once their
        interaction is answered, the results follow, privately, with their buttons."""
        key = interaction.user.id
        if key not in self._undelivered or interaction.type not in _MEMBER_ACTIONS:
            return
        self._undelivered.discard(key)
        for _ in range(int(PENDING_WAIT / 0.1)):  # the handler answers within 3 s
            if interaction.response.is_done():
                break
            await asyncio.sleep(0.1)
        else:
            self._undelivered.add(key)
            return
        history = self.bot.services.history
        for job in await history.undelivered(user_id=key):
            if not await self._hand_over(interaction, job):
                self._undelivered.add(key)

    async def _hand_over(self, interaction: discord.Interaction, job: JobView) -> bool:
        """Post a result that reached nobody as a private follow-up of the member's
        interaction; True once it was posted (and recorded delivered)."""
        caption = caption_of(job, _label(job))
        outcome = await self._stored_outcome(job)
        if outcome.status is not OutcomeStatus.SUCCEEDED:
            await self.bot.orchestrator.delivered(job.id)  # nothing to show any more
            return True
        message = await self._result_message(interaction, job.id, caption, outcome, job.kind)
        try:
            sent = await interaction.followup.send(
                f"{PENDING_NOTE}\n{message.content}",
                files=message.files_for_send(),
                view=message.view,  # type: ignore[arg-type]
                allowed_mentions=message.allowed_mentions,
                ephemeral=True,
                wait=True,
            )
        except discord.HTTPException as exc:
            log.info("could not hand over job %s yet: %s", job.id, exc)
            return False
        await self.bot.orchestrator.delivered(job.id, sent.channel.id, sent.id)
        log.info("job %s handed over to its member after its delivery failed", job.id)
        return True

    async def _result_message(
        self,
        interaction: Target,
        job_id: str,
        caption: Caption,
        outcome: Outcome,
        kind: JobKind,
    ) -> OutgoingMessage:
        """The final message of a job; a tool that makes one image gets the single-image
        buttons, /describe its suggestions', the rest a grid's."""
        if kind is JobKind.DESCRIBE:
            return await self._describe_message(interaction, job_id, caption, outcome)
        withheld = outcome.withheld
        note = self.bot.generation.model_note or ""
        text = finished_text(
            caption,
            outcome.seeds,
            withheld=len(outcome.flagged),
            failed=len(outcome.failed),
            warnings=outcome.warnings,
            note=note,
            fast_seconds=outcome.fast_seconds,
        )
        tool = TOOLS.get(kind)
        if tool is not None and tool.makes_single_image and not withheld:
            view = single_view(job_id, 1, self._tools())
        else:
            view = grid_view(job_id, len(outcome.images), withheld)
        files: list[Attachment] = []
        if outcome.status is not OutcomeStatus.BLOCKED:
            tiles = [
                withheld_tile(image.size) if i in withheld else image
                for i, image in enumerate(outcome.images, 1)
            ]
            data, ext = await self.bot.threads.run(
                encode_grid, tiles, limit_bytes=upload_limit(interaction)
            )
            name = f"imagine_{job_id[:8]}.{ext}"
            files.append(Attachment(name, data, spoiler=outcome.spoiler))
        return OutgoingMessage(text, mention=caption.user_id, files=files, view=view)

    async def _describe_message(
        self, interaction: Target, job_id: str, caption: Caption, outcome: Outcome
    ) -> OutgoingMessage:
        """/describe's answer: the suggestions with their buttons, and the image described
        (the stored source, re-encoded to fit the upload limit)."""
        text = describe_text(
            caption,
            outcome.suggestions,
            error=outcome.error,
            refunded=outcome.refunded,
            # The engine's notes: the test captioner says its captions are noise.
            note="\n".join(dict.fromkeys(outcome.warnings)),
        )
        files: list[Attachment] = []
        source = await self.bot.images.load(job_id, SOURCE)
        if source is not None:
            data, ext = await self.bot.threads.run(
                encode, source, limit_bytes=upload_limit(interaction)
            )
            files.append(Attachment(f"describe_{job_id[:8]}.{ext}", data))
        view = describe_view(job_id, len(outcome.suggestions))
        return OutgoingMessage(text, mention=caption.user_id, files=files, view=view)

    # -- buttons (ImagineActions) ---------------------------------------------------------

    async def upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """U: post image `index` alone at full size; re-made from its seed if the file is gone.

        Free: it makes no new image (a re-made one was paid for with the grid).
        """
        job = await self._job(interaction, job_id)
        flagged = _check_image(job, index)
        requester = await requester_of(interaction, job.guild_id, job.channel_id)
        if await self.bot.services.moderation.is_banned(job.guild_id, interaction.user.id):
            raise Banned()
        data = await self.bot.images.read_bytes(job_id, index)
        image: Image.Image | None = None
        if data is None:
            if flagged:
                raise MemberError(WITHHELD)
            # Re-making is generation: the whole gate, refusing privately before the defer.
            params = job.params
            await self.bot.orchestrator.admit(requester, params.prompt, params.negative_prompt)
            await _defer(interaction)
            image = await self.bot.orchestrator.regenerate(job, index, requester)
        ext = "png"
        limit = upload_limit(interaction)
        if image is not None or (data is not None and len(data) > limit):
            image = image or await self.bot.images.load(job_id, index)
            assert image is not None
            data, ext = await self.bot.threads.run(encode, image, limit_bytes=limit)
        assert data is not None
        name = f"imagine_{job_id[:8]}_{index}.{ext}"
        message = OutgoingMessage(
            upscale_text(Caption(job.params, interaction.user.id), index),
            mention=interaction.user.id,
            files=[Attachment(name, data, spoiler=flagged)],
            view=single_view(job_id, index, self._tools()),
        )
        await respond(
            interaction,
            message.content,
            files=message.files_for_send(),
            view=message.view,
            allowed_mentions=message.allowed_mentions,
        )

    async def vary(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """V: variations of image `index` (img2img from it, same prompt), charged to the presser.
        With remix on, the job's owner first gets the editor (`remix` runs the edit)."""
        if await self._offer_remix(interaction, RemixTarget(RemixAction.VARY, job_id, index)):
            return
        await self._vary(interaction, job_id, index)

    async def _vary(
        self,
        interaction: discord.Interaction,
        job_id: str,
        index: int,
        edit: ParsedPrompt | None = None,
    ) -> None:
        count = self.bot.settings.generation.count

        def plan(job: JobView, source: Image.Image) -> JobPlan:
            job, count_, seed = self._apply_edit(job, edit, count)
            return JobPlan(
                self._variation_request(job, source, count=count_, seed=seed),
                kind=JobKind.VARIATION,
                parent_job_id=job_id,
                image_index=index,
                tier=_edited_tier(edit),
            )

        await self._from_image(interaction, job_id, index, plan, f"Variations of image #{index}")

    async def tool(
        self, interaction: discord.Interaction, job_id: str, index: int, kind: JobKind
    ) -> None:
        """A creative tool on image `index` (upscale, vary, zoom, pan): a new job of `kind`
        from that image, charged to the presser per image it makes. With remix on, Vary
        (Subtle/Strong) first gives the job's owner the editor."""
        if kind in _REMIX_TOOLS and await self._offer_remix(
            interaction, RemixTarget(RemixAction.TOOL, job_id, index, kind)
        ):
            return
        await self._tool(interaction, job_id, index, kind)

    async def _tool(
        self,
        interaction: discord.Interaction,
        job_id: str,
        index: int,
        kind: JobKind,
        edit: ParsedPrompt | None = None,
    ) -> None:
        tool = TOOLS[kind]
        title = TOOL_LOOKS[kind].title
        if not self.bot.generation.supports(tool.operation):
            raise MemberError(f"{title} is not available: this bot has no model for it.")
        limits, count = self.bot.generation.limits, self.bot.settings.generation.count

        def plan(job: JobView, source: Image.Image) -> JobPlan:
            job, count_, seed = self._apply_edit(job, edit, count)
            return JobPlan(
                tool_request(tool, job, source, limits, count=count_, seed=seed),
                kind=kind,
                parent_job_id=job_id,
                image_index=index,
                tier=_edited_tier(edit),
            )

        await self._from_image(interaction, job_id, index, plan, f"{title} of image #{index}")

    async def _from_image(
        self,
        interaction: discord.Interaction,
        job_id: str,
        index: int,
        make_plan: Callable[[JobView, Image.Image], JobPlan],
        label: str,
    ) -> None:
        """Start the job `make_plan` builds from image `index` of `job_id` (V and the tools)."""
        job = await self._job(interaction, job_id)
        flagged = _check_image(job, index)
        source = await self._source(
            interaction,
            job_id,
            index,
            flagged=flagged,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
        )
        await self._start(
            interaction,
            make_plan(job, source),
            label=label,
            guild_id=job.guild_id,
            channel_id=job.channel_id,
        )

    def _tools(self) -> list[JobKind]:
        """The tools whose model is configured (the others get no button)."""
        supports = self.bot.generation.supports
        return [kind for kind, tool in TOOLS.items() if supports(tool.operation)]

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        """Reroll: the same parameters with new seeds (a variation or a tool's result rerolls
        from its source image). With remix on, the job's owner first gets the editor."""
        if await self._offer_remix(interaction, RemixTarget(RemixAction.REROLL, job_id)):
            return
        job = await self._job(interaction, job_id)
        tool = TOOLS.get(job.kind)
        from_parent = tool is not None or job.kind is JobKind.VARIATION
        if from_parent and job.parent_job_id and job.image_index is not None:
            index = job.image_index + 1
            source = await self._source(
                interaction,
                job.parent_job_id,
                index,
                guild_id=job.guild_id,
                channel_id=job.channel_id,
            )
            if tool is not None:
                limits = self.bot.generation.limits
                request = tool_request(tool, job, source, limits, count=job.params.count)
                label = f"{TOOL_LOOKS[job.kind].title} of image #{index}"
            else:
                # Same parameters (count, strength) as the variation being rerolled.
                request = request_from_job(
                    job, width=source.width, height=source.height, init_image=source
                )
                label = f"Variations of image #{index}"
            plan = JobPlan(
                request, kind=job.kind, parent_job_id=job.parent_job_id, image_index=index
            )
        elif job.kind is JobKind.IMAGE_PROMPT:
            source = await self.bot.orchestrator.image_prompt_source(job.id)
            request = request_from_job(job, init_image=source)
            plan = JobPlan(
                request, kind=JobKind.IMAGE_PROMPT, parent_job_id=job_id, source_image=source
            )
            label = "image prompt"
        else:
            request = request_from_job(job)
            plan = JobPlan(request, kind=JobKind.REROLL, parent_job_id=job_id)
            label = "Reroll"
        await self._start(
            interaction, plan, label=label, guild_id=job.guild_id, channel_id=job.channel_id
        )

    async def check_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """The delete button is for the job's requester, or an admin/moderator."""
        job = await self.bot.services.history.get(job_id)
        if job is not None and job.user_id == interaction.user.id:
            return
        if not await can_manage_messages(interaction, self.bot.services.moderation):
            raise MemberError(
                "Only the member who asked for these images, or a server admin, can delete them."
            )

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """Delete the message the button is on (`check_delete` passed)."""
        # A deferred update makes the clicked message the interaction's "original" message.
        try:
            await interaction.response.defer()
            await interaction.delete_original_response()
        except discord.NotFound:
            # Deleted meanwhile (another member's press, a moderator): the effect is there.
            await respond(interaction, "Already deleted.", ephemeral=True)

    async def check_cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """The Cancel button is for the job's requester, while the job is live."""
        submission = self.bot.orchestrator.live(job_id)
        if submission is None:
            job = await self.bot.services.history.get(job_id)
            if job is not None and job.status is JobStatus.CANCELLED:
                return  # `cancel` says it is already cancelled
            raise MemberError("This job is no longer in the queue, so it cannot be cancelled.")
        if submission.requester.user_id != interaction.user.id:
            raise MemberError("Only the member who asked for this job can cancel it.")

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """Cancel a job that has not finished (`check_cancel` passed); a second press, or a
        press on a job just cancelled, is told so quietly."""
        submission = self.bot.orchestrator.live(job_id)
        queued = submission.queued if submission is not None else None
        if queued is None or queued.cancel_requested or queued.state is JobState.CANCELLED:
            await respond(interaction, ALREADY_CANCELLED, ephemeral=True)
            return
        if not self.bot.orchestrator.cancel(job_id):
            raise MemberError("This job has just finished, so it cannot be cancelled.")
        await respond(
            interaction, "Cancelled. Nothing was counted against your quota.", ephemeral=True
        )

    # -- remix (an editor of the prompt before reroll, V and Vary) ------------------------

    async def _offer_remix(self, interaction: discord.Interaction, target: RemixTarget) -> bool:
        """Open the remix editor instead of running the button, when the presser owns the
        job and has remix on; True if it was opened (the press is then answered).

        The editor must be the press's first answer, within Discord's 3 seconds: two small
        reads come first (the preference, the job), nothing is reserved or queued."""
        preferences = await self.bot.services.preferences.get(interaction.user.id)
        if not preferences.remix:
            return False
        job = await self._job(interaction, target.job_id)
        if job.user_id != interaction.user.id:
            return False  # another member's job: the button works as without remix
        scope = _remix_scope(job, target.action)
        if scope is None:
            return False  # a reroll of a job remix does not edit (zoom, pan, upscale)
        if target.index is not None:
            _check_image(job, target.index)
        text = remix_text(job.params, self._defaults(), scope)
        await interaction.response.send_modal(remix_modal(target, text))
        return True

    @commands.Cog.listener("on_interaction")
    async def on_remix_submit(self, interaction: discord.Interaction) -> None:
        """A submitted remix editor: run its button with the edit. Read from the interaction
        alone (see `bot.presentation.remix`), so it works after a restart too."""
        if interaction.type is not discord.InteractionType.modal_submit:
            return
        data: Any = interaction.data or {}
        target = RemixTarget.from_custom_id(str(data.get("custom_id", "")))
        if target is None:
            return
        arm(interaction, DeferStyle.PUBLIC)  # the answer is the job's public message
        try:
            await self.remix(interaction, target, submitted_text(data))
        except Exception as exc:
            await self.bot.report_interaction_error(interaction, exc)

    async def remix(
        self, interaction: discord.Interaction, target: RemixTarget, text: str
    ) -> None:
        """Run `target`'s button with the member's edited prompt and flags, read by the one
        parser and checked like `/imagine` (moderation, limits, quota) by the same gate: a
        refused edit is answered with the reason and nothing is charged."""
        job = await self._job(interaction, target.job_id)
        if job.user_id != interaction.user.id:
            raise MemberError("Only the member who asked for these images can remix them.")
        scope = _remix_scope(job, target.action)
        if scope is None:
            raise MemberError("This job cannot be remixed.")
        edit = parse_remix(text, scope)
        if target.action is RemixAction.VARY:
            assert target.index is not None
            await self._vary(interaction, job.id, target.index, edit)
        elif target.action is RemixAction.TOOL:
            assert target.index is not None and target.kind is not None
            await self._tool(interaction, job.id, target.index, target.kind, edit)
        elif job.kind in _REMIX_TOOLS or job.kind is JobKind.VARIATION:
            # Rerolling a variation is varying its source image again.
            assert job.parent_job_id is not None and job.image_index is not None
            index = job.image_index + 1
            if job.kind is JobKind.VARIATION:
                await self._vary(interaction, job.parent_job_id, index, edit)
            else:
                await self._tool(interaction, job.parent_job_id, index, job.kind, edit)
        elif job.kind is JobKind.IMAGE_PROMPT:
            source = await self.bot.orchestrator.image_prompt_source(job.id)
            plan = JobPlan(
                self._request(edit.prompt, edit.options, source),
                kind=JobKind.IMAGE_PROMPT,
                parent_job_id=job.id,
                source_image=source,
                tier=edit.options.tier,
            )
            await self._start(
                interaction,
                plan,
                label="image prompt",
                guild_id=job.guild_id,
                channel_id=job.channel_id,
            )
        else:
            plan = JobPlan(
                self._request(edit.prompt, edit.options),
                kind=JobKind.REROLL,
                parent_job_id=job.id,
                tier=edit.options.tier,
            )
            await self._start(
                interaction, plan, label="Reroll", guild_id=job.guild_id, channel_id=job.channel_id
            )

    def _apply_edit(
        self, job: JobView, edit: ParsedPrompt | None, count: int
    ) -> tuple[JobView, int, int | None]:
        """`job` with a remix `edit` applied for a variation of its image, the grid size and
        the seed; unchanged (`count`, a new seed) without one."""
        if edit is None:
            return job, count, None
        params = edited_params(job.params, edit, self._defaults())
        return replace(job, params=params), edit.options.count or count, edit.options.seed

    def _defaults(self) -> GenerationParams:
        """The configured parameters (what a flag left out means)."""
        return self.bot.settings.generation.params("")

    # -- helpers --------------------------------------------------------------------------

    async def _job(self, interaction: discord.Interaction, job_id: str) -> JobView:
        """The job behind a button; in a server, only that server's jobs are found."""
        return await self.bot.services.history.require(job_id, guild_id=interaction.guild_id)

    async def _source(
        self,
        interaction: discord.Interaction,
        job_id: str,
        index: int,
        *,
        flagged: bool = False,
        guild_id: int,
        channel_id: int,
    ) -> Image.Image:
        """A stored image to vary; re-making a lost one takes a while, so defer first.

        A flagged image with no file was withheld by the NSFW policy: never re-made.
        """
        image = await self.bot.images.load(job_id, index)
        if image is not None:
            return image
        if flagged:
            raise MemberError(WITHHELD)
        requester = await requester_of(interaction, guild_id, channel_id)
        await self.bot.orchestrator.admit(requester, "")
        await _defer(interaction)
        return await self.bot.orchestrator.source_image(job_id, index, requester)

    def _variation_request(
        self, job: JobView, source: Image.Image, *, count: int, seed: int | None = None
    ) -> GenerationRequest:
        """`count` variations of `source` (an image of `job`): its prompt, the configured
        strength, at the source's size, from `seed` (None: a new one)."""
        gen = self.bot.settings.generation
        return request_from_job(
            job,
            # A few-step job's variation would denoise nothing at this strength.
            steps=variation_steps(
                job.params.steps, gen.variation_strength, self.bot.generation.limits
            ),
            width=source.width,
            height=source.height,
            count=count,
            seed=seed,
            strength=gen.variation_strength,
            init_image=source,
        )


async def _defer(interaction: discord.Interaction) -> None:
    """Defer publicly ("thinking") unless the interaction was already answered."""
    if interaction.response.is_done():
        return
    try:
        await interaction.response.defer(thinking=True)
    except discord.HTTPException as exc:
        if interaction_expired(exc):  # said once, where the job is dropped or the error handled
            mark_dead(interaction)
            log.debug("interaction %s expired before it could be deferred", interaction.id)
            return
        log.warning("could not defer interaction %s: %s", interaction.id, exc)


def _edited_tier(edit: ParsedPrompt | None) -> str | None:
    """`--fast`/`--relax` typed in a remix edit (None: the member's default tier)."""
    return edit.options.tier if edit is not None else None


def _label(job: JobView) -> str:
    """The label a job's messages carry, from its kind."""
    if job.kind is JobKind.VARIATION and job.image_index is not None:
        return f"Variations of image #{job.image_index + 1}"
    if job.kind in TOOL_LOOKS and job.image_index is not None:
        return f"{TOOL_LOOKS[job.kind].title} of image #{job.image_index + 1}"
    if job.kind is JobKind.IMAGE_PROMPT:
        return "image prompt"
    if job.kind is JobKind.DESCRIBE:
        return DESCRIBE_LABEL
    if job.kind is JobKind.REROLL:
        return "Reroll"
    return ""


#: The tools remix edits (Midjourney's Remix: Vary Subtle and Strong).
_REMIX_TOOLS = frozenset({JobKind.VARY_SUBTLE, JobKind.VARY_STRONG})


def _remix_scope(job: JobView, action: RemixAction) -> RemixScope | None:
    """What a remix of `job` through `action` may edit; None where remix does not apply
    (a reroll of a zoom, a pan or an upscale: their prompt is not what makes them)."""
    if action is not RemixAction.REROLL:
        return RemixScope()
    if job.kind in (JobKind.TXT2IMG, JobKind.REROLL):
        return RemixScope(aspect=True, count=True)
    if job.kind is JobKind.IMAGE_PROMPT:
        return RemixScope(aspect=True, count=True, image_weight=True)
    if job.kind in _REMIX_TOOLS or job.kind is JobKind.VARIATION:
        if job.parent_job_id is not None and job.image_index is not None:
            return RemixScope(count=True)
    return None


def _check_image(job: JobView, index: int) -> bool:
    """Refuse indexes the job does not have; True if the safety checker flagged the image
    (then it exists only where the policy allowed it, and is posted behind a spoiler)."""
    if not 1 <= index <= job.params.count:
        raise MemberError(f"This job has no image #{index}.")
    flagged = bool(job.nsfw and index <= len(job.nsfw) and job.nsfw[index - 1])
    return flagged


def _progress_text(
    caption: Caption, event: JobEvent, kind: JobKind = JobKind.TXT2IMG
) -> str | None:
    if kind is JobKind.DESCRIBE and isinstance(event, JobStarted | JobStep):
        return describing_text(caption)  # no denoising steps to count
    if isinstance(event, JobQueued):
        eta = _in(event.eta_seconds) if event.eta_seconds is not None else None
        return queued_text(caption, event.position, eta, event.note)
    if isinstance(event, JobStarted):
        return running_text(caption, 0, caption.params.steps, event.note)
    if isinstance(event, JobStep):
        return running_text(caption, event.step, event.total)
    return None


def _in(seconds: float) -> dt.datetime:
    return discord.utils.utcnow() + dt.timedelta(seconds=max(0.0, seconds))
