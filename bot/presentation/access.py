"""Who may use the admin commands, and how the admin and member commands answer.

`default_permissions(manage_guild=True)` on a command is only the hint Discord uses to hide
it; server owners can override it. So every admin command also carries `admin_only()`, a
check that runs on every use with the invoker's real permissions (`bot.permissions.is_admin`:
Manage Server, Administrator, or the admin role configured with `/settings admin_role`).

Replies are ephemeral and allow no mentions: prompts, words and reasons echoed back are
member text and must never ping anyone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.jobs import Requester
from bot.errors import MemberError
from bot.presentation.delivery import respond
from bot.presentation.permissions import is_admin
from bot.services import Services

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = [
    "ADMIN_HINT",
    "LEFT_SERVER",
    "AdminOnlyCog",
    "NotAdmin",
    "admin_only",
    "guild_id_of",
    "reply",
    "requester_of",
    "require_admin",
    "role_ids_of",
    "services_of",
]

T = TypeVar("T")

#: What Discord shows the command to by default (a hint only; `admin_only` enforces).
ADMIN_HINT = discord.Permissions(manage_guild=True)
NOT_ADMIN = (
    "Only server admins can do this: you need the Manage Server permission "
    "or this server's bot admin role."
)
NO_MENTIONS = discord.AllowedMentions.none()


class NotAdmin(MemberError, app_commands.CheckFailure):
    """The invoker is not an admin of this server (a check failure with a member message)."""

    def __init__(self, user_message: str = NOT_ADMIN) -> None:
        super().__init__(user_message)


def services_of(interaction: discord.Interaction) -> Services:
    """The storage services of the bot handling this interaction."""
    client = cast("ImagineBot", interaction.client)
    return client.services


#: A press in a DM by someone who is no longer in the job's server.
LEFT_SERVER = (
    "You are no longer a member of the server this job was made in, so its buttons no longer "
    "work for you."
)


async def requester_of(
    interaction: discord.Interaction, guild_id: int | None = None, channel_id: int | None = None
) -> Requester:
    """Who is asking, for the job gate: server, channel, roles and age restriction.

    Buttons pass the job's server and channel. A press in a DM (a result may have been sent
    there) carries no server context, so it is taken from the job's server: the member's
    current roles are fetched from it (quota rules), its channel's rules apply; a member who
    left that server is refused (MemberError).
    """
    if interaction.guild_id is None:
        return await _requester_in_dm(interaction, guild_id, channel_id)
    guild_id = interaction.guild_id
    channel = interaction.channel
    channel_id = interaction.channel_id or channel_id
    if channel_id is None:
        raise MemberError("I cannot tell which channel this is.")
    return _requester(guild_id, channel_id, interaction.user, channel)


async def _requester_in_dm(
    interaction: discord.Interaction, guild_id: int | None, channel_id: int | None
) -> Requester:
    if guild_id is None or channel_id is None:
        raise MemberError("Images can only be made in a server.")
    guild = interaction.client.get_guild(guild_id)
    if guild is None:
        raise MemberError("I am no longer in the server this job was made in.")
    try:
        # Fetched, not cached: without the members intent the cache may hold old roles.
        member = await guild.fetch_member(interaction.user.id)
    except discord.NotFound:
        raise MemberError(LEFT_SERVER) from None
    return _requester(guild_id, channel_id, member, guild.get_channel_or_thread(channel_id))


def _requester(
    guild_id: int, channel_id: int, user: discord.abc.User | discord.Member, channel: object
) -> Requester:
    # A thread's age restriction is its parent's (discord.py's Thread.is_nsfw reads it).
    nsfw = bool(channel is not None and getattr(channel, "is_nsfw", lambda: False)())
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    return Requester(
        guild_id,
        channel_id,
        user.id,
        role_ids_of(user, guild_id),
        channel_nsfw=nsfw,
        parent_channel_id=parent_id,
    )


def guild_id_of(interaction: discord.Interaction) -> int:
    """The server the command was used in; these commands make no sense in DMs."""
    if interaction.guild_id is None:
        raise MemberError("This command only works in a server.")
    return interaction.guild_id


async def require_admin(interaction: discord.Interaction) -> None:
    """Raise NotAdmin unless the invoker is an admin of the interaction's server."""
    if not await is_admin(interaction, services_of(interaction).moderation):
        raise NotAdmin()


def admin_only() -> Callable[[T], T]:
    """A check for admin commands, run by the bot on every use (see the module docstring)."""

    async def predicate(interaction: discord.Interaction) -> bool:
        await require_admin(interaction)
        return True

    return app_commands.check(predicate)


class AdminOnlyCog(commands.Cog):
    """Base for cogs whose every app command is for admins: discord.py runs a cog's
    `interaction_check` before each of its app commands and subcommands, so the check sits
    once on the cog rather than on each command (commands of mixed cogs use `admin_only`)."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        await require_admin(interaction)
        return True


def role_ids_of(member: discord.abc.User | discord.Member, guild_id: int) -> tuple[int, ...]:
    """The member's role ids for quota rules (@everyone, whose id is the guild's, left out)."""
    roles: Sequence[Any] = getattr(member, "roles", ())
    return tuple(role.id for role in roles if role.id != guild_id)


async def reply(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    view: discord.ui.View | None = None,
    file: discord.File | None = None,
    ephemeral: bool = True,
) -> None:
    """Answer (or follow up a deferred answer) privately, pinging nobody."""
    kwargs: dict[str, Any] = {"ephemeral": ephemeral, "allowed_mentions": NO_MENTIONS}
    if content is not None:
        kwargs["content"] = content
    if embed is not None:
        kwargs["embed"] = embed
    if view is not None:
        kwargs["view"] = view
    if file is not None:
        kwargs["file"] = file
    await respond(interaction, **kwargs)
