"""End to end: /describe (an attached image in, four prompt suggestions out, each a button that
imagines it) on the tiny random-weight captioner, whose captions are noise: the tests check
the path (fetch, job, moderation, buttons, charges, restarts), not the wording."""

from __future__ import annotations

import re

import pytest

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobKind, JobStatus
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.request import Operation
from generation.service import GenerationService
from generation.tiny import TINY_CAPTIONER_NOTE
from tests.e2e.conftest import TIMEOUT, SettingsFactory, World, button_ids, has_image, running
from tests.e2e.test_image_prompts import png, used
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message

TINY = "builtin:tiny-random"


def describe_settings(
    make_settings: SettingsFactory, fake: FakeDiscord, *, charged: bool = False
) -> Settings:
    """The tiny captioner configured (charged or free); images may come from the fake's CDN
    (127.0.0.1), up to 64 kB."""
    return make_settings(
        model={"captioner_id": TINY},
        image_prompts={"origins": [fake.base_url], "max_bytes": 64 * 1024},
        quotas={"charge_describe": charged},
    )


@pytest.fixture
def settings(make_settings: SettingsFactory, fake: FakeDiscord) -> Settings:
    return describe_settings(make_settings, fake)


def has_suggestions(message: Message) -> bool:
    return any(custom_id.startswith("imagine:s:") for custom_id in button_ids(message))


def job_of(message: Message) -> str:
    found = re.search(r"[0-9a-f]{32}", button_ids(message)[0])
    assert found is not None
    return found[0]


async def describe(fake: FakeDiscord, world: World) -> Message:
    image = fake.make_attachment("cat.png", png(96, 64))
    ix = await fake.invoke(world.channel, world.alice, "describe", image=image)
    return await ix.wait_original(has_suggestions, timeout=TIMEOUT)


async def test_describe_offers_four_prompts_whose_buttons_imagine_them(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    await fake.wait_for_commands(["describe"], guild=world.guild, timeout=TIMEOUT)
    answer = await describe(fake, world)
    job = await bot.services.history.require(job_of(answer))
    assert (job.kind, job.status) == (JobKind.DESCRIBE, JobStatus.SUCCEEDED)
    suggestions = job.suggestions
    assert suggestions is not None and len(suggestions) == 4
    assert len({text.casefold() for text in suggestions}) == 4 and all(suggestions)
    assert button_ids(answer) == [
        *(f"imagine:s:{job.id}:{i}" for i in range(1, 5)),
        f"imagine:d:{job.id}",
    ]
    assert TINY_CAPTIONER_NOTE in answer.content  # the test model's captions are noise
    assert answer.attachments  # the image described is shown with its suggestions
    assert await used(bot, world) == 0  # free by default

    # Another member is told whose buttons these are; nothing starts.
    refused = await fake.click(answer, f"imagine:s:{job.id}:1", world.bob)
    await refused.wait_response(timeout=10)
    assert refused.ephemeral and "Only the member who asked" in refused.original.content

    click = await fake.click(answer, f"imagine:s:{job.id}:2", world.alice)
    grid = await click.wait_original(has_image, timeout=TIMEOUT)
    made = await bot.services.history.require(job_of(grid))
    assert made.kind is JobKind.TXT2IMG and made.params.prompt == suggestions[1]
    assert await used(bot, world) == made.params.count  # the /imagine is charged as usual
    assert fake.violations == []


@pytest.mark.sqlite_only  # a refusal happens before the database is touched
@pytest.mark.parametrize(("name", "data", "expected"), [
    ("notes.png", b"these are not the pixels you are looking for", "not an image"),
    ("huge.png", bytes(range(256)) * 400, "over"),  # 100 kB > the 64 kB cap
])
async def test_unusable_files_are_refused_and_cost_nothing(
    make_settings: SettingsFactory, fake: FakeDiscord, world: World,
    name: str, data: bytes, expected: str,
) -> None:
    settings = describe_settings(make_settings, fake, charged=True)
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["describe"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "describe",
                               image=fake.make_attachment(name, data))
        await ix.wait_response(timeout=10)
        assert expected in ix.original.content and ix.ephemeral
        assert await used(bot, world) == 0
        assert (await bot.services.history.list(world.guild.id)).items == []
    assert fake.violations == []


async def test_charged_describe_and_its_buttons_after_a_restart(
    make_settings: SettingsFactory, fake: FakeDiscord, world: World
) -> None:
    """Charged as one image when the admin says so; the suggestion buttons still start
    jobs after the bot restarted (their texts come from the database)."""
    settings = describe_settings(make_settings, fake, charged=True)
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["describe"], guild=world.guild, timeout=TIMEOUT)
        answer = await describe(fake, world)
        assert await used(bot, world) == 1
    job_id = job_of(answer)
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["describe"], guild=world.guild, timeout=TIMEOUT)
        job = await bot.services.history.require(job_id)
        assert job.suggestions is not None
        click = await fake.click(answer, f"imagine:s:{job_id}:4", world.alice)
        grid = await click.wait_original(has_image, timeout=TIMEOUT)
        made = await bot.services.history.require(job_of(grid))
        assert made.params.prompt == job.suggestions[3]
        assert await used(bot, world) == 1 + made.params.count
    assert fake.violations == []


@pytest.mark.sqlite_only
async def test_describe_is_not_offered_without_a_captioner(
    make_settings: SettingsFactory, fake: FakeDiscord, world: World
) -> None:
    """The default configuration has no captioner: /describe is not registered."""
    plain = make_settings()
    assert plain.model.captioner_id is None
    async with running(plain, fake) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        assert bot.tree.get_command("describe") is None
        names = {command["name"] for command in fake.commands(world.guild)}
        assert "imagine" in names and "describe" not in names


class NoCaptioning(GenerationService):
    """A backend that cannot run /describe (as the GPU worker pool reports)."""

    def supports(self, operation: Operation) -> bool:
        return operation is not Operation.DESCRIBE and super().supports(operation)


@pytest.mark.sqlite_only
async def test_a_backend_without_captioning_says_so(
    settings: Settings, fake: FakeDiscord, world: World
) -> None:
    """Configured, but the generator cannot run it: the member is told why, nothing is
    charged or recorded."""

    def factory(settings: Settings) -> GenerationService:
        spec = ModelSpec(settings.model.id, variant=None, device="cpu", safety_checker=False,
                         cache_dir=settings.model.cache_dir, captioner_id=TINY)
        return NoCaptioning(DiffusersEngine(spec), warmup=False)

    async with running(settings, fake, generation_factory=factory) as bot:
        await fake.wait_for_commands(["describe"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "describe",
                               image=fake.make_attachment("cat.png", png(64, 64)))
        await ix.wait_response(timeout=10)
        assert ix.ephemeral and "not available here" in ix.original.content
        assert await used(bot, world) == 0
        assert (await bot.services.history.list(world.guild.id)).items == []
    assert fake.violations == []
