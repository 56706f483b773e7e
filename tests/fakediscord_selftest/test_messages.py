"""Message rules: limits, components, mentions, permissions, DMs, attachments and edits."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord
import pytest
from PIL import Image

from tests.fakediscord import FakeDiscord, InvalidInvocation, Permissions
from tests.fakediscord_selftest.botkit import CounterButton, SelfTestBot
from tests.fakediscord_selftest.conftest import Server


def png(width: int = 8, height: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buf, "PNG")
    return buf.getvalue()


async def _send_error(coro: object) -> tuple[int, int] | None:
    try:
        await coro  # type: ignore[misc]
    except discord.HTTPException as exc:
        return exc.status, exc.code
    return None


async def test_form_body_limits(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """Over-long content, embed title and custom_id, and empty messages are 400s."""
    channel = bot.get_channel(server.channel.id)
    assert isinstance(channel, discord.TextChannel)
    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="x", custom_id="c" * 101))
    long_label = discord.ui.View()
    long_label.add_item(discord.ui.Button(label="l" * 81, custom_id="ok"))
    results = [
        await _send_error(channel.send("x" * 2001)),
        await _send_error(channel.send(embed=discord.Embed(title="t" * 257))),
        await _send_error(channel.send(embed=discord.Embed(description="d" * 4097))),
        await _send_error(channel.send("x", view=view)),
        await _send_error(channel.send("x", view=long_label)),
        await _send_error(channel.send("   ")),
        await _send_error(channel.send("x" * 2000)),
    ]
    assert results == [(400, 50035)] * 5 + [(400, 50006), None]
    assert len(fake.messages(server.channel)) == 1
    assert [v.code for v in fake.violations] == [50035] * 5 + [50006]
    assert "content" in fake.violations[0].detail


async def test_dynamic_button_click_reaches_the_handler(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """A DynamicItem button is found by its custom_id template and edits the message (type 7)."""

    async def counter(interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(CounterButton(0))
        await interaction.response.send_message("count=0", view=view)

    bot.handlers["counter"] = counter
    ix = await fake.invoke(server.channel, server.alice, "counter")
    msg = await ix.wait_original()
    assert await bot.next_outcome() is None  # the /counter handler finished
    assert [(b.label, b.custom_id) for b in msg.buttons()] == [("Count 0", "counter:0")]
    click = await fake.click(msg, "counter:0", server.bob)
    await click.wait_response()
    assert await bot.next_outcome() == ("counter", 0)
    assert click.response_type == 7 and click.original is msg
    assert msg.content == "count=1" and msg.custom_ids() == ["counter:1"]
    assert len(msg.edits) == 1
    assert click.payload["message"]["id"] == str(msg.id)
    with pytest.raises(InvalidInvocation, match="no component 'counter:0'"):
        await fake.click(msg, "counter:0", server.bob)
    fake.assert_no_violations()


async def test_allowed_mentions_decide_who_is_pinged(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """@everyone and role/user mentions ping only as allowed_mentions permits."""
    role = fake.add_role(server.guild, "Artists", mentionable=True)
    channel = bot.get_channel(server.channel.id)
    assert isinstance(channel, discord.TextChannel)
    text = f"@everyone {server.alice.mention} {server.bob.mention} <@&{role.id}>"
    quiet = await channel.send(
        text, allowed_mentions=discord.AllowedMentions(
            everyone=False, roles=False, users=[discord.Object(server.alice.id)]))
    loud = await channel.send(text, allowed_mentions=discord.AllowedMentions.all())
    stored_quiet, stored_loud = fake.messages(server.channel)
    assert stored_quiet.id == quiet.id and stored_loud.id == loud.id
    assert [u.id for u in stored_quiet.mentions] == [server.alice.id]
    assert not stored_quiet.mention_everyone and stored_quiet.mention_roles == []
    assert stored_loud.mention_everyone and stored_loud.mention_roles == [role.id]
    assert {u.id for u in stored_loud.mentions} == {server.alice.id, server.bob.id}
    assert quiet.mentions and not quiet.mention_everyone  # discord.py parsed the same answer
    conflicting = {"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}
    params = discord.http.MultipartParameters(payload=conflicting, multipart=None, files=None)
    with pytest.raises(discord.HTTPException) as info:
        await bot.http.send_message(channel.id, params=params)
    assert (info.value.status, info.value.code) == (400, 50035)


async def test_bot_without_send_permission_is_forbidden(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """deny_bot_send makes channel posts 403 / 50013, while the interaction reply still works."""
    fake.deny_bot_send(server.channel)  # CHANNEL_UPDATE reaches the bot before the interaction

    async def reply(interaction: discord.Interaction, **_: object) -> object:
        await interaction.response.send_message("via the interaction")
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        can_send = channel.permissions_for(channel.guild.me).send_messages
        return can_send, await _send_error(channel.send("direct"))

    bot.handlers["imagine"] = reply
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    assert await bot.next_outcome() == (False, (403, 50013))
    assert (await ix.wait_original()).content == "via the interaction"


async def test_direct_messages(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """DMs open with POST /users/@me/channels; closed DMs are 403 / 50007."""
    user = bot.get_user(server.alice.id) or await bot.fetch_user(server.alice.id)
    await user.send("your image is ready")
    assert [m.content for m in fake.dm_messages(server.alice)] == ["your image is ready"]
    fake.close_dms(server.bob)
    bob = await bot.fetch_user(server.bob.id)
    assert await _send_error(bob.send("hi")) == (403, 50007)


async def test_attachments_are_served_and_openable(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """Uploaded bytes are kept, described (size, type, dimensions) and downloadable."""
    channel = bot.get_channel(server.channel.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send(file=discord.File(io.BytesIO(png(8, 4)), "grid.png"))
    att = sent.attachments[0]
    assert (att.width, att.height, att.content_type) == (8, 4, "image/png")
    stored = fake.messages(server.channel)[0].attachments[0]
    assert stored.data == png(8, 4) and stored.size == att.size
    assert await att.read() == stored.data
    async with aiohttp.ClientSession() as http, http.get(stored.url) as resp:
        assert resp.status == 200
        with Image.open(io.BytesIO(await resp.read())) as img:
            assert img.size == (8, 4)


async def test_edits_keep_history_and_attachments(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """Each edit is recorded with its time; attachments are replaced only when listed."""
    gate = asyncio.Event()

    async def progress(interaction: discord.Interaction, **_: object) -> None:
        await interaction.response.send_message("queued")
        await interaction.edit_original_response(content="50%")
        await gate.wait()
        await interaction.edit_original_response(
            content="done", attachments=[discord.File(io.BytesIO(png()), "grid.png")])
        await interaction.edit_original_response(content="done!")

    bot.handlers["imagine"] = progress
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    msg = await ix.wait_original(lambda m: m.content == "50%")
    waiter = asyncio.create_task(fake.wait_for_edit(msg, lambda m: m.content == "done!"))
    gate.set()
    await bot.next_outcome()
    assert await waiter is msg
    assert [e.content for e in msg.edits] == ["50%", "done", "done!"]
    assert [a.filename for a in msg.attachments] == ["grid.png"]
    assert msg.edits[0].at <= msg.edits[1].at <= msg.edits[2].at
    assert msg.edited_timestamp is not None


async def test_unknown_route_is_a_violation(fake: FakeDiscord, bot: SelfTestBot,
                                            server: Server) -> None:
    """An endpoint the fake does not implement answers 404 and is listed in violations."""
    guild = bot.get_guild(server.guild.id)
    assert guild is not None
    with pytest.raises(discord.NotFound):
        await guild.fetch_emojis()
    assert fake.violations[-1].path == f"/guilds/{server.guild.id}/emojis"


async def test_permissions_for_follows_overwrites(fake: FakeDiscord, server: Server) -> None:
    """Channel overwrites apply @everyone, then roles, then the member; admins bypass them."""
    fake.set_overwrite(server.channel, server.guild.default_role, deny=Permissions.SEND_MESSAGES)
    assert not fake.permissions_for(server.bob, server.channel) & Permissions.SEND_MESSAGES
    fake.set_overwrite(server.channel, server.bob, allow=Permissions.SEND_MESSAGES)
    assert fake.permissions_for(server.bob, server.channel) & Permissions.SEND_MESSAGES
    boss = fake.add_role(server.guild, "Boss", permissions=Permissions.ADMINISTRATOR)
    fake.add_member_role(server.alice, boss)
    fake.set_overwrite(server.channel, server.alice, deny=Permissions.VIEW_CHANNEL)
    assert fake.permissions_for(server.alice, server.channel) & Permissions.VIEW_CHANNEL
