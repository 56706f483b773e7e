"""Who counts as a server admin for the bot: checked by the bot itself, on every use.

`app_commands.default_permissions` is only a hint Discord shows (server owners can override
it), so every admin action calls `is_admin` with the invoking member's real permissions.
"""

from __future__ import annotations

import discord

from bot.services.moderation import ModerationService

__all__ = [
    "REQUIRED_PERMISSIONS",
    "can_manage_messages",
    "has_admin_permissions",
    "invite_url",
    "is_admin",
    "permission_names",
    "server_permissions",
]


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


#: What the bot needs in a server: slash-command answers need none of these (they are
#: webhooks), but results posted after the interaction expired go to the channel (or thread)
#: as ordinary messages with images, embeds and buttons. DMs, the last fallback, need none.
REQUIRED_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    attach_files=True,
    embed_links=True,
)


#: discord.py's attribute names as Discord's settings pages spell them.
_UI_NAMES = {
    "read_messages": "View Channels",
    "send_messages_in_threads": "Send Messages in Threads",
}


def permission_names(permissions: discord.Permissions = REQUIRED_PERMISSIONS) -> list[str]:
    """The set permissions as Discord's UI names them ("View Channels", "Attach Files", ...)."""
    return [
        _UI_NAMES.get(name, name.replace("_", " ").title()) for name, value in permissions if value
    ]


def invite_url(application_id: int) -> str:
    """The OAuth2 URL adding the bot with exactly `REQUIRED_PERMISSIONS` and slash commands."""
    return discord.utils.oauth_url(
        application_id,
        permissions=REQUIRED_PERMISSIONS,
        scopes=("bot", "applications.commands"),
    )
