"""invoke() refuses what Discord's client would never send, checked against the synced schema."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakediscord import FakeDiscord, InvalidInvocation
from tests.fakediscord_selftest.botkit import SelfTestBot
from tests.fakediscord_selftest.conftest import Server


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        ("imagine", {"prompt": "x", "colour": "red"}, "unknown option 'colour'"),
        ("imagine", {"count": 2}, "missing required option 'prompt'"),
        ("imagine", {"prompt": 5}, "expected a str"),
        ("imagine", {"prompt": "x", "count": "2"}, "expected a number"),
        ("imagine", {"prompt": "x", "count": True}, "expected a number"),
        ("imagine", {"prompt": "x", "count": 2.5}, "expected an int"),
        ("imagine", {"prompt": "x", "count": 5}, "above max_value=4"),
        ("imagine", {"prompt": "x", "count": 0}, "below min_value=1"),
        ("imagine", {"prompt": "x", "guidance": 30.5}, "above max_value=30"),
        ("imagine", {"prompt": "x" * 101}, "longer than max_length=100"),
        ("imagine", {"prompt": "   "}, "non-empty"),
        ("imagine", {"prompt": "x", "aspect": "4:3"}, "not one of the choices"),
        ("imagine", {"prompt": "x", "private": 1}, "expected a bool"),
        ("imagine nope", {"prompt": "x"}, "no subcommand 'nope'"),
        ("quota", {}, "needs a subcommand"),
        ("quota rules", {}, "needs a subcommand"),
        ("quota set", {"scope": "galaxy", "limit": 1}, "not one of the choices"),
        ("quota set", {"scope": "member", "limit": 1, "member": "bob"}, "wrong type"),
        ("draw", {"prompt": "x"}, "/draw is not synced"),
    ],
)
async def test_invalid_invocations_are_refused(
    fake: FakeDiscord, bot: SelfTestBot, server: Server, command: str, options: dict[str, Any],
    message: str,
) -> None:
    """Each schema violation raises InvalidInvocation naming the problem; nothing is sent."""
    with pytest.raises(InvalidInvocation, match=message.replace("(", r"\(")):
        await fake.invoke(server.channel, server.admin, command, options=options)
    assert fake.interactions == []


async def test_subcommand_in_a_group_is_nested(fake: FakeDiscord, bot: SelfTestBot,
                                               server: Server) -> None:
    """'quota rules show' is sent as group -> subcommand options, and reaches its handler."""

    async def show(interaction: Any, **_: object) -> str:
        await interaction.response.send_message("rules")
        return interaction.command.qualified_name

    bot.handlers["quota rules show"] = show
    ix = await fake.invoke(server.channel, server.admin, "quota rules show")
    assert ix.payload["data"]["options"] == [
        {"name": "rules", "type": 2, "options": [{"name": "show", "type": 1, "options": []}]}
    ]
    assert await bot.next_outcome() == "quota rules show"


async def test_default_member_permissions_hide_the_command(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """Without Manage Server a member cannot run /quota unless the server overrides the hint."""
    with pytest.raises(InvalidInvocation, match="default_member_permissions"):
        await fake.invoke(server.channel, server.bob, "quota set", scope="server", limit=1)
    fake.override_command_permissions(server.guild, "quota")
    ix = await fake.invoke(server.channel, server.bob, "quota set", scope="server", limit=1)
    await ix.wait_response()
    assert not ix.payload["member"]["permissions"] == "0"


async def test_non_member_cannot_invoke(fake: FakeDiscord, bot: SelfTestBot,
                                        server: Server) -> None:
    """A user who is not in the guild cannot use its channels."""
    stranger = fake.add_user("stranger")
    with pytest.raises(InvalidInvocation, match="not a member"):
        await fake.invoke(server.channel, stranger, "imagine", prompt="x")
