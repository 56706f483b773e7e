"""Sharding in the fake gateway, spoken to over a raw websocket (the protocol, frame by frame):
GET /gateway/bot, IDENTIFY with `shard`, guild routing `(guild_id >> 22) % shard_count`, and
Discord's IDENTIFY rate limit per bucket (`shard_id % max_concurrency`, one per 5 s)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord

from tests.fakediscord import FakeDiscord
from tests.fakediscord.gateway import OP_DISPATCH, OP_HELLO, OP_IDENTIFY, OP_INVALID_SESSION

INTENTS = discord.Intents.default().value


@contextlib.asynccontextmanager
async def fake_discord(**options: Any) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(**options) as fake:
        yield fake


@contextlib.asynccontextmanager
async def gateway(fake: FakeDiscord) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http, http.ws_connect(
        f"{fake.gateway_url}?v=10&encoding=json"
    ) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == OP_HELLO
        yield ws


async def identify(ws: aiohttp.ClientWebSocketResponse, fake: FakeDiscord,
                   shard: list[int] | None) -> dict[str, Any]:
    """Send IDENTIFY; returns the first frame the gateway answers with."""
    data: dict[str, Any] = {"token": fake.token, "intents": INTENTS, "properties": {}}
    if shard is not None:
        data["shard"] = shard
    await ws.send_json({"op": OP_IDENTIFY, "d": data})
    return await ws.receive_json(timeout=5)


async def dispatches(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [await ws.receive_json(timeout=5) for _ in range(count)]


async def test_gateway_bot_reports_shards_and_max_concurrency() -> None:
    """GET /gateway/bot recommends the configured shard count and names max_concurrency."""
    async with fake_discord(shards=4, max_concurrency=2) as fake, aiohttp.ClientSession(
        headers={"Authorization": f"Bot {fake.token}"}
    ) as http, http.get(f"{fake.api_base}/gateway/bot") as response:
        body = await response.json()
    assert body["shards"] == 4
    assert body["session_start_limit"]["max_concurrency"] == 2
    assert body["url"] == fake.gateway_url


async def test_each_shard_receives_only_its_guilds() -> None:
    """READY, GUILD_CREATE and later guild events go to the shard owning the guild."""
    async with fake_discord(shards=2, max_concurrency=2) as fake:
        on_0 = fake.add_guild("Zero", shard=(0, 2))
        on_1 = fake.add_guild("One", shard=(1, 2))
        assert (on_0.id >> 22) % 2 == 0 and (on_1.id >> 22) % 2 == 1
        async with gateway(fake) as ws0, gateway(fake) as ws1:
            ready0 = await identify(ws0, fake, [0, 2])
            ready1 = await identify(ws1, fake, [1, 2])
            assert ready0["t"] == ready1["t"] == "READY"
            assert [g["id"] for g in ready0["d"]["guilds"]] == [str(on_0.id)]
            assert [g["id"] for g in ready1["d"]["guilds"]] == [str(on_1.id)]
            assert ready0["d"]["shard"] == [0, 2] and ready1["d"]["shard"] == [1, 2]
            (create0,) = await dispatches(ws0, 1)
            (create1,) = await dispatches(ws1, 1)
            assert (create0["t"], create0["d"]["id"]) == ("GUILD_CREATE", str(on_0.id))
            assert (create1["t"], create1["d"]["id"]) == ("GUILD_CREATE", str(on_1.id))

            fake.add_channel(on_1, "art")
            (event,) = await dispatches(ws1, 1)
            assert (event["op"], event["t"]) == (OP_DISPATCH, "CHANNEL_CREATE")
            assert event["d"]["guild_id"] == str(on_1.id)
            assert fake.gateway.session_for(on_0.id) is fake.shard_session(0)
            assert fake.gateway.session_for(on_1.id) is fake.shard_session(1)
            assert fake.gateway.session_for(None) is fake.shard_session(0)  # DMs: shard 0
            await fake.wait_until_ready(timeout=5)
    assert fake.violations == []


async def test_identify_within_5_s_in_one_bucket_is_refused() -> None:
    """max_concurrency 1: the second shard identifying at once gets INVALID_SESSION and the
    fake records the broken rule; after the window it is accepted."""
    async with fake_discord(shards=2, max_concurrency=1, identify_interval=0.5) as fake:
        async with gateway(fake) as ws0, gateway(fake) as ws1:
            assert (await identify(ws0, fake, [0, 2]))["t"] == "READY"
            refused = await identify(ws1, fake, [1, 2])
            assert refused == {"op": OP_INVALID_SESSION, "d": False}
            assert len(fake.violations) == 1
            assert "IDENTIFY" in str(fake.violations[0]) and "bucket 0" in str(fake.violations[0])
            await fake.wait_identify_window()
        async with gateway(fake) as ws1:
            assert (await identify(ws1, fake, [1, 2]))["t"] == "READY"
    assert [(r.shard_id, r.bucket, r.accepted) for r in fake.identifies] == [
        (0, 0, True), (1, 0, False), (1, 0, True),
    ]


async def test_buckets_identify_concurrently_up_to_max_concurrency() -> None:
    """max_concurrency 2: shards 0 and 1 (buckets 0, 1) may identify together; shard 2 shares
    bucket 0 with shard 0 and must wait."""
    async with fake_discord(shards=4, max_concurrency=2) as fake:
        async with gateway(fake) as ws0, gateway(fake) as ws1, gateway(fake) as ws2:
            assert (await identify(ws0, fake, [0, 4]))["t"] == "READY"
            assert (await identify(ws1, fake, [1, 4]))["t"] == "READY"
            assert (await identify(ws2, fake, [2, 4]))["op"] == OP_INVALID_SESSION
    assert [(r.shard_id, r.bucket, r.accepted) for r in fake.identifies] == [
        (0, 0, True), (1, 1, True), (2, 0, False),
    ]


async def test_invalid_shard_closes_with_4010() -> None:
    """A shard id outside 0..count-1 is refused with close code 4010 (Invalid shard)."""
    async with fake_discord(shards=2) as fake, gateway(fake) as ws:
        await ws.send_json(
            {"op": OP_IDENTIFY, "d": {"token": fake.token, "intents": INTENTS, "shard": [2, 2]}}
        )
        closed = await ws.receive(timeout=5)
        assert closed.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        assert ws.close_code == 4010
