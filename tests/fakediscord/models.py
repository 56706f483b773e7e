"""The fake's world: users, guilds, roles, channels, members, messages and their JSON payloads.

These are mutable records owned by ``World``; tests read them and pass them back to the fake's
methods (``invoke``, ``click``, ``add_member_role`` ...).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .clock import iso

# discord.py's premium tier table (guild.filesize_limit), so the bot and the fake agree.
MIB = 1024 * 1024
TIER_UPLOAD_LIMITS = {0: 10 * MIB, 1: 10 * MIB, 2: 50 * MIB, 3: 100 * MIB}
DM_UPLOAD_LIMIT = 10 * MIB

MESSAGE_FLAG_EPHEMERAL = 64
MESSAGE_FLAG_LOADING = 128
MESSAGE_FLAG_COMPONENTS_V2 = 32768


@dataclass(eq=False)
class FakeUser:
    """A Discord account."""

    id: int
    name: str
    bot: bool = False
    global_name: str | None = None
    dms_closed: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def user(self) -> FakeUser:
        return self

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }


@dataclass(eq=False)
class FakeRole:
    """A guild role; the @everyone role has the guild's id."""

    id: int
    guild: FakeGuild = field(repr=False)
    name: str
    permissions: int = 0
    position: int = 0
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None
    color: int = 0

    @property
    def mention(self) -> str:
        return "@everyone" if self.id == self.guild.id else f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color, "secondary_color": None, "tertiary_color": None,
            },
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class Overwrite:
    """A channel permission overwrite; ``type`` 0 = role, 1 = member."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny),
        }


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel (type 0)."""

    id: int
    guild: FakeGuild = field(repr=False)
    name: str
    nsfw: bool = False
    topic: str | None = None
    position: int = 0
    type: int = 0
    overwrites: dict[int, Overwrite] = field(default_factory=dict, repr=False)
    last_message_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def guild_id(self) -> int:
        return self.guild.id

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild.id),
            "name": self.name,
            "position": self.position,
            "parent_id": None,
            "topic": self.topic,
            "nsfw": self.nsfw,
            "rate_limit_per_user": 0,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "permission_overwrites": [o.payload() for o in self.overwrites.values()],
            "flags": 0,
        }


@dataclass(eq=False)
class FakeDMChannel:
    """The bot's private channel with one user (type 1)."""

    id: int
    recipient: FakeUser
    type: int = 1
    last_message_id: int | None = None
    guild: None = None

    @property
    def guild_id(self) -> None:
        return None

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "type": 1,
            "recipients": [self.recipient.payload()],
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "flags": 0,
        }


@dataclass(eq=False)
class FakeMember:
    """A user's membership of one guild."""

    user: FakeUser
    guild: FakeGuild = field(repr=False)
    roles: list[FakeRole] = field(default_factory=list)
    nick: str | None = None
    joined_at: float = 0.0

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def bot(self) -> bool:
        return self.user.bot

    @property
    def mention(self) -> str:
        return f"<@{self.user.id}>"

    def payload(self, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass(eq=False)
class FakeGuild:
    """A Discord server."""

    id: int
    name: str
    owner_id: int = 0
    premium_tier: int = 0
    attachment_size_limit_override: int | None = None
    features: list[str] = field(default_factory=list)
    roles: dict[int, FakeRole] = field(default_factory=dict, repr=False)
    channels: list[FakeChannel] = field(default_factory=list, repr=False)
    members: dict[int, FakeMember] = field(default_factory=dict, repr=False)
    command_permission_overrides: set[str] = field(default_factory=set, repr=False)

    @property
    def default_role(self) -> FakeRole:
        return self.roles[self.id]

    @property
    def owner(self) -> FakeMember:
        return self.members[self.owner_id]

    @property
    def attachment_size_limit(self) -> int:
        if self.attachment_size_limit_override is not None:
            return self.attachment_size_limit_override
        return TIER_UPLOAD_LIMITS.get(self.premium_tier, 10 * MIB)

    def member(self, user: FakeUser | FakeMember | int) -> FakeMember | None:
        uid = user if isinstance(user, int) else user.id
        return self.members.get(uid)

    def payload(self, *, full: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": list(self.features),
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.channels[0].id) if self.channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": [0, 2, 7, 14][min(self.premium_tier, 3)],
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "safety_alerts_channel_id": None,
        }
        if full:
            data.update(
                {
                    "joined_at": iso(0.0),
                    "large": False,
                    "unavailable": False,
                    "member_count": len(self.members),
                    "voice_states": [],
                    "members": [m.payload() for m in self.members.values()],
                    "channels": [c.payload() for c in self.channels],
                    "threads": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                }
            )
        return data


@dataclass(eq=False)
class Attachment:
    """A stored upload; ``data`` holds the bytes served at ``url``."""

    id: int
    filename: str
    data: bytes = field(repr=False)
    content_type: str | None
    url: str = field(default="", repr=False)
    proxy_url: str = field(default="", repr=False)
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False
    channel_id: int = field(default=0, repr=False)
    expires_at: float = field(default=0.0, repr=False)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def spoiler(self) -> bool:
        return self.filename.startswith("SPOILER_")

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "flags": 8 if self.spoiler else 0,
        }
        if self.content_type:
            data["content_type"] = self.content_type
        if self.width is not None:
            data["width"] = self.width
            data["height"] = self.height
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass(frozen=True)
class Edit:
    """A message's state right after one edit; ``at`` is fake-clock time, ``monotonic`` real."""

    at: float
    monotonic: float
    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachment_names: list[str]


