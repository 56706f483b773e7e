"""`/quota` end to end: rules from Discord, their precedence, and members at their limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.app import ImagineBot
from bot.db.models import Period, QuotaScope
from bot.services.quota import QuotaSource
from tests.db.fixtures import FakeClock
from tests.e2e.admin.conftest import call, refused
from tests.e2e.conftest import TIMEOUT, World, has_image
from tests.fakediscord import FakeDiscord


async def test_role_rule_limits_member_and_member_rule_beats_it(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A role rule limits a member with the role; a member rule set afterwards wins over it."""
    artists = fake.add_role(world.guild, "Artists")
    fake.add_member_role(world.alice, artists)
    done = await call(fake, world.channel, world.admin, "quota set", scope="role",
                      target=artists, limit=2, period="day")
    assert done.ephemeral and artists.mention in done.content and "2 images per day" in done.content

    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a fox", count=4)
    await ix.wait_response(timeout=5)
    assert ix.ephemeral and "needs 4 images but you have 2 of 2 left" in ix.original.content
    assert bot.generation.queue_stats().waiting == 0
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [artists.id])
    assert (status.limit, status.source, status.used) == (2, QuotaSource.ROLE, 0)
    shown = await call(fake, world.channel, world.alice, "quota show")
    assert "2 images per day" in shown.text() and artists.mention in shown.text()

    await call(fake, world.channel, world.admin, "quota set", scope="member",
               target=world.alice, limit=6, period="week")
    shown = await call(fake, world.channel, world.alice, "quota show")
    assert "6 images per week" in shown.text() and "a rule for this member" in shown.text()
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a fox", count=4)
    await ix.wait_response(timeout=5)
    assert not ix.ephemeral
    await ix.wait_original(has_image, timeout=TIMEOUT)
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [artists.id])
    assert (status.limit, status.period, status.used) == (6, Period.WEEK, 4)
    bob = await bot.services.quota.status(world.guild.id, world.bob.id, [])
    assert (bob.limit, bob.source) == (100, QuotaSource.CONFIG)
    assert fake.violations == []


async def test_member_at_the_limit_is_told_when_it_resets(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """A member who used their images gets an ephemeral refusal with the reset timestamp."""
    await call(fake, world.channel, world.admin, "quota set", scope="server", limit=3)
    await bot.services.quota.reserve(world.guild.id, world.alice.id, (), 3, "earlier")
    await bot.services.quota.charge("earlier")

    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a fox", count=1)
    await ix.wait_response(timeout=5)
    midnight = datetime.combine(clock.now.date() + timedelta(days=1), datetime.min.time(), UTC)
    assert ix.ephemeral
    assert "You have used all 3 of your images today" in ix.original.content
    assert f"<t:{int(midnight.timestamp())}:R>" in ix.original.content
    assert bot.generation.queue_stats().waiting == 0
    assert (await bot.services.history.list(world.guild.id)).items == []
    shown = await call(fake, world.channel, world.alice, "quota show")
    assert "**0** left" in shown.text() and f"<t:{int(midnight.timestamp())}:R>" in shown.text()
    assert fake.violations == []


async def test_quota_set_validates_the_target(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Scope and target must agree; a mismatch is explained and nothing is stored."""
    role = fake.add_role(world.guild, "Artists")
    cases = [
        ({"scope": "role", "limit": 1}, "needs a `target`"),
        ({"scope": "role", "target": world.alice, "limit": 1}, "needs a role"),
        ({"scope": "member", "target": role, "limit": 1}, "needs a member"),
        ({"scope": "server", "target": role, "limit": 1}, "leave `target` empty"),
        ({"scope": "role", "target": world.guild.default_role, "limit": 1}, "use scope `server`"),
    ]
    for options, expected in cases:
        message = await call(fake, world.channel, world.admin, "quota set", **options)
        assert refused(message, expected), (options, message.content)
    assert await bot.services.quota.list_rules(world.guild.id) == []
    assert (await bot.services.audit.list(world.guild.id)).items == []


async def test_quota_show_of_another_member_is_for_admins(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Members see their own quota only; an admin sees anyone's usage."""
    await bot.services.quota.reserve(world.guild.id, world.alice.id, (), 2, "j")
    own = await call(fake, world.channel, world.bob, "quota show")
    assert own.ephemeral and world.bob.mention in own.text() and "Used today: **0**" in own.text()
    other = await call(fake, world.channel, world.bob, "quota show", member=world.alice)
    assert refused(other, "Only server admins can see other members' quotas")
    admin = await call(fake, world.channel, world.admin, "quota show", member=world.alice)
    assert world.alice.mention in admin.text() and "Used today: **2**" in admin.text()
    assert "the bot's default" in admin.text()


async def test_reset_clear_and_list(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    """An admin gives a member's images back, lists rules, and clears one."""
    quota, guild_id = bot.services.quota, world.guild.id
    await quota.reserve(guild_id, world.alice.id, (), 3, "j")
    await quota.charge("j")
    reset = await call(fake, world.channel, world.admin, "quota reset", member=world.alice)
    assert "3 image(s) given back" in reset.content
    assert (await quota.status(guild_id, world.alice.id, ())).used == 0

    await call(fake, world.channel, world.admin, "quota set", scope="server", limit=5)
    await call(fake, world.channel, world.admin, "quota set", scope="cap", limit=40)
    listing = await call(fake, world.channel, world.admin, "quota list")
    assert "every member (server default): 5 images per day" in listing.text()
    assert "the whole server (cap): 40 images per day" in listing.text()
    assert "Bot default (config): 100 images per day" in listing.text()

    cleared = await call(fake, world.channel, world.admin, "quota clear", scope="cap")
    assert "Removed the quota rule" in cleared.content
    again = await call(fake, world.channel, world.admin, "quota clear", scope="cap")
    assert "nothing changed" in again.content
    rules = await quota.list_rules(guild_id)
    assert [(r.scope, r.limit) for r in rules] == [(QuotaScope.SERVER, 5)]
    actions = [e.action for e in (await bot.services.audit.list(guild_id)).items]
    assert actions == ["quota.clear", "quota.set", "quota.set", "quota.reset_member"]
    assert fake.violations == []
