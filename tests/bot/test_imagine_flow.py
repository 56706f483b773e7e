"""The /imagine cog's job flow with a stand-in interaction: nothing is left unsettled."""

from __future__ import annotations

from types import SimpleNamespace

import aiohttp
import discord
import pytest

from bot.cogs.imagine import ImagineCog
from bot.config import load_settings
from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator, JobPlan
from bot.presentation.delivery import Deliverer
from bot.services import Services
from generation.service import GenerationService
from tests.bot.conftest import small


class _Response:
    def is_done(self) -> bool:
        return False

    async def send_message(self, *args: object, **kwargs: object) -> None:
        raise aiohttp.ClientOSError(104, "Connection reset by peer")

    async def defer(self, *args: object, **kwargs: object) -> None:
        raise aiohttp.ClientOSError(104, "Connection reset by peer")


class _Interaction:
    """Just what the flow reads; every call to Discord fails with a dropped connection."""

    def __init__(self) -> None:
        self.id = discord.utils.time_snowflake(discord.utils.utcnow())
        self.created_at = discord.utils.snowflake_time(self.id)
        self.user = SimpleNamespace(id=100, roles=())
        self.guild_id = 1
        self.channel_id = 10
        self.application_id = 999
        self.token = "interaction-token"
        self.channel = None
        self.guild = None
        self.response = _Response()
        self.extras: dict[str, object] = {}

    async def edit_original_response(self, **kwargs: object) -> None:
        raise aiohttp.ClientOSError(104, "Connection reset by peer")


async def test_job_is_settled_when_the_first_response_fails_with_a_network_error(
    services: Services, generation: GenerationService, image_store: ImageStore
) -> None:
    """A connection error (not an HTTP error) on the queued message still cancels and refunds."""
    orchestrator = JobOrchestrator(services, generation, image_store)
    bot = SimpleNamespace(
        settings=load_settings(None),
        orchestrator=orchestrator,
        generation=generation,
        deliverer=Deliverer(),
        services=services,
        images=image_store,
    )
    cog = ImagineCog(bot)  # type: ignore[arg-type]
    interaction = _Interaction()
    with pytest.raises(aiohttp.ClientError):
        await cog._start(interaction, JobPlan(small(count=2)))  # type: ignore[arg-type]
    await cog.drain(10)
    assert orchestrator.live_for(1, 100) == []
    status = await services.quota.status(1, 100, [])
    assert status.used == 0
