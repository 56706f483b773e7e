"""DM invocations, select menus, attachment options, schema checks on sync, user messages."""

from __future__ import annotations

import discord
import pytest
from discord import app_commands

from tests.fakediscord import FakeDiscord, InvalidInvocation
from tests.fakediscord_selftest.botkit import SelfTestBot, running
from tests.fakediscord_selftest.conftest import Server


async def test_command_in_dms(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """A global command allowed in DMs arrives with ``user`` (no member) and a DMChannel."""

    async def where(interaction: discord.Interaction, **_: object) -> object:
        await interaction.response.send_message("hi")
        return type(interaction.channel), type(interaction.user), interaction.guild_id

    bot.handlers["imagine"] = where
    dm = fake.dm_channel(server.alice)
    ix = await fake.invoke(dm, server.alice, "imagine", prompt="x")
    assert await bot.next_outcome() == (discord.DMChannel, discord.User, None)
    assert (await ix.wait_original()).content == "hi"
    assert fake.dm_messages(server.alice)[0].content == "hi"
    with pytest.raises(InvalidInvocation, match="not in this DM"):
        await fake.invoke(dm, server.bob, "imagine", prompt="x")


async def test_select_menu(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """A string select delivers the chosen values; values not offered are refused."""
    chosen: list[list[str]] = []

    class Pick(discord.ui.View):
        @discord.ui.select(custom_id="pick", options=[discord.SelectOption(label=v)
                                                      for v in ("a", "b")])
        async def pick(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
            chosen.append(select.values)
            await interaction.response.defer()

    async def send(interaction: discord.Interaction, **_: object) -> None:
        await interaction.response.send_message("pick one", view=Pick())

    bot.handlers["imagine"] = send
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    msg = await ix.wait_original()
    with pytest.raises(InvalidInvocation, match=r"not 1\.\.1"):
        await fake.select(msg, "pick", server.alice, ["c"])
    sel = await fake.select(msg, "pick", server.alice, ["b"])
    await sel.wait_response()
    assert sel.response_type == 6 and chosen == [["b"]]


async def test_attachment_option_is_resolved(fake: FakeDiscord, server: Server) -> None:
    """An attachment option is put in data.resolved and readable by the bot."""
    bot = SelfTestBot()
    result: list[bytes] = []

    @bot.tree.command(description="Upload an init image")
    async def upload(interaction: discord.Interaction, image: discord.Attachment) -> None:
        result.append(await image.read())
        await interaction.response.send_message(image.filename)

    async with running(bot, fake):
        await fake.wait_for_commands(["upload"])
        att = fake.make_attachment("init.png", b"\x89PNG\r\n\x1a\nfake")
        ix = await fake.invoke(server.channel, server.alice, "upload", image=att)
        assert (await ix.wait_original()).content == "init.png"
    assert result == [b"\x89PNG\r\n\x1a\nfake"]


async def test_invalid_schema_fails_the_sync(fake: FakeDiscord, bot: SelfTestBot) -> None:
    """A bulk overwrite breaking Discord's schema rules is a 400 / 50035 with the field path."""
    bad = [{
        "name": "Imagine", "description": "d" * 101, "type": 1,
        "options": [
            {"name": "a", "description": "x", "type": 3},
            {"name": "b", "description": "x", "type": 3, "required": True},
        ],
    }]
    with pytest.raises(discord.HTTPException) as info:
        await bot.http.bulk_upsert_global_commands(fake.application_id, payload=bad)
    assert (info.value.status, info.value.code) == (400, 50035)
    detail = fake.violations[0].detail
    assert "0.name" in detail and "0.description" in detail and "0.options.1.required" in detail
    assert [c["name"] for c in fake.commands()] != ["Imagine"]


async def test_sync_failure_raises_command_sync_failure(fake: FakeDiscord, server: Server) -> None:
    """discord.py maps the 50035 on sync to CommandSyncFailure."""
    bot = SelfTestBot()

    @bot.tree.command(description="x")
    @app_commands.choices(v=[app_commands.Choice(name=str(i), value=i) for i in range(25)])
    async def many(interaction: discord.Interaction, v: int) -> None:
        await interaction.response.send_message("x")

    async with running(bot, fake):
        payload = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
        many_cmd = next(p for p in payload if p["name"] == "many")
        many_cmd["options"][0]["choices"].append({"name": "26", "value": 26})
        with pytest.raises(discord.HTTPException):
            await bot.http.bulk_upsert_global_commands(fake.application_id, payload=payload)


async def test_user_message_reaches_the_bot(fake: FakeDiscord, bot: SelfTestBot,
                                            server: Server) -> None:
    """A member's message is dispatched as MESSAGE_CREATE (GUILD_MESSAGES intent)."""
    received: list[discord.Message] = []

    async def collect(message: discord.Message) -> None:
        received.append(message)

    bot.add_listener(collect, "on_message")
    fake.user_message(server.channel, server.bob, "hello bot")
    await fake.wait_until(lambda: received, timeout=5)
    assert received[0].author.id == server.bob.id and received[0].content == "hello bot"
