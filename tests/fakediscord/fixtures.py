"""Pytest fixtures shared by the suites that run a real discord.py client against the fake
(tests/e2e, tests/fakediscord_selftest): the fake itself, and one server with members.

A conftest imports the fixtures it wants and lists them in `__all__`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .models import FakeChannel, FakeGuild, FakeMember, FakeRole
from .permissions import Permissions
from .server import FakeDiscord, restore_discord_urls

__all__ = ["Server", "add_server", "discord_urls", "fake"]


@pytest.fixture(autouse=True)
def discord_urls() -> Iterator[None]:
    """discord.py's REST base and gateway URL are class attributes: restore them."""
    with restore_discord_urls():
        yield


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(first_response_timeout=3.0) as fake:
        yield fake


@dataclass
class Server:
    """A test server: its first channel, an admin (Manage Server) and two plain members."""

    guild: FakeGuild
    channel: FakeChannel
    admin_role: FakeRole
    admin: FakeMember
    alice: FakeMember
    bob: FakeMember


def add_server(fake: FakeDiscord, **guild_options: Any) -> Server:
    """Add "Test Server" (`guild_options` go to `add_guild`) with its admin role and members."""
    guild = fake.add_guild("Test Server", **guild_options)
    admin_role = fake.add_role(guild, "Admins", permissions=Permissions.MANAGE_GUILD)
    return Server(
        guild=guild,
        channel=guild.channels[0],
        admin_role=admin_role,
        admin=fake.add_member(guild, "admin", roles=[admin_role]),
        alice=fake.add_member(guild, "alice"),
        bob=fake.add_member(guild, "bob"),
    )
