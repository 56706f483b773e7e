"""Moderation end to end: bans, blocked words, the channel allow-list, the on/off switch."""

from __future__ import annotations

from bot.app import ImagineBot
from bot.db.models import NsfwPolicy
from tests.e2e.admin.conftest import call, refused
from tests.e2e.conftest import TIMEOUT, World, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message


async def imagine(fake: FakeDiscord, world: World, prompt: str, channel: object = None) -> Message:
    ix = await fake.invoke(channel or world.channel, world.alice, "imagine", prompt=prompt,
                           count=1)
    await ix.wait_response(timeout=5)
    return ix.original


async def nothing_queued_or_charged(bot: ImagineBot, world: World) -> None:
    assert bot.generation.queue_stats().waiting == 0
    status = await bot.services.quota.status(world.guild.id, world.alice.id, ())
    assert status.used == 0
    assert (await bot.services.history.list(world.guild.id)).items == []


async def test_banned_member_is_refused_before_anything_is_queued(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """/ban stops a member's /imagine with the reason, costing nothing; /unban lifts it."""
    done = await call(fake, world.channel, world.admin, "ban", member=world.alice,
                      reason="spamming")
    assert done.ephemeral and "may no longer generate" in done.content
    listing = await call(fake, world.channel, world.admin, "bans")
    assert world.alice.mention in listing.text() and "spamming" in listing.text()

    answer = await imagine(fake, world, "a fox")
    assert refused(answer, "You are banned") and "Reason: spamming" in answer.content
    await nothing_queued_or_charged(bot, world)

    await call(fake, world.channel, world.admin, "unban", member=world.alice)
    assert not await bot.services.moderation.is_banned(world.guild.id, world.alice.id)
    again = await call(fake, world.channel, world.admin, "unban", member=world.alice)
    assert refused(again, "is not banned")
    assert fake.violations == []


async def test_blocked_word_is_refused_before_anything_is_queued(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A blocked word (any case) stops /imagine, costing nothing; the list and remove work."""
    added = await call(fake, world.channel, world.admin, "blocklist add", word="Dragon")
    assert "Blocked `` dragon ``" in added.content
    twice = await call(fake, world.channel, world.admin, "blocklist add", word="DRAGON")
    assert "already blocked" in twice.content

    answer = await imagine(fake, world, "a DRAGON at dawn")
    assert refused(answer, '"dragon", which is blocked')
    await nothing_queued_or_charged(bot, world)

    listing = await call(fake, world.channel, world.admin, "blocklist list")
    assert "dragon" in listing.text() and listing.ephemeral
    await call(fake, world.channel, world.admin, "blocklist remove", word="dragon")
    assert await bot.services.moderation.blocked_words(world.guild.id) == []
    missing = await call(fake, world.channel, world.admin, "blocklist remove", word="dragon")
    assert refused(missing, "is not on the blocklist")
    assert fake.violations == []


async def test_imagine_answers_only_in_allowed_channels(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """With a non-empty allow-list /imagine is refused elsewhere and works in listed channels."""
    art = fake.add_channel(world.guild, "art")
    added = await call(fake, world.channel, world.admin, "channels allow", channel=art)
    assert "now answers only in the listed channels" in added.content

    answer = await imagine(fake, world, "a fox")
    assert refused(answer, "can't be generated in this channel") and art.mention in answer.content
    await nothing_queued_or_charged(bot, world)

    accepted = await imagine(fake, world, "a fox", channel=art)
    assert not accepted.ephemeral
    await fake.wait_for_message(lambda m: m.id == accepted.id and has_image(m), timeout=TIMEOUT)

    listing = await call(fake, world.channel, world.admin, "channels list")
    assert art.mention in listing.content and world.channel.mention not in listing.content
    await call(fake, world.channel, world.admin, "channels disallow", channel=art)
    assert await bot.services.moderation.allowed_channels(world.guild.id) == frozenset()
    empty = await call(fake, world.channel, world.admin, "channels list")
    assert "every channel" in empty.content
    assert fake.violations == []


async def test_settings_policy_and_generation_switch(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """/settings sets the NSFW policy and switches generation off and on; /settings show
    reports them."""
    await call(fake, world.channel, world.admin, "settings nsfw", policy="age_restricted")
    current = await bot.services.moderation.get_settings(world.guild.id)
    assert current.nsfw_policy is NsfwPolicy.AGE_RESTRICTED

    await call(fake, world.channel, world.admin, "settings generation", enabled=False)
    answer = await imagine(fake, world, "a fox")
    assert refused(answer, "switched off")
    await nothing_queued_or_charged(bot, world)
    shown = await call(fake, world.channel, world.admin, "settings show")
    assert "age-restricted channels" in shown.text() and "off" in shown.text()

    await call(fake, world.channel, world.admin, "settings generation", enabled=True)
    assert (await bot.services.moderation.get_settings(world.guild.id)).enabled
    assert fake.violations == []
