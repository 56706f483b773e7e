"""End to end: getting results to members however old the interaction, and the job's message."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from bot.app import ImagineBot
from bot.cogs.errors import ErrorHandler
from bot.cogs.imagine import ImagineCog
from bot.cogs.info import InfoCog
from bot.config import Settings
from bot.db.models import JobStatus
from tests.e2e.conftest import (
    SIZE,
    TIMEOUT,
    SettingsFactory,
    World,
    button_ids,
    has_image,
    png_size,
    running,
    slow_generation,
)
from tests.fakediscord import FakeDiscord
from tests.requests import make_request

OLD = 14 * 60  # an interaction created 14 minutes ago: its token has under a minute left


async def settle(bot: ImagineBot) -> None:
    """Wait until every job follower has delivered (or given up)."""
    cog = bot.get_cog("Imagine")
    assert isinstance(cog, ImagineCog)
    await cog.drain(TIMEOUT)


async def test_result_after_token_expiry_goes_to_the_channel(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """With too little token time left, the grid is a new channel message mentioning the member."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a kite", created_ago=OLD)
    await ix.wait_response(timeout=5)
    assert ix.response_type == 4
    message = await fake.wait_for_message(
        lambda m: has_image(m) and m.id != ix.original.id, channel=world.channel, timeout=TIMEOUT
    )
    assert message.interaction_id is None  # a channel message, not the interaction's
    assert world.alice.mention in message.content
    assert message.pinged_user_ids == {world.alice.id}
    assert len(button_ids(message)) == 10
    await settle(bot)
    job = await bot.services.history.require(button_ids(message)[0].split(":")[2])
    assert job.result_message_id == message.id and job.delivered
    original = fake.get_message(ix.original.id)
    assert not original.attachments
    assert "Finished:" in original.content and str(message.id) in original.content
    assert button_ids(original) == []  # the Cancel button is gone
    assert fake.violations == []


