"""Who counts as a server admin for the bot: checked by the bot itself, on every use.

`app_commands.default_permissions` is only a hint Discord shows (server owners can override
it), so every admin action calls `is_admin` with the invoking member's real permissions.
"""

from __future__ import annotations

import discord

from bot.services.moderation import ModerationService

__all__ = ["can_manage_messages", "has_admin_permissions", "is_admin"]


def has_admin_permissions(permissions: discord.Permissions) -> bool:
    """Administrator or Manage Server."""
    return permissions.administrator or permissions.manage_guild


async def is_admin(interaction: discord.Interaction, moderation: ModerationService) -> bool:
    """Manage Server (or Administrator), or the admin role configured for this server."""
    if interaction.guild_id is None:
        return False
    if has_admin_permissions(interaction.permissions):
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
