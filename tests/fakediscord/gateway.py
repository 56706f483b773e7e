"""The gateway websocket: HELLO, IDENTIFY/READY, heartbeats, RESUME and dispatches.

Frames are text JSON only and never compressed: discord.py parses text frames as plain JSON, so
the ``compress=zlib-stream`` query it sends is ignored (and permessage-deflate is refused).
Dispatches go through a per-session log so a resumed session can be replayed what it missed.

Sharding as Discord does it: IDENTIFY may carry ``shard: [shard_id, shard_count]``; a session
receives only the guilds with ``(guild_id >> 22) % shard_count == shard_id`` (READY, GUILD_CREATE,
every guild event and interaction), DMs go to shard 0. IDENTIFYs are rate limited per bucket
(``shard_id % max_concurrency``): one per ``IDENTIFY_INTERVAL`` seconds; a faster one is a
violation answered with INVALID_SESSION, as Discord answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from . import errors as E

if TYPE_CHECKING:
    from .state import World

_log = logging.getLogger(__name__)

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

# Closing with these (or a normal 1000/1001 by the client) ends the session for good.
NON_RESUMABLE_CLIENT_CODES = {1000, 1001}
#: Seconds between two IDENTIFYs in one rate-limit bucket (Discord: max_concurrency per 5 s).
IDENTIFY_INTERVAL = 5.0


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events (Discord's formula)."""
    return (guild_id >> 22) % shard_count


@dataclass(frozen=True)
class IdentifyRecord:
    """One IDENTIFY the gateway received (real monotonic time: the client sleeps real time)."""

    at: float
    shard_id: int
    shard_count: int
    bucket: int
    accepted: bool


