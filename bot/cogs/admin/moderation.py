"""Moderation commands (admins): blocked words, bans, and the channels `/imagine` may run in.

- `/blocklist add|remove|list`: words or phrases refused in prompts (matched as whole words
  after Unicode normalisation, see `bot.services.moderation`).
- `/ban member [reason]`, `/unban member`, `/bans`: members who may not use the bot here.
- `/channels allow|disallow|list`: the allow-list. Empty means every channel; otherwise
  `/imagine` (and the V/reroll buttons) answer only in the listed channels.

These are checked before anything is reserved or queued, so a refusal costs the member
nothing. Every change is written to the audit log by the services, with the admin's id.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.errors import MemberError
from bot.presentation.access import ADMIN_HINT, AdminOnlyCog, guild_id_of, reply
from bot.presentation.audit_format import inline_code
from bot.services.moderation import MAX_WORD_CHARS

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ModerationCog"]

REASON_MAX = 300
LIST_CHARS = 3800  # an embed description holds 4096; longer lists come as a file


class ModerationCog(AdminOnlyCog, name="Moderation"):
    """`/blocklist`, `/ban`, `/unban`, `/bans`, `/channels`, over `ModerationService`."""

    blocklist = app_commands.Group(
        name="blocklist",
        description="Words refused in prompts on this server",
        guild_only=True,
        default_permissions=ADMIN_HINT,
    )
    channels = app_commands.Group(
        name="channels",
        description="Channels where /imagine may be used (empty list: everywhere)",
        guild_only=True,
        default_permissions=ADMIN_HINT,
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    # -- blocklist --------------------------------------------------------------------------

    @blocklist.command(name="add", description="Refuse prompts containing a word or phrase")
    @app_commands.describe(
        word="A word or phrase, matched whole in any disguise; end it with * for plurals (nude*)"
    )
    async def block(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD_CHARS]
    ) -> None:
        guild_id = guild_id_of(interaction)
        moderation = self.bot.services.moderation
        before = set(await moderation.blocked_words(guild_id))
        stored = await moderation.add_blocked_word(guild_id, word, actor_id=interaction.user.id)
        shown = inline_code(stored)
        if stored in before:
            await reply(interaction, f"{shown} was already blocked.")
        else:
            await reply(interaction, f"Blocked {shown}: prompts containing it are refused.")

    @blocklist.command(name="remove", description="Allow a blocked word again")
    @app_commands.describe(word="The blocked word or phrase")
    async def unblock(
        self, interaction: discord.Interaction, word: app_commands.Range[str, 1, MAX_WORD_CHARS]
    ) -> None:
        guild_id = guild_id_of(interaction)
        removed = await self.bot.services.moderation.remove_blocked_word(
            guild_id, word, actor_id=interaction.user.id
        )
        if not removed:
            raise MemberError(f"{inline_code(word)} is not on the blocklist; nothing changed.")
        await reply(interaction, f"Unblocked {inline_code(word)}.")

    @blocklist.command(name="list", description="The blocked words")
    async def list_words(self, interaction: discord.Interaction) -> None:
        words = await self.bot.services.moderation.blocked_words(guild_id_of(interaction))
        if not words:
            await reply(interaction, "No words are blocked on this server.")
            return
        text = ", ".join(inline_code(word) for word in words)
        if len(text) <= LIST_CHARS:
            embed = discord.Embed(title=f"Blocked words ({len(words)})", description=text)
            await reply(interaction, embed=embed)
            return
        data = "\n".join(words).encode()
        await reply(
            interaction,
            f"{len(words)} blocked words (one per line in the file).",
            file=discord.File(io.BytesIO(data), filename="blocklist.txt"),
        )

    # -- bans -------------------------------------------------------------------------------

    @app_commands.command(name="ban", description="Stop a member from using the bot here")
    @app_commands.guild_only()
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.describe(member="Who to ban", reason="Why (the member sees it when refused)")
    async def ban(
        self,
        interaction: discord.Interaction,
        member: discord.User,
        reason: app_commands.Range[str, 1, REASON_MAX] | None = None,
    ) -> None:
        guild_id = guild_id_of(interaction)
        if member.id == interaction.user.id:
            raise MemberError("You cannot ban yourself.")
        await self.bot.services.moderation.ban(
            guild_id, member.id, actor_id=interaction.user.id, reason=reason
        )
        why = f" Reason: {discord.utils.escape_markdown(reason)}" if reason else ""
        await reply(interaction, f"{member.mention} may no longer generate images here.{why}")

    @app_commands.command(name="unban", description="Let a banned member use the bot again")
    @app_commands.guild_only()
    @app_commands.default_permissions(ADMIN_HINT)
    @app_commands.describe(member="Who to unban")
    async def unban(self, interaction: discord.Interaction, member: discord.User) -> None:
        guild_id = guild_id_of(interaction)
        lifted = await self.bot.services.moderation.unban(
            guild_id, member.id, actor_id=interaction.user.id
        )
        if not lifted:
            raise MemberError(f"{member.mention} is not banned; nothing changed.")
        await reply(interaction, f"{member.mention} may generate images again.")

    @app_commands.command(name="bans", description="Members banned from the bot here")
    @app_commands.guild_only()
    @app_commands.default_permissions(ADMIN_HINT)
    async def bans(self, interaction: discord.Interaction) -> None:
        bans = await self.bot.services.moderation.list_bans(guild_id_of(interaction))
        if not bans:
            await reply(interaction, "Nobody is banned from the bot on this server.")
            return
        lines = []
        for ban in bans[:50]:
            reason = f": {discord.utils.escape_markdown(ban.reason)}" if ban.reason else ""
            by = f" by <@{ban.banned_by}>" if ban.banned_by else ""
            when = discord.utils.format_dt(ban.created_at, "d")
            lines.append(f"<@{ban.user_id}>{reason} ({when}{by})")
        if len(bans) > 50:
            lines.append(f"... and {len(bans) - 50} more.")
        embed = discord.Embed(title=f"Banned members ({len(bans)})", description="\n".join(lines))
        await reply(interaction, embed=embed)

    # -- channel allow-list -----------------------------------------------------------------

    @channels.command(name="allow", description="Let /imagine be used in a channel")
    @app_commands.describe(channel="The channel to add to the allow-list")
    async def allow(self, interaction: discord.Interaction, channel: discord.TextChannel) -> None:
        guild_id = guild_id_of(interaction)
        added = await self.bot.services.moderation.set_channel_allowed(
            guild_id, channel.id, True, actor_id=interaction.user.id
        )
        allowed = await self.bot.services.moderation.allowed_channels(guild_id)
        first = " /imagine now answers only in the listed channels." if len(allowed) == 1 else ""
        done = f"Allowed {channel.mention}.{first}" if added else (
            f"{channel.mention} was already allowed."
        )
        await reply(interaction, f"{done}\n{_channels(allowed)}")

    @channels.command(name="disallow", description="Remove a channel from the allow-list")
    @app_commands.describe(channel="The channel to remove from the allow-list")
    async def disallow(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        guild_id = guild_id_of(interaction)
        removed = await self.bot.services.moderation.set_channel_allowed(
            guild_id, channel.id, False, actor_id=interaction.user.id
        )
        if not removed:
            raise MemberError(f"{channel.mention} is not on the allow-list; nothing changed.")
        allowed = await self.bot.services.moderation.allowed_channels(guild_id)
        await reply(interaction, f"Removed {channel.mention}.\n{_channels(allowed)}")

    @channels.command(name="list", description="The channels /imagine may be used in")
    async def list_channels(self, interaction: discord.Interaction) -> None:
        allowed = await self.bot.services.moderation.allowed_channels(guild_id_of(interaction))
        await reply(interaction, _channels(allowed))


def _channels(allowed: frozenset[int]) -> str:
    if not allowed:
        return "The allow-list is empty: /imagine may be used in every channel."
    listed = ", ".join(f"<#{cid}>" for cid in sorted(allowed))
    return f"/imagine may be used in: {listed}"
