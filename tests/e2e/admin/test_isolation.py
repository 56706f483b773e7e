"""Servers are isolated: an admin of one server sees nothing of another through any command."""

from __future__ import annotations

import csv
import io

from tests.db.fixtures import FakeClock
from tests.e2e.admin.conftest import ADMIN_COMMANDS, add_job, call, refused
from tests.e2e.conftest import TIMEOUT, SettingsFactory, World, running
from tests.fakediscord import FakeDiscord, Permissions


async def test_admin_of_one_server_sees_nothing_of_another(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory, clock: FakeClock
) -> None:
    """History, export, /show, /quota show, /audit and the blocklist stay within their server."""
    other = fake.add_guild("Other Server")
    other_admin = fake.add_member(other, "other-admin", permissions=Permissions.MANAGE_GUILD)
    carol = fake.add_member(world.guild, "carol")
    fake.add_member(other, carol.user)  # the same person in both servers
    settings = make_settings(discord={"dev_guild_id": None})  # global commands: both servers
    async with running(settings, fake, service_clock=clock) as bot:
        await fake.wait_for_commands(["imagine", *ADMIN_COMMANDS], timeout=TIMEOUT)
        services = bot.services
        secret = await add_job(bot, other.id, other.channels[0].id, carol.id,
                               "other server secret", images=True)
        mine = await add_job(bot, world.guild.id, world.channel.id, carol.id, "home job")
        await services.quota.reserve(other.id, carol.id, (), 3, "other-usage")
        await call(fake, other.channels[0], other_admin, "blocklist add", word="otherword")
        await call(fake, other.channels[0], other_admin, "ban", member=carol, reason="elsewhere")

        texts = []
        for command, options in [
            ("history list", {}),
            ("history list", {"member": carol}),
            ("audit", {}),
            ("blocklist list", {}),
            ("bans", {}),
        ]:
            message = await call(fake, world.channel, world.admin, command, **options)
            texts.append(message.text())
        joined = "\n".join(texts)
        assert "other server secret" not in joined and secret not in joined
        assert "otherword" not in joined and "elsewhere" not in joined
        assert mine in texts[0] and mine in texts[1]

        export = await call(fake, world.channel, world.admin, "history export")
        rows = list(csv.DictReader(io.StringIO(export.attachments[0].data.decode("utf-8-sig"))))
        assert [row["job_id"] for row in rows] == [mine]

        shown = await call(fake, world.channel, world.admin, "show", job=secret)
        assert refused(shown, "There is no job") and not shown.attachments
        quota = await call(fake, world.channel, world.admin, "quota show", member=carol)
        assert "Used today: **0**" in quota.text()
        assert not await services.moderation.is_banned(world.guild.id, carol.id)

        at_home = await call(fake, other.channels[0], carol, "show", job=secret)
        assert not at_home.ephemeral and at_home.attachments
    assert fake.violations == []