@dataclass(frozen=True)
class Button:
    """A button as a member sees it under a message."""

    label: str | None
    emoji: str | None
    custom_id: str | None
    style: int
    disabled: bool
    url: str | None
    row: int


@dataclass(eq=False)
class Message:
    """A message as Discord stores it, plus what the tests want to inspect."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    timestamp: float = 0.0
    edited_timestamp: float | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    pinged_user_ids: set[int] = field(default_factory=set)
    pinged_role_ids: set[int] = field(default_factory=set)
    pinged_everyone: bool = False
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    interaction_legacy: dict[str, Any] | None = None
    visible_to: int | None = None
    reference: int | None = None
    pinned: bool = False
    deleted: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)

    def __repr__(self) -> str:
        state = " deleted" if self.deleted else ""
        state += " ephemeral" if self.ephemeral else ""
        state += " loading" if self.loading else ""
        return (
            f"<Message id={self.id} author={self.author.name!r} content={self.content[:60]!r} "
            f"embeds={len(self.embeds)} attachments={[a.filename for a in self.attachments]} "
            f"custom_ids={self.custom_ids()} edits={len(self.edits)}{state}>"
        )

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MESSAGE_FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & MESSAGE_FLAG_LOADING)

    def buttons(self) -> list[Button]:
        """Every button on the message, in display order."""
        found: list[Button] = []

        def walk(components: list[dict[str, Any]], row: int) -> None:
            for comp in components:
                if comp.get("type") == 2:
                    emoji = comp.get("emoji") or {}
                    found.append(
                        Button(
                            label=comp.get("label"),
                            emoji=emoji.get("name") if emoji else None,
                            custom_id=comp.get("custom_id"),
                            style=int(comp.get("style", 1)),
                            disabled=bool(comp.get("disabled", False)),
                            url=comp.get("url"),
                            row=row,
                        )
                    )
                for key in ("components",):
                    if isinstance(comp.get(key), list):
                        walk(comp[key], row)
                if isinstance(comp.get("accessory"), dict):
                    walk([comp["accessory"]], row)

        for index, top in enumerate(self.components):
            walk([top], index)
        return found

    def edit_intervals(self) -> list[float]:
        """Real seconds between consecutive edits (to check an edit-rate limit)."""
        return [b.monotonic - a.monotonic for a, b in zip(self.edits, self.edits[1:], strict=False)]

    def custom_ids(self) -> list[str]:
        """Every custom_id on the message (buttons and selects)."""
        return [c["custom_id"] for c in iter_components(self.components) if c.get("custom_id")]

    def text(self) -> str:
        """Content plus the visible text of the embeds, for searching in tests."""
        parts = [self.content]
        for embed in self.embeds:
            parts.append(embed.get("title") or "")
            parts.append(embed.get("description") or "")
            for fld in embed.get("fields") or []:
                parts.append(f"{fld.get('name', '')}\n{fld.get('value', '')}")
            parts.append((embed.get("footer") or {}).get("text") or "")
            parts.append((embed.get("author") or {}).get("name") or "")
        return "\n".join(p for p in parts if p)

    def snapshot(self, at: float, monotonic: float) -> Edit:
        return Edit(
            at=at,
            monotonic=monotonic,
            content=self.content,
            embeds=copy.deepcopy(self.embeds),
            components=copy.deepcopy(self.components),
            attachment_names=[a.filename for a in self.attachments],
        )

    def payload(
        self, *, referenced: Message | None = None, gateway: bool = False
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "content": self.content,
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "attachments": [a.payload() for a in self.attachments],
            "embeds": copy.deepcopy(self.embeds),
            "components": copy.deepcopy(self.components),
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [str(r) for r in self.mention_roles],
            "mention_everyone": self.mention_everyone,
            "pinned": self.pinned,
            "tts": self.tts,
            "timestamp": iso(self.timestamp),
            "edited_timestamp": iso(self.edited_timestamp),
            "flags": self.flags,
        }
        if self.reactions:
            data["reactions"] = [
                {"emoji": {"id": None, "name": name}, "count": len(users), "me": False}
                for name, users in self.reactions.items()
                if users
            ]
        if gateway and self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = copy.deepcopy(self.interaction_metadata)
        if self.interaction_legacy is not None:
            data["interaction"] = copy.deepcopy(self.interaction_legacy)
        if self.reference is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference),
                "channel_id": str(self.channel_id),
            }
            if self.guild_id is not None:
                data["message_reference"]["guild_id"] = str(self.guild_id)
            data["referenced_message"] = referenced.payload() if referenced is not None else None
        return data


def iter_components(components: list[dict[str, Any]]):
    """Depth-first walk over a component tree (action rows, sections, containers ...)."""
    for comp in components:
        if not isinstance(comp, dict):
            continue
        yield comp
        children = comp.get("components")
        if isinstance(children, list):
            yield from iter_components(children)
        for key in ("accessory", "component"):
            if isinstance(comp.get(key), dict):
                yield from iter_components([comp[key]])


@dataclass(frozen=True)
class Violation:
    """A Discord rule the bot broke (or a route the fake does not know)."""

    code: int
    status: int
    message: str
    method: str = ""
    path: str = ""
    detail: str = ""
    at: float = 0.0

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.method} {self.path} -> {self.status}/{self.code} {self.message}{extra}"


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the fake answered."""

    method: str
    path: str
    route: str
    status: int
    at: float
    json: Any = None
