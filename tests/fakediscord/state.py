"""The fake's world state and the rules that apply when messages are created or edited.

``World`` knows nothing about HTTP or websockets: the REST layer calls it, and it reports changes
through ``emit`` (gateway dispatches) and ``notifier`` (wakes tests waiting on a condition).
"""

# The waits take a timeout on purpose: each one says in its error what it was waiting for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import mimetypes
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from . import errors as E
from .clock import Clock, Snowflakes
from .errors import FieldError, form_error
from .models import (
    DM_UPLOAD_LIMIT,
    MESSAGE_FLAG_EPHEMERAL,
    MESSAGE_FLAG_LOADING,
    Attachment,
    FakeChannel,
    FakeDMChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    Overwrite,
    RequestRecord,
    Violation,
)
from .permissions import (
    ALL_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    Permissions,
    apply_overwrites,
    as_int,
)
from .validation import check_message, mentioned

Channel = FakeChannel | FakeDMChannel

# Intent bits the fake looks at when deciding whether to dispatch an event.
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12

# Message flags a bot may set when sending / editing.
SETTABLE_FLAGS = 4 | 64 | 4096 | 32768
CDN_LINK_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class Upload:
    """One ``files[n]`` part of a multipart request."""

    index: int
    filename: str
    data: bytes = field(repr=False)


class Notifier:
    """Wakes every waiter whenever the world changes; waiters re-check their own condition.

    Waiters also re-check every ``poll`` seconds, so conditions on the bot's own state (which
    changes without the fake knowing) work too.
    """

    def __init__(self, poll: float = 0.05) -> None:
        self._event = asyncio.Event()
        self._poll = poll

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = condition()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), min(remaining, self._poll))
            except TimeoutError:
                pass


