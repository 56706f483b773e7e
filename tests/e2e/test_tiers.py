"""Fast and relax tiers end to end through the fake Discord: fast time charged from the
measured GPU seconds, the automatic fall-back to relax with its note, a relax job overtaken by
a later fast job, and the admins' fast-time allowance."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.config import Settings
from bot.db.models import Tier
from bot.services.history import JobFilter
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService
from tests.e2e.admin.conftest import call
from tests.e2e.conftest import TIMEOUT, SettingsFactory, SlowSteps, World, has_image, running
from tests.fakediscord import FakeDiscord

#: A fast-time allowance smaller than any real job: the first job runs fast, and its measured
#: GPU seconds use it all up.
TINY_ALLOWANCE = 0.001


async def _job_of(bot, guild_id: int, user_id: int, prompt: str):  # type: ignore[no-untyped-def]
    page = await bot.services.history.list(guild_id, JobFilter(user_id=user_id))
    return next(job for job in page.items if job.params.prompt == prompt)


async def test_fast_time_runs_out_and_jobs_fall_back_to_relax(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """A member with a small fast allowance: the first job runs fast and is charged its
    measured GPU seconds (shown in the caption); the next one runs in relax with a note saying
    why (never refused), costs no fast time, and /info shows the member in relax mode."""
    settings = make_settings(tiers={"fast_seconds": TINY_ALLOWANCE})
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a fox --fast")
        first = await ix.wait_original(has_image, timeout=TIMEOUT)
        job = await _job_of(bot, world.guild.id, world.alice.id, "a fox")
        assert job.tier is Tier.FAST and job.gpu_seconds is not None and job.gpu_seconds > 0
        assert job.fast_seconds == job.gpu_seconds  # charged what the backend measured
        assert "--fast" in first.content
        assert f"Fast time used: {job.gpu_seconds:.2f} GPU seconds." in first.content

        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a cat")
        await ix.wait_response(timeout=5)
        assert not ix.ephemeral  # queued, not refused
        note = f"You have used your {TINY_ALLOWANCE:g} s of fast GPU time today"
        assert note in ix.original.content
        second = await ix.wait_original(has_image, timeout=TIMEOUT)
        assert note in second.content and "--relax" in second.content
        assert "Fast time used" not in second.content
        relaxed = await _job_of(bot, world.guild.id, world.alice.id, "a cat")
        assert (relaxed.tier, relaxed.fast_seconds) == (Tier.RELAX, None)
        assert relaxed.gpu_seconds is not None and relaxed.gpu_seconds > 0

        status = await bot.services.tiers.status(world.guild.id, world.alice.id, [])
        assert status.used == job.gpu_seconds and status.remaining == 0.0
        info = await call(fake, world.channel, world.alice, "info")
        assert "Mode: **relax**" in info.text() and "Fast time:" in info.text()
        quota = await bot.services.quota.status(world.guild.id, world.alice.id, [])
        assert quota.used == 2 * settings.generation.count  # relax still counts images
    assert fake.violations == []


def _one_job_at_a_time(settings: Settings) -> GenerationService:
    """Jobs at least 0.3 s a step, one per pipeline call, so the queue order is visible."""
    spec = ModelSpec(
        settings.model.id, variant=None, device="cpu", safety_checker=False,
        cache_dir=settings.model.cache_dir,
    )
    policy = FairQueuePolicy(max_queued_per_user=3, batching=False)
    return GenerationService(SlowSteps(DiffusersEngine(spec), 0.3), policy, warmup=False)


@pytest.mark.sqlite_only  # the queue order and the commands: no storage differences
async def test_a_relax_job_waits_while_a_fast_job_is_queued(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """While the GPU is busy, bob's relax job is queued before alice's second fast job, yet
    alice's starts first; bob's message promises no position and says why."""
    async with running(settings, fake, generation_factory=_one_job_at_a_time) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        busy = await fake.invoke(world.channel, world.admin, "imagine", prompt="busy", count=1)
        await busy.wait_response(timeout=5)
        deadline = time.monotonic() + TIMEOUT
        while not bot.generation.running():
            assert time.monotonic() < deadline, "the first job never started"
            await asyncio.sleep(0.02)

        relax = await fake.invoke(
            world.channel, world.bob, "imagine", prompt="slow --relax", count=1
        )
        await relax.wait_response(timeout=5)
        text = relax.original.content
        assert "Waiting in relax mode" in text and "Fast jobs go first" in text
        assert "position" not in text
        fast = await fake.invoke(world.channel, world.alice, "imagine", prompt="quick", count=1)
        await fast.wait_response(timeout=5)

        await relax.wait_original(has_image, timeout=TIMEOUT)
        await fast.wait_original(has_image, timeout=TIMEOUT)
        slow = await _job_of(bot, world.guild.id, world.bob.id, "slow")
        quick = await _job_of(bot, world.guild.id, world.alice.id, "quick")
        assert slow.created_at < quick.created_at
        assert slow.tier is Tier.RELAX and quick.tier is Tier.FAST
        assert quick.started_at is not None and slow.started_at is not None
        assert quick.started_at < slow.started_at
    assert fake.violations == []


@pytest.mark.sqlite_only  # the queue order and the commands: no storage differences
async def test_admin_sets_a_members_fast_time(
    fake: FakeDiscord, world: World, settings: Settings
) -> None:
    """`/quota fast` gives a member an allowance; `/quota show` and `/quota list` show it;
    `/quota fast-clear` removes it."""
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "quota"], guild=world.guild, timeout=TIMEOUT)
        done = await call(fake, world.channel, world.admin, "quota fast", scope="member",
                          target=world.alice, seconds=90, period="week")
        assert "90 GPU seconds of fast time per week" in done.content
        status = await bot.services.tiers.status(world.guild.id, world.alice.id, [])
        assert (status.allowance, status.period.value) == (90.0, "week")
        shown = await call(fake, world.channel, world.alice, "quota show")
        assert "of 90 GPU s used this week" in shown.text()
        listed = await call(fake, world.channel, world.admin, "quota list")
        assert "Fast time" in listed.text() and world.alice.mention in listed.text()
        refused = await call(fake, world.channel, world.alice, "quota fast", scope="server",
                             seconds=5)
        assert refused.ephemeral
        assert (await bot.services.tiers.list_rules(world.guild.id))[0].seconds == 90.0
        cleared = await call(fake, world.channel, world.admin, "quota fast-clear",
                             scope="member", target=world.alice)
        assert "Removed the fast-time allowance" in cleared.content
        assert await bot.services.tiers.list_rules(world.guild.id) == []
    assert fake.violations == []
