"""End to end: a model that computes NaN (fp16 overflow) is never delivered or charged.

The real bot and the real tiny pipeline; a forward hook on the UNet makes chosen images NaN,
as float16 overflow does on some GPUs and fine-tuned models (`tests.generation.numerical`).
"""

from __future__ import annotations

import logging

import pytest

from bot.config import Settings
from bot.db.models import JobStatus
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService
from tests.e2e.conftest import TIMEOUT, World, button_ids, has_image, running
from tests.fakediscord import FakeDiscord
from tests.generation.numerical import nan, poisoned


def _factory() -> tuple[object, list[DiffusersEngine]]:
    engines: list[DiffusersEngine] = []

    def factory(settings: Settings) -> GenerationService:
        spec = ModelSpec(settings.model.id, variant=None, device="cpu", safety_checker=False,
                         cache_dir=settings.model.cache_dir)
        engine = DiffusersEngine(spec)
        engines.append(engine)
        return GenerationService(engine, FairQueuePolicy(), warmup=False)

    return factory, engines


async def test_all_nan_job_fails_refunded_and_logged(
    fake: FakeDiscord, world: World, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    factory, engines = _factory()
    async with running(settings, fake, generation_factory=factory) as bot:  # type: ignore[arg-type]
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        with caplog.at_level(logging.WARNING), poisoned(
            engines[0].model.txt2img.unet, None, nan
        ):
            ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a dark cave",
                                   count=2, seed=77)
            message = await ix.wait_original(lambda m: "Failed" in m.content, timeout=TIMEOUT)
        assert not message.attachments and not button_ids(message)
        assert "invalid numbers" in message.content and "not counted" in message.content
        [job] = (await bot.services.history.list(world.guild.id)).items
        assert job.status is JobStatus.FAILED and "invalid numbers" in (job.error or "")
        status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
        assert status.used == 0
        logged = [r.getMessage() for r in caplog.records if "unusable image" in r.getMessage()]
        assert len(logged) == 2 and "seed=77" in logged[0] and "a dark cave" in logged[0]
        assert fake.violations == []


async def test_one_nan_image_of_four_is_left_out_and_refunded(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    factory, engines = _factory()
    async with running(settings, fake, generation_factory=factory) as bot:  # type: ignore[arg-type]
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        with poisoned(engines[0].model.txt2img.unet, {2}, nan, count=4):
            ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a fox",
                                   count=4)
            message = await ix.wait_original(has_image, timeout=TIMEOUT)
        assert "1 image failed" in message.content
        [job] = (await bot.services.history.list(world.guild.id)).items
        ids = button_ids(message)
        assert f"imagine:u:{job.id}:3" not in ids and f"imagine:u:{job.id}:2" in ids
        assert not (bot.images.root / job.id / "3.png").exists()
        status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
        assert status.used == 3
        assert fake.violations == []
