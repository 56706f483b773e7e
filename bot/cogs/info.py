"""`/info`: a member's quota and jobs, the queue, and the model, privately; admins also see
the disk used by stored images and the retention in force."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.retention import RetentionPolicy, format_bytes
from bot.errors import MemberError
from bot.presentation.fast_time import fast_time_text
from bot.presentation.messages import neutralise, relative_time
from bot.presentation.permissions import is_admin
from bot.services.quota import QuotaStatus
from generation.text import cut_text

if TYPE_CHECKING:
    from bot.app import ImagineBot
    from generation.events import WorkerInfo

__all__ = ["InfoCog"]


class InfoCog(commands.Cog, name="Info"):
    """Answers `/info` ephemerally: only the member sees their usage."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="info", description="Your image quota, your jobs, and the queue")
    @app_commands.guild_only()
    async def info(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild_id
        if guild_id is None:
            raise MemberError("This command only works in a server.")
        user = interaction.user
        roles = [role.id for role in getattr(user, "roles", ()) if role.id != guild_id]
        services, generation = self.bot.services, self.bot.generation
        status = await services.quota.status(guild_id, user.id, roles)
        stats = await services.history.stats(guild_id, user.id)

        embed = discord.Embed(title="Your images", colour=discord.Colour.blurple())
        embed.add_field(name="Quota", value=_quota_text(status), inline=False)
        fast = await services.tiers.status(guild_id, user.id, roles)
        embed.add_field(name="Fast time", value=fast_time_text(fast), inline=False)
        embed.add_field(
            name="Lifetime",
            value=f"{stats.images} image(s) in {stats.jobs} job(s) on this server",
            inline=False,
        )
        embed.add_field(name="Your jobs", value=self._jobs_text(guild_id, user.id), inline=False)
        queue = generation.queue_stats()
        embed.add_field(
            name="Queue",
            value=f"{queue.waiting} waiting, {queue.running} running",
            inline=True,
        )
        workers = generation.workers()
        if workers is not None:
            embed.add_field(name="GPU workers", value=workers_text(workers), inline=False)
        model = generation.model_id
        if generation.model_note:
            model += f" ({generation.model_note})"
        embed.add_field(name="Model", value=model[:1024], inline=True)
        if await is_admin(interaction, services.moderation):
            embed.add_field(name="Storage (admins)", value=await self._storage_text(), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    async def _storage_text(self) -> str:
        usage = await self.bot.images.usage()
        policy = RetentionPolicy.from_settings(self.bot.settings.storage)
        return (
            f"{format_bytes(usage.bytes)} of images in {usage.jobs} job(s); "
            f"retention: {policy.describe()}"
        )

    def _jobs_text(self, guild_id: int, user_id: int) -> str:
        lines = []
        for sub in self.bot.orchestrator.live_for(guild_id, user_id)[:10]:
            position = sub.queued.position
            if position is None:
                state = "running"
            elif sub.tier == "relax":  # fast jobs may still overtake it: no position promised
                state = f"queued in relax mode, {position - 1} job(s) ahead now"
            else:
                state = f"queued, position {position}"
            prompt = neutralise(cut_text(sub.request.params.prompt, 60))
            lines.append(f"`{sub.job_id[:8]}` {prompt}: {state}")
        # An embed field holds 1,024 characters: whole lines only.
        while len("\n".join(lines)) > 1024:
            lines.pop()
        return "\n".join(lines) or "None queued or running."


def workers_text(workers: Sequence[WorkerInfo]) -> str:
    """One line per pool worker (host, device, GPU, jobs running), or why the queue waits."""
    if not workers:
        return "None connected: jobs wait in the queue until a GPU worker starts."
    lines = [
        f"`{w.host}` {w.device} ({discord.utils.escape_markdown(w.gpu)}): "
        f"{w.running} job(s) running"
        for w in workers[:15]
    ]
    if len(workers) > 15:
        lines.append(f"... and {len(workers) - 15} more")
    return "\n".join(lines)[:1024]


def _quota_text(status: QuotaStatus) -> str:
    span = "today" if status.period.value == "day" else "this week"
    if status.limit is None:
        text = f"{status.used} image(s) used {span}; no limit"
    else:
        remaining = status.remaining if status.remaining is not None else status.limit
        text = f"{status.used} of {status.limit} image(s) used {span}, {remaining} left"
    return f"{text}; resets {relative_time(status.resets_at)}"
