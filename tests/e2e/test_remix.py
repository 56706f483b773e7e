"""End to end: remix mode (`/prefer remix`), the editor before reroll, V and Vary, and what it
costs (tiny random-weight model: the images are noise)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobKind
from bot.presentation.deadline import MODAL_TOO_LATE
from tests.e2e.conftest import (
    STEPS,
    TIMEOUT,
    SettingsFactory,
    SlowSessions,
    World,
    has_image,
    running,
)
from tests.e2e.test_buttons import job_of, make_grid
from tests.e2e.test_image_prompts import png
from tests.fakediscord import FakeDiscord
from tests.fakediscord.interactions import Interaction
from tests.fakediscord.models import Message

MODAL = 9


async def used(bot: ImagineBot, world: World) -> int:
    return (await bot.services.quota.status(world.guild.id, world.alice.id, ())).used


async def prefer_remix(fake: FakeDiscord, world: World, **options: Any) -> str:
    ix = await fake.invoke(world.channel, world.alice, "prefer remix", options=options)
    answer = await ix.wait_original(lambda m: not m.loading, timeout=TIMEOUT)
    assert ix.ephemeral
    return answer.content


def prefill(ix: Interaction) -> str:
    """The text the remix editor opened with."""
    assert ix.modal is not None
    return ix.modal["components"][0]["component"]["value"]


async def job_ids(bot: ImagineBot, world: World) -> list[str]:
    return [job.id for job in (await bot.services.history.list(world.guild.id, limit=50)).items]


async def open_editor(
    fake: FakeDiscord, message: Message, custom_id: str, user: Any
) -> Interaction:
    click = await fake.click(message, custom_id, user)
    await click.wait_response(timeout=5)
    assert click.response_type == MODAL, "the press did not open the remix editor"
    return click


async def test_prefer_remix_toggles_and_off_means_no_editor(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Off by default (buttons run at once); `/prefer remix` switches it over, saying the new
    state; `mode:` sets it outright."""
    grid = await make_grid(fake, world, count=1)
    click = await fake.click(grid, f"imagine:r:{job_of(grid)}", world.alice)
    await click.wait_response(timeout=5)
    assert click.response_type == 4 and click.modal is None

    assert "Remix mode is **on**" in await prefer_remix(fake, world)
    assert (await bot.services.preferences.get(world.alice.id)).remix
    assert "Remix mode is **off**" in await prefer_remix(fake, world)
    assert "Remix mode is **on**" in await prefer_remix(fake, world, mode="on")
    assert "Remix mode is **on**" in await prefer_remix(fake, world, mode="on")
    assert not (await bot.services.preferences.get(world.bob.id)).remix
    await click.wait_original(has_image, timeout=TIMEOUT)
    assert fake.violations == []


