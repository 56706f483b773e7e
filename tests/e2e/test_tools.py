"""End to end: the creative tools under a single image (upscale, vary, zoom out, pan), on the
tiny random-weight models (their images are noise: sizes, placement and charges are checked)."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobKind
from generation.engine import DiffusersEngine
from generation.errors import GenerationError
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService
from tests.e2e.conftest import (
    SIZE,
    TIMEOUT,
    SettingsFactory,
    World,
    button_ids,
    has_image,
    png_size,
    running,
)
from tests.e2e.test_buttons import make_grid
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message
from tests.generation.engines import PassThroughEngine

TINY = "builtin:tiny-random"
EXTRA_MODELS = {"inpaint_id": TINY, "upscaler_id": TINY}


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """Every tool's model configured (tiny random-weight versions)."""
    return make_settings(model=EXTRA_MODELS)


def job_of(message: Message) -> str:
    """The job id a message's first button carries (grid or single-image buttons)."""
    found = re.search(r"[0-9a-f]{32}", button_ids(message)[0])
    assert found is not None
    return found[0]


async def single_image(fake: FakeDiscord, world: World, index: int = 1) -> tuple[str, Message]:
    """A grid, then U`index`: returns the grid's job id and the single-image message."""
    grid = await make_grid(fake, world)
    job_id = job_of(grid)
    click = await fake.click(grid, f"imagine:u:{job_id}:{index}", world.alice)
    return job_id, await click.wait_original(has_image, timeout=TIMEOUT)


async def use_tool(
    fake: FakeDiscord, world: World, message: Message, kind: str, job_id: str, index: int
) -> Message:
    click = await fake.click(message, f"imagine:t:{kind}:{job_id}:{index}", world.alice)
    await click.wait_response(timeout=5)
    assert click.response_type == 4 and not click.ephemeral, click.original.content
    return await click.wait_original(has_image, timeout=TIMEOUT)


async def used(bot: ImagineBot, world: World) -> int:
    return (await bot.services.quota.status(world.guild.id, world.alice.id, ())).used


def stored(bot: ImagineBot, job_id: str, index: int) -> Image.Image:
    with Image.open(bot.images.path(job_id, index)) as image:
        return image.convert("RGB")


