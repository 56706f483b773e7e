"""Discord's 3-second deadline on every path (issue 9, items 2 and 3).

With the database slowed past the deadline (each handler's first database access takes 3.5 s),
every slash command of the synced schema and every kind of button is used at once, and each
one is answered in time (no 10062) with its effect still applied afterwards. Then buttons are
pressed twice concurrently: one effect, and a quiet, true answer for the second press.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.app import ImagineBot
from bot.cogs.errors import UNEXPECTED
from bot.db.models import JobStatus, NsfwPolicy
from bot.services.history import JobRecord
from generation.params import GenerationParams
from tests.e2e.conftest import TIMEOUT, SlowSessions, World, button_ids, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message


def leaf_commands(schema: list[dict[str, Any]]) -> set[str]:
    """Every invocable command path in the synced schema ("quota set", "info", ...)."""
    paths: set[str] = set()

    def walk(command: dict[str, Any], prefix: str) -> None:
        name = f"{prefix} {command['name']}".strip()
        subs = [o for o in command.get("options", []) if o["type"] in (1, 2)]
        if not subs:
            paths.add(name)
        for sub in subs:
            walk(sub, name)

    for command in schema:
        walk(command, "")
    return paths


def answer_text(ix: Any) -> str:
    """Everything the member was shown in answer: the original and follow-ups."""
    parts = []
    for message in [ix.original, *ix.followups]:
        if message is not None:
            parts.append(message.text())
    return "\n".join(parts)


async def test_every_command_and_button_answers_in_time_on_a_slow_database(
    slowed: tuple[ImagineBot, list[SlowSessions]], fake: FakeDiscord, world: World
) -> None:
    bot, [sessions] = slowed
    sessions.delay = 3.5  # seconds: past Discord's 3
    guild_id = world.guild.id
    carol = fake.add_member(world.guild, "carol")
    other = fake.add_channel(world.guild, "other")
    services = bot.services

    # -- what the buttons need, made while the database is still fast ------------------
    def grid(prompt: str, **options: Any) -> Any:
        return fake.invoke(world.channel, world.alice, "imagine", prompt=prompt, **options)

    grid_a = await (await grid("a red barn", count=2)).wait_original(has_image, timeout=TIMEOUT)
    grid_b = await (await grid("a blue barn", count=1)).wait_original(has_image, timeout=TIMEOUT)
    long_ix = await grid("a long job", count=1, steps=60)
    queued = await long_ix.wait_original(lambda m: bool(m.buttons()), timeout=TIMEOUT)
    for i in range(9):  # history pages of 8
        await services.history.create_job(
            JobRecord(guild_id, world.channel.id, world.admin.id,
                      GenerationParams(f"old job {i}", seed=i), "m")
        )
    for i in range(11):  # audit pages of 10
        await services.moderation.add_blocked_word(guild_id, f"word{i}", world.admin.id)
    history_page = await (await fake.invoke(world.channel, world.admin, "history list")
                          ).wait_original(lambda m: bool(m.buttons()), timeout=TIMEOUT)
    audit_page = await (await fake.invoke(world.channel, world.admin, "audit")
                        ).wait_original(lambda m: bool(m.buttons()), timeout=TIMEOUT)
    job_a = button_ids(grid_a)[0].split(":")[2]
    job_b = button_ids(grid_b)[0].split(":")[2]
    long_job = button_ids(queued)[0].split(":")[2]

    # -- every command of the synced schema, with what it should have done --------------
    Check = Callable[[Any], Any]
    plan: dict[str, tuple[Any, dict[str, Any], Check | None]] = {
        "imagine": (world.bob, {"prompt": "a slow lighthouse", "count": 1}, None),
        "info": (world.bob, {}, lambda ix: "Your images" in answer_text(ix)),
        "prefer remix": (world.bob, {"mode": "on"}, lambda ix: "**on**" in answer_text(ix)),
        "quota set": (world.admin, {"scope": "member", "target": world.bob, "limit": 50}, None),
        "quota clear": (world.admin, {"scope": "cap"}, None),
        "quota fast": (world.admin, {"scope": "member", "target": world.bob, "seconds": 30},
                       None),
        "quota fast-clear": (world.admin, {"scope": "member", "target": world.bob}, None),
        "quota list": (world.admin, {}, None),
        "quota reset": (world.admin, {"member": carol}, None),
        "quota show": (world.bob, {}, None),
        "history list": (world.bob, {}, None),
        "history export": (world.admin, {}, lambda ix: ix.original.attachments),
        "show": (world.alice, {"job": job_a}, lambda ix: ix.original.attachments),
        "blocklist add": (world.admin, {"word": "slowword"}, None),
        "blocklist remove": (world.admin, {"word": "word0"}, None),
        "blocklist list": (world.admin, {}, lambda ix: "word1" in answer_text(ix)),
        "channels allow": (world.admin, {"channel": world.channel}, None),
        "channels disallow": (world.admin, {"channel": other}, None),
        "channels list": (world.admin, {}, None),
        "ban": (world.admin, {"member": carol, "reason": "slow"}, None),
        "unban": (world.admin, {"member": world.bob}, None),
        "bans": (world.admin, {}, None),
        "settings show": (world.admin, {}, None),
        "settings nsfw": (world.admin, {"policy": "spoiler"}, None),
        "settings admin_role": (world.admin, {"role": world.admin_role}, None),
        "settings generation": (world.admin, {"enabled": True}, None),
        "audit": (world.admin, {}, None),
    }
    assert leaf_commands(fake.commands(guild=world.guild)) == set(plan), "a command is untested"

    sessions.slow = True
    commands = {
        name: await fake.invoke(world.channel, user, name, options=options)
        for name, (user, options, _) in plan.items()
    }
    buttons: dict[str, tuple[Any, Message]] = {}
    for name, message, custom_id, user in (
        ("upscale", grid_a, f"imagine:u:{job_a}:1", world.bob),
        ("vary", grid_a, f"imagine:v:{job_a}:2", world.alice),
        ("reroll", grid_a, f"imagine:r:{job_a}", world.alice),
        ("delete", grid_b, f"imagine:d:{job_b}", world.alice),
        ("cancel", queued, f"imagine:c:{long_job}", world.alice),
        ("history page", history_page, _next(history_page), world.admin),
        ("audit page", audit_page, _next(audit_page), world.admin),
    ):
        buttons[name] = (await fake.click(message, custom_id, user), message)

    every = [*commands.values(), *(ix for ix, _ in buttons.values())]
    await asyncio.gather(*(ix.wait_response(timeout=10) for ix in every))
    for name, ix in [*commands.items(), *((n, ix) for n, (ix, _) in buttons.items())]:
        assert not ix.timed_out and ix.response_type is not None, name

    # -- the effects, once the slow handlers are done -----------------------------------
    async def settled(ix: Any) -> str:
        await fake.wait_until(
            lambda: ix.original is None or not ix.original.loading, timeout=TIMEOUT
        )
        return answer_text(ix)

    for name, ix in commands.items():
        text = await settled(ix)
        assert UNEXPECTED not in text, (name, text)
        check = plan[name][2]
        if check is not None:
            assert check(ix), (name, text)
    await commands["imagine"].wait_original(has_image, timeout=TIMEOUT)
    assert "slowword" in await services.moderation.blocked_words(guild_id)
    assert "word0" not in await services.moderation.blocked_words(guild_id)
    assert await services.moderation.is_banned(guild_id, carol.id)
    settings = await services.moderation.get_settings(guild_id)
    assert settings.nsfw_policy is NsfwPolicy.SPOILER
    assert settings.admin_role_id == world.admin_role.id
    assert world.channel.id in settings.allowed_channels

    upscale, _ = buttons["upscale"]
    assert "Image #1" in (await upscale.wait_original(has_image, timeout=TIMEOUT)).content
    vary, _ = buttons["vary"]
    assert "Variations of image #2" in (
        await vary.wait_original(has_image, timeout=TIMEOUT)
    ).content
    reroll, _ = buttons["reroll"]
    assert "Reroll" in (await reroll.wait_original(has_image, timeout=TIMEOUT)).content
    await fake.wait_until(lambda: grid_b.deleted, timeout=TIMEOUT)
    await long_ix.wait_original(lambda m: "Cancelled" in m.content, timeout=TIMEOUT)
    assert (await services.history.require(long_job)).status is JobStatus.CANCELLED
    for name in ("history page", "audit page", "cancel", "delete"):
        ix, _ = buttons[name]
        text = await settled(ix)
        assert UNEXPECTED not in text, (name, text)
    assert history_page.edits and audit_page.edits, "a page was not turned"
    assert [v for v in fake.violations if v.code == 10062] == []
    assert fake.violations == []


def _next(message: Message) -> str:
    [custom_id] = [b.custom_id for b in message.buttons() if b.label == "Next" and b.custom_id]
    return custom_id


async def test_a_refusal_after_a_public_deferral_stays_private(
    slowed: tuple[ImagineBot, list[SlowSessions]], fake: FakeDiscord, world: World
) -> None:
    """/imagine deferred publicly by the guard, then refused (quota): the member alone sees
    why; no public "thinking" message is left behind or filled with the refusal."""
    bot, [sessions] = slowed
    await bot.services.quota.set_rule(world.guild.id, "member", world.bob.id, 0, "day",
                                      world.admin.id)
    sessions.delay, sessions.slow = 3.5, True
    ix = await fake.invoke(world.channel, world.bob, "imagine", prompt="a slow cat")
    await ix.wait_response(timeout=10)
    answer = await ix.wait_followup(lambda m: not m.loading, timeout=TIMEOUT)
    assert answer.ephemeral and "quota" in answer.content.lower()
    public = [m for m in fake.messages(world.channel) if not m.ephemeral and not m.deleted]
    assert public == []
    assert fake.violations == []
