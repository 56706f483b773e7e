"""End to end: image prompts (an attachment on /imagine, or a Discord CDN link in the prompt),
and the refusals that must charge nothing (tiny random-weight model: images are noise)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobKind
from tests.e2e.conftest import TIMEOUT, SettingsFactory, World, has_image, running
from tests.e2e.test_buttons import job_of
from tests.fakediscord import FakeDiscord


@pytest.fixture
def settings(make_settings: SettingsFactory, fake: FakeDiscord) -> Settings:
    """Image prompts may come from the fake's CDN (its attachments live on 127.0.0.1)."""
    return make_settings(image_prompts={"origins": [fake.base_url], "max_bytes": 64 * 1024})


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def used(bot: ImagineBot, world: World) -> int:
    return (await bot.services.quota.status(world.guild.id, world.alice.id, ())).used


async def test_attached_image_starts_the_generation(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    image = fake.make_attachment("cat.png", png(128, 64))
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a cat --iw 2",
                           image=image)
    grid = await ix.wait_original(has_image, timeout=TIMEOUT)
    job = await bot.services.history.require(job_of(grid))
    assert job.kind is JobKind.IMAGE_PROMPT and job.params.prompt == "a cat"
    assert job.params.strength == pytest.approx(0.4)  # --iw 2
    assert job.params.width > job.params.height  # the image's 2:1 shape, not the square default
    assert bot.images.path(job.id, 0).is_file()  # the source is kept with the job
    assert await used(bot, world) == job.params.count
    assert fake.violations == []


async def test_link_alone_is_the_prompt_and_survives_a_restart(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """A CDN link with no text: the image alone is the prompt; reroll works after a restart
    from the stored source (the link may have expired meanwhile)."""
    image = fake.make_attachment("dog.png", png(64, 64))
    async with running(settings, fake):
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=image.url)
        grid = await ix.wait_original(has_image, timeout=TIMEOUT)
        assert "(the image alone)" in grid.content
    job_id = job_of(grid)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        click = await fake.click(grid, f"imagine:r:{job_id}", world.alice)
        again = await click.wait_original(has_image, timeout=TIMEOUT)
        rerolled = await bot.services.history.require(job_of(again))
        assert (rerolled.kind, rerolled.parent_job_id) == (JobKind.IMAGE_PROMPT, job_id)
        assert rerolled.params.prompt == ""
    assert fake.violations == []


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("notes.png", b"these are not the pixels you are looking for", "not an image"),
    ("huge.png", bytes(range(256)) * 400, "over"),  # 100 kB > the 64 kB cap
    ("bomb.png", None, "pixels"),  # 5000x5000 in a few kB
    ("wide.png", png(600, 100), "too extreme"),  # 6:1, past what the model can make
])
async def test_unusable_attachments_are_refused_and_cost_nothing(
    bot: ImagineBot, fake: FakeDiscord, world: World,
    name: str, data: bytes | None, expected: str,
) -> None:
    if data is None:
        buffer = io.BytesIO()
        Image.new("L", (5000, 5000)).save(buffer, format="PNG")
        data = buffer.getvalue()
        assert len(data) < 64 * 1024
    image = fake.make_attachment(name, data)
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a cat", image=image)
    await ix.wait_response(timeout=10)
    assert expected in ix.original.content and ix.ephemeral
    assert await used(bot, world) == 0
    page = await bot.services.history.list(world.guild.id)
    assert page.items == []
    assert fake.violations == []


@pytest.mark.parametrize("link", [
    "https://example.com/attachments/1/2/cat.png",
    "https://cdn.discordapp.com.evil.example/attachments/1/2/cat.png",
])
async def test_links_outside_the_cdn_are_refused(
    bot: ImagineBot, fake: FakeDiscord, world: World, link: str
) -> None:
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=f"{link} a cat")
    await ix.wait_response(timeout=10)
    assert ix.ephemeral and "not an image uploaded to Discord" in ix.original.content
    assert await used(bot, world) == 0
    assert fake.violations == []


@pytest.mark.sqlite_only  # a refusal before any storage
async def test_link_alone_with_iw_0_is_refused_and_costs_nothing(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """The image alone is the prompt, and `--iw 0` ignores it: the job would draw from an
    empty prompt, so it is refused (nothing fetched, queued or charged)."""
    image = fake.make_attachment("dog.png", png(64, 64))
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=f"{image.url} --iw 0")
    await ix.wait_response(timeout=10)
    assert ix.ephemeral and "`--iw 0` ignores the image" in ix.original.content
    assert await used(bot, world) == 0
    assert (await bot.services.history.list(world.guild.id)).items == []
    assert fake.violations == []
