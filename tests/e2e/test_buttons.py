"""End to end: the buttons under a grid, their permissions, and restarts."""

from __future__ import annotations

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobKind
from tests.e2e.conftest import SIZE, TIMEOUT, World, button_ids, has_image, png_size, running
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message


async def make_grid(fake: FakeDiscord, world: World, **options: object) -> Message:
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a lighthouse",
                           **options)
    return await ix.wait_original(has_image, timeout=TIMEOUT)


def job_of(message: Message) -> str:
    return button_ids(message)[0].split(":")[2]


async def test_upscale_posts_single_full_size_image(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """U2 posts image 2 alone, at the generated size, with its own buttons."""
    grid = await make_grid(fake, world)
    job_id = job_of(grid)
    click = await fake.click(grid, f"imagine:u:{job_id}:2", world.bob)
    await click.wait_response(timeout=5)
    assert click.response_type == 4 and not click.ephemeral
    single = await click.wait_original(has_image, timeout=TIMEOUT)
    assert png_size(single) == (SIZE, SIZE)
    assert "Image #2" in single.content
    stored = (bot.images.root / job_id / "2.png").read_bytes()
    assert single.attachments[0].data == stored
    # Under it: the tools whose model is configured (none extra here), and delete.
    assert button_ids(single) == [
        f"imagine:t:{kind}:{job_id}:2"
        for kind in ("upscale_creative", "vary_subtle", "vary_strong")
    ] + [f"imagine:d:{job_id}"]
    assert fake.violations == []


async def test_variation_makes_a_new_grid(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """V3 answers with a new public message that becomes a grid of variations of image 3."""
    grid = await make_grid(fake, world)
    job_id = job_of(grid)
    click = await fake.click(grid, f"imagine:v:{job_id}:3", world.alice)
    await click.wait_response(timeout=5)
    assert click.response_type == 4 and not click.ephemeral
    assert click.original.id != grid.id
    result = await click.wait_original(has_image, timeout=TIMEOUT)
    assert png_size(result) == (2 * SIZE, 2 * SIZE)
    assert "Variations of image #3" in result.content
    new_job = job_of(result)
    record = await bot.services.history.require(new_job)
    assert (record.kind, record.parent_job_id, record.image_index) == (
        JobKind.VARIATION, job_id, 2
    )
    assert fake.violations == []


async def test_reroll_uses_new_seeds(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    """Reroll runs the same prompt and parameters with different seeds."""
    grid = await make_grid(fake, world, seed=1000, count=2)
    job_id = job_of(grid)
    click = await fake.click(grid, f"imagine:r:{job_id}", world.alice)
    result = await click.wait_original(has_image, timeout=TIMEOUT)
    new_job = await bot.services.history.require(job_of(result))
    old_job = await bot.services.history.require(job_id)
    assert new_job.kind is JobKind.REROLL and new_job.parent_job_id == job_id
    assert new_job.params.prompt == old_job.params.prompt and new_job.params.count == 2
    assert new_job.seeds != old_job.seeds
    assert "Reroll" in result.content
    assert fake.violations == []


async def test_delete_by_requester(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    """The requester's delete button removes the grid message."""
    grid = await make_grid(fake, world)
    click = await fake.click(grid, f"imagine:d:{job_of(grid)}", world.alice)
    await click.wait_response(timeout=5)
    await fake.wait_until(lambda: fake.get_message(grid.id).deleted, timeout=10)
    assert fake.violations == []


async def test_delete_by_another_member_is_refused(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Another member pressing delete gets an ephemeral refusal; the grid stays."""
    grid = await make_grid(fake, world)
    click = await fake.click(grid, f"imagine:d:{job_of(grid)}", world.bob)
    await click.wait_response(timeout=5)
    assert click.ephemeral
    assert "Only the member who asked" in click.original.content
    assert not fake.get_message(grid.id).deleted
    assert fake.violations == []


async def test_delete_by_admin(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    """A member with Manage Server may delete anyone's result."""
    grid = await make_grid(fake, world)
    click = await fake.click(grid, f"imagine:d:{job_of(grid)}", world.admin)
    await click.wait_response(timeout=5)
    await fake.wait_until(lambda: fake.get_message(grid.id).deleted, timeout=10)
    assert fake.violations == []


async def test_buttons_work_after_restart(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """A new bot process (same database and image folder) answers an old message's buttons."""
    async with running(settings, fake):
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        grid = await make_grid(fake, world)
    job_id = job_of(grid)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake):
        upscale = await fake.click(grid, f"imagine:u:{job_id}:1", world.alice)
        single = await upscale.wait_original(has_image, timeout=TIMEOUT)
        assert png_size(single) == (SIZE, SIZE)
        vary = await fake.click(grid, f"imagine:v:{job_id}:4", world.alice)
        result = await vary.wait_original(has_image, timeout=TIMEOUT)
        assert "Variations of image #4" in result.content
    assert fake.violations == []


async def test_upscale_remakes_a_lost_image(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """If an image file is gone, U re-makes it from the stored seed (deferring first)."""
    grid = await make_grid(fake, world, seed=77)
    job_id = job_of(grid)
    await bot.images.delete(job_id)
    click = await fake.click(grid, f"imagine:u:{job_id}:3", world.alice)
    await click.wait_response(timeout=5)
    assert click.response_type == 5
    single = await click.wait_original(has_image, timeout=TIMEOUT)
    assert png_size(single) == (SIZE, SIZE)
    assert (bot.images.root / job_id / "3.png").is_file()
    assert fake.violations == []


def slowed(monkeypatch, target: object, name: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Make `target.name` (an async method) take `seconds` longer, like a busy database."""
    import asyncio

    original = getattr(target, name)

    async def slow(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(seconds)
        return await original(*args, **kwargs)

    monkeypatch.setattr(target, name, slow)


async def test_variation_answers_in_time_when_the_database_is_slow(
    bot: ImagineBot, fake: FakeDiscord, world: World, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """The 3-second budget counts from the click, not from the queueing step: a slow job
    lookup plus a slow gate still gets an answer (deferred) in time."""
    grid = await make_grid(fake, world)
    job_id = job_of(grid)
    slowed(monkeypatch, bot.services.history, "require", 1.5)
    slowed(monkeypatch, bot.services.moderation, "check", 1.5)
    click = await fake.click(grid, f"imagine:v:{job_id}:1", world.alice)
    result = await click.wait_original(has_image, timeout=TIMEOUT)
    assert "Variations of image #1" in result.content
    assert fake.violations == []


async def test_upscale_answers_in_time_when_the_database_is_slow(
    bot: ImagineBot, fake: FakeDiscord, world: World, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """U defers when looking the job up takes too long, then posts the image."""
    grid = await make_grid(fake, world)
    job_id = job_of(grid)
    slowed(monkeypatch, bot.services.history, "require", 3.5)
    click = await fake.click(grid, f"imagine:u:{job_id}:2", world.alice)
    single = await click.wait_original(has_image, timeout=TIMEOUT)
    assert "Image #2" in single.content
    assert fake.violations == []


async def test_variation_of_a_one_step_job_denoises(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """V on a 1-step grid makes variations with raised steps (img2img at strength 0.6 would
    denoise nothing in 1 step) instead of refusing what the member cannot change."""
    from generation.request import MIN_VARIATION_DENOISE

    grid = await make_grid(fake, world, steps=1, count=1)
    click = await fake.click(grid, f"imagine:v:{job_of(grid)}:1", world.alice)
    result = await click.wait_original(has_image, timeout=TIMEOUT)
    record = await bot.services.history.require(job_of(result))
    assert record.kind is JobKind.VARIATION
    assert record.params.strength is not None
    assert int(record.params.steps * record.params.strength) >= MIN_VARIATION_DENOISE
    assert fake.violations == []