async def test_remix_reroll_runs_the_edited_prompt(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Reroll with remix on: the editor holds the job's prompt and flags; opening it costs
    nothing; the edit runs as a new grid recorded with its parent, charged like a reroll.
    Another member's press on the same grid is not a remix (only the owner edits)."""
    grid = await make_grid(fake, world, count=2, negative="fog")
    job_id = job_of(grid)
    before = await used(bot, world)
    await prefer_remix(fake, world, mode="on")

    editor = await open_editor(fake, grid, f"imagine:r:{job_id}", world.alice)
    assert editor.modal is not None and editor.modal["title"] == "Remix: Reroll"
    assert prefill(editor) == "a lighthouse --no fog --n 2"
    assert await used(bot, world) == before  # an open (or closed) editor costs nothing

    submit = await fake.submit_modal(editor, {"prompt": "a red barn --no snow --n 1 --ar 2:1"})
    result = await submit.wait_original(has_image, timeout=TIMEOUT)
    assert not submit.ephemeral and "a red barn" in result.content
    job = await bot.services.history.require(job_of(result))
    assert (job.kind, job.parent_job_id) == (JobKind.REROLL, job_id)
    assert (job.params.prompt, job.params.negative_prompt, job.params.count) == (
        "a red barn", "snow", 1
    )
    assert job.params.width == 2 * job.params.height
    assert await used(bot, world) == before + 1

    # Bob has remix on too, but the grid is Alice's: his V2 runs at once.
    await fake.invoke(world.channel, world.bob, "prefer remix", mode="on")
    click = await fake.click(grid, f"imagine:v:{job_id}:2", world.bob)
    await click.wait_response(timeout=5)
    assert click.response_type == 4
    await click.wait_original(has_image, timeout=TIMEOUT)
    assert fake.violations == []


@pytest.mark.sqlite_only  # the parser's and the gate's answer, not the database's
async def test_bad_edits_are_refused_and_cost_nothing(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """An edit `/imagine` would refuse (an out-of-range flag, a flag the button cannot use,
    a step count over the server's limit, a blocked word) gets `/imagine`'s message,
    privately; nothing is charged, queued or recorded."""
    grid = await make_grid(fake, world, count=1)
    job_id = job_of(grid)
    await prefer_remix(fake, world, mode="on")
    before = await used(bot, world)
    jobs = await job_ids(bot, world)
    limit = bot.settings.generation.max_steps
    await bot.services.moderation.add_blocked_word(world.guild.id, "kraken", world.admin.id)

    for custom_id, edit, reason in (
        (f"imagine:v:{job_id}:1", "a lighthouse --n 9", "`--n` must be between 1 and 4"),
        (f"imagine:v:{job_id}:1", "a lighthouse --ar 16:9", "`--ar` cannot change"),
        (f"imagine:r:{job_id}", f"a lighthouse --steps {limit + 1}", str(limit)),
        (f"imagine:r:{job_id}", "a lighthouse --wat", "is not a flag I know"),
        (f"imagine:v:{job_id}:1", "a lighthouse and a kraken", "which is blocked"),
    ):
        editor = await open_editor(fake, grid, custom_id, world.alice)
        submit = await fake.submit_modal(editor, {"prompt": edit})
        answer = await submit.wait_original(lambda m: not m.loading, timeout=TIMEOUT)
        assert submit.ephemeral and not answer.attachments, edit
        assert reason in answer.content, (edit, answer.content)

    assert await used(bot, world) == before
    assert await job_ids(bot, world) == jobs
    assert fake.violations == []


@pytest.mark.sqlite_only  # which job an edit makes, not the database's part
async def test_remix_vary_subtle_edits_the_variation(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Vary (Subtle) under a single image opens the editor too; the edit's prompt drives the
    variations of that image, recorded as Vary (Subtle) of it."""
    grid = await make_grid(fake, world, count=2)
    job_id = job_of(grid)
    upscale = await fake.click(grid, f"imagine:u:{job_id}:2", world.alice)
    single = await upscale.wait_original(has_image, timeout=TIMEOUT)
    await prefer_remix(fake, world, mode="on")

    editor = await open_editor(fake, single, f"imagine:t:vary_subtle:{job_id}:2", world.alice)
    assert prefill(editor) == "a lighthouse"  # a variation keeps its image's size and grid
    submit = await fake.submit_modal(editor, {"prompt": "a lighthouse in a storm --seed 7"})
    result = await submit.wait_original(has_image, timeout=TIMEOUT)
    job = await bot.services.history.require(job_of(result))
    assert (job.kind, job.parent_job_id, job.image_index) == (JobKind.VARY_SUBTLE, job_id, 1)
    assert job.params.prompt == "a lighthouse in a storm" and job.params.seed == 7

    # Rerolling those variations edits them again: Vary (Subtle) of the same image.
    editor = await open_editor(fake, result, f"imagine:r:{job.id}", world.alice)
    assert prefill(editor) == "a lighthouse in a storm"
    submit = await fake.submit_modal(editor, {"prompt": "a calm sea --no boats"})
    again = await submit.wait_original(has_image, timeout=TIMEOUT)
    rerolled = await bot.services.history.require(job_of(again))
    assert (rerolled.kind, rerolled.parent_job_id, rerolled.image_index) == (
        JobKind.VARY_SUBTLE, job_id, 1
    )
    assert (rerolled.params.prompt, rerolled.params.negative_prompt) == ("a calm sea", "boats")
    assert fake.violations == []


@pytest.mark.sqlite_only  # which job an edit makes, not the database's part
async def test_remix_reroll_of_an_image_prompt_keeps_its_image(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """An image prompt's editor carries its `--iw`; the edit starts from the same image."""
    settings = make_settings(image_prompts={"origins": [fake.base_url]})
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "prefer"], guild=world.guild, timeout=TIMEOUT)
        image = fake.make_attachment("cat.png", png(128, 64))
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a cat --iw 2 --n 1",
                               image=image)
        grid = await ix.wait_original(has_image, timeout=TIMEOUT)
        await prefer_remix(fake, world, mode="on")
        editor = await open_editor(fake, grid, f"imagine:r:{job_of(grid)}", world.alice)
        assert prefill(editor).startswith("a cat --ar 2:1") and prefill(editor).endswith("--iw 2")
        submit = await fake.submit_modal(editor, {"prompt": "a dog --iw 0.5 --n 1"})
        result = await submit.wait_original(has_image, timeout=TIMEOUT)
        job = await bot.services.history.require(job_of(result))
        assert (job.kind, job.parent_job_id) == (JobKind.IMAGE_PROMPT, job_of(grid))
        assert job.params.prompt == "a dog" and job.params.strength == pytest.approx(0.85)
        assert job.params.width > job.params.height  # still the image's shape
    assert fake.violations == []


