"""Fixtures for the admin and member controls, end to end through the fake Discord.

The bot is the production `ImagineBot` from tests/e2e/conftest.py, with one change: the
storage services read a settable clock, so tests can create jobs on chosen days and know
when quotas reset. Most tests create jobs through the services (no image generation);
the few that exercise the `/imagine` gate use the tiny model with 64x64 images.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from PIL import Image

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobStatus
from bot.services.history import JobRecord
from generation.params import GenerationParams
from tests.db.fixtures import FakeClock
from tests.e2e.conftest import TIMEOUT, World, running
from tests.fakediscord import FakeChannel, FakeDiscord, FakeMember, FakeUser, Interaction
from tests.fakediscord.models import Message

ADMIN_COMMANDS = ("quota", "history", "show", "blocklist", "ban", "unban", "bans", "channels",
                  "settings", "audit")
COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30))


@pytest.fixture
def clock() -> FakeClock:
    """The services' clock: now, settable (jobs on chosen days, known quota resets)."""
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def bot(
    fake: FakeDiscord, world: World, settings: Settings, clock: FakeClock
) -> AsyncIterator[ImagineBot]:
    async with running(settings, fake, service_clock=clock) as bot:
        await fake.wait_for_commands(
            ["imagine", *ADMIN_COMMANDS], guild=world.guild, timeout=TIMEOUT
        )
        yield bot


async def call(
    fake: FakeDiscord,
    channel: FakeChannel,
    user: FakeMember | FakeUser,
    command: str,
    /,
    **options: object,
) -> Message:
    """Invoke a command and return its answer once it is complete (deferred ones filled)."""
    ix = await fake.invoke(channel, user, command, **options)
    return await answer(ix)


async def answer(ix: Interaction) -> Message:
    await ix.wait_response(timeout=10)
    return await ix.wait_original(lambda m: not m.loading, timeout=TIMEOUT)


async def add_job(
    bot: ImagineBot,
    guild_id: int,
    channel_id: int,
    user_id: int,
    prompt: str,
    *,
    status: JobStatus = JobStatus.SUCCEEDED,
    count: int = 4,
    seed: int = 1000,
    nsfw: Sequence[bool] | None = None,
    images: bool = False,
) -> str:
    """A job recorded through the history service (and, with `images`, stored pictures of
    64x64 plain colours), as if /imagine had made it; returns its id."""
    job_id = uuid.uuid4().hex
    history = bot.services.history
    await history.create_job(
        JobRecord(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            params=GenerationParams(
                prompt, steps=2, width=64, height=64, count=count, seed=seed
            ),
            model_id="builtin:tiny-random",
            id=job_id,
        )
    )
    flags = list(nsfw) if nsfw is not None else [False] * count
    if status is JobStatus.SUCCEEDED:
        await history.mark_succeeded(job_id, range(seed, seed + count), flags, 0.1)
    elif status is JobStatus.FAILED:
        await history.mark_failed(job_id, "boom")
    elif status is JobStatus.CANCELLED:
        await history.mark_cancelled(job_id)
    if images:
        pictures = [(i, Image.new("RGB", (64, 64), COLOURS[i - 1])) for i in range(1, count + 1)]
        await bot.images.save(job_id, pictures)
    return job_id


def image_size(message: Message, index: int = 0) -> tuple[int, int]:
    with Image.open(io.BytesIO(message.attachments[index].data)) as image:
        return image.size


def refused(message: Message, text: str) -> bool:
    """An ephemeral answer containing `text`."""
    return message.ephemeral and text in message.text()
