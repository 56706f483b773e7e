"""Interactions: the handle a test holds, and the INTERACTION_CREATE payloads Discord would send.

Option values are checked against the synced schema here, because Discord's own client never
sends an option the schema forbids (and discord.py trusts that it does not).
"""

# The waits take a timeout on purpose: each one says in its error what it was waiting for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import InvalidInvocation
from .models import (
    Attachment,
    FakeChannel,
    FakeDMChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    iter_components,
)
from .permissions import ALL_PERMISSIONS, Permissions

if TYPE_CHECKING:
    from .state import World

APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
MODAL_SUBMIT = 5

# Which callback types Discord accepts for which interaction types.
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {4, 5, 9},
    MESSAGE_COMPONENT: {4, 5, 6, 7, 9},
    MODAL_SUBMIT: {4, 5, 6, 7},
}
OPTION_TYPE_NAMES = {
    1: "subcommand", 2: "subcommand group", 3: "string", 4: "integer", 5: "boolean", 6: "user",
    7: "channel", 8: "role", 9: "mentionable", 10: "number", 11: "attachment",
}
MAX_SAFE_INTEGER = 2**53


class Interaction:
    """One dispatched interaction and everything the bot did in answer to it."""

    def __init__(
        self,
        world: World,
        *,
        id: int,
        type: int,
        channel: FakeChannel | FakeDMChannel,
        user: FakeUser,
        payload: dict[str, Any],
        dispatched_at: float,
        created_at: float,
        deadline: float,
        token_lifetime: float,
        attachment_size_limit: int,
        source_message: Message | None = None,
        parent: Interaction | None = None,
    ) -> None:
        self._world = world
        self.id = id
        self.type = type
        self.token: str = payload["token"]
        self.channel = channel
        self.guild: FakeGuild | None = channel.guild if isinstance(channel, FakeChannel) else None
        self.user = user
        self.payload = payload
        self.dispatched_at = dispatched_at
        self.created_at = created_at
        self.deadline = deadline
        self.token_lifetime = token_lifetime
        self.attachment_size_limit = attachment_size_limit
        self.source_message = source_message
        self.parent = parent
        self.response_type: int | None = None
        self.ephemeral = False
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.modal: dict[str, Any] | None = None
        self.timed_out = False

    def __repr__(self) -> str:
        return (
            f"<Interaction id={self.id} type={self.type} name={self.name!r} "
            f"response_type={self.response_type}>"
        )

    @property
    def name(self) -> str:
        data = self.payload.get("data", {})
        return data.get("name") or data.get("custom_id") or ""

    @property
    def token_expired(self) -> bool:
        return self._world.now() > self.created_at + self.token_lifetime

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    async def wait_response(self, timeout: float = 5.0) -> Interaction:
        """Wait for the initial callback (any type)."""
        await self._world.notifier.wait_until(
            lambda: self.response_type is not None, timeout, f"a response to {self!r}"
        )
        return self

    async def wait_original(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0
    ) -> Message:
        """Wait until the original response message exists and ``predicate`` holds for it."""

        def ready() -> Message | None:
            msg = self.original
            if msg is None or (predicate is not None and not predicate(msg)):
                return None
            return msg

        return await self._world.notifier.wait_until(
            ready, timeout, f"the original response of {self!r} to match"
        )

    async def wait_followup(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0
    ) -> Message:
        """Wait for the first follow-up message matching ``predicate``."""

        def found() -> Message | None:
            for msg in self.followups:
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self._world.notifier.wait_until(
            found, timeout, f"a follow-up to {self!r}"
        )


def new_token(interaction_id: int) -> str:
    """A token shaped like Discord's: URL-safe base64 of ``interaction:<id>:<secret>``."""
    raw = f"interaction:{interaction_id}:{secrets.token_urlsafe(48)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ---------------------------------------------------------------- slash command options


def find_command(
    world: World, channel: FakeChannel | FakeDMChannel, name: str
) -> dict[str, Any]:
    """The synced chat-input command a member in ``channel`` would see under ``name``."""
    guild = channel.guild if isinstance(channel, FakeChannel) else None
    scopes: list[int | None] = [guild.id, None] if guild is not None else [None]
    for scope in scopes:
        for cmd in world.commands.get(scope, []):
            if cmd["name"] == name and int(cmd.get("type", 1)) == 1:
                if guild is None and not _allowed_in_dms(cmd):
                    raise InvalidInvocation(f"/{name} is not available in DMs")
                contexts = cmd.get("contexts")
                if guild is not None and contexts is not None and 0 not in contexts:
                    raise InvalidInvocation(f"/{name} is not available in servers")
                return cmd
    where = f"guild {guild.name!r}" if guild is not None else "DMs"
    synced = sorted(
        c["name"] for s in scopes for c in world.commands.get(s, []) if int(c.get("type", 1)) == 1
    )
    raise InvalidInvocation(f"/{name} is not synced for {where} (synced: {synced})")