async def test_failed_edit_falls_back_to_the_channel(
    slow_bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """If Discord refuses the edit (token expired server-side), the channel gets the result."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a comet", steps=5)
    await ix.wait_response(timeout=5)
    fake.advance_time(16 * 60)  # the job takes at least 0.5 s more
    message = await fake.wait_for_message(
        lambda m: has_image(m) and m.id != ix.original.id, channel=world.channel, timeout=TIMEOUT
    )
    assert world.alice.mention in message.content
    assert {v.code for v in fake.violations} <= {50027}


async def test_dm_when_the_bot_may_not_post_in_the_channel(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Old token and no permission to post in the channel: the result arrives by DM."""
    fake.deny_bot_send(world.channel)
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a moth", created_ago=OLD)
    await ix.wait_response(timeout=5)
    await fake.wait_until(lambda: any(map(has_image, fake.dm_messages(world.alice))),
                          timeout=TIMEOUT)
    [dm] = [m for m in fake.dm_messages(world.alice) if has_image(m)]
    assert "a moth" in dm.content
    assert {v.code for v in fake.violations} <= {50013}


@pytest.mark.parametrize("guild_options", [{"attachment_size_limit": 20_000}])
async def test_upload_over_the_limit_is_reencoded(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A grid whose PNG exceeds the server's upload limit is re-encoded to fit."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="static noise")
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    attachment = message.attachments[0]
    assert attachment.size <= 20_000
    assert not attachment.filename.endswith(".png")
    assert png_size(message)[0] <= 2 * SIZE
    assert fake.violations == []


async def test_progress_is_edited_into_the_message(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """While a job runs its message shows the step and percentage (edit interval shortened
    to 0.2 s for a 1-second job; tests/bot checks the 2-second throttle itself)."""
    cogs = [ErrorHandler, lambda b: ImagineCog(b, progress_interval=0.2), InfoCog]
    async with running(settings, fake, cogs=cogs, generation_factory=slow_generation):
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a galaxy", steps=10)
        message = await ix.wait_original(has_image, timeout=TIMEOUT)
    progress = [e.content for e in message.edits if "Generating: step" in e.content]
    assert progress, "no progress edit was made"
    assert all(re.search(r"step \d+/10 \(\d+%\)", text) for text in progress)
    assert fake.violations == []


async def test_cancel_a_queued_job(
    slow_bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """The requester's Cancel button drops a queued job and refunds it; others are refused."""
    bot = slow_bot
    blocker = bot.generation.submit(
        make_request(prompt="blocker", steps=100, count=1),
        owner="blocker",
    )
    try:
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a snail")
        await ix.wait_response(timeout=5)
        assert "Waiting to start" in ix.original.content
        [cancel_id] = button_ids(ix.original)
        refused = await fake.click(ix.original, cancel_id, world.bob)
        await refused.wait_response(timeout=5)
        assert refused.ephemeral and "Only the member" in refused.original.content
        click = await fake.click(ix.original, cancel_id, world.alice)
        await click.wait_response(timeout=5)
        assert click.ephemeral and "Cancelled" in click.original.content
        await settle(bot)
    finally:
        blocker.cancel()
    assert "Cancelled" in fake.get_message(ix.original.id).content
    assert button_ids(fake.get_message(ix.original.id)) == []
    [job] = (await bot.services.history.list(world.guild.id)).items
    assert job.status is JobStatus.CANCELLED
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert fake.violations == []


async def test_info_shows_usage_queue_and_model(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """/info answers privately with the member's quota (reset as a timestamp) and the model."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a pear", count=2)
    await ix.wait_original(has_image, timeout=TIMEOUT)
    info = await fake.invoke(world.channel, world.alice, "info")
    await info.wait_response(timeout=5)
    assert info.ephemeral
    text = info.original.text()
    assert "2 of 100 image(s) used today" in text
    assert "<t:" in text
    assert "builtin:tiny-random" in text
    assert "waiting" in text
    assert fake.violations == []


async def test_per_member_queue_limit_is_a_clear_ephemeral_refusal(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """Over the per-member queue limit, /imagine answers privately and charges nothing."""
    settings = make_settings(generation={"max_queued_per_user": 1})
    async with running(settings, fake, generation_factory=slow_generation) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        blocker = bot.generation.submit(
            make_request(prompt="blocker", steps=100, count=1),
            owner="blocker",
        )
        try:
            first = await fake.invoke(world.channel, world.alice, "imagine", prompt="one")
            await first.wait_response(timeout=5)
            second = await fake.invoke(world.channel, world.alice, "imagine", prompt="two")
            await second.wait_response(timeout=5)
        finally:
            blocker.cancel()
        assert not first.ephemeral
        assert second.ephemeral
        assert "waiting" in second.original.content and "limit is 1" in second.original.content
        status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
        assert status.used == 4  # the first job's reservation only
    assert fake.violations == []


async def test_a_first_answer_that_comes_too_late_gets_no_further_callbacks(
    slow_bot: ImagineBot, fake: FakeDiscord, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Discord answers the queued message with 10062 (a 429 on the callback made it miss the
    3 seconds): the job is cancelled and refunded, nothing more is sent on that interaction,
    and the bot logs one INFO line, no error (discord.py warns of the 429 itself)."""
    caplog.set_level(logging.INFO, logger="bot")
    fake.rate_limit_next("POST /interactions/*/callback", retry_after=3.5)
    bot = slow_bot  # 60 steps of at least 0.1 s: still running when Discord says 10062
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a late owl", steps=60)

    def cancelled() -> bool:
        return any(
            "cancelled and refunded" in record.getMessage() for record in caplog.records
        )

    await fake.wait_until(cancelled, timeout=TIMEOUT)
    await settle(bot)
    assert ix.timed_out
    [job] = (await bot.services.history.list(world.guild.id)).items
    assert job.status is JobStatus.CANCELLED
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    later = [r for r in fake.requests if ix.token in r.path and "/callback" not in r.path]
    assert later == []  # no follow-up, no edit: the interaction is dead
    callbacks = [r for r in fake.requests if ix.token in r.path and "/callback" in r.path]
    assert len(callbacks) == 2  # the rate-limited one and its retry, nothing after
    ours = [r for r in caplog.records if r.name.startswith("bot")]
    assert [r for r in ours if r.levelno >= logging.WARNING] == []
    assert len([r for r in ours if str(ix.id) in r.getMessage()]) == 1
    assert {v.code for v in fake.violations} <= {10062}


async def test_a_result_that_reached_nobody_is_refunded_and_handed_over_next_time(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """No route works (old token, channel forbidden, DMs closed): the job is not charged,
    its message drops the Cancel button and says how to get the result, admins see it
    undelivered in history, and the member's next use of the bot brings it privately."""
    fake.deny_bot_send(world.channel)
    fake.close_dms(world.alice)
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a wave", created_ago=OLD)
    await ix.wait_response(timeout=5)
    await settle(bot)
    [job] = (await bot.services.history.list(world.guild.id)).items
    assert job.status is JobStatus.SUCCEEDED and job.delivered is False
    assert job.result_message_id is None
    assert all((bot.images.root / job.id / f"{i}.png").is_file() for i in range(1, 5))
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    queued = fake.get_message(ix.original.id)
    assert f"/show job:{job.id}" in queued.content and button_ids(queued) == []
    listing = await fake.invoke(world.channel, world.admin, "history list")
    await listing.wait_response(timeout=5)
    assert "not delivered" in (await listing.wait_original(timeout=5)).text()

    info = await fake.invoke(world.channel, world.alice, "info")
    handed = await info.wait_followup(has_image, timeout=TIMEOUT)
    assert handed.ephemeral and "could not deliver this result" in handed.content
    assert f"imagine:u:{job.id}:1" in button_ids(handed)
    for _ in range(100):  # recorded just after the follow-up was sent
        delivered = await bot.services.history.require(job.id)
        if delivered.delivered:
            break
        await asyncio.sleep(0.05)
    assert delivered.delivered and delivered.result_message_id == handed.id
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert {v.code for v in fake.violations} <= {50013, 50007}
