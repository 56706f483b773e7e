"""Who may use the admin commands: the bot checks on every use, not Discord's hint."""

from __future__ import annotations

from typing import Any

from bot.app import ImagineBot
from bot.db.models import NsfwPolicy, QuotaScope
from tests.e2e.admin.conftest import ADMIN_COMMANDS, add_job, call, refused
from tests.e2e.conftest import World
from tests.fakediscord import FakeDiscord, Permissions

NOT_ADMIN = "Only server admins"


async def snapshot(bot: ImagineBot, world: World) -> tuple[Any, ...]:
    """Everything an admin command could change in the guild."""
    services, guild_id = bot.services, world.guild.id
    return (
        await services.quota.list_rules(guild_id),
        [await services.quota.status(guild_id, m.id, ()) for m in (world.alice, world.bob)],
        await services.moderation.blocked_words(guild_id),
        await services.moderation.list_bans(guild_id),
        await services.moderation.get_settings(guild_id),
        (await services.audit.list(guild_id, limit=100)).items,
    )


async def test_admin_commands_carry_the_permission_hint(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Admin-only commands sync with Manage Server as default permission; member ones without."""
    synced = {c["name"]: c for c in fake.commands(guild=world.guild)}
    manage_guild = str(int(Permissions.MANAGE_GUILD))
    for name in ("blocklist", "ban", "unban", "bans", "channels", "settings", "audit"):
        assert synced[name]["default_member_permissions"] == manage_guild, name
    for name in ("quota", "history", "show"):
        assert synced[name]["default_member_permissions"] is None, name
    assert all(synced[name].get("contexts") in (None, [0]) for name in ADMIN_COMMANDS)


async def test_member_is_refused_every_admin_command(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """With the hint overridden, a plain member is refused by every admin command; nothing
    changes."""
    services, guild_id = bot.services, world.guild.id
    art = fake.add_channel(world.guild, "art")
    mods = fake.add_role(world.guild, "Mods")
    await services.moderation.add_blocked_word(guild_id, "dragon", world.admin.id)
    await services.moderation.ban(guild_id, world.alice.id, world.admin.id, "spam")
    await services.moderation.set_channel_allowed(guild_id, world.channel.id, True, world.admin.id)
    await services.quota.set_rule(guild_id, QuotaScope.SERVER, None, 10, "day", world.admin.id)
    await services.quota.reserve(guild_id, world.alice.id, (), 2, "j1")
    job = await add_job(bot, guild_id, world.channel.id, world.alice.id, "a castle")
    for name in ADMIN_COMMANDS:
        fake.override_command_permissions(world.guild, name)
    before = await snapshot(bot, world)

    attempts: list[tuple[str, dict[str, object]]] = [
        ("quota set", {"scope": "server", "limit": 99}),
        ("quota set", {"scope": "member", "target": world.bob, "limit": 99}),
        ("quota clear", {"scope": "server"}),
        ("quota list", {}),
        ("quota reset", {"member": world.alice}),
        ("quota show", {"member": world.alice}),
        ("history list", {"member": world.alice}),
        ("history export", {}),
        ("blocklist add", {"word": "castle"}),
        ("blocklist remove", {"word": "dragon"}),
        ("blocklist list", {}),
        ("ban", {"member": world.alice, "reason": "other"}),
        ("ban", {"member": world.admin}),
        ("unban", {"member": world.alice}),
        ("bans", {}),
        ("channels allow", {"channel": art}),
        ("channels disallow", {"channel": world.channel}),
        ("channels list", {}),
        ("settings show", {}),
        ("settings nsfw", {"policy": "spoiler"}),
        ("settings admin_role", {"role": mods}),
        ("settings generation", {"enabled": False}),
        ("audit", {}),
    ]
    for command, options in attempts:
        message = await call(fake, world.channel, world.bob, command, **options)
        assert refused(message, NOT_ADMIN), (command, message.text())
        assert "dragon" not in message.text() and "castle" not in message.text(), command
    show = await call(fake, world.channel, world.bob, "show", job=job)
    assert refused(show, "Only the member who made this job")
    assert await snapshot(bot, world) == before
    assert (await services.moderation.get_settings(guild_id)).nsfw_policy is NsfwPolicy.BLOCK
    assert fake.violations == []


async def test_admin_role_grants_the_admin_commands(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A member with the configured admin role may use admin commands; clearing it revokes."""
    mods = fake.add_role(world.guild, "Mods")
    carol = fake.add_member(world.guild, "carol", roles=[mods])
    fake.override_command_permissions(world.guild, "blocklist")

    refusal = await call(fake, world.channel, carol, "blocklist add", word="ogre")
    assert refused(refusal, NOT_ADMIN)
    await call(fake, world.channel, world.admin, "settings admin_role", role=mods)
    assert (await bot.services.moderation.get_settings(world.guild.id)).admin_role_id == mods.id

    added = await call(fake, world.channel, carol, "blocklist add", word="Ogre")
    assert added.ephemeral and "Blocked" in added.content
    assert await bot.services.moderation.blocked_words(world.guild.id) == ["ogre"]

    await call(fake, world.channel, world.admin, "settings admin_role")
    again = await call(fake, world.channel, carol, "blocklist remove", word="ogre")
    assert refused(again, NOT_ADMIN)
    assert await bot.services.moderation.blocked_words(world.guild.id) == ["ogre"]
    assert fake.violations == []


async def test_everyone_cannot_be_the_admin_role(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Setting @everyone as the admin role is refused: it would make every member an admin."""
    message = await call(
        fake, world.channel, world.admin, "settings admin_role", role=world.guild.default_role
    )
    assert refused(message, "@everyone cannot be the admin role")
    assert (await bot.services.moderation.get_settings(world.guild.id)).admin_role_id is None


async def test_admin_actions_are_audited_and_paged(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Each admin command writes an audit entry with the admin; /audit pages them."""
    await call(fake, world.channel, world.admin, "blocklist add", word="goblin")
    await call(fake, world.channel, world.admin, "ban", member=world.bob, reason="<@&1> spam")
    await call(fake, world.channel, world.admin, "settings nsfw", policy="spoiler")
    await call(fake, world.channel, world.admin, "quota set", scope="cap", limit=50,
               period="week")
    entries = (await bot.services.audit.list(world.guild.id)).items
    assert [e.action for e in entries] == ["quota.set", "settings.update", "ban", "blocklist.add"]
    assert {e.actor_id for e in entries} == {world.admin.id}

    for i in range(12):  # 16 entries: two pages of 10
        await bot.services.moderation.add_blocked_word(world.guild.id, f"word{i}", world.admin.id)
    first = await call(fake, world.channel, world.admin, "audit")
    assert first.ephemeral and "word11" in first.text() and "word2" in first.text()
    assert "goblin" not in first.text()
    assert [b.disabled for b in first.buttons()] == [True, False]
    click = await fake.click(first, first.buttons()[1].custom_id, world.admin)
    await click.wait_response()
    second = fake.get_message(first.id)
    assert "goblin" in second.text() and "word11" not in second.text()
    assert "Member banned" in second.text() and "NSFW policy spoiler" in second.text()
    assert second.pinged_role_ids == set() and second.pinged_user_ids == set()
    back = await fake.click(second, second.buttons()[0].custom_id, world.admin)
    await back.wait_response()
    assert "word11" in fake.get_message(first.id).text()

    only_bans = await call(fake, world.channel, world.admin, "audit", action="ban")
    assert "Member banned" in only_bans.text() and "Word blocked" not in only_bans.text()
    assert fake.violations == []


async def test_admin_check_uses_server_permissions_not_channel_overwrites(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Manage Server is a server permission: a channel overwrite neither grants nor takes it."""
    fake.override_command_permissions(world.guild, "blocklist")
    fake.set_overwrite(world.channel, world.bob, allow=Permissions.MANAGE_GUILD)
    fake.set_overwrite(world.channel, world.admin_role, deny=Permissions.MANAGE_GUILD)

    refusal = await call(fake, world.channel, world.bob, "blocklist add", word="ogre")
    assert refused(refusal, NOT_ADMIN)
    assert await bot.services.moderation.blocked_words(world.guild.id) == []

    added = await call(fake, world.channel, world.admin, "blocklist add", word="troll")
    assert added.ephemeral and "Blocked" in added.content
    assert await bot.services.moderation.blocked_words(world.guild.id) == ["troll"]
    assert fake.violations == []