async def test_an_editor_opened_before_a_restart_runs_after_it(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """The editor's state is in its custom_id: submitted to a restarted bot, it still runs."""
    async with running(settings, fake):
        await fake.wait_for_commands(["imagine", "prefer"], guild=world.guild, timeout=TIMEOUT)
        grid = await make_grid(fake, world, count=1)
        await prefer_remix(fake, world, mode="on")
        editor = await open_editor(fake, grid, f"imagine:v:{job_of(grid)}:1", world.alice)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake) as bot:
        submit = await fake.submit_modal(editor, {"prompt": "a lighthouse at night"})
        result = await submit.wait_original(has_image, timeout=TIMEOUT)
        job = await bot.services.history.require(job_of(result))
        assert (job.kind, job.parent_job_id) == (JobKind.VARIATION, job_of(grid))
        assert job.params.prompt == "a lighthouse at night"
    assert fake.violations == []


@pytest.mark.sqlite_only  # Discord's deadline, not the database's answer
async def test_an_editor_too_slow_to_open_asks_to_press_again(
    slowed: tuple[ImagineBot, list[SlowSessions]], fake: FakeDiscord, world: World
) -> None:
    """A database too slow for Discord's 3 seconds: the guard acknowledges the press in time,
    after which no editor can open; the member is told privately to press again, and nothing
    runs or is charged."""
    bot, [sessions] = slowed
    grid = await make_grid(fake, world, count=1)
    await prefer_remix(fake, world, mode="on")
    before, jobs = await used(bot, world), await job_ids(bot, world)
    sessions.delay, sessions.slow = 3.5, True
    click = await fake.click(grid, f"imagine:r:{job_of(grid)}", world.alice)
    await click.wait_response(timeout=10)
    assert click.response_type == 5 and click.modal is None
    answer = await click.wait_followup(lambda m: not m.loading, timeout=TIMEOUT)
    assert answer.ephemeral and MODAL_TOO_LATE in answer.content
    sessions.slow = False
    assert await used(bot, world) == before and await job_ids(bot, world) == jobs
    assert [m for m in fake.messages(world.channel) if m.loading and not m.deleted] == []
    assert fake.violations == []


@pytest.mark.sqlite_only  # which job an edit makes, not the database's part
async def test_remix_reroll_of_an_image_alone_needs_no_text(
    bot: ImagineBot, fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """An image prompt with no text (the image alone is the prompt, as `/imagine` allows) opens
    an editor that is never empty, and an edit with flags alone runs; `--iw 0` with no text is
    refused as `/imagine` refuses it, charging nothing."""
    settings = make_settings(image_prompts={"origins": [fake.base_url]})
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "prefer"], guild=world.guild, timeout=TIMEOUT)
        image = fake.make_attachment("cat.png", png(64, 64))
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="--n 1", image=image)
        grid = await ix.wait_original(has_image, timeout=TIMEOUT)
        await prefer_remix(fake, world, mode="on")
        editor = await open_editor(fake, grid, f"imagine:r:{job_of(grid)}", world.alice)
        assert prefill(editor).strip() and "--iw" in prefill(editor)

        before = await used(bot, world)
        submit = await fake.submit_modal(editor, {"prompt": "--iw 0 --n 1"})
        answer = await submit.wait_original(lambda m: not m.loading, timeout=TIMEOUT)
        assert submit.ephemeral and "`--iw 0` ignores the image" in answer.content
        assert await used(bot, world) == before

        editor = await open_editor(fake, grid, f"imagine:r:{job_of(grid)}", world.alice)
        submit = await fake.submit_modal(editor, {"prompt": "--iw 0.5 --n 1"})
        result = await submit.wait_original(has_image, timeout=TIMEOUT)
        job = await bot.services.history.require(job_of(result))
        assert (job.kind, job.parent_job_id) == (JobKind.IMAGE_PROMPT, job_of(grid))
        assert job.params.prompt == "" and job.params.strength == pytest.approx(0.85)
    assert fake.violations == []


@pytest.mark.sqlite_only  # which job an edit makes, not the database's part
async def test_an_unchanged_edit_of_a_variation_runs_what_remix_off_runs(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A variation of a grid with its own `--steps` ran those steps: rerolling it with remix
    on and submitting the editor unchanged runs the same steps, as a reroll with remix off."""
    grid = await make_grid(fake, world, count=1, steps=STEPS + 10)
    click = await fake.click(grid, f"imagine:v:{job_of(grid)}:1", world.alice)
    variation = await click.wait_original(has_image, timeout=TIMEOUT)
    source = await bot.services.history.require(job_of(variation))
    assert source.kind is JobKind.VARIATION and source.params.steps == STEPS + 10

    await prefer_remix(fake, world, mode="on")
    editor = await open_editor(fake, variation, f"imagine:r:{source.id}", world.alice)
    assert f"--steps {STEPS + 10}" in prefill(editor)
    submit = await fake.submit_modal(editor, {"prompt": prefill(editor)})
    result = await submit.wait_original(has_image, timeout=TIMEOUT)
    job = await bot.services.history.require(job_of(result))
    assert job.kind is JobKind.VARIATION and job.params.steps == source.params.steps
    assert fake.violations == []
