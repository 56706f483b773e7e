"""Login, command sync and one interaction round trip with the real discord.py client."""

from __future__ import annotations

import discord
import pytest

from tests.fakediscord import FakeDiscord
from tests.fakediscord_selftest.botkit import SelfTestBot, point_discord_py_at, running
from tests.fakediscord_selftest.conftest import Server


async def test_bot_logs_in_and_syncs_the_schema(fake: FakeDiscord, bot: SelfTestBot,
                                                server: Server) -> None:
    """The synced global schema keeps Range bounds, choices and the subcommand group."""
    imagine, quota = await fake.wait_for_commands(["imagine", "quota"])
    opts = {o["name"]: o for o in imagine["options"]}
    assert opts["prompt"]["required"] is True and opts["prompt"]["max_length"] == 100
    assert (opts["count"]["min_value"], opts["count"]["max_value"]) == (1, 4)
    assert [c["value"] for c in opts["aspect"]["choices"]] == ["1:1", "16:9"]
    assert quota["default_member_permissions"] == str(discord.Permissions(manage_guild=True).value)
    group = next(o for o in quota["options"] if o["name"] == "rules")
    assert group["type"] == 2 and group["options"][0]["name"] == "show"
    await fake.wait_for_commands(["local"], guild=server.guild)
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    assert bot.get_guild(server.guild.id) is not None
    fake.assert_no_violations()


async def test_slash_command_round_trip(fake: FakeDiscord, bot: SelfTestBot,
                                        server: Server) -> None:
    """An invocation reaches the handler with typed options and its reply is stored."""

    async def imagine(interaction: discord.Interaction, **kw: object) -> dict[str, object]:
        await interaction.response.send_message(f"drawing {kw['prompt']}")
        return {"options": kw, "user": interaction.user, "channel": interaction.channel,
                "size": interaction.filesize_limit, "perms": interaction.permissions}

    bot.handlers["imagine"] = imagine
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="a dog", count=2,
                           guidance=5)
    seen = await bot.next_outcome()
    assert seen["options"] == {"prompt": "a dog", "count": 2, "aspect": "1:1", "guidance": 5.0,
                               "private": False}
    assert isinstance(seen["user"], discord.Member) and seen["user"].id == server.alice.id
    assert seen["channel"].id == server.channel.id
    assert seen["size"] == 10 * 1024 * 1024
    assert seen["perms"].send_messages and not seen["perms"].manage_guild
    await ix.wait_response()
    assert ix.response_type == 4 and not ix.ephemeral
    msg = await ix.wait_original()
    assert msg.content == "drawing a dog" and msg.type == 20
    assert fake.messages(server.channel) == [msg]
    fake.assert_no_violations()


async def test_wrong_token_fails_login(fake: FakeDiscord, server: Server) -> None:
    """GET /users/@me with an unknown token is a 401, which discord.py turns into LoginFailure."""
    point_discord_py_at(fake)
    bot = SelfTestBot()
    try:
        with pytest.raises(discord.LoginFailure):
            await bot.login("not-the-token")
    finally:
        await bot.close()


async def test_admin_permissions_reach_the_bot(fake: FakeDiscord, bot: SelfTestBot,
                                               server: Server) -> None:
    """Member permissions are computed like Discord: roles OR'ed, the owner has everything."""

    async def quota_set(interaction: discord.Interaction, **kw: object) -> object:
        await interaction.response.send_message("ok", ephemeral=True)
        return interaction.permissions, kw

    bot.handlers["quota set"] = quota_set
    await fake.invoke(server.channel, server.admin, "quota set", scope="member", limit=5,
                      member=server.bob)
    perms, kw = await bot.next_outcome()
    assert perms.manage_guild and not perms.administrator
    assert isinstance(kw["member"], discord.Member) and kw["member"].id == server.bob.id
    await fake.invoke(server.channel, server.guild.owner, "quota set", scope="role", limit=1,
                      role=server.admin_role)
    perms, kw = await bot.next_outcome()
    assert perms.administrator
    assert isinstance(kw["role"], discord.Role) and kw["role"].name == "Admins"


async def test_guild_command_only_in_its_guild(fake: FakeDiscord, server: Server) -> None:
    """A command synced to one guild is not invocable in another guild."""
    from tests.fakediscord import InvalidInvocation

    other = fake.add_guild("Other")
    member = fake.add_member(other, server.alice.user)
    async with running(SelfTestBot(dev_guild_id=server.guild.id), fake):
        await fake.wait_for_commands(["local"], guild=server.guild)
        ix = await fake.invoke(server.channel, server.alice, "local")
        await ix.wait_response()
        with pytest.raises(InvalidInvocation, match="not synced"):
            await fake.invoke(other.channels[0], member, "local")
