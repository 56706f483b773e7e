"""End to end through the fake Discord: /imagine, its flags and what it posts."""

from __future__ import annotations

import re

from bot.app import ImagineBot
from tests.e2e.conftest import SIZE, TIMEOUT, World, button_ids, has_image, png_size
from tests.fakediscord import FakeDiscord


async def test_login_syncs_commands_with_bounds(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """The bot logs in and syncs /imagine (with bounds and choices) and /info to the dev guild."""
    commands = {c["name"]: c for c in fake.commands(guild=world.guild)}
    assert {"imagine", "info"} <= set(commands)
    options = {o["name"]: o for o in commands["imagine"]["options"]}
    assert options["prompt"]["required"] is True
    assert options["steps"]["max_value"] == bot.settings.generation.max_steps
    assert options["count"]["min_value"] == 1 and options["count"]["max_value"] == 4
    assert options["seed"]["max_value"] == 2**32 - 1
    assert [c["value"] for c in options["aspect"]["choices"]] == [
        "1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16"
    ]
    assert all(o["description"] for o in options.values())


async def test_imagine_with_options_delivers_grid_and_buttons(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """/imagine answers at once with a public queued message, then edits in a 2x2 grid."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a red fox", seed=42)
    await ix.wait_response(timeout=5)
    assert ix.response_type == 4 and not ix.ephemeral
    assert "a red fox" in ix.original.content
    assert world.alice.mention in ix.original.content
    assert "<t:" in ix.original.content  # the ETA as a Discord timestamp
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    assert png_size(message) == (2 * SIZE, 2 * SIZE)
    assert "seeds 42-45" in message.content
    ids = button_ids(message)
    job = re.fullmatch(r"imagine:u:([0-9a-f]{32}):1", ids[0])
    assert job is not None
    job_id = job.group(1)
    expected = [f"imagine:u:{job_id}:{i}" for i in range(1, 5)]
    expected += [f"imagine:v:{job_id}:{i}" for i in range(1, 5)]
    expected += [f"imagine:r:{job_id}", f"imagine:d:{job_id}"]
    assert ids == expected
    assert message.pinged_user_ids == {world.alice.id}
    assert fake.violations == []


async def test_imagine_with_flags(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    """Flags typed in the prompt (em dash included) set the parameters and leave the prompt."""
    ix = await fake.invoke(
        world.channel, world.alice, "imagine", prompt="a castle —ar 2:1 --seed 7 --n 2 --no fog"
    )
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    assert message.content.startswith("**a castle**")
    assert "seeds 7-8" in message.content
    assert "Without: fog" in message.content
    width, height = png_size(message)
    assert width == 2 * (width // 2) and width // 2 > height  # two wide images side by side
    assert len([b for b in message.buttons() if b.label and b.label.startswith("U")]) == 2
    assert fake.violations == []


async def test_slash_option_wins_over_flag(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Precedence: the explicit `count` and `seed` options beat `--n` and `--seed`."""
    ix = await fake.invoke(
        world.channel, world.alice, "imagine", prompt="a boat --n 2 --seed 5", count=1, seed=9
    )
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    assert "seed 9" in message.content
    assert png_size(message) == (SIZE, SIZE)
    assert fake.violations == []


async def test_malformed_flag_is_refused_ephemerally(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """An unknown flag gets an ephemeral message naming it and the accepted flags; no job."""
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a cat --stylize 500")
    await ix.wait_response(timeout=5)
    assert ix.ephemeral
    assert "--stylize" in ix.original.content and "--ar" in ix.original.content
    assert (await bot.services.history.list(world.guild.id)).items == []
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert fake.violations == []


async def test_everyone_in_prompt_pings_nobody_else(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """@everyone, @here, a role or a user mention in the prompt ping nobody but the requester."""
    prompt = f"@everyone @here {world.admin_role.mention} {world.bob.mention} a dog"
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=prompt)
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    assert not message.pinged_everyone
    assert message.pinged_role_ids == set()
    assert message.pinged_user_ids <= {world.alice.id}
    assert fake.violations == []


async def test_fullwidth_flags_and_glued_punctuation_apply(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """`a cat (－－ar 2:1)`, typed on a CJK keyboard, makes a 2:1 grid; the prompt is clean."""
    ix = await fake.invoke(world.channel, world.alice, "imagine",
                           prompt="a cat (\uff0d\uff0dar 2:1 \u2212\u2212n 1)")
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    width, height = png_size(message)
    assert width == 2 * height
    [job] = (await bot.services.history.list(world.guild.id)).items
    assert job.params.prompt == "a cat" and job.params.count == 1
    assert fake.violations == []


async def test_ineffective_parameters_are_refused_before_charging(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A negative prompt at guidance 1 (CFG off) and guidance below 1 are refused with the
    reason, ephemerally; nothing is recorded or charged."""
    for prompt, reason in (("a cat --no text --cfg 1", "negative prompt needs guidance"),
                           ("a cat --cfg 0.5", "same effect as 1")):
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=prompt)
        await ix.wait_response(timeout=5)
        assert ix.ephemeral and reason in ix.original.content
    commands = {c["name"]: c for c in fake.commands(guild=world.guild)}
    guidance = {o["name"]: o for o in commands["imagine"]["options"]}["guidance"]
    assert guidance["min_value"] == 1
    assert (await bot.services.history.list(world.guild.id)).items == []
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert fake.violations == []
