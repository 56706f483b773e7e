"""Fixtures: a fake Discord with one guild, and the self-test bot logged into it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from tests.fakediscord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeMember,
    FakeRole,
    Permissions,
    restore_discord_urls,
)
from tests.fakediscord_selftest.botkit import SelfTestBot, running


@pytest.fixture(autouse=True)
def discord_urls() -> Iterator[None]:
    """discord.py's REST base and gateway URL are class attributes: restore them."""
    with restore_discord_urls():
        yield


@dataclass
class Server:
    guild: FakeGuild
    channel: FakeChannel
    admin_role: FakeRole
    admin: FakeMember
    alice: FakeMember
    bob: FakeMember


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(first_response_timeout=3.0) as fake:
        yield fake


@pytest.fixture
def server(fake: FakeDiscord) -> Server:
    guild = fake.add_guild("Test Server")
    admin_role = fake.add_role(guild, "Admins", permissions=Permissions.MANAGE_GUILD)
    return Server(
        guild=guild,
        channel=guild.channels[0],
        admin_role=admin_role,
        admin=fake.add_member(guild, "admin", roles=[admin_role]),
        alice=fake.add_member(guild, "alice"),
        bob=fake.add_member(guild, "bob"),
    )


@pytest.fixture
async def bot(fake: FakeDiscord, server: Server) -> AsyncIterator[SelfTestBot]:
    async with running(SelfTestBot(dev_guild_id=server.guild.id), fake) as bot:
        assert isinstance(bot, SelfTestBot)
        yield bot
