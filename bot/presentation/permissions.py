"""Who counts as a server admin for the bot: checked by the bot itself, on every use.

`app_commands.default_permissions` is only a hint Discord shows (server owners can override
it), so every admin action calls `is_admin` with the invoking member's real permissions.
"""

from __future__ import annotations

import discord

from bot.services.moderation import ModerationService

__all__ = ["can_manage_messages", "has_admin_permissions", "is_admin", "server_permissions"]


def has_admin_permissions(permissions: discord.Permissions) -> bool:
    """Administrator or Manage Server."""
    return permissions.administrator or permissions.manage_guild


def server_permissions(interaction: discord.Interaction) -> discord.Permissions:
    """The invoker's server-wide permissions (roles, ownership, Administrator).

    `interaction.permissions` are the invoker's permissions *in the channel*, after its
    overwrites: a channel overwrite could grant Manage Server to a member there, or take it
    from an admin. Manage Server is a server permission, so it is read from the roles of the
    cached server; without that cache (no guilds intent) the channel's are all there is.
    """
    user = interaction.user
    guild_id = interaction.guild_id
    cached = interaction.client.get_guild(guild_id) if guild_id is not None else None
    if cached is not None and isinstance(user, discord.Member) and user.guild is cached:
        return user.guild_permissions
    return interaction.permissions


async def is_admin(interaction: discord.Interaction, moderation: ModerationService) -> bool:
    """Manage Server (or Administrator), or the admin role configured for this server."""
    if interaction.guild_id is None:
        return False
    if has_admin_permissions(server_permissions(interaction)):
        return True
    settings = await moderation.get_settings(interaction.guild_id)
    if settings.admin_role_id is None:
        return False
    roles = getattr(interaction.user, "roles", ())
    return any(role.id == settings.admin_role_id for role in roles)


async def can_manage_messages(
    interaction: discord.Interaction, moderation: ModerationService
) -> bool:
    """An admin, or a moderator with Manage Messages (e.g. to delete someone's result)."""
    return interaction.permissions.manage_messages or await is_admin(interaction, moderation)