class World:
    """Every guild, user, channel, message and synced command the fake knows."""

    def __init__(self, *, bot_name: str, bot_permissions: int, clock: Clock) -> None:
        self.clock = clock
        self.ids = Snowflakes()
        self.notifier = Notifier()
        self.base_url = ""
        self.emit: Callable[[str, dict[str, Any], int | None], None] = lambda *_: None
        self.bot_permissions = bot_permissions
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, Channel] = {}
        self.dm_channels: dict[int, FakeDMChannel] = {}
        self.messages: dict[int, Message] = {}
        self.channel_messages: dict[int, list[Message]] = {}
        self.attachments: dict[int, Attachment] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.violations: list[Violation] = []
        self.requests: list[RequestRecord] = []
        now = clock.now()
        self.application_id = self.ids.next(now)
        self.bot_user = self.add_user(bot_name, bot=True)
        self.application_owner = self.add_user(f"{bot_name}-developer")
        self.token = _bot_token(self.bot_user.id)

    # ------------------------------------------------------------------ bookkeeping

    def now(self) -> float:
        return self.clock.now()

    def new_id(self) -> int:
        return self.ids.next(self.now())

    def changed(self) -> None:
        self.notifier.notify()

    def violate(self, err: E.DiscordError, method: str = "", path: str = "") -> None:
        self.violations.append(
            Violation(err.code, err.status, err.message, method, path, err.detail, self.now())
        )
        self.changed()

    # ------------------------------------------------------------------ world building

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(id=self.new_id(), name=name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str,
        *,
        premium_tier: int = 0,
        attachment_size_limit: int | None = None,
        owner: FakeUser | None = None,
        features: Sequence[str] = (),
        shard: tuple[int, int] | None = None,
    ) -> FakeGuild:
        guild_id = (
            self.ids.next_in_shard(self.now(), *shard) if shard is not None else self.new_id()
        )
        guild = FakeGuild(
            id=guild_id,
            name=name,
            premium_tier=premium_tier,
            attachment_size_limit_override=attachment_size_limit,
            features=list(features),
        )
        guild.roles[guild.id] = FakeRole(
            id=guild.id, guild=guild, name="@everyone", permissions=DEFAULT_EVERYONE_PERMISSIONS
        )
        self.guilds[guild.id] = guild
        bot_role = FakeRole(
            id=self.new_id(),
            guild=guild,
            name=self.bot_user.name,
            permissions=self.bot_permissions,
            position=1,
            managed=True,
            bot_id=self.bot_user.id,
        )
        guild.roles[bot_role.id] = bot_role
        self._join(guild, self.bot_user, [bot_role])
        owner_user = owner or self.add_user(f"{name}-owner")
        guild.owner_id = owner_user.id
        self._join(guild, owner_user, [])
        self._new_channel(guild, "general")
        self.emit("GUILD_CREATE", guild.payload(full=True), INTENT_GUILDS)
        self.changed()
        return guild

    def add_role(
        self,
        guild: FakeGuild,
        name: str,
        *,
        permissions: object = 0,
        mentionable: bool = False,
    ) -> FakeRole:
        role = FakeRole(
            id=self.new_id(),
            guild=guild,
            name=name,
            permissions=as_int(permissions),
            position=len(guild.roles),
            mentionable=mentionable,
        )
        guild.roles[role.id] = role
        self.emit(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": role.payload()}, INTENT_GUILDS
        )
        self.changed()
        return role

    def add_channel(
        self, guild: FakeGuild, name: str, *, nsfw: bool = False, topic: str | None = None
    ) -> FakeChannel:
        channel = self._new_channel(guild, name, nsfw=nsfw, topic=topic)
        self.emit("CHANNEL_CREATE", channel.payload(), INTENT_GUILDS)
        self.changed()
        return channel

    def _new_channel(
        self, guild: FakeGuild, name: str, *, nsfw: bool = False, topic: str | None = None
    ) -> FakeChannel:
        channel = FakeChannel(
            id=self.new_id(),
            guild=guild,
            name=name,
            nsfw=nsfw,
            topic=topic,
            position=len(guild.channels),
        )
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        return channel

    def add_member(
        self,
        guild: FakeGuild,
        who: str | FakeUser,
        *,
        roles: Sequence[FakeRole] = (),
        permissions: object = None,
        nick: str | None = None,
    ) -> FakeMember:
        user = self.add_user(who) if isinstance(who, str) else who.user
        if user.id in guild.members:
            raise E.FakeDiscordError(f"{user.name} is already a member of {guild.name}")
        role_list = list(roles)
        for role in role_list:
            if role.guild is not guild:
                raise E.FakeDiscordError(f"role {role.name} belongs to another guild")
        if permissions is not None:
            role_list.append(self.add_role(guild, f"{user.name}-perms", permissions=permissions))
        member = self._join(guild, user, role_list, nick=nick)
        payload = member.payload()
        payload["guild_id"] = str(guild.id)
        self.emit("GUILD_MEMBER_ADD", payload, INTENT_GUILD_MEMBERS)
        self.changed()
        return member

    def _join(
        self, guild: FakeGuild, user: FakeUser, roles: list[FakeRole], nick: str | None = None
    ) -> FakeMember:
        member = FakeMember(user=user, guild=guild, roles=roles, nick=nick, joined_at=self.now())
        guild.members[user.id] = member
        return member

    def remove_member(self, member: FakeMember) -> None:
        """The member leaves (or is kicked from) the guild; the user still exists (DMs work)."""
        guild = member.guild
        if guild.members.get(member.user.id) is not member:
            raise E.FakeDiscordError(f"{member.user.name} is not a member of {guild.name}")
        del guild.members[member.user.id]
        payload = {"guild_id": str(guild.id), "user": member.user.payload()}
        self.emit("GUILD_MEMBER_REMOVE", payload, INTENT_GUILD_MEMBERS)
        self.changed()

    def set_member_roles(self, member: FakeMember, roles: list[FakeRole]) -> None:
        member.roles = roles
        payload = member.payload()
        payload["guild_id"] = str(member.guild.id)
        self.emit("GUILD_MEMBER_UPDATE", payload, INTENT_GUILD_MEMBERS)
        self.changed()

    def set_overwrite(
        self, channel: FakeChannel, target: FakeRole | FakeMember | FakeUser, allow: int, deny: int
    ) -> None:
        kind = 0 if isinstance(target, FakeRole) else 1
        channel.overwrites[target.id] = Overwrite(target.id, kind, allow, deny)
        self.emit("CHANNEL_UPDATE", channel.payload(), INTENT_GUILDS)
        self.changed()

    def dm_channel(self, user: FakeUser) -> FakeDMChannel:
        channel = self.dm_channels.get(user.id)
        if channel is None:
            channel = FakeDMChannel(id=self.new_id(), recipient=user)
            self.dm_channels[user.id] = channel
            self.channels[channel.id] = channel
            self.channel_messages[channel.id] = []
        return channel

    def bot_member(self, guild: FakeGuild) -> FakeMember:
        return guild.members[self.bot_user.id]

    def shares_guild_with_bot(self, user: FakeUser) -> bool:
        return any(
            user.id in g.members and self.bot_user.id in g.members for g in self.guilds.values()
        )

    # ------------------------------------------------------------------ permissions

    def base_permissions(self, member: FakeMember) -> int:
        guild = member.guild
        if guild.owner_id == member.id:
            return ALL_PERMISSIONS
        perms = guild.default_role.permissions
        for role in member.roles:
            perms |= role.permissions
        if perms & Permissions.ADMINISTRATOR:
            return ALL_PERMISSIONS
        return perms

    def permissions_for(self, member: FakeMember, channel: FakeChannel | None) -> int:
        """Discord's permission resolution: owner, ADMINISTRATOR, roles, then overwrites."""
        base = self.base_permissions(member)
        if base == ALL_PERMISSIONS or channel is None:
            return base
        everyone = channel.overwrites.get(member.guild.id)
        role_ows = [
            (o.allow, o.deny)
            for r in member.roles
            if (o := channel.overwrites.get(r.id)) is not None and o.type == 0
        ]
        own = channel.overwrites.get(member.id)
        return apply_overwrites(
            base,
            everyone=(everyone.allow, everyone.deny) if everyone else None,
            roles=role_ows,
            member=(own.allow, own.deny) if own is not None and own.type == 1 else None,
        )

    # ------------------------------------------------------------------ attachments

    def store_attachment(
        self, filename: str, data: bytes, *, channel_id: int, ephemeral: bool = False,
        description: str | None = None,
    ) -> Attachment:
        att_id = self.new_id()
        content_type, width, height = sniff(filename, data)
        now = self.now()
        expires = int(now + CDN_LINK_LIFETIME)
        sig = hashlib.sha256(f"{att_id}:{expires}".encode()).hexdigest()[:64]
        query = f"?ex={expires:x}&is={int(now):x}&hm={sig}&"
        path = f"/attachments/{channel_id}/{att_id}/{quote(filename)}{query}"
        att = Attachment(
            id=att_id,
            filename=filename,
            data=data,
            content_type=content_type,
            url=f"{self.base_url}{path}",
            proxy_url=f"{self.base_url}/media{path}",
            width=width,
            height=height,
            description=description,
            ephemeral=ephemeral,
            channel_id=channel_id,
            expires_at=float(expires),
        )
        self.attachments[att_id] = att
        return att

    def _new_attachments(
        self,
        listed: list[dict[str, Any]] | None,
        uploads: Sequence[Upload],
        *,
        channel_id: int,
        ephemeral: bool,
    ) -> list[Attachment]:
        by_index: dict[int, dict[str, Any]] = {}
        for entry in listed or []:
            try:
                index = int(entry.get("id"))
            except (TypeError, ValueError):
                continue
            by_index[index] = entry
        result = []
        for upload in uploads:
            entry = by_index.get(upload.index, {})
            result.append(
                self.store_attachment(
                    entry.get("filename") or upload.filename,
                    upload.data,
                    channel_id=channel_id,
                    ephemeral=ephemeral,
                    description=entry.get("description"),
                )
            )
        return result

    # ------------------------------------------------------------------ messages

    def check_body(
        self,
        payload: dict[str, Any],
        uploads: Sequence[Upload],
        *,
        size_limit: int,
        prefix: tuple[str | int, ...] = (),
    ) -> None:
        """Raise Discord's error for an invalid body (413 before 400, as Discord's edge does)."""
        for upload in uploads:
            if len(upload.data) > size_limit:
                raise E.too_large(
                    f"{upload.filename} is {len(upload.data)} bytes, limit {size_limit}"
                )
        errors = check_message(payload, prefix)
        if len(uploads) > 10:
            errors.append(
                FieldError((*prefix, "files"), "BASE_TYPE_MAX_LENGTH",
                           "Must be 10 or fewer in length.")
            )
        if errors:
            raise form_error(errors)

    def create_message(
        self,
        channel: Channel,
        author: FakeUser,
        payload: dict[str, Any],
        uploads: Sequence[Upload] = (),
        *,
        size_limit: int,
        prefix: tuple[str | int, ...] = (),
        msg_type: int = 0,
        visible_to: int | None = None,
        loading: bool = False,
        webhook_id: int | None = None,
        interaction_metadata: dict[str, Any] | None = None,
        interaction_legacy: dict[str, Any] | None = None,
        interaction_id: int | None = None,
    ) -> Message:
        self.check_body(payload, uploads, size_limit=size_limit, prefix=prefix)
        flags = int(payload.get("flags") or 0) & SETTABLE_FLAGS
        if visible_to is None:
            flags &= ~MESSAGE_FLAG_EPHEMERAL
        if loading:
            flags |= MESSAGE_FLAG_LOADING
        ephemeral = bool(flags & MESSAGE_FLAG_EPHEMERAL)
        reference = self._reference(channel, payload.get("message_reference"), prefix)
        msg = Message(
            id=self.new_id(),
            channel_id=channel.id,
            guild_id=channel.guild.id if isinstance(channel, FakeChannel) else None,
            author=author,
            content=payload.get("content") or "",
            embeds=list(payload.get("embeds") or []),
            components=list(payload.get("components") or []),
            flags=flags,
            type=19 if reference is not None and msg_type == 0 else msg_type,
            tts=bool(payload.get("tts", False)),
            timestamp=self.now(),
            webhook_id=webhook_id,
            application_id=self.application_id if webhook_id is not None else None,
            interaction_id=interaction_id,
            interaction_metadata=interaction_metadata,
            interaction_legacy=interaction_legacy,
            visible_to=visible_to if ephemeral else None,
            reference=reference.id if reference is not None else None,
        )
        msg.attachments = self._new_attachments(
            payload.get("attachments"), uploads, channel_id=channel.id, ephemeral=ephemeral
        )
        if not loading and _is_empty(msg):
            raise E.empty_message()
        replied = reference.author if reference is not None else None
        self._set_mentions(msg, channel, payload.get("allowed_mentions"), replied, notify=True)
        self.messages[msg.id] = msg
        self.channel_messages[channel.id].append(msg)
        if not ephemeral:
            channel.last_message_id = msg.id
            self._emit_message("MESSAGE_CREATE", msg, channel)
        self.changed()
        return msg

    def edit_message(
        self,
        msg: Message,
        payload: dict[str, Any],
        uploads: Sequence[Upload] = (),
        *,
        size_limit: int,
        prefix: tuple[str | int, ...] = (),
    ) -> Message:
        """PATCH semantics: present fields replace, absent ones stay; fills a loading message."""
        self.check_body(payload, uploads, size_limit=size_limit, prefix=prefix)
        channel = self.channels[msg.channel_id]
        filling = msg.loading
        new = _Draft.of(msg)
        if "content" in payload:
            new.content = payload["content"] or ""
        if "embeds" in payload:
            new.embeds = list(payload["embeds"] or [])
        if "components" in payload:
            new.components = list(payload["components"] or [])
        if "flags" in payload and payload["flags"] is not None:
            keep = msg.flags & (MESSAGE_FLAG_EPHEMERAL)
            new.flags = (int(payload["flags"]) & (4 | 4096 | 32768)) | keep
        new.flags &= ~MESSAGE_FLAG_LOADING
        if "attachments" in payload and payload["attachments"] is not None:
            keep_ids = {str(a.get("id")) for a in payload["attachments"]}
            kept = [a for a in msg.attachments if str(a.id) in keep_ids]
        else:
            kept = list(msg.attachments)
        added = self._new_attachments(
            payload.get("attachments"), uploads, channel_id=msg.channel_id,
            ephemeral=msg.ephemeral,
        )
        new.attachments = kept + added
        if len(new.attachments) > 10:
            raise form_error([FieldError((*prefix, "attachments"), "BASE_TYPE_MAX_LENGTH",
                                         "Must be 10 or fewer in length.")])
        if _is_empty(new):
            raise E.empty_message()
        new.apply(msg)
        if not filling:  # filling a deferred response is not shown as "(edited)"
            msg.edited_timestamp = self.now()
        if "content" in payload or "allowed_mentions" in payload or filling:
            self._set_mentions(msg, channel, payload.get("allowed_mentions"), None, notify=filling)
        msg.edits.append(msg.snapshot(self.now(), time.monotonic()))
        if not msg.ephemeral:
            self._emit_message("MESSAGE_UPDATE", msg, channel)
        self.changed()
        return msg

    def delete_message(self, msg: Message) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            intent = INTENT_DIRECT_MESSAGES
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
                intent = INTENT_GUILD_MESSAGES
            self.emit("MESSAGE_DELETE", data, intent)
        self.changed()

    def message_payload(self, msg: Message, *, gateway: bool = False) -> dict[str, Any]:
        ref = self.messages.get(msg.reference) if msg.reference is not None else None
        if ref is not None and ref.deleted:
            ref = None
        return msg.payload(referenced=ref, gateway=gateway)

    def _emit_message(self, event: str, msg: Message, channel: Channel) -> None:
        data = self.message_payload(msg, gateway=True)
        if isinstance(channel, FakeChannel):
            member = channel.guild.members.get(msg.author.id)
            if member is not None:
                data["member"] = member.payload(with_user=False)
            self.emit(event, data, INTENT_GUILD_MESSAGES)
        else:
            self.emit(event, data, INTENT_DIRECT_MESSAGES)

    def _reference(
        self, channel: Channel, ref: dict[str, Any] | None, prefix: tuple[str | int, ...]
    ) -> Message | None:
        if not ref or ref.get("message_id") is None:
            return None
        target = self.messages.get(int(ref["message_id"]))
        if target is None or target.deleted or target.channel_id != channel.id:
            if ref.get("fail_if_not_exists", True):
                raise form_error([FieldError((*prefix, "message_reference"),
                                             "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                             "Unknown message")])
            return None
        return target

    def _set_mentions(
        self,
        msg: Message,
        channel: Channel,
        allowed: dict[str, Any] | None,
        replied: FakeUser | None,
        *,
        notify: bool,
    ) -> None:
        user_ids, role_ids, everyone, replied_ok = mentioned(msg.content, allowed)
        users = [self.users[u] for u in user_ids if u in self.users]
        if replied is not None and replied_ok and replied not in users:
            users.append(replied)
        roles: list[int] = []
        if isinstance(channel, FakeChannel):
            author = channel.guild.members.get(msg.author.id)
            perms = self.permissions_for(author, channel) if author is not None else 0
            may_ping_all = bool(perms & Permissions.MENTION_EVERYONE)
            for rid in role_ids:
                role = channel.guild.roles.get(rid)
                if role is not None and rid != channel.guild.id and (
                    role.mentionable or may_ping_all
                ):
                    roles.append(rid)
            everyone = everyone and may_ping_all
        else:
            everyone = False
        msg.mentions = users
        msg.mention_roles = roles
        msg.mention_everyone = everyone
        if notify:
            msg.pinged_user_ids |= {u.id for u in users}
            msg.pinged_role_ids |= set(roles)
            msg.pinged_everyone |= everyone

    def upload_limit(self, channel: Channel) -> int:
        if isinstance(channel, FakeChannel):
            return channel.guild.attachment_size_limit
        return DM_UPLOAD_LIMIT


@dataclass
class _Draft:
    """The would-be state of an edited message, checked before it is applied."""

    content: str
    embeds: list[dict[str, Any]]
    components: list[dict[str, Any]]
    attachments: list[Attachment]
    flags: int

    @classmethod
    def of(cls, msg: Message) -> _Draft:
        return cls(msg.content, list(msg.embeds), list(msg.components), list(msg.attachments),
                   msg.flags)

    def apply(self, msg: Message) -> None:
        msg.content = self.content
        msg.embeds = self.embeds
        msg.components = self.components
        msg.attachments = self.attachments
        msg.flags = self.flags


def _is_empty(msg: Message | _Draft) -> bool:
    return not (msg.content.strip() or msg.embeds or msg.attachments or msg.components)


def _bot_token(user_id: int) -> str:
    head = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{head}.Fake{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(27)}"


def sniff(filename: str, data: bytes) -> tuple[str | None, int | None, int | None]:
    """Content type from the bytes (as Discord does), and image dimensions when it is one."""
    content_type: str | None
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        content_type = "image/png"
    elif data.startswith(b"\xff\xd8\xff"):
        content_type = "image/jpeg"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        content_type = "image/webp"
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        content_type = "image/gif"
    else:
        guessed = mimetypes.guess_type(filename)[0]
        content_type = guessed
        if guessed and guessed.startswith("text/"):
            content_type = f"{guessed}; charset=utf-8"
    if content_type and content_type.startswith("image/"):
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                return content_type, img.width, img.height
        except Exception:
            return content_type, None, None
    return content_type, None, None
