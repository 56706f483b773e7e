"""`/settings` (admins): the server's NSFW policy, bot admin role and on/off switch.

- `/settings nsfw policy:` what happens to images the safety checker flags: `block` (the
  default: not posted, the member is told, the images are refunded), `spoiler` (posted behind
  a spoiler), `age_restricted` (posted only in age-restricted channels, withheld elsewhere).
  Applied to each image when a job finishes (`bot.jobs.decide_fates`) and again by `/show`.
- `/settings admin_role [role]`: members with this role count as admins of the bot here, on
  top of Manage Server; without `role` the setting is cleared.
- `/settings generation enabled:` switch `/imagine` off (and on) for the whole server.
- `/settings show`: all of it, with the allow-list and counts of blocked words and bans.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.db.models import NsfwPolicy
from bot.errors import MemberError
from bot.presentation.access import ADMIN_HINT, AdminOnlyCog, guild_id_of, reply
from bot.services.moderation import GuildSettings

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["POLICY_TEXT", "SettingsCog"]

POLICY_TEXT: dict[NsfwPolicy, str] = {
    NsfwPolicy.BLOCK: "block: flagged images are not posted (and not counted)",
    NsfwPolicy.SPOILER: "spoiler: flagged images are posted behind a spoiler",
    NsfwPolicy.AGE_RESTRICTED: "age_restricted: flagged images only in age-restricted channels",
}


class SettingsCog(AdminOnlyCog, name="Settings"):
    """`/settings show|nsfw|admin_role|generation`, over `ModerationService`."""

    settings = app_commands.Group(
        name="settings",
        description="The bot's settings on this server",
        guild_only=True,
        default_permissions=ADMIN_HINT,
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @settings.command(name="show", description="The bot's settings on this server")
    async def show(self, interaction: discord.Interaction) -> None:
        guild_id = guild_id_of(interaction)
        moderation = self.bot.services.moderation
        current = await moderation.get_settings(guild_id)
        words = await moderation.blocked_words(guild_id)
        bans = await moderation.list_bans(guild_id)
        rules = await self.bot.services.quota.list_rules(guild_id)
        embed = discord.Embed(title="Bot settings", colour=discord.Colour.blurple())
        embed.add_field(name="Generation", value="on" if current.enabled else "off")
        embed.add_field(name="NSFW policy", value=POLICY_TEXT[current.nsfw_policy], inline=False)
        embed.add_field(name="Admin role", value=_role(current), inline=False)
        embed.add_field(name="Channels", value=_channels(current), inline=False)
        embed.add_field(
            name="Moderation",
            value=f"{len(words)} blocked word(s) (/blocklist list), "
            f"{len(bans)} ban(s) (/bans), {len(rules)} quota rule(s) (/quota list)",
            inline=False,
        )
        await reply(interaction, embed=embed)

    @settings.command(name="nsfw", description="What happens to images the safety checker flags")
    @app_commands.describe(policy="block (default), spoiler, or age-restricted channels only")
    @app_commands.choices(
        policy=[app_commands.Choice(name=text, value=p.value) for p, text in POLICY_TEXT.items()]
    )
    async def nsfw(
        self, interaction: discord.Interaction, policy: app_commands.Choice[str]
    ) -> None:
        updated = await self.bot.services.moderation.update_settings(
            guild_id_of(interaction), interaction.user.id, nsfw_policy=NsfwPolicy(policy.value)
        )
        await reply(interaction, f"NSFW policy set to {POLICY_TEXT[updated.nsfw_policy]}.")

    @settings.command(name="admin_role", description="A role whose members may use admin commands")
    @app_commands.describe(role="The role (leave empty to clear the setting)")
    async def admin_role(
        self, interaction: discord.Interaction, role: discord.Role | None = None
    ) -> None:
        guild_id = guild_id_of(interaction)
        if role is not None and role.id == guild_id:
            raise MemberError("@everyone cannot be the admin role: that would make everyone admin.")
        updated = await self.bot.services.moderation.update_settings(
            guild_id, interaction.user.id, admin_role_id=role.id if role is not None else None
        )
        if updated.admin_role_id is None:
            await reply(interaction, "Admin role cleared: only Manage Server counts as admin.")
        else:
            await reply(
                interaction,
                f"Members with <@&{updated.admin_role_id}> can now use the bot's admin commands.",
            )

    @settings.command(name="generation", description="Switch /imagine on or off on this server")
    @app_commands.describe(enabled="True: members may generate images; False: nobody may")
    async def generation(self, interaction: discord.Interaction, enabled: bool) -> None:
        await self.bot.services.moderation.update_settings(
            guild_id_of(interaction), interaction.user.id, enabled=enabled
        )
        state = "on" if enabled else "off"
        await reply(interaction, f"Image generation is now {state} on this server.")


def _role(current: GuildSettings) -> str:
    if current.admin_role_id is None:
        return "none (Manage Server only)"
    return f"<@&{current.admin_role_id}> (and Manage Server)"


def _channels(current: GuildSettings) -> str:
    if not current.allowed_channels:
        return "every channel (/channels allow to limit)"
    return ", ".join(f"<#{cid}>" for cid in sorted(current.allowed_channels))[:1024]
