"""Discord's REST API (``/api/v10``) and the attachment CDN, as aiohttp handlers.

Handlers raise ``DiscordError``; the middleware renders it as Discord's JSON body, records rule
violations, answers injected 429s, stamps rate-limit headers and logs every request.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from . import errors as E
from .errors import DiscordError, FieldError, form_error
from .interactions import (
    ALLOWED_CALLBACKS,
    APPLICATION_COMMAND,
    Interaction,
)
from .models import (
    MESSAGE_FLAG_EPHEMERAL,
    FakeChannel,
    FakeDMChannel,
    FakeGuild,
    Message,
    RequestRecord,
)
from .permissions import Permissions
from .state import Upload, World
from .validation import check_commands, check_modal

if TYPE_CHECKING:
    from .gateway import Gateway

API_PREFIX = "/api/v10"
# Where a handler leaves the parsed body for the request log (RequestKey exists in aiohttp>=3.12).
_REQUEST_KEY_TYPE: Any = getattr(web, "RequestKey", None)
BODY_KEY: Any = _REQUEST_KEY_TYPE("fake_json", object) if _REQUEST_KEY_TYPE else "fake_json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RateLimitRule:
    """An injected 429: the next ``count`` requests matching ``pattern`` are refused."""

    pattern: str
    retry_after: float
    count: int
    is_global: bool


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py compares the header to exactly "application/json" (no charset).
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def no_content() -> web.Response:
    return web.Response(status=204)


class RestApi:
    """Routes, middleware and handlers; shares ``World`` with the gateway and the test API."""

    def __init__(
        self,
        world: World,
        gateway: Gateway,
        *,
        interactions: dict[int, Interaction],
        tokens: dict[str, Interaction],
    ) -> None:
        self.world = world
        self.gateway = gateway
        self.interactions = interactions
        self.tokens = tokens
        self.rate_limits: list[RateLimitRule] = []
        self.rate_limited: list[RequestRecord] = []

    # ------------------------------------------------------------------ app wiring

    def routes(self, app: web.Application) -> None:
        api = API_PREFIX
        add = app.router.add_route
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/gateway", self.get_gateway),
            ("GET", "/gateway/bot", self.get_gateway_bot),
            ("GET", "/users/@me", self.get_me),
            ("GET", "/users/{user_id}", self.get_user),
            ("POST", "/users/@me/channels", self.create_dm),
            ("GET", "/oauth2/applications/@me", self.get_application),
            ("GET", "/applications/@me", self.get_application),
            ("GET", "/applications/{app_id}/commands", self.list_commands),
            ("PUT", "/applications/{app_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/commands", self.upsert_command),
            ("GET", "/applications/{app_id}/commands/{command_id}", self.get_command),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self.patch_command),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self.delete_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.list_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self.upsert_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
             self.get_command),
            ("PATCH", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
             self.patch_command),
            ("DELETE", "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
             self.delete_command),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.callback),
            ("GET", "/webhooks/{app_id}/{token}/messages/@original", self.get_original),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/@original", self.edit_original),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/@original", self.delete_original),
            ("POST", "/webhooks/{app_id}/{token}", self.followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self.get_webhook_message),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}",
             self.edit_webhook_message),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}",
             self.delete_webhook_message),
            ("GET", "/channels/{channel_id}", self.get_channel),
            ("GET", "/channels/{channel_id}/messages", self.list_messages),
            ("POST", "/channels/{channel_id}/messages", self.create_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            ("POST", "/channels/{channel_id}/typing", self.typing),
            ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
             self.add_reaction),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
             self.remove_reaction),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels),
            ("GET", "/guilds/{guild_id}/roles", self.get_roles),
            ("GET", "/guilds/{guild_id}/members", self.list_members),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
        ]
        for method, path, handler in table:
            add(method, api + path, handler)
        for prefix in ("/attachments", "/media/attachments"):
            app.router.add_get(prefix + "/{channel_id}/{attachment_id}/{filename}", self.cdn)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/gateway"):
            return await handler(request)
        api_path = path.removeprefix(API_PREFIX)
        route = _route_template(request)
        is_api = path.startswith("/api/")
        body_for_log: Any = None
        if is_api:
            limited = self._injected_429(request.method, api_path, route)
            if limited is not None:
                self._record(request, route, limited.status, None)
                return limited
        try:
            if is_api and _needs_bot_auth(api_path):
                self._check_auth(request)
            response = await handler(request)
        except DiscordError as err:
            if err.violation:
                self.world.violate(err, request.method, api_path)
            response = json_response(err.body(), err.status)
        except web.HTTPException as exc:
            if exc.status not in (404, 405):
                raise
            what = f"the fake does not implement {request.method} {api_path}"
            label = "404: Not Found" if exc.status == 404 else "405: Method Not Allowed"
            err = DiscordError(exc.status, 0, f"{label} ({what})", detail=what)
            self.world.violate(err, request.method, api_path)
            response = json_response(err.body(), exc.status)
        body_for_log = request.get(BODY_KEY)
        if is_api:
            _ratelimit_headers(response, route)
        self._record(request, route, response.status, body_for_log)
        return response

    def _record(self, request: web.Request, route: str, status: int, body: Any) -> None:
        path = request.path.removeprefix(API_PREFIX)
        self.world.requests.append(
            RequestRecord(request.method, path, route, status, self.world.now(), body)
        )

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.world.token}":
            raise DiscordError(401, 0, "401: Unauthorized", detail="missing or wrong bot token")

    def _injected_429(self, method: str, api_path: str, route: str) -> web.Response | None:
        subject = f"{method} {api_path}"
        template = f"{method} {route}"
        for rule in self.rate_limits:
            if rule.count > 0 and (
                fnmatch.fnmatchcase(subject, rule.pattern)
                or fnmatch.fnmatchcase(template, rule.pattern)
            ):
                rule.count -= 1
                if rule.count == 0:
                    self.rate_limits.remove(rule)
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": rule.retry_after,
                    "global": rule.is_global,
                }
                response = json_response(body, 429)
                now = time.time()
                response.headers.update(
                    {
                        "Via": "1.1 google",
                        "Retry-After": str(math.ceil(rule.retry_after)),
                        "X-RateLimit-Limit": "5",
                        "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": f"{now + rule.retry_after:.3f}",
                        "X-RateLimit-Reset-After": f"{rule.retry_after:.3f}",
                        "X-RateLimit-Bucket": _bucket(route),
                        "X-RateLimit-Scope": "global" if rule.is_global else "user",
                    }
                )
                if rule.is_global:
                    response.headers["X-RateLimit-Global"] = "true"
                self.rate_limited.append(
                    RequestRecord(method, api_path, route, 429, self.world.now())
                )
                return response
        return None

    # ------------------------------------------------------------------ body parsing

    async def read_body(self, request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
        """JSON, or multipart with ``payload_json`` and ``files[n]`` parts."""
        ctype = request.content_type
        uploads: list[Upload] = []
        payload: Any = {}
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            index_auto = 0
            async for part in reader:
                name = part.name or ""
                if name == "payload_json":
                    payload = _loads(await part.text())
                elif name.startswith("files[") or name == "file" or part.filename:
                    data = bytes(await part.read())
                    index = index_auto
                    if name.startswith("files[") and name.endswith("]"):
                        index = int(name[6:-1])
                    index_auto += 1
                    uploads.append(Upload(index, part.filename or f"file{index}", data))
                else:
                    payload[name] = await part.text()
        else:
            raw = await request.read()
            payload = _loads(raw.decode() or "{}") if raw else {}
        if not isinstance(payload, dict):
            raise form_error([FieldError((), "MODEL_TYPE_CONVERT",
                                         "Only dictionaries may be used in a ModelType")])
        request[BODY_KEY] = payload
        return payload, uploads

    # ------------------------------------------------------------------ lookups

    def _channel(self, request: web.Request) -> FakeChannel | FakeDMChannel:
        channel = self.world.channels.get(_snowflake(request, "channel_id"))
        if channel is None:
            raise E.unknown("Channel")
        if isinstance(channel, FakeChannel):
            perms = self.world.permissions_for(self.world.bot_member(channel.guild), channel)
            if not perms & Permissions.VIEW_CHANNEL:
                raise E.missing_access(f"bot cannot view #{channel.name}")
        return channel

    def _guild(self, request: web.Request) -> FakeGuild:
        guild = self.world.guilds.get(_snowflake(request, "guild_id"))
        if guild is None:
            raise E.unknown("Guild")
        if self.world.bot_user.id not in guild.members:
            raise E.missing_access("the bot is not in this guild")
        return guild

    def _channel_message(self, request: web.Request) -> tuple[FakeChannel | FakeDMChannel, Message]:
        channel = self._channel(request)
        msg = self.world.messages.get(_snowflake(request, "message_id"))
        if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
            raise E.unknown("Message")
        return channel, msg

    def _app(self, request: web.Request) -> None:
        if _snowflake(request, "app_id") != self.world.application_id:
            raise E.missing_access("not this bot's application")

    # ------------------------------------------------------------------ gateway / identity

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self._ws_url()})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "url": self._ws_url(),
                "shards": self.gateway.shard_count,
                "session_start_limit": {
                    "total": 1000, "remaining": 999, "reset_after": 86400000,
                    "max_concurrency": self.gateway.max_concurrency,
                },
            }
        )

    def _ws_url(self) -> str:
        return "ws://" + self.world.base_url.removeprefix("http://") + "/gateway"

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response(
            {**self.world.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None,
             "locale": "en-US"}
        )

    async def get_user(self, request: web.Request) -> web.Response:
        user = self.world.users.get(_snowflake(request, "user_id"))
        if user is None:
            raise E.unknown("User")
        return json_response(user.payload())

    async def create_dm(self, request: web.Request) -> web.Response:
        payload, _ = await self.read_body(request)
        user = self.world.users.get(int(payload.get("recipient_id", 0)))
        if user is None:
            raise E.unknown("User")
        return json_response(self.world.dm_channel(user).payload())

    async def get_application(self, request: web.Request) -> web.Response:
        world = self.world
        return json_response(
            {
                "id": str(world.application_id),
                "name": world.bot_user.name,
                "description": "fake application",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": world.application_owner.payload(),
                "team": None,
                "verify_key": hashlib.sha256(str(world.application_id).encode()).hexdigest(),
                "flags": 0,
                "summary": "",
                "rpc_origins": [],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "bot": world.bot_user.payload(),
                "approximate_guild_count": len(world.guilds),
                "integration_types_config": {"0": {}},
            }
        )

    # ------------------------------------------------------------------ application commands

    def _command_scope(self, request: web.Request) -> int | None:
        self._app(request)
        if "guild_id" in request.match_info:
            return self._guild(request).id
        return None

    async def list_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        return json_response(self.world.commands.get(scope, []))

    async def put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        raw = await request.read()
        commands = _loads(raw.decode() or "[]")
        request[BODY_KEY] = commands
        errors = check_commands(commands)
        if errors:
            raise form_error(errors)
        old = {(int(c.get("type", 1)), c["name"]): c for c in self.world.commands.get(scope, [])}
        stored = [self._store_command(c, scope, old.get((int(c.get("type", 1)), c["name"])))
                  for c in commands]
        self.world.commands[scope] = stored
        self.world.changed()
        return json_response(stored)

    async def upsert_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        payload, _ = await self.read_body(request)
        errors = check_commands([payload])
        if errors:
            raise form_error(errors)
        current = self.world.commands.setdefault(scope, [])
        key = (int(payload.get("type", 1)), payload["name"])
        old = next((c for c in current if (int(c.get("type", 1)), c["name"]) == key), None)
        stored = self._store_command(payload, scope, old)
        if old is not None:
            current[current.index(old)] = stored
        else:
            current.append(stored)
        self.world.changed()
        return json_response(stored, 200 if old is not None else 201)

    def _find_command(self, request: web.Request) -> tuple[int | None, dict[str, Any]]:
        scope = self._command_scope(request)
        cid = request.match_info["command_id"]
        for cmd in self.world.commands.get(scope, []):
            if cmd["id"] == cid:
                return scope, cmd
        raise E.unknown("application command")

    async def get_command(self, request: web.Request) -> web.Response:
        return json_response(self._find_command(request)[1])

    async def patch_command(self, request: web.Request) -> web.Response:
        scope, cmd = self._find_command(request)
        payload, _ = await self.read_body(request)
        merged = {**cmd, **payload}
        errors = check_commands([merged])
        if errors:
            raise form_error(errors)
        stored = self._store_command(merged, scope, cmd)
        commands = self.world.commands[scope]
        commands[commands.index(cmd)] = stored
        self.world.changed()
        return json_response(stored)

    async def delete_command(self, request: web.Request) -> web.Response:
        scope, cmd = self._find_command(request)
        self.world.commands[scope].remove(cmd)
        self.world.changed()
        return no_content()

    def _store_command(
        self, cmd: dict[str, Any], scope: int | None, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "id": old["id"] if old else str(self.world.new_id()),
            "application_id": str(self.world.application_id),
            "version": str(self.world.new_id()),
            "type": int(cmd.get("type", 1)),
            "name": cmd["name"],
            "name_localizations": cmd.get("name_localizations"),
            "description": cmd.get("description", ""),
            "description_localizations": cmd.get("description_localizations"),
            "options": _normalise_options(cmd.get("options") or []),
            "default_member_permissions": (
                None if cmd.get("default_member_permissions") is None
                else str(cmd["default_member_permissions"])
            ),
            "nsfw": bool(cmd.get("nsfw", False)),
            "contexts": cmd.get("contexts"),
            "integration_types": cmd.get("integration_types") or [0],
        }
        if "dm_permission" in cmd:
            stored["dm_permission"] = cmd["dm_permission"]
        if scope is not None:
            stored["guild_id"] = str(scope)
            stored["contexts"] = None
        return stored

    # ------------------------------------------------------------------ interactions

    async def callback(self, request: web.Request) -> web.Response:
        world = self.world
        ix = self.interactions.get(_snowflake(request, "interaction_id"))
        if ix is None or ix.token != request.match_info["token"]:
            raise DiscordError(404, 10062, "Unknown interaction",
                               detail="no interaction with this id and token")
        if ix.response_type is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.",
                               detail=f"already answered with type {ix.response_type}")
        late = world.now() - ix.dispatched_at
        if world.now() > ix.deadline:
            ix.timed_out = True
            raise DiscordError(404, 10062, "Unknown interaction",
                               detail=f"initial response {late:.2f}s after dispatch")
        payload, uploads = await self.read_body(request)
        rtype = payload.get("type")
        if rtype not in ALLOWED_CALLBACKS.get(ix.type, set()) or (
            rtype in (6, 7) and ix.source_message is None
        ):
            raise form_error([FieldError(("type",), "INTERACTION_RESPONSE_TYPE_INVALID",
                                         f"Response type {rtype} is not valid for interaction "
                                         f"type {ix.type}")])
        data = payload.get("data") or {}
        limit = ix.attachment_size_limit
        resource: dict[str, Any] = {"type": rtype}
        if rtype == 4:
            ephemeral = bool(int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            msg = self._interaction_message(ix, data, uploads, ephemeral=ephemeral,
                                            prefix=("data",))
            ix.original = msg
            ix.ephemeral = ephemeral
            resource["message"] = world.message_payload(msg)
        elif rtype == 5:
            ephemeral = bool(int(data.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            msg = self._interaction_message(ix, {"flags": data.get("flags") or 0}, [],
                                            ephemeral=ephemeral, loading=True, prefix=("data",))
            ix.original = msg
            ix.ephemeral = ephemeral
        elif rtype == 6:
            ix.original = ix.source_message
        elif rtype == 7:
            assert ix.source_message is not None
            world.edit_message(ix.source_message, data, uploads, size_limit=limit,
                               prefix=("data",))
            ix.original = ix.source_message
            resource["message"] = world.message_payload(ix.source_message)
        elif rtype == 9:
            errors = check_modal(data, ("data",))
            if errors:
                raise form_error(errors)
            ix.modal = data
        ix.response_type = rtype
        world.changed()
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return no_content()
        original = ix.original
        body = {
            "interaction": {
                "id": str(ix.id),
                "type": ix.type,
                "activity_instance_id": None,
                "response_message_id": str(original.id) if original is not None else None,
                "response_message_loading": rtype == 5,
                "response_message_ephemeral": bool(original is not None and original.ephemeral),
            },
            "resource": resource,
        }
        return json_response(body)

    def _interaction_message(
        self,
        ix: Interaction,
        data: dict[str, Any],
        uploads: list[Upload],
        *,
        ephemeral: bool,
        loading: bool = False,
        prefix: tuple[str | int, ...] = (),
        followup_of: Message | None = None,
    ) -> Message:
        world = self.world
        metadata: dict[str, Any] = {
            "id": str(ix.id),
            "type": ix.type,
            "user": ix.user.payload(),
            "authorizing_integration_owners": ix.payload.get("authorizing_integration_owners", {}),
        }
        legacy = None
        msg_type = 0
        if ix.type == APPLICATION_COMMAND:
            metadata["name"] = ix.name
            metadata["command_type"] = 1
            legacy = {"id": str(ix.id), "type": ix.type, "name": ix.name,
                      "user": ix.user.payload()}
            msg_type = 20 if followup_of is None else 0
        if ix.source_message is not None:
            metadata["interacted_message_id"] = str(ix.source_message.id)
        if followup_of is not None:
            metadata["original_response_message_id"] = str(followup_of.id)
        return world.create_message(
            ix.channel,
            world.bot_user,
            data,
            uploads,
            size_limit=ix.attachment_size_limit,
            prefix=prefix,
            msg_type=msg_type,
            visible_to=ix.user.id if ephemeral else None,
            loading=loading,
            webhook_id=world.application_id,
            interaction_metadata=metadata,
            interaction_legacy=legacy,
            interaction_id=ix.id,
        )

    def _webhook_interaction(self, request: web.Request) -> Interaction:
        ix = self.tokens.get(request.match_info["token"])
        if ix is None or _snowflake(request, "app_id") != self.world.application_id:
            raise E.invalid_webhook_token("unknown application id or interaction token")
        if ix.token_expired:
            age = self.world.now() - ix.created_at
            raise E.invalid_webhook_token(f"interaction token is {age:.0f}s old")
        if ix.response_type is None:
            raise DiscordError(404, 10015, "Unknown Webhook",
                               detail="webhook used before the initial interaction response")
        return ix

    def _original(self, ix: Interaction) -> Message:
        msg = ix.original
        if msg is None or msg.deleted:
            raise E.unknown("Message")
        return msg

    def _ix_message(self, request: web.Request, ix: Interaction) -> Message:
        mid = request.match_info["message_id"]
        candidates = [m for m in (ix.original, *ix.followups) if m is not None]
        for msg in candidates:
            if str(msg.id) == mid and not msg.deleted:
                return msg
        raise E.unknown("Message")

    async def get_original(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        return json_response(self.world.message_payload(self._original(ix)))

    async def edit_original(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        msg = self._original(ix)
        payload, uploads = await self.read_body(request)
        self.world.edit_message(msg, payload, uploads, size_limit=ix.attachment_size_limit)
        return json_response(self.world.message_payload(msg))

    async def delete_original(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        self.world.delete_message(self._original(ix))
        return no_content()

    async def get_webhook_message(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        return json_response(self.world.message_payload(self._ix_message(request, ix)))

    async def edit_webhook_message(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        msg = self._ix_message(request, ix)
        payload, uploads = await self.read_body(request)
        self.world.edit_message(msg, payload, uploads, size_limit=ix.attachment_size_limit)
        return json_response(self.world.message_payload(msg))

    async def delete_webhook_message(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        self.world.delete_message(self._ix_message(request, ix))
        return no_content()

    async def followup(self, request: web.Request) -> web.Response:
        ix = self._webhook_interaction(request)
        payload, uploads = await self.read_body(request)
        original = ix.original
        if original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a deferred (thinking) response fills it in.
            msg = self.world.edit_message(original, payload, uploads,
                                          size_limit=ix.attachment_size_limit)
        else:
            ephemeral = bool(int(payload.get("flags") or 0) & MESSAGE_FLAG_EPHEMERAL)
            msg = self._interaction_message(ix, payload, uploads, ephemeral=ephemeral,
                                            followup_of=original)
        ix.followups.append(msg)
        self.world.changed()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self.world.message_payload(msg))
        return no_content()

    # ------------------------------------------------------------------ channels & messages

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(request).payload())

    async def list_messages(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._need(channel, Permissions.READ_MESSAGE_HISTORY, "READ_MESSAGE_HISTORY")
        limit = max(1, min(100, int(request.query.get("limit", 50))))
        msgs = [m for m in self.world.channel_messages[channel.id]
                if not m.deleted and not m.ephemeral]
        if "before" in request.query:
            before = int(request.query["before"])
            msgs = [m for m in msgs if m.id < before]
            msgs = msgs[-limit:]
        elif "after" in request.query:
            after = int(request.query["after"])
            msgs = [m for m in msgs if m.id > after][:limit]
        elif "around" in request.query:
            around = int(request.query["around"])
            older = [m for m in msgs if m.id <= around][-(limit // 2 + 1):]
            newer = [m for m in msgs if m.id > around][: limit - len(older)]
            msgs = older + newer
        else:
            msgs = msgs[-limit:]
        return json_response([self.world.message_payload(m) for m in reversed(msgs)])

    async def get_message(self, request: web.Request) -> web.Response:
        channel, msg = self._channel_message(request)
        self._need(channel, Permissions.READ_MESSAGE_HISTORY, "READ_MESSAGE_HISTORY")
        return json_response(self.world.message_payload(msg))

    def _need(self, channel: FakeChannel | FakeDMChannel, perm: int, name: str) -> None:
        if isinstance(channel, FakeChannel):
            perms = self.world.permissions_for(self.world.bot_member(channel.guild), channel)
            if perms & perm != perm:
                raise E.missing_permissions(f"bot lacks {name} in #{channel.name}")

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        payload, uploads = await self.read_body(request)
        if isinstance(channel, FakeChannel):
            self._need(channel, Permissions.SEND_MESSAGES, "SEND_MESSAGES")
            if uploads:
                self._need(channel, Permissions.ATTACH_FILES, "ATTACH_FILES")
            if payload.get("message_reference"):
                self._need(channel, Permissions.READ_MESSAGE_HISTORY, "READ_MESSAGE_HISTORY")
        else:
            user = channel.recipient
            if user.dms_closed or user.bot or not self.world.shares_guild_with_bot(user):
                raise E.cannot_dm(f"{user.name} does not accept DMs from the bot")
        payload = {k: v for k, v in payload.items() if k != "nonce"}
        msg = self.world.create_message(
            channel, self.world.bot_user, payload, uploads,
            size_limit=self.world.upload_limit(channel),
        )
        return json_response(self.world.message_payload(msg))

    async def edit_message(self, request: web.Request) -> web.Response:
        channel, msg = self._channel_message(request)
        payload, uploads = await self.read_body(request)
        if msg.author is not self.world.bot_user:
            if set(payload) - {"flags"}:
                raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
            self._need(channel, Permissions.MANAGE_MESSAGES, "MANAGE_MESSAGES")
        self.world.edit_message(msg, payload, uploads, size_limit=self.world.upload_limit(channel))
        return json_response(self.world.message_payload(msg))

    async def delete_message(self, request: web.Request) -> web.Response:
        channel, msg = self._channel_message(request)
        if msg.author is not self.world.bot_user:
            if isinstance(channel, FakeDMChannel):
                raise DiscordError(403, 50003, "Cannot execute action on a DM channel")
            self._need(channel, Permissions.MANAGE_MESSAGES, "MANAGE_MESSAGES")
        self.world.delete_message(msg)
        return no_content()

    async def typing(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        self._need(channel, Permissions.SEND_MESSAGES, "SEND_MESSAGES")
        return no_content()

    async def add_reaction(self, request: web.Request) -> web.Response:
        channel, msg = self._channel_message(request)
        self._need(channel, Permissions.ADD_REACTIONS | Permissions.READ_MESSAGE_HISTORY,
                   "ADD_REACTIONS")
        emoji = unquote(request.match_info["emoji"])
        msg.reactions.setdefault(emoji, set()).add(self.world.bot_user.id)
        self.world.changed()
        return no_content()

    async def remove_reaction(self, request: web.Request) -> web.Response:
        _, msg = self._channel_message(request)
        emoji = unquote(request.match_info["emoji"])
        msg.reactions.get(emoji, set()).discard(self.world.bot_user.id)
        self.world.changed()
        return no_content()

    # ------------------------------------------------------------------ guilds

    async def get_guild(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        data = guild.payload(full=False)
        if request.query.get("with_counts", "").lower() in ("1", "true"):
            data["approximate_member_count"] = len(guild.members)
            data["approximate_presence_count"] = 0
        return json_response(data)

    async def get_guild_channels(self, request: web.Request) -> web.Response:
        return json_response([c.payload() for c in self._guild(request).channels])

    async def get_roles(self, request: web.Request) -> web.Response:
        return json_response([r.payload() for r in self._guild(request).roles.values()])

    async def list_members(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        limit = max(1, min(1000, int(request.query.get("limit", 1))))
        after = int(request.query.get("after", 0))
        members = sorted((m for m in guild.members.values() if m.id > after), key=lambda m: m.id)
        return json_response([m.payload() for m in members[:limit]])

    async def get_member(self, request: web.Request) -> web.Response:
        guild = self._guild(request)
        member = guild.members.get(_snowflake(request, "user_id"))
        if member is None:
            raise E.unknown("Member")
        return json_response(member.payload())

    # ------------------------------------------------------------------ CDN

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        att = self.world.attachments.get(_snowflake(request, "attachment_id"))
        if (
            att is None
            or str(att.channel_id) != request.match_info["channel_id"]
            or unquote(request.match_info["filename"]) != att.filename
        ):
            return web.Response(status=404, text="Not Found")
        if "ex" in request.query and int(request.query["ex"], 16) < self.world.now():
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(
            body=att.data,
            headers={"Content-Type": att.content_type or "application/octet-stream"},
        )


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None


def _snowflake(request: web.Request, key: str) -> int:
    try:
        return int(request.match_info[key])
    except (KeyError, ValueError):
        raise form_error([FieldError((key,), "NUMBER_TYPE_COERCE",
                                     "Value is not snowflake.")]) from None


def _route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return request.path.removeprefix(API_PREFIX)
    return resource.canonical.removeprefix(API_PREFIX)


def _needs_bot_auth(api_path: str) -> bool:
    """Interaction callbacks and webhooks are authorised by their token; GET /gateway is public."""
    return api_path != "/gateway" and not api_path.startswith(("/webhooks/", "/interactions/"))


def _bucket(route: str) -> str:
    return hashlib.md5(route.encode()).hexdigest()


def _ratelimit_headers(response: web.StreamResponse, route: str) -> None:
    if response.status == 429 or "X-RateLimit-Bucket" in response.headers:
        return
    now = time.time()
    response.headers.update(
        {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{now + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": _bucket(route),
        }
    )


def _normalise_options(options: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store options as Discord echoes them (``required`` only when true, nested options)."""
    result = []
    for opt in options:
        item = dict(opt)
        if not item.get("required"):
            item.pop("required", None)
        if "options" in item:
            item["options"] = _normalise_options(item["options"] or [])
        result.append(item)
    return result