async def test_single_image_shows_every_configured_tool(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    job_id, single = await single_image(fake, world, 3)
    kinds = ["upscale", "upscale_creative", "vary_subtle", "vary_strong", "zoom_2x",
             "zoom_1.5x", "pan_left", "pan_right", "pan_up", "pan_down"]
    assert button_ids(single) == [f"imagine:t:{k}:{job_id}:3" for k in kinds] + [
        f"imagine:d:{job_id}"
    ]
    assert fake.violations == []


@pytest.mark.parametrize("kind", [JobKind.UPSCALE, JobKind.UPSCALE_CREATIVE])
async def test_upscale_doubles_the_image_and_charges_one(
    bot: ImagineBot, fake: FakeDiscord, world: World, kind: JobKind
) -> None:
    job_id, single = await single_image(fake, world, 2)
    before = await used(bot, world)
    result = await use_tool(fake, world, single, kind.value, job_id, 2)
    assert png_size(result) == (2 * SIZE, 2 * SIZE)
    new_job = job_of(result)
    record = await bot.services.history.require(new_job)
    assert (record.kind, record.parent_job_id, record.image_index, record.params.count) == (
        kind, job_id, 1, 1
    )
    assert await used(bot, world) == before + 1
    # The full-resolution file is kept, and the result has the tools of its own.
    assert stored(bot, new_job, 1).size == (2 * SIZE, 2 * SIZE)
    assert f"imagine:t:zoom_2x:{new_job}:1" in button_ids(result)
    assert fake.violations == []


async def test_upscale_is_reencoded_to_fit_the_upload_limit(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """A result bigger than the upload limit is posted re-encoded; the stored PNG stays."""
    job_id, single = await single_image(fake, world)
    limit = 6000  # bytes: a 128x128 noise PNG is ~49 kB
    world.guild.attachment_size_limit_override = limit
    result = await use_tool(fake, world, single, "upscale", job_id, 1)
    assert len(result.attachments[0].data) <= limit
    assert png_size(result) == (2 * SIZE, 2 * SIZE)
    full = bot.images.path(job_of(result), 1)
    assert full.stat().st_size > limit
    assert fake.violations == []


async def test_zoom_out_centres_the_source(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    job_id, single = await single_image(fake, world, 4)
    before = await used(bot, world)
    result = await use_tool(fake, world, single, "zoom_2x", job_id, 4)
    assert png_size(result) == (4 * SIZE, 4 * SIZE)  # a 2x2 grid of 2x canvases
    new_job = job_of(result)
    source = stored(bot, job_id, 4)
    for index in range(1, 5):
        image = stored(bot, new_job, index)
        assert image.size == (2 * SIZE, 2 * SIZE)
        centre = (SIZE // 2, SIZE // 2, SIZE // 2 + SIZE, SIZE // 2 + SIZE)
        assert image.crop(centre).tobytes() == source.tobytes()
    assert await used(bot, world) == before + 4
    record = await bot.services.history.require(new_job)
    assert (record.kind, record.parent_job_id, record.image_index) == (JobKind.ZOOM_2X, job_id, 3)
    assert "Zoom Out 2x of image #4" in result.content
    assert fake.violations == []


@pytest.mark.parametrize(("kind", "size", "origin"), [
    ("pan_left", (SIZE * 3 // 2, SIZE), (SIZE // 2, 0)),
    ("pan_down", (SIZE, SIZE * 3 // 2), (0, 0)),
])
async def test_pan_puts_the_source_at_the_opposite_edge(
    bot: ImagineBot, fake: FakeDiscord, world: World,
    kind: str, size: tuple[int, int], origin: tuple[int, int],
) -> None:
    job_id, single = await single_image(fake, world, 1)
    result = await use_tool(fake, world, single, kind, job_id, 1)
    assert png_size(result) == (2 * size[0], 2 * size[1])
    image = stored(bot, job_of(result), 1)
    assert image.size == size
    box = (*origin, origin[0] + SIZE, origin[1] + SIZE)
    assert image.crop(box).tobytes() == stored(bot, job_id, 1).tobytes()
    assert fake.violations == []


@pytest.mark.parametrize(("kind", "strength"), [("vary_subtle", 0.35), ("vary_strong", 0.7)])
async def test_vary_makes_a_grid_at_its_strength(
    bot: ImagineBot, fake: FakeDiscord, world: World, kind: str, strength: float
) -> None:
    job_id, single = await single_image(fake, world, 2)
    result = await use_tool(fake, world, single, kind, job_id, 2)
    assert png_size(result) == (2 * SIZE, 2 * SIZE)
    record = await bot.services.history.require(job_of(result))
    assert (record.kind.value, record.params.strength, record.params.count) == (kind, strength, 4)
    # The grid gets U/V buttons and a reroll that runs the tool again from the same source.
    reroll = await fake.click(result, f"imagine:r:{record.id}", world.alice)
    again = await reroll.wait_original(has_image, timeout=TIMEOUT)
    rerolled = await bot.services.history.require(job_of(again))
    assert (rerolled.kind.value, rerolled.parent_job_id, rerolled.params.strength) == (
        kind, job_id, strength
    )
    assert fake.violations == []


class FailingTools(PassThroughEngine):
    """The real tiny engine, failing every request that is not plain generation."""

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        if requests[0].init_image is not None:
            raise GenerationError("the upscaler broke")
        return self.inner.generate(requests, on_step, should_stop)


def failing_tools(settings: Settings) -> GenerationService:
    spec = ModelSpec(TINY, variant=None, device="cpu", safety_checker=False,
                     cache_dir=settings.model.cache_dir, inpaint_id=TINY, upscaler_id=TINY)
    return GenerationService(FailingTools(DiffusersEngine(spec)), FairQueuePolicy(),
                             warmup=False)


@pytest.fixture
async def failing_bot(
    fake: FakeDiscord, world: World, settings: Settings
) -> AsyncIterator[ImagineBot]:
    async with running(settings, fake, generation_factory=failing_tools) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        yield bot


@pytest.mark.parametrize("kind", ["upscale", "zoom_1.5x"])
async def test_failed_tool_is_refunded(
    failing_bot: ImagineBot, fake: FakeDiscord, world: World, kind: str
) -> None:
    job_id, single = await single_image(fake, world)
    before = await used(failing_bot, world)
    click = await fake.click(single, f"imagine:t:{kind}:{job_id}:1", world.alice)
    failed = await click.wait_original(lambda m: "Failed" in m.content, timeout=TIMEOUT)
    assert "the upscaler broke" in failed.content
    assert await used(failing_bot, world) == before
    assert fake.violations == []


async def test_tools_without_their_model_have_no_button(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """Without an inpainting or upscaler model there are no Upscale (Subtle), Zoom or Pan
    buttons, and an old button for one answers plainly, charging nothing."""
    async with running(make_settings(model=EXTRA_MODELS), fake):
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        job_id, old = await single_image(fake, world)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(make_settings(), fake) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        _, single = await single_image(fake, world)
        ids = button_ids(single)
        assert any(":upscale_creative:" in i for i in ids)
        assert not any(":upscale:" in i or ":zoom" in i or ":pan_" in i for i in ids)
        before = await used(bot, world)
        click = await fake.click(old, f"imagine:t:zoom_2x:{job_id}:1", world.alice)
        await click.wait_response(timeout=5)
        assert click.ephemeral and "not available" in click.original.content
        assert await used(bot, world) == before
    assert fake.violations == []


async def test_tool_buttons_work_after_restart(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    async with running(settings, fake):
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        job_id, single = await single_image(fake, world, 2)
        zoomed = await use_tool(fake, world, single, "zoom_1.5x", job_id, 2)
    zoom_job = job_of(zoomed)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        result = await use_tool(fake, world, single, "pan_up", job_id, 2)
        assert png_size(result) == (2 * SIZE, 2 * (SIZE * 3 // 2))
        # A lost image of a tool's result is re-made from its parent's image and seed.
        await bot.images.delete(zoom_job)
        click = await fake.click(zoomed, f"imagine:u:{zoom_job}:3", world.alice)
        remade = await click.wait_original(has_image, timeout=TIMEOUT)
        size = SIZE * 3 // 2
        assert png_size(remade) == (size, size)
        with Image.open(io.BytesIO(remade.attachments[0].data)) as image:
            box = (size // 2 - SIZE // 2, size // 2 - SIZE // 2)
            kept = image.convert("RGB").crop((*box, box[0] + SIZE, box[1] + SIZE))
            assert kept.tobytes() == stored(bot, job_id, 2).tobytes()
    assert fake.violations == []


@pytest.mark.sqlite_only  # sizes, not storage
async def test_vary_on_an_upscale_larger_than_max_pixels(
    make_settings: SettingsFactory, fake: FakeDiscord, world: World
) -> None:
    """An upscale may reach 4x `max_pixels`, and it shows every tool: pressing Vary on it
    makes a grid scaled down to fit `max_pixels` (as Zoom/Pan do), not a refusal to 'ask for a
    smaller size' that the member never chose; its reroll too."""
    kind = "vary_subtle"
    max_pixels = 96 * 96  # the 64x64 default fits; its 128x128 upscale does not
    settings = make_settings(model=EXTRA_MODELS, generation={"max_pixels": max_pixels})
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        job_id, single = await single_image(fake, world)
        upscaled = await use_tool(fake, world, single, "upscale", job_id, 1)
        assert png_size(upscaled) == (2 * SIZE, 2 * SIZE)
        up_job = job_of(upscaled)
        before = await used(bot, world)
        result = await use_tool(fake, world, upscaled, kind, up_job, 1)
        record = await bot.services.history.require(job_of(result))
        params = record.params
        assert (record.kind.value, record.parent_job_id) == (kind, up_job)
        assert params.width * params.height <= max_pixels
        assert params.width == params.height and params.width % 8 == 0
        assert await used(bot, world) == before + params.count
        rerolled = await fake.click(result, f"imagine:r:{job_of(result)}", world.alice)
        again = await rerolled.wait_original(has_image, timeout=TIMEOUT)
        assert (await bot.services.history.require(job_of(again))).params.width == params.width
    assert fake.violations == []
