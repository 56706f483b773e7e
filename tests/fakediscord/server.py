"""``FakeDiscord``: the test-facing object tying the world, REST API and gateway together."""

# The waits take a timeout on purpose: each one says in its error what it was waiting for.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from aiohttp import web

from . import errors as E
from .clock import Clock
from .errors import FakeDiscordError, InvalidInvocation
from .gateway import IDENTIFY_INTERVAL, Gateway, IdentifyRecord, Session
from .interactions import (
    APPLICATION_COMMAND,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    Interaction,
    build_options,
    check_member_may_use,
    find_command,
    find_component,
    interaction_payload,
    new_token,
)
from .models import (
    DM_UPLOAD_LIMIT,
    Attachment,
    FakeChannel,
    FakeDMChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Message,
    RequestRecord,
    Violation,
    iter_components,
)
from .permissions import DEFAULT_BOT_PERMISSIONS, Permissions, as_int
from .rest import API_PREFIX, RateLimitRule, RestApi
from .state import World

MAX_UPLOAD_BODY = 256 * 1024 * 1024


class FakeDiscord:
    """A fake Discord on 127.0.0.1 for the real discord.py client; see README.md."""

    def __init__(
        self,
        *,
        first_response_timeout: float = 3.0,
        token_lifetime: float = 15 * 60,
        heartbeat_interval: float = 41.25,
        bot_name: str = "imagine",
        bot_permissions: object = DEFAULT_BOT_PERMISSIONS,
        host: str = "127.0.0.1",
        port: int = 0,
        shards: int = 1,
        max_concurrency: int = 1,
        identify_interval: float = IDENTIFY_INTERVAL,
    ) -> None:
        self.first_response_timeout = first_response_timeout
        self.token_lifetime = token_lifetime
        self.clock = Clock()
        self.world = World(
            bot_name=bot_name, bot_permissions=as_int(bot_permissions), clock=self.clock
        )
        self.gateway = Gateway(
            self.world, heartbeat_interval=heartbeat_interval, shard_count=shards,
            max_concurrency=max_concurrency, identify_interval=identify_interval,
        )
        self.world.emit = self.gateway.dispatch
        self.interactions: list[Interaction] = []
        self._by_id: dict[int, Interaction] = {}
        self._by_token: dict[str, Interaction] = {}
        self.rest = RestApi(
            self.world, self.gateway, interactions=self._by_id, tokens=self._by_token
        )
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._resume_target = 0
        self.base_url = ""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self.rest.middleware], client_max_size=MAX_UPLOAD_BODY)
        self.rest.routes(app)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/resume", self.gateway.handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{self._host}:{port}"
        self.world.base_url = self.base_url

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ identity

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return "ws://" + self.base_url.removeprefix("http://") + "/gateway"

    @property
    def token(self) -> str:
        return self.world.token

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot_user

    @property
    def bot_user_id(self) -> int:
        return self.world.bot_user.id

    @property
    def violations(self) -> list[Violation]:
        return self.world.violations

    @property
    def requests(self) -> list[RequestRecord]:
        return self.world.requests

    @property
    def rate_limited(self) -> list[RequestRecord]:
        return self.rest.rate_limited

    @property
    def session(self) -> Session | None:
        return self.gateway.current

    @property
    def identifies(self) -> list[IdentifyRecord]:
        """Every IDENTIFY received, accepted or rate limited, in order."""
        return self.gateway.identifies

    def shard_session(self, shard_id: int) -> Session | None:
        """The live session of shard `shard_id`."""
        return self.gateway.by_shard.get(shard_id)

    def now(self) -> float:
        return self.clock.now()

    def assert_no_violations(self) -> None:
        if self.violations:
            lines = "\n".join(f"  {v}" for v in self.violations)
            raise AssertionError(f"the bot broke Discord's rules:\n{lines}")

    # ------------------------------------------------------------------ world building

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
        """A guild; with ``shard=(shard_id, shard_count)`` its id puts it on that shard."""
        return self.world.add_guild(
            name, premium_tier=premium_tier, attachment_size_limit=attachment_size_limit,
            owner=owner, features=features, shard=shard,
        )

    def add_role(
        self, guild: FakeGuild, name: str, *, permissions: object = 0, mentionable: bool = False
    ) -> FakeRole:
        return self.world.add_role(guild, name, permissions=permissions, mentionable=mentionable)

    def add_channel(
        self, guild: FakeGuild, name: str, *, nsfw: bool = False, topic: str | None = None
    ) -> FakeChannel:
        return self.world.add_channel(guild, name, nsfw=nsfw, topic=topic)

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        return self.world.add_user(name, bot=bot)

    def add_member(
        self,
        guild: FakeGuild,
        who: str | FakeUser,
        *,
        roles: Sequence[FakeRole] = (),
        permissions: object = None,
        nick: str | None = None,
    ) -> FakeMember:
        return self.world.add_member(guild, who, roles=roles, permissions=permissions, nick=nick)

    def remove_member(self, member: FakeMember) -> None:
        """The member leaves the guild (GUILD_MEMBER_REMOVE); the user can still get DMs."""
        self.world.remove_member(member)

    def add_member_role(self, member: FakeMember, role: FakeRole) -> None:
        if role not in member.roles:
            self.world.set_member_roles(member, [*member.roles, role])

    def remove_member_role(self, member: FakeMember, role: FakeRole) -> None:
        self.world.set_member_roles(member, [r for r in member.roles if r is not role])

    def set_overwrite(
        self,
        channel: FakeChannel,
        target: FakeRole | FakeMember | FakeUser,
        *,
        allow: object = 0,
        deny: object = 0,
    ) -> None:
        self.world.set_overwrite(channel, target, as_int(allow), as_int(deny))

    def deny_bot_send(self, channel: FakeChannel) -> None:
        deny = Permissions.SEND_MESSAGES | Permissions.ATTACH_FILES
        self.world.set_overwrite(channel, self.world.bot_user, 0, int(deny))

    def close_dms(self, user: FakeUser | FakeMember) -> None:
        user.user.dms_closed = True

    def override_command_permissions(self, guild: FakeGuild, command: str) -> None:
        """Like a server admin allowing everyone to use ``command`` in Integrations settings."""
        guild.command_permission_overrides.add(command)

    def permissions_for(self, member: FakeMember, channel: FakeChannel | None = None) -> int:
        return self.world.permissions_for(member, channel)

    def make_attachment(self, filename: str, data: bytes) -> Attachment:
        """An uploaded file for an attachment option (stored, served on the CDN)."""
        return self.world.store_attachment(filename, data, channel_id=0, ephemeral=True)

    def advance_time(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.world.changed()

    def rate_limit_next(
        self, pattern: str, *, retry_after: float = 0.3, count: int = 1, is_global: bool = False
    ) -> None:
        self.rest.rate_limits.append(RateLimitRule(pattern, retry_after, count, is_global))

    # ------------------------------------------------------------------ reading state

    def messages(
        self, channel: FakeChannel | FakeDMChannel, *, include_deleted: bool = False
    ) -> list[Message]:
        return [
            m for m in self.world.channel_messages.get(channel.id, [])
            if include_deleted or not m.deleted
        ]

    def dm_messages(self, user: FakeUser | FakeMember, *, include_deleted: bool = False
                    ) -> list[Message]:
        channel = self.world.dm_channels.get(user.user.id)
        return [] if channel is None else self.messages(channel, include_deleted=include_deleted)

    def all_messages(self, *, include_deleted: bool = False) -> list[Message]:
        return [m for m in self.world.messages.values() if include_deleted or not m.deleted]

    def get_message(self, message_id: int) -> Message | None:
        return self.world.messages.get(message_id)

    def commands(self, guild: FakeGuild | None = None) -> list[dict[str, Any]]:
        return list(self.world.commands.get(guild.id if guild else None, []))

    # ------------------------------------------------------------------ waiting

    async def wait_until(self, condition: Callable[[], Any], *, timeout: float = 10.0,
                         what: str = "condition") -> Any:
        return await self.world.notifier.wait_until(condition, timeout, what)

    async def wait_until_ready(self, timeout: float = 10.0) -> Session:
        """Wait until a bot is connected with an identified session (READY + GUILD_CREATEs sent);
        a sharded bot (possibly several processes) with every shard of its shard count.

        After a bot closed, this waits for the next bot to connect. Returns the latest session.
        """

        def ready() -> Session | None:
            session = self.gateway.current
            if session is None:
                return None
            shards = [self.gateway.by_shard.get(i) for i in range(session.shard_count)]
            if all(s is not None and s.ready and s.connected and s.resumable for s in shards):
                return session
            return None

        return await self.wait_until(ready, timeout=timeout, what="the bot to IDENTIFY")

    async def wait_identify_window(self) -> None:
        """Sleep until a new IDENTIFY would be accepted in every bucket: Discord allows one per
        `identify_interval` (5 s) per bucket, so a bot restarted sooner is refused once."""
        gateway = self.gateway
        accepted = [r.at for r in gateway.identifies if r.accepted]
        if accepted:
            wait = max(accepted) + gateway.identify_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def wait_for_commands(
        self, names: Iterable[str], *, guild: FakeGuild | None = None, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        wanted = list(names)
        scope = guild.id if guild is not None else None

        def synced() -> list[dict[str, Any]] | None:
            commands = {c["name"]: c for c in self.world.commands.get(scope, [])}
            if all(n in commands for n in wanted):
                return [commands[n] for n in wanted]
            return None

        return await self.wait_until(synced, timeout=timeout, what=f"commands {wanted} synced")

    async def wait_for_message(
        self,
        predicate: Callable[[Message], Any] | None = None,
        *,
        channel: FakeChannel | FakeDMChannel | None = None,
        timeout: float = 10.0,
    ) -> Message:
        def found() -> Message | None:
            pool = self.messages(channel) if channel is not None else self.all_messages()
            for msg in pool:
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self.wait_until(found, timeout=timeout, what="a matching message")

    async def wait_for_edit(
        self,
        message: Message,
        predicate: Callable[[Message], Any] | None = None,
        *,
        timeout: float = 10.0,
    ) -> Message:
        start = len(message.edits)

        def edited() -> Message | None:
            if len(message.edits) > start and (predicate is None or predicate(message)):
                return message
            return None

        return await self.wait_until(edited, timeout=timeout, what=f"an edit of {message.id}")

    async def wait_for_resume(self, timeout: float = 10.0) -> Session:
        """Wait until the session dropped by ``disconnect_gateway``/``request_reconnect`` resumed.

        Without such a call, waits for the next resume of the current session.
        """
        session = self.gateway.current
        if session is None:
            raise FakeDiscordError("no gateway session")
        target = self._resume_target or session.resumed_count + 1

        def resumed() -> Session | None:
            if (self.gateway.current is session and session.resumed_count >= target
                    and session.connected):
                return session
            return None

        result = await self.wait_until(resumed, timeout=timeout, what="a RESUME")
        self._resume_target = 0
        return result

    # ------------------------------------------------------------------ gateway control

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Drop the bot's websocket (resumable codes make discord.py RESUME at once)."""
        self._expect_resume()
        await self.gateway.disconnect(code)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the client reconnects and resumes."""
        self._expect_resume()
        await self.gateway.send_op(7)

    def _expect_resume(self) -> None:
        session = self.gateway.current
        if session is not None:
            self._resume_target = session.resumed_count + 1

    async def invalidate_session(self) -> None:
        session = self.gateway.current
        if session is not None:
            session.resumable = False
        await self.gateway.send_op(9, False)

    def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send any gateway event to the bot (no intent filtering)."""
        if not self.gateway.dispatch(event, data, None):
            raise FakeDiscordError("no gateway session to dispatch to")

    # ------------------------------------------------------------------ interactions

    async def invoke(
        self,
        channel: FakeChannel | FakeDMChannel,
        user: FakeMember | FakeUser,
        command: str,
        /,
        *,
        created_ago: float = 0.0,
        options: Mapping[str, Any] | None = None,
        **kwoptions: Any,
    ) -> Interaction:
        """A member runs ``/command [subcommand...] option=value ...`` in ``channel``."""
        parts = command.strip().lstrip("/").split()
        if not parts:
            raise InvalidInvocation("empty command")
        values = {**(options or {}), **kwoptions}
        invoker = self._invoker(channel, user)
        cmd = find_command(self.world, channel, parts[0])
        if isinstance(channel, FakeChannel):
            assert isinstance(invoker, FakeMember)
            check_member_may_use(self.world, cmd, invoker, channel)
        opts, resolved = build_options(self.world, cmd, parts[1:], values, channel, invoker)
        data: dict[str, Any] = {"id": cmd["id"], "name": cmd["name"], "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        return self._dispatch_interaction(
            APPLICATION_COMMAND, channel, invoker, data, created_ago=created_ago
        )

    async def click(
        self, message: Message, custom_id: str, user: FakeMember | FakeUser,
        *, created_ago: float = 0.0,
    ) -> Interaction:
        """``user`` presses the button ``custom_id`` under ``message``."""
        comp = self._component(message, custom_id, user)
        if comp.get("type") != 2:
            raise InvalidInvocation(f"{custom_id!r} is not a button (type {comp.get('type')})")
        if comp.get("style") in (5, 6):
            raise InvalidInvocation(f"{custom_id!r} is a link/premium button")
        data = {"custom_id": custom_id, "component_type": 2}
        if comp.get("id") is not None:
            data["id"] = comp["id"]
        channel = self.world.channels[message.channel_id]
        return self._dispatch_interaction(
            MESSAGE_COMPONENT, channel, self._invoker(channel, user), data,
            message=message, created_ago=created_ago,
        )

    async def select(
        self, message: Message, custom_id: str, user: FakeMember | FakeUser,
        values: Sequence[str],
    ) -> Interaction:
        """``user`` picks ``values`` in the string select menu ``custom_id``."""
        comp = self._component(message, custom_id, user)
        if comp.get("type") != 3:
            raise InvalidInvocation(f"{custom_id!r} is not a string select (type {comp['type']})")
        allowed = [o["value"] for o in comp.get("options") or []]
        lo, hi = int(comp.get("min_values", 1)), int(comp.get("max_values", 1))
        if not lo <= len(values) <= hi or any(v not in allowed for v in values):
            raise InvalidInvocation(
                f"select {custom_id!r}: {list(values)} not {lo}..{hi} of {allowed}"
            )
        data = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        channel = self.world.channels[message.channel_id]
        return self._dispatch_interaction(
            MESSAGE_COMPONENT, channel, self._invoker(channel, user), data, message=message
        )

    async def submit_modal(
        self, ix: Interaction, values: Mapping[str, str], user: FakeMember | FakeUser | None = None
    ) -> Interaction:
        """Submit the modal the bot opened in answer to ``ix`` (response type 9)."""
        if ix.modal is None:
            raise InvalidInvocation(f"{ix!r} did not open a modal")
        rows: list[dict[str, Any]] = []
        for comp in ix.modal.get("components") or []:
            if comp.get("type") == 1:
                inner = [self._modal_value(c, values) for c in comp.get("components") or []]
                rows.append({"type": 1, "components": inner})
            elif comp.get("type") == 18:
                rows.append({"type": 18, "id": comp.get("id"),
                             "component": self._modal_value(comp.get("component") or {}, values)})
        known = {c.get("custom_id") for c in iter_components(ix.modal.get("components") or [])}
        unknown = set(values) - known
        if unknown:
            raise InvalidInvocation(f"modal has no inputs {sorted(unknown)}")
        data = {"custom_id": ix.modal["custom_id"], "components": rows}
        who = user if user is not None else ix.user
        channel = ix.channel
        return self._dispatch_interaction(
            MODAL_SUBMIT, channel, self._invoker(channel, who), data,
            message=ix.source_message, parent=ix,
        )

    @staticmethod
    def _modal_value(comp: dict[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
        cid = comp.get("custom_id")
        if comp.get("type") == 4:
            value = values.get(cid, comp.get("value") or "")
            if comp.get("required", True) and not value:
                raise InvalidInvocation(f"modal input {cid!r} is required")
            if len(value) > int(comp.get("max_length", 4000)) or len(value) < int(
                comp.get("min_length", 0)
            ):
                raise InvalidInvocation(f"modal input {cid!r}: length out of range")
            return {"type": 4, "custom_id": cid, "value": value}
        return {"type": comp.get("type"), "custom_id": cid, "values": list(values.get(cid, []))}

    def _component(
        self, message: Message, custom_id: str, user: FakeMember | FakeUser
    ) -> dict[str, Any]:
        if message.deleted:
            raise InvalidInvocation(f"message {message.id} was deleted")
        if message.ephemeral and message.visible_to != user.user.id:
            raise InvalidInvocation(f"{user.name} cannot see ephemeral message {message.id}")
        comp = find_component(message, custom_id)
        if comp is None:
            raise InvalidInvocation(
                f"message {message.id} has no component {custom_id!r} "
                f"(has {message.custom_ids()})"
            )
        if comp.get("disabled"):
            raise InvalidInvocation(f"{custom_id!r} is disabled")
        return comp

    def _invoker(
        self, channel: FakeChannel | FakeDMChannel, user: FakeMember | FakeUser
    ) -> FakeMember | FakeUser:
        if isinstance(channel, FakeChannel):
            member = channel.guild.members.get(user.user.id)
            if member is None:
                raise InvalidInvocation(f"{user.user.name} is not a member of {channel.guild.name}")
            return member
        if user.user is not channel.recipient:
            raise InvalidInvocation(f"{user.user.name} is not in this DM")
        return user.user

    def dm_channel(self, user: FakeUser | FakeMember) -> FakeDMChannel:
        """The bot's DM channel with ``user`` (created on first use), e.g. to invoke in DMs."""
        return self.world.dm_channel(user.user)

    def _dispatch_interaction(
        self,
        itype: int,
        channel: FakeChannel | FakeDMChannel,
        invoker: FakeMember | FakeUser,
        data: dict[str, Any],
        *,
        message: Message | None = None,
        created_ago: float = 0.0,
        parent: Interaction | None = None,
    ) -> Interaction:
        guild_id = channel.guild.id if isinstance(channel, FakeChannel) else None
        session = self.gateway.session_for(guild_id)
        if session is None:
            raise FakeDiscordError(
                "no gateway session receives this guild's events; await fake.wait_until_ready()"
            )
        world = self.world
        real_created = time.time() - created_ago
        ix_id = world.ids.at(real_created)
        token = new_token(ix_id)
        limit = (channel.guild.attachment_size_limit if isinstance(channel, FakeChannel)
                 else DM_UPLOAD_LIMIT)
        payload = interaction_payload(
            world, id=ix_id, token=token, type=itype, channel=channel, invoker=invoker,
            data=data, size_limit=limit, message=message,
        )
        now = world.now()
        ix = Interaction(
            world,
            id=ix_id,
            type=itype,
            channel=channel,
            user=invoker.user,
            payload=payload,
            dispatched_at=now,
            created_at=now - created_ago,
            deadline=now + self.first_response_timeout,
            token_lifetime=self.token_lifetime,
            attachment_size_limit=limit,
            source_message=message if itype != APPLICATION_COMMAND else None,
            parent=parent,
        )
        self.interactions.append(ix)
        self._by_id[ix.id] = ix
        self._by_token[ix.token] = ix
        session.dispatch("INTERACTION_CREATE", payload)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.first_response_timeout + 0.05, self._check_answered, ix)
        self._timers.add(timer)
        world.changed()
        return ix

    def _check_answered(self, ix: Interaction) -> None:
        if ix.response_type is None and not ix.timed_out:
            ix.timed_out = True
            err = E.DiscordError(
                404, 10062, "Unknown interaction",
                detail=f"no initial response to {ix!r} within {self.first_response_timeout}s "
                "(the member sees 'The application did not respond')",
            )
            self.world.violate(err, "-", f"interaction {ix.id}")

    # ------------------------------------------------------------------ members posting

    def user_message(
        self, channel: FakeChannel | FakeDMChannel, user: FakeMember | FakeUser, content: str
    ) -> Message:
        """A member posts a plain message (dispatched as MESSAGE_CREATE)."""
        return self.world.create_message(
            channel, user.user, {"content": content}, size_limit=DM_UPLOAD_LIMIT
        )


@contextlib.contextmanager
def restore_discord_urls() -> Iterator[None]:
    """Put discord.py's class-level REST base and gateway URL back after a test changed them."""
    import discord.gateway
    import discord.http

    base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    try:
        yield
    finally:
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
