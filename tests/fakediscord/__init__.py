"""A protocol-faithful fake Discord (REST + gateway) for end-to-end tests; see README.md."""

from .errors import DiscordError, FakeDiscordError, InvalidInvocation
from .interactions import Interaction
from .models import (
    Attachment,
    Button,
    Edit,
    FakeChannel,
    FakeDMChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    RequestRecord,
    Violation,
)
from .permissions import (
    ALL_PERMISSIONS,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    Permissions,
)
from .server import FakeDiscord, restore_discord_urls

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "Attachment",
    "Button",
    "DiscordError",
    "Edit",
    "FakeChannel",
    "FakeDMChannel",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeGuild",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "Interaction",
    "InvalidInvocation",
    "Message",
    "Permissions",
    "RequestRecord",
    "Violation",
    "restore_discord_urls",
]
