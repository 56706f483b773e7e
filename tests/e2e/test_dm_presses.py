"""Buttons pressed in a DM apply the job's server context (its roles, bans, channel rules).

A result goes by DM when its token is old and the bot may not post in the channel. A press
there carries no server, roles or channel; the bot takes them from the job's server.
"""

from __future__ import annotations

from bot.app import ImagineBot
from bot.db.models import QuotaScope
from bot.presentation.access import LEFT_SERVER
from tests.e2e.conftest import TIMEOUT, World, button_ids, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message

OLD = 14 * 60  # an interaction created 14 minutes ago: its token has under a minute left


async def _result_by_dm(fake: FakeDiscord, world: World, count: int) -> Message:
    fake.deny_bot_send(world.channel)
    ix = await fake.invoke(
        world.channel, world.alice, "imagine", prompt="a moth", count=count, created_ago=OLD
    )
    await ix.wait_response(timeout=5)
    await fake.wait_until(
        lambda: any(map(has_image, fake.dm_messages(world.alice))), timeout=TIMEOUT
    )
    [dm] = [m for m in fake.dm_messages(world.alice) if has_image(m)]
    return dm


async def test_a_press_in_a_dm_counts_against_the_members_role_quota(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """With a 2-images-a-day role, V1 pressed in the DM is refused (it would make 4 more),
    as it would be in the server; nothing is queued or counted."""
    limited = fake.add_role(world.guild, "limited")
    fake.add_member_role(world.alice, limited)
    await bot.services.quota.set_rule(
        world.guild.id, QuotaScope.ROLE, limited.id, 2, "day", actor_id=world.admin.id
    )
    dm = await _result_by_dm(fake, world, count=2)
    [v1] = [c for c in button_ids(dm) if c.startswith("imagine:v:") and c.endswith(":1")]
    press = await fake.click(dm, v1, world.alice.user)
    await press.wait_response(timeout=5)
    answer = await press.wait_original(timeout=TIMEOUT)
    assert answer.ephemeral and "used all 2 of your images" in answer.content
    assert len((await bot.services.history.list(world.guild.id)).items) == 1
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [limited.id])
    assert status.used == 2
    assert {v.code for v in fake.violations} <= {50013}


async def test_a_press_in_a_dm_after_leaving_the_server_is_refused(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A member who left the job's server is told so when pressing its buttons in a DM."""
    dm = await _result_by_dm(fake, world, count=1)
    fake.remove_member(world.alice)
    [reroll] = [c for c in button_ids(dm) if c.startswith("imagine:r:")]
    press = await fake.click(dm, reroll, world.alice.user)
    await press.wait_response(timeout=5)
    answer = await press.wait_original(timeout=TIMEOUT)
    assert answer.ephemeral and LEFT_SERVER in answer.content
    assert len((await bot.services.history.list(world.guild.id)).items) == 1
    # 10007: the look-up of the member who left (expected and handled).
    assert {v.code for v in fake.violations} <= {50013, 10007}
