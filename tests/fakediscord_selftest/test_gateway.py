"""Gateway behaviour: no compression, resume with replay, reconnect and invalid sessions."""

from __future__ import annotations

import discord

from tests.fakediscord import FakeDiscord
from tests.fakediscord_selftest.botkit import SelfTestBot, running
from tests.fakediscord_selftest.conftest import Server


async def test_ready_and_guilds(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """READY then GUILD_CREATE give discord.py a full guild: roles, channels, members, me."""
    guild = bot.get_guild(server.guild.id)
    assert guild is not None and guild.name == "Test Server"
    assert guild.me is not None and guild.me.id == fake.bot_user_id
    assert guild.owner_id == server.guild.owner_id
    assert {r.name for r in guild.roles} >= {"@everyone", "Admins", fake.bot_user.name}
    channel = guild.get_channel(server.channel.id)
    assert isinstance(channel, discord.TextChannel) and not channel.is_nsfw()
    assert guild.filesize_limit == server.guild.attachment_size_limit
    session = fake.session
    assert session is not None and session.identify_count == 1
    assert session.intents == discord.Intents.default().value


async def test_guild_created_after_login_is_announced(fake: FakeDiscord, bot: SelfTestBot,
                                                      server: Server) -> None:
    """A guild, role and age-restricted channel added later reach the bot as gateway events."""
    later = fake.add_guild("Later", premium_tier=2)
    fake.add_channel(later, "art", nsfw=True)
    await fake.wait_until(lambda: bot.get_guild(later.id) is not None, timeout=5)
    guild = bot.get_guild(later.id)
    assert guild is not None and guild.filesize_limit == 50 * 1024 * 1024
    await fake.wait_until(lambda: len(guild.text_channels) == 2, timeout=5)
    assert [c.is_nsfw() for c in guild.text_channels] == [False, True]


async def test_resume_replays_missed_dispatches(fake: FakeDiscord, bot: SelfTestBot,
                                                server: Server) -> None:
    """After a drop the client RESUMEs at resume_gateway_url; events sent meanwhile arrive."""
    session = fake.session
    assert session is not None
    await fake.disconnect_gateway()
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="while away")
    await fake.wait_for_resume()
    await ix.wait_response()
    assert (await ix.wait_original()).content == "imagine ok"
    assert fake.session is session and session.resumed_count == 1
    assert session.identify_count == 1
    fake.assert_no_violations()


async def test_reconnect_request_resumes(fake: FakeDiscord, bot: SelfTestBot,
                                         server: Server) -> None:
    """op 7 RECONNECT makes the client reconnect and resume the same session."""
    await fake.request_reconnect()
    session = await fake.wait_for_resume()
    ix = await fake.invoke(server.channel, server.bob, "imagine", prompt="x")
    await ix.wait_response()
    assert session.resumed_count == 1


async def test_invalid_session_makes_the_client_identify_again(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """op 9 (not resumable) is followed by a fresh IDENTIFY and a new session."""
    # The test bot skips discord.py's 5 s wait before re-identifying: lift the fake's
    # IDENTIFY spacing (tested in test_sharding.py) for this test.
    fake.gateway.identify_interval = 0.0
    old = fake.session
    await fake.invalidate_session()
    await fake.wait_until(lambda: fake.session is not old and fake.session.ready, timeout=10)
    ix = await fake.invoke(server.channel, server.bob, "imagine", prompt="x")
    await ix.wait_response()


async def test_restarted_bot_answers_old_buttons(fake: FakeDiscord, server: Server) -> None:
    """A second bot process (new session) handles a DynamicItem on a message from the first."""
    from tests.fakediscord_selftest.botkit import CounterButton

    async def counter(interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(CounterButton(7))
        await interaction.response.send_message("count=7", view=view)

    async with running(SelfTestBot(), fake) as first:
        assert isinstance(first, SelfTestBot)
        first.handlers["counter"] = counter
        ix = await fake.invoke(server.channel, server.alice, "counter")
        msg = await ix.wait_original()
    first_session = fake.session
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(SelfTestBot(), fake) as second:
        assert isinstance(second, SelfTestBot)
        assert fake.session is not first_session
        click = await fake.click(msg, "counter:7", server.bob)
        await click.wait_response()
        assert await second.next_outcome() == ("counter", 7)
    assert msg.content == "count=8"
    assert len(fake.gateway.sessions) == 2