def _allowed_in_dms(cmd: dict[str, Any]) -> bool:
    if cmd.get("guild_id"):
        return False
    contexts = cmd.get("contexts")
    if contexts is not None:
        return 1 in contexts
    return cmd.get("dm_permission") is not False


def check_member_may_use(
    world: World, cmd: dict[str, Any], member: FakeMember, channel: FakeChannel
) -> None:
    """Discord hides commands whose ``default_member_permissions`` the member lacks."""
    if cmd.get("nsfw") and not channel.nsfw:
        raise InvalidInvocation(f"/{cmd['name']} is age-restricted; #{channel.name} is not")
    required = cmd.get("default_member_permissions")
    if required is None or cmd["name"] in member.guild.command_permission_overrides:
        return
    perms = world.permissions_for(member, channel)
    if perms == ALL_PERMISSIONS or perms & Permissions.ADMINISTRATOR:
        return
    need = int(required)
    if need == 0 or perms & need != need:
        raise InvalidInvocation(
            f"{member.name} lacks default_member_permissions={need} for /{cmd['name']}; "
            "Discord would not show the command (use fake.override_command_permissions)"
        )


def build_options(
    world: World,
    cmd: dict[str, Any],
    path: list[str],
    values: Mapping[str, Any],
    channel: FakeChannel | FakeDMChannel,
    invoker: FakeMember | FakeUser,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``data.options`` and ``data.resolved`` for ``/cmd path... values``, validated."""
    node = cmd
    chain: list[dict[str, Any]] = []
    for part in path:
        sub = next(
            (o for o in node.get("options") or [] if o["name"] == part and o["type"] in (1, 2)),
            None,
        )
        if sub is None:
            known = [o["name"] for o in node.get("options") or [] if o["type"] in (1, 2)]
            raise InvalidInvocation(
                f"/{' '.join([cmd['name'], *path])}: no subcommand {part!r} (known: {known})"
            )
        chain.append(sub)
        node = sub
    leaf_opts = node.get("options") or []
    if any(o["type"] in (1, 2) for o in leaf_opts):
        known = [o["name"] for o in leaf_opts]
        raise InvalidInvocation(
            f"/{' '.join([cmd['name'], *path])} needs a subcommand (one of {known})"
        )
    label = "/" + " ".join([cmd["name"], *path])
    by_name = {o["name"]: o for o in leaf_opts}
    for name in values:
        if name not in by_name:
            raise InvalidInvocation(f"{label}: unknown option {name!r} (known: {list(by_name)})")
    resolved: dict[str, dict[str, Any]] = {}
    options: list[dict[str, Any]] = []
    for opt in leaf_opts:
        if opt["name"] not in values:
            if opt.get("required"):
                raise InvalidInvocation(f"{label}: missing required option {opt['name']!r}")
            continue
        value = _coerce(world, label, opt, values[opt["name"]], channel, invoker, resolved)
        options.append({"name": opt["name"], "type": opt["type"], "value": value})
    for sub in reversed(chain):
        options = [{"name": sub["name"], "type": sub["type"], "options": options}]
    return options, resolved


def _coerce(
    world: World,
    label: str,
    opt: dict[str, Any],
    value: Any,
    channel: FakeChannel | FakeDMChannel,
    invoker: FakeMember | FakeUser,
    resolved: dict[str, dict[str, Any]],
) -> Any:
    otype = int(opt["type"])
    where = f"{label}: option {opt['name']!r} ({OPTION_TYPE_NAMES.get(otype, otype)})"
    guild = channel.guild if isinstance(channel, FakeChannel) else None

    def bad(why: str) -> InvalidInvocation:
        return InvalidInvocation(f"{where}: {why}, got {value!r}")

    if otype == 3:
        if not isinstance(value, str):
            raise bad("expected a str")
        if opt.get("required") and not value.strip():
            raise bad("Discord's client requires a non-empty value")
        if "min_length" in opt and len(value) < int(opt["min_length"]):
            raise bad(f"shorter than min_length={opt['min_length']}")
        if len(value) > int(opt.get("max_length", 6000)):
            raise bad(f"longer than max_length={opt.get('max_length', 6000)}")
        _check_choice(opt, value, bad)
        return value
    if otype in (4, 10):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("expected a number")
        if otype == 4:
            if not isinstance(value, int):
                raise bad("expected an int")
            if not -MAX_SAFE_INTEGER < value < MAX_SAFE_INTEGER:
                raise bad("outside Discord's integer range (+-2^53)")
        elif not math.isfinite(value):
            raise bad("not a finite number")
        if opt.get("min_value") is not None and value < opt["min_value"]:
            raise bad(f"below min_value={opt['min_value']}")
        if opt.get("max_value") is not None and value > opt["max_value"]:
            raise bad(f"above max_value={opt['max_value']}")
        _check_choice(opt, value, bad)
        return value
    if otype == 5:
        if not isinstance(value, bool):
            raise bad("expected a bool")
        return value
    if otype in (6, 9) and isinstance(value, FakeUser | FakeMember):
        _resolve_user(world, value, guild, channel, resolved)
        return str(value.id)
    if otype in (8, 9) and isinstance(value, FakeRole):
        if guild is None or value.guild is not guild:
            raise bad("role of another guild")
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return str(value.id)
    if otype == 7 and isinstance(value, FakeChannel | FakeDMChannel):
        types = opt.get("channel_types")
        if types is not None and value.type not in types:
            raise bad(f"channel type {value.type} not in channel_types={types}")
        if isinstance(value, FakeChannel) and value.guild is not guild:
            raise bad("channel of another guild")
        data = {
            "id": str(value.id),
            "type": value.type,
            "name": getattr(value, "name", ""),
            "permissions": str(_perms(world, invoker, value if isinstance(value, FakeChannel)
                                      else None)),
        }
        if isinstance(value, FakeChannel):
            data.update({"nsfw": value.nsfw, "parent_id": None, "position": value.position,
                         "topic": value.topic})
        resolved.setdefault("channels", {})[str(value.id)] = data
        return str(value.id)
    if otype == 11 and isinstance(value, Attachment):
        resolved.setdefault("attachments", {})[str(value.id)] = value.payload()
        return str(value.id)
    raise bad("wrong type for this option")


def _check_choice(opt: dict[str, Any], value: Any, bad: Callable[[str], Exception]) -> None:
    choices = opt.get("choices")
    if choices is not None and value not in [c["value"] for c in choices]:
        raise bad(f"not one of the choices {[c['value'] for c in choices]}")


def _perms(world: World, who: FakeMember | FakeUser, channel: FakeChannel | None) -> int:
    if isinstance(who, FakeMember):
        return world.permissions_for(who, channel)
    return 0


def _resolve_user(
    world: World,
    value: FakeUser | FakeMember,
    guild: FakeGuild | None,
    channel: FakeChannel | FakeDMChannel,
    resolved: dict[str, dict[str, Any]],
) -> None:
    user = value.user
    resolved.setdefault("users", {})[str(user.id)] = user.payload()
    member = guild.members.get(user.id) if guild is not None else None
    if member is not None:
        perms = world.permissions_for(member, channel if isinstance(channel, FakeChannel) else None)
        resolved.setdefault("members", {})[str(user.id)] = member.payload(
            with_user=False, permissions=perms
        )


# ---------------------------------------------------------------- payloads


def interaction_payload(
    world: World,
    *,
    id: int,
    token: str,
    type: int,
    channel: FakeChannel | FakeDMChannel,
    invoker: FakeMember | FakeUser,
    data: dict[str, Any],
    size_limit: int,
    message: Message | None = None,
) -> dict[str, Any]:
    """INTERACTION_CREATE as Discord sends it to a bot connected over the gateway."""
    payload: dict[str, Any] = {
        "id": str(id),
        "application_id": str(world.application_id),
        "type": type,
        "data": data,
        "token": token,
        "version": 1,
        "locale": "en-US",
        "entitlements": [],
        "entitlement_sku_ids": [],
        "attachment_size_limit": size_limit,
    }
    if isinstance(channel, FakeChannel):
        assert isinstance(invoker, FakeMember)
        guild = channel.guild
        perms = world.permissions_for(invoker, channel)
        bot_perms = world.permissions_for(world.bot_member(guild), channel)
        channel_data = channel.payload()
        channel_data["permissions"] = str(perms)
        payload.update(
            {
                "guild_id": str(guild.id),
                "guild": {"id": str(guild.id), "locale": "en-US", "features": guild.features},
                "guild_locale": "en-US",
                "channel_id": str(channel.id),
                "channel": channel_data,
                "member": invoker.payload(permissions=perms),
                "app_permissions": str(bot_perms),
                "authorizing_integration_owners": {"0": str(guild.id)},
                "context": 0,
            }
        )
    else:
        user = invoker.user
        channel_data = channel.payload()
        channel_data["permissions"] = str(ALL_PERMISSIONS & ~int(Permissions.ADMINISTRATOR))
        payload.update(
            {
                "channel_id": str(channel.id),
                "channel": channel_data,
                "user": user.payload(),
                "app_permissions": str(int(Permissions.VIEW_CHANNEL | Permissions.SEND_MESSAGES
                                           | Permissions.EMBED_LINKS | Permissions.ATTACH_FILES
                                           | Permissions.READ_MESSAGE_HISTORY)),
                "authorizing_integration_owners": {"0": "0"},
                "context": 1,
            }
        )
    if message is not None:
        payload["message"] = world.message_payload(message)
    return payload


def find_component(message: Message, custom_id: str) -> dict[str, Any] | None:
    for comp in iter_components(message.components):
        if comp.get("custom_id") == custom_id:
            return comp
    return None