class Session:
    """One identified gateway session; outlives its sockets until closed normally."""

    def __init__(self, session_id: str, intents: int, shard: list[int] | None) -> None:
        self.session_id = session_id
        self.intents = intents
        self.shard = shard
        # Without a `shard` field the session is the only shard: [0, 1].
        self.shard_id, self.shard_count = (shard[0], shard[1]) if shard else (0, 1)
        self.seq = 0
        self.log: list[tuple[int, str]] = []
        self.sent_upto = 0
        self.ws: web.WebSocketResponse | None = None
        self.resumable = True
        self.identify_count = 1
        self.resumed_count = 0
        self.ready = False
        self.wakeups: set[asyncio.Event] = set()

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def receives(self, guild_id: int | None) -> bool:
        """Whether events of `guild_id` (None: DMs and guild-less events) go to this shard."""
        if guild_id is None:
            return self.shard_id == 0
        return shard_of(guild_id, self.shard_count) == self.shard_id

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        self.seq += 1
        frame = json.dumps({"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data})
        self.log.append((self.seq, frame))
        for event in self.wakeups:
            event.set()
        return self.seq


class Gateway:
    """Serves ``/gateway`` (and ``/gateway/resume``) for the one bot application."""

    def __init__(
        self,
        world: World,
        *,
        heartbeat_interval: float,
        shard_count: int = 1,
        max_concurrency: int = 1,
        identify_interval: float = IDENTIFY_INTERVAL,
    ) -> None:
        self.world = world
        self.heartbeat_interval = heartbeat_interval
        self.identify_interval = identify_interval
        # What GET /gateway/bot recommends and allows.
        self.shard_count = shard_count
        self.max_concurrency = max_concurrency
        self.sessions: dict[str, Session] = {}
        # The most recently identified session, and the live one per shard id.
        self.current: Session | None = None
        self.by_shard: dict[int, Session] = {}
        self.identifies: list[IdentifyRecord] = []
        self._last_identify: dict[int, float] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.closed_codes: list[int | None] = []
        self.connections = 0
        self._closed_by_us: set[web.WebSocketResponse] = set()

    # -------------------------------------------------------------- public helpers

    def dispatch(self, event: str, data: dict[str, Any], intent: int | None) -> bool:
        """Queue a dispatch for the session of the shard that owns the event's guild, if its
        intents ask for it."""
        session = self.session_for(_guild_of(event, data))
        if session is None:
            return False
        if intent is not None and not session.intents & intent:
            return False
        session.dispatch(event, data)
        return True

    def session_for(self, guild_id: int | None) -> Session | None:
        """The live session receiving `guild_id`'s events (None: DMs, shard 0)."""
        for session in self.by_shard.values():
            if session.resumable and session.receives(guild_id):
                return session
        return None

    async def disconnect(self, code: int = 4000) -> None:
        session = self.current
        if session is None or session.ws is None:
            raise RuntimeError("no connected gateway session")
        ws = session.ws
        session.ws = None
        self._closed_by_us.add(ws)
        await ws.close(code=code, message=b"fake disconnect")

    async def send_op(self, op: int, data: Any = None) -> None:
        session = self.current
        if session is None or session.ws is None:
            raise RuntimeError("no connected gateway session")
        await session.ws.send_str(json.dumps({"op": op, "d": data}))

    async def close(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"fake discord shutting down")

    # -------------------------------------------------------------- the websocket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("encoding", "json") != "json":
            return web.Response(status=400, text="only encoding=json is supported")
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.connections += 1
        self.sockets.add(ws)
        session: Session | None = None
        writer: asyncio.Task[None] | None = None
        try:
            await ws.send_str(json.dumps(
                {"op": OP_HELLO, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}}
            ))
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"binary frames are not supported")
                    break
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                    op = frame["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                data = frame.get("d")
                if op == OP_HEARTBEAT:
                    await ws.send_str(json.dumps({"op": OP_HEARTBEAT_ACK}))
                elif op == OP_IDENTIFY:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = await self._identify(ws, data)
                    if session is None:
                        break
                    writer = asyncio.create_task(self._writer(ws, session))
                elif op == OP_RESUME:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = self._resume(ws, data)
                    if session is None:
                        await ws.send_str(json.dumps({"op": OP_INVALID_SESSION, "d": False}))
                        continue
                    writer = asyncio.create_task(self._writer(ws, session))
                elif op == OP_REQUEST_MEMBERS:
                    if session is not None:
                        self._members_chunk(session, data)
                elif op == OP_PRESENCE:
                    pass
                elif session is None:
                    await ws.close(code=4003, message=b"Not authenticated.")
                    break
        finally:
            self.sockets.discard(ws)
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            self.closed_codes.append(ws.close_code)
            client_closed = ws not in self._closed_by_us
            self._closed_by_us.discard(ws)
            if session is not None:
                if session.ws is ws:
                    session.ws = None
                # Discord ends a session when the *client* closes with 1000/1001.
                if client_closed and ws.close_code in NON_RESUMABLE_CLIENT_CODES:
                    session.resumable = False
            self.world.changed()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: Any) -> Session | None:
        if not isinstance(data, dict) or data.get("token") != self.world.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        if "intents" not in data:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = Session(secrets.token_hex(16), int(data["intents"]), shard)
        if not self._identify_allowed(session):
            # Discord answers a too-early IDENTIFY with INVALID_SESSION (not resumable).
            await ws.send_str(json.dumps({"op": OP_INVALID_SESSION, "d": False}))
            return None
        old = self.by_shard.get(session.shard_id)
        if old is not None:
            old.resumable = False
        if self.current is not None and self.current.shard_count != session.shard_count:
            # A bot started with another shard count replaces every older session.
            for other in self.by_shard.values():
                other.resumable = False
            self.by_shard.clear()
        self.sessions[session.session_id] = session
        self.current = session
        self.by_shard[session.shard_id] = session
        session.ws = ws
        world = self.world
        host = ws_base(world.base_url)
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**world.bot_user.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [
                {"id": str(g.id), "unavailable": True}
                for g in world.guilds.values()
                if world.bot_user.id in g.members and session.receives(g.id)
            ],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": f"{host}/gateway/resume",
            "application": {"id": str(world.application_id), "flags": 0},
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "guild_join_requests": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": ["fake"],
            "_trace": ["fake-discord"],
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        session.dispatch("READY", ready)
        for guild in world.guilds.values():
            if world.bot_user.id in guild.members and session.receives(guild.id):
                session.dispatch("GUILD_CREATE", guild.payload(full=True))
        session.ready = True
        world.changed()
        return session

    def _identify_allowed(self, session: Session) -> bool:
        """One IDENTIFY per bucket per `identify_interval`; a faster one is recorded as broken."""
        now = time.monotonic()
        bucket = session.shard_id % self.max_concurrency
        last = self._last_identify.get(bucket)
        accepted = last is None or now - last >= self.identify_interval
        self.identifies.append(
            IdentifyRecord(now, session.shard_id, session.shard_count, bucket, accepted)
        )
        if not accepted:
            assert last is not None
            self.world.violate(
                E.DiscordError(
                    429, 0, "IDENTIFY rate limited",
                    detail=f"shard {session.shard_id}/{session.shard_count} identified "
                    f"{now - last:.2f}s after the previous IDENTIFY in bucket {bucket} "
                    f"(max_concurrency {self.max_concurrency}: one per "
                    f"{self.identify_interval:g}s)",
                ),
                "GATEWAY", "IDENTIFY",
            )
            return False
        self._last_identify[bucket] = now
        return True

    def _resume(self, ws: web.WebSocketResponse, data: Any) -> Session | None:
        if not isinstance(data, dict) or data.get("token") != self.world.token:
            return None
        session = self.sessions.get(str(data.get("session_id")))
        if (session is None or not session.resumable
                or self.by_shard.get(session.shard_id) is not session):
            return None
        seq = data.get("seq") or 0
        if seq > session.seq:
            return None
        if session.ws is not None and not session.ws.closed:
            old = session.ws
            asyncio.get_running_loop().create_task(old.close(code=4000))
        session.ws = ws
        session.sent_upto = int(seq)
        session.resumed_count += 1
        session.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        self.world.changed()
        return session

    def _members_chunk(self, session: Session, data: Any) -> None:
        if not isinstance(data, dict):
            return
        guild = self.world.guilds.get(int(data.get("guild_id", 0)))
        if guild is None:
            return
        members = list(guild.members.values())
        query = data.get("query") or ""
        if query:
            members = [m for m in members if m.name.lower().startswith(query.lower())]
        user_ids = data.get("user_ids")
        not_found: list[str] = []
        if user_ids:
            wanted = {int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            members = [m for m in members if m.id in wanted]
            not_found = [str(u) for u in wanted - {m.id for m in members}]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _writer(self, ws: web.WebSocketResponse, session: Session) -> None:
        """Send the session's dispatch log in order, from where this socket left off."""
        wakeup = asyncio.Event()
        session.wakeups.add(wakeup)
        try:
            while not ws.closed and session.ws is ws:
                wakeup.clear()
                pending = [(s, f) for s, f in session.log if s > session.sent_upto]
                for seq, frame in pending:
                    await ws.send_str(frame)
                    session.sent_upto = seq
                if not pending:
                    await wakeup.wait()
        except (ConnectionResetError, RuntimeError) as exc:
            _log.debug("gateway writer stopped: %s", exc)
        finally:
            session.wakeups.discard(wakeup)


def _valid_shard(shard: Any) -> bool:
    return (
        isinstance(shard, list) and len(shard) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
        and 0 <= shard[0] < shard[1]
    )


#: Guild events whose payload is the guild itself (its id is `id`, not `guild_id`).
_GUILD_PAYLOAD_EVENTS = {"GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"}


def _guild_of(event: str, data: dict[str, Any]) -> int | None:
    """The guild an event belongs to (None for DMs and guild-less events)."""
    raw = data.get("id") if event in _GUILD_PAYLOAD_EVENTS else data.get("guild_id")
    return int(raw) if raw is not None else None


def ws_base(http_base: str) -> str:
    return "ws://" + http_base.removeprefix("http://")
