"""`/show job:<id>`: post a job's grid again, with working buttons (like Midjourney's /show).

For the job's owner or a server admin, and only for jobs of the server it is used in (a job
of another server reads as "no such job"). The grid is rebuilt from the image store; the
server's NSFW policy is applied again for the channel it is shown in (an image the policy
withheld when the job ran was never stored and stays a grey tile). An unflagged image whose
file is gone is re-made from its seed, like the U button does: through the job gate, as the
member who asked (a banned member, a blocked word or a disabled bot refuses it before
anything is queued), free of charge but recorded.

The answer is public (it is a re-post); refusals are private.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands
from discord.utils import escape_markdown
from PIL import Image

from bot.core.image_store import withheld_tile
from bot.core.jobs import ImageFate, Requester, decide_fates
from bot.db.models import JobKind, JobStatus
from bot.errors import MemberError
from bot.presentation.access import NO_MENTIONS, guild_id_of, requester_of
from bot.presentation.deadline import DEFER_STYLE, DeferStyle
from bot.presentation.delivery import upload_limit
from bot.presentation.messages import caption_of, finished_text
from bot.presentation.permissions import is_admin
from bot.presentation.views import grid_view
from bot.services.history import JobView
from generation.errors import NumericalError
from generation.grid import encode_grid

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ShowCog"]

JOB_ID_MAX = 64


class ShowCog(commands.Cog, name="Show"):
    """Answers `/show` with the job's grid and buttons."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="show",
        description="Post a job's images again, with buttons",
        extras={DEFER_STYLE: DeferStyle.PUBLIC},  # the grid is posted publicly
    )
    @app_commands.guild_only()
    @app_commands.describe(job="The job id, as shown by /history list")
    async def show(
        self, interaction: discord.Interaction, job: app_commands.Range[str, 1, JOB_ID_MAX]
    ) -> None:
        record = await self._job_for(interaction, job.strip().lower())
        fates = await self._fates(interaction, record)
        requester = await requester_of(interaction)
        if await self._missing(record, fates):
            # Images will be re-made: the gate refuses (privately) before the public defer.
            orchestrator = self.bot.orchestrator
            params = record.params
            await orchestrator.admit(requester, params.prompt, params.negative_prompt)
        # Checks are done; building the grid may take a while (files, maybe a re-made image).
        await interaction.response.defer(thinking=True)
        tiles: list[Image.Image] = []
        withheld: list[int] = []
        failed: list[int] = []  # not stored when the job ran: the model made nothing usable
        for index, fate in enumerate(fates, 1):
            try:
                image = await self._image(record, index, fate, requester)
            except NumericalError:
                failed.append(index)
                image = None
            if image is None:
                if index not in failed:
                    withheld.append(index)
                image = withheld_tile((record.params.width, record.params.height))
            tiles.append(image)
        data, ext = await self.bot.threads.run(
            encode_grid, tiles, limit_bytes=upload_limit(interaction)
        )
        caption = caption_of(record, f"job `{record.id[:8]}`")
        file = discord.File(
            io.BytesIO(data),
            filename=f"imagine_{record.id[:8]}.{ext}",
            spoiler=ImageFate.SPOILER in fates,
        )
        await interaction.followup.send(
            finished_text(
                caption, record.seeds or (), withheld=len(withheld), failed=len(failed)
            ),
            file=file,
            view=grid_view(record.id, record.params.count, withheld + failed),
            allowed_mentions=NO_MENTIONS,
        )

    async def _job_for(self, interaction: discord.Interaction, job_id: str) -> JobView:
        """The job, if it is this server's and the invoker may see it; else MemberError."""
        guild_id = guild_id_of(interaction)
        record = await self.bot.services.history.get(job_id, guild_id=guild_id)
        shown = escape_markdown(job_id[:JOB_ID_MAX]).replace("`", "")
        if record is None:
            raise MemberError(f"There is no job `{shown}` on this server.")
        if record.user_id != interaction.user.id and not await is_admin(
            interaction, self.bot.services.moderation
        ):
            raise MemberError("Only the member who made this job, or a server admin, can show it.")
        if record.kind is JobKind.DESCRIBE:
            raise MemberError(
                f"Job `{shown}` is a /describe: it made prompt suggestions, not images."
            )
        if record.status is JobStatus.BLOCKED:
            raise MemberError(
                f"Job `{shown}`'s images were all withheld by this server's safety settings."
            )
        if record.status is not JobStatus.SUCCEEDED:
            raise MemberError(f"Job `{shown}` is {record.status.value}: it has no images to show.")
        return record

    async def _fates(
        self, interaction: discord.Interaction, record: JobView
    ) -> tuple[ImageFate, ...]:
        """The server's current NSFW policy applied to the job's flags, for this channel."""
        settings = await self.bot.services.moderation.get_settings(record.guild_id)
        flags = list(record.nsfw or ())
        count = record.params.count
        flags += [False] * (count - len(flags))
        channel = interaction.channel
        channel_nsfw = bool(channel is not None and getattr(channel, "is_nsfw", bool)())
        return decide_fates(flags[:count], settings.nsfw_policy, channel_nsfw)

    async def _missing(self, record: JobView, fates: tuple[ImageFate, ...]) -> bool:
        """True if an image to show has no file (it would be re-made)."""
        for index, fate in enumerate(fates, 1):
            if fate is not ImageFate.WITHHOLD and not _flagged(record, index):
                if not await self.bot.images.exists(record.id, index):
                    return True
        return False

    async def _image(
        self, record: JobView, index: int, fate: ImageFate, requester: Requester
    ) -> Image.Image | None:
        """Image `index` as stored (or re-made), or None when it is not to be shown."""
        if fate is ImageFate.WITHHOLD:
            return None
        image = await self.bot.images.load(record.id, index)
        if image is not None:
            return image
        if _flagged(record, index):
            return None  # withheld when the job ran, so never stored: never re-made either
        return await self.bot.orchestrator.regenerate(record, index, requester)


def _flagged(record: JobView, index: int) -> bool:
    return bool(record.nsfw and index <= len(record.nsfw) and record.nsfw[index - 1])
