"""Fixtures: a fake Discord with one guild, and the self-test bot logged into it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakediscord import FakeDiscord
from tests.fakediscord.fixtures import Server, add_server, discord_urls, fake
from tests.fakediscord_selftest.botkit import SelfTestBot, running

__all__ = ["Server", "bot", "discord_urls", "fake", "server"]


@pytest.fixture
def server(fake: FakeDiscord) -> Server:
    return add_server(fake)


@pytest.fixture
async def bot(fake: FakeDiscord, server: Server) -> AsyncIterator[SelfTestBot]:
    async with running(SelfTestBot(dev_guild_id=server.guild.id), fake) as bot:
        assert isinstance(bot, SelfTestBot)
        yield bot
