"""Each interaction rule Discord enforces surfaces in discord.py as Discord's own error."""

from __future__ import annotations

import asyncio
import datetime as dt
import io

import discord

from tests.fakediscord import FakeDiscord
from tests.fakediscord_selftest.botkit import SelfTestBot
from tests.fakediscord_selftest.conftest import Server


async def test_late_first_response_is_unknown_interaction(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """Answering after first_response_timeout gives NotFound 10062 and a violation."""
    fake.first_response_timeout = 0.3

    async def slow(interaction: discord.Interaction, **_: object) -> None:
        await asyncio.sleep(0.5)
        await interaction.response.send_message("too late")

    bot.handlers["imagine"] = slow
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    err = await bot.next_outcome()
    assert isinstance(err, discord.NotFound) and err.code == 10062
    assert ix.response_type is None and ix.timed_out
    assert {v.code for v in fake.violations} == {10062}


async def test_never_answering_is_recorded(fake: FakeDiscord, bot: SelfTestBot,
                                           server: Server) -> None:
    """An interaction left unanswered past the deadline is a violation on its own."""
    fake.first_response_timeout = 0.1

    async def silent(interaction: discord.Interaction, **_: object) -> None:
        return None

    bot.handlers["imagine"] = silent
    await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    await fake.wait_until(lambda: fake.violations, timeout=2)
    assert fake.violations[0].code == 10062


async def test_second_acknowledgement_is_rejected(fake: FakeDiscord, bot: SelfTestBot,
                                                  server: Server) -> None:
    """A second initial response gives 400 / 40060 (bypassing discord.py's own guard)."""

    async def twice(interaction: discord.Interaction, **_: object) -> None:
        await interaction.response.defer()
        interaction.response._response_type = None  # defeat the client-side check
        await interaction.response.send_message("again")

    bot.handlers["imagine"] = twice
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    err = await bot.next_outcome()
    assert isinstance(err, discord.HTTPException) and (err.status, err.code) == (400, 40060)
    assert ix.response_type == 5
    assert [v.code for v in fake.violations] == [40060]


async def test_token_expires_after_fifteen_minutes(fake: FakeDiscord, bot: SelfTestBot,
                                                   server: Server) -> None:
    """advance_time past the token lifetime makes webhook edits and follow-ups 401 / 50027."""
    gate = asyncio.Event()

    async def deferred(interaction: discord.Interaction, **_: object) -> object:
        await interaction.response.defer(thinking=True)
        await gate.wait()
        errors = []
        for call in (
            interaction.edit_original_response(content="late"),
            interaction.followup.send("late"),
        ):
            try:
                await call
            except discord.HTTPException as exc:
                errors.append((exc.status, exc.code))
        return errors

    bot.handlers["imagine"] = deferred
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    await ix.wait_response()
    assert not ix.token_expired
    fake.advance_time(16 * 60)
    assert ix.token_expired
    gate.set()
    assert await bot.next_outcome() == [(401, 50027), (401, 50027)]
    assert ix.original is not None and ix.original.loading


async def test_backdated_interaction_agrees_with_the_client(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """created_ago backdates the snowflake, so discord.py and the fake agree on token age."""
    gate = asyncio.Event()

    async def check(interaction: discord.Interaction, **_: object) -> object:
        await interaction.response.send_message("queued")
        left = interaction.expires_at - discord.utils.utcnow()
        await gate.wait()
        try:
            await interaction.edit_original_response(content="done")
        except discord.HTTPException as exc:
            return left, exc.code
        return left, None

    bot.handlers["imagine"] = check
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x",
                           created_ago=14 * 60 + 30)
    await ix.wait_response()
    fake.advance_time(31)
    gate.set()
    left, code = await bot.next_outcome()
    assert dt.timedelta(seconds=20) < left < dt.timedelta(seconds=31)
    assert code == 50027


async def test_oversized_upload_is_413(fake: FakeDiscord, server: Server) -> None:
    """Files over the interaction's attachment_size_limit give 413 / 40005; others pass."""
    from tests.fakediscord_selftest.botkit import running

    small = fake.add_guild("Small", attachment_size_limit=1000)
    member = fake.add_member(small, "carol")
    async with running(SelfTestBot(), fake) as bot:
        assert isinstance(bot, SelfTestBot)

        async def upload(interaction: discord.Interaction, **_: object) -> object:
            limit = interaction.filesize_limit
            try:
                await interaction.response.send_message(
                    file=discord.File(io.BytesIO(b"x" * (limit + 1)), "big.bin"))
            except discord.HTTPException as exc:
                await interaction.response.send_message(
                    file=discord.File(io.BytesIO(b"x" * limit), "ok.bin"))
                return limit, exc.status, exc.code
            return limit, None, None

        bot.handlers["imagine"] = upload
        ix = await fake.invoke(small.channels[0], member, "imagine", prompt="x")
        assert await bot.next_outcome() == (1000, 413, 40005)
        msg = await ix.wait_original()
        assert [(a.filename, a.size) for a in msg.attachments] == [("ok.bin", 1000)]
        channel = bot.get_channel(small.channels[0].id)
        assert isinstance(channel, discord.TextChannel)
        try:
            await channel.send(file=discord.File(io.BytesIO(b"y" * 1001), "big.bin"))
        except discord.HTTPException as exc:
            assert (exc.status, exc.code) == (413, 40005)
        else:
            raise AssertionError("the channel upload should have been refused")
    assert [v.code for v in fake.violations] == [40005, 40005]


async def test_429_is_retried_transparently(fake: FakeDiscord, bot: SelfTestBot,
                                            server: Server) -> None:
    """An injected 429 with Via and retry_after is slept through by discord.py."""
    fake.rate_limit_next("POST /interactions/*/callback", retry_after=0.2)
    fake.rate_limit_next("PATCH /webhooks/*/messages/@original", retry_after=0.1, count=2)

    async def reply(interaction: discord.Interaction, **_: object) -> str:
        await interaction.response.send_message("first")
        await interaction.edit_original_response(content="second")
        return "done"

    bot.handlers["imagine"] = reply
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    assert await bot.next_outcome() == "done"
    assert (await ix.wait_original()).content == "second"
    assert len(fake.rate_limited) == 3
    statuses = [r.status for r in fake.requests if r.route.startswith("/interactions/")]
    assert statuses == [429, 200]
    fake.assert_no_violations()


async def test_deferred_response_filled_by_first_followup(
    fake: FakeDiscord, bot: SelfTestBot, server: Server
) -> None:
    """After defer(ephemeral), the first follow-up fills the thinking message; the next is new."""

    async def deferred(interaction: discord.Interaction, **_: object) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send("first")
        await interaction.followup.send("second", ephemeral=True)

    bot.handlers["imagine"] = deferred
    ix = await fake.invoke(server.channel, server.alice, "imagine", prompt="x")
    await bot.next_outcome()
    assert ix.response_type == 5 and ix.ephemeral
    original = await ix.wait_original(lambda m: not m.loading)
    assert original.content == "first" and original.ephemeral
    assert original.visible_to == server.alice.id
    assert [m.content for m in ix.followups] == ["first", "second"]
    assert ix.followups[0] is original and ix.followups[1].ephemeral
    fake.assert_no_violations()


async def test_modal_round_trip(fake: FakeDiscord, bot: SelfTestBot, server: Server) -> None:
    """A modal opened with type 9 can be submitted; its answer is an ephemeral message."""
    ix = await fake.invoke(server.channel, server.alice, "note")
    await ix.wait_response()
    assert ix.response_type == 9 and ix.modal is not None
    submit = await fake.submit_modal(ix, {ix.modal["components"][0]["components"][0]["custom_id"]
                                          if ix.modal["components"][0]["type"] == 1
                                          else ix.modal["components"][0]["component"]["custom_id"]:
                                          "hello"})
    msg = await submit.wait_original()
    assert msg.content == "noted: hello" and msg.ephemeral
    fake.assert_no_violations()
