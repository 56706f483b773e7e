"""Discord permission bits and the way Discord resolves them for a member in a channel."""

from __future__ import annotations

import enum


class Permissions(enum.IntFlag):
    """Discord's permission bits (the ones the bot and its tests care about)."""

    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    CHANGE_NICKNAME = 1 << 26
    MANAGE_NICKNAMES = 1 << 27
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    MODERATE_MEMBERS = 1 << 40


# Every permission bit Discord currently defines (bits 0..50), as sent for owners/admins.
ALL_PERMISSIONS = (1 << 51) - 1

DEFAULT_EVERYONE_PERMISSIONS = int(
    Permissions.CREATE_INSTANT_INVITE
    | Permissions.ADD_REACTIONS
    | Permissions.VIEW_CHANNEL
    | Permissions.SEND_MESSAGES
    | Permissions.EMBED_LINKS
    | Permissions.ATTACH_FILES
    | Permissions.READ_MESSAGE_HISTORY
    | Permissions.USE_EXTERNAL_EMOJIS
    | Permissions.CHANGE_NICKNAME
    | Permissions.USE_APPLICATION_COMMANDS
    | Permissions.SEND_MESSAGES_IN_THREADS
)

# What a typical invite link grants an image bot. MENTION_EVERYONE is included on purpose: then
# only the bot's allowed_mentions can keep "@everyone" in a prompt from pinging, which is what
# the tests must prove.
DEFAULT_BOT_PERMISSIONS = int(
    Permissions.VIEW_CHANNEL
    | Permissions.SEND_MESSAGES
    | Permissions.SEND_MESSAGES_IN_THREADS
    | Permissions.EMBED_LINKS
    | Permissions.ATTACH_FILES
    | Permissions.READ_MESSAGE_HISTORY
    | Permissions.ADD_REACTIONS
    | Permissions.USE_EXTERNAL_EMOJIS
    | Permissions.MENTION_EVERYONE
    | Permissions.MANAGE_MESSAGES
    | Permissions.USE_APPLICATION_COMMANDS
)

# Without SEND_MESSAGES these are implicitly denied in a channel (Discord's rule).
_NEEDS_SEND = int(
    Permissions.SEND_TTS_MESSAGES
    | Permissions.MENTION_EVERYONE
    | Permissions.EMBED_LINKS
    | Permissions.ATTACH_FILES
)


def as_int(value: object) -> int:
    """Accept an int, our ``Permissions`` or ``discord.Permissions`` (has ``.value``)."""
    if isinstance(value, int):
        return int(value)
    inner = getattr(value, "value", None)
    if isinstance(inner, int):
        return inner
    raise TypeError(f"not a permission value: {value!r}")


def apply_overwrites(
    base: int,
    *,
    everyone: tuple[int, int] | None,
    roles: list[tuple[int, int]],
    member: tuple[int, int] | None,
) -> int:
    """Discord's channel overwrite order: @everyone, then all roles together, then the member.

    Each overwrite is ``(allow, deny)``. Administrators are handled by the caller.
    """
    perms = base
    if everyone is not None:
        perms = (perms & ~everyone[1]) | everyone[0]
    allow = deny = 0
    for role_allow, role_deny in roles:
        allow |= role_allow
        deny |= role_deny
    perms = (perms & ~deny) | allow
    if member is not None:
        perms = (perms & ~member[1]) | member[0]
    if not perms & Permissions.VIEW_CHANNEL:
        return 0
    if not perms & Permissions.SEND_MESSAGES:
        perms &= ~_NEEDS_SEND
    return perms
