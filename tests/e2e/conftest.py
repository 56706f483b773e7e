"""End-to-end fixtures: the fake Discord, one server with members, and the real `ImagineBot`.

The bot is the production class, configured the way an operator would (a config pointing
`api_base`/`gateway_url` at the fake, `model.id = "builtin:tiny-random"`), with small images
and few steps so each job takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import bot.lifecycle as lifecycle_module
from bot.app import CogFactory, ImagineBot
from bot.config import Settings, load_settings
from bot.lifecycle import GenerationFactory, open_resources
from bot.services.clock import Clock
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService
from generation.tiny import ensure_tiny_model
from tests.db.fixtures import db_url, migrated_template
from tests.fakediscord import FakeDiscord
from tests.fakediscord.fixtures import Server, add_server, discord_urls, fake
from tests.fakediscord.models import Message
from tests.generation.engines import PassThroughEngine

__all__ = ["db_url", "discord_urls", "fake", "migrated_template"]

#: Default image size and steps for e2e jobs: a 2x2 grid is 128x128.
SIZE = 64
STEPS = 2
TIMEOUT = 60.0  # generous: a loaded 2-core CI machine


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-model cache for the whole e2e session (building it is the slow part)."""
    root = tmp_path_factory.mktemp("imagine-e2e-cache")
    ensure_tiny_model(root)
    return root


#: The e2e tests' name for the standard test server.
World = Server


@pytest.fixture
def guild_options() -> dict[str, Any]:
    """Override (e.g. with parametrize) to build the server differently."""
    return {}


@pytest.fixture
def world(fake: FakeDiscord, guild_options: dict[str, Any]) -> World:
    return add_server(fake, **guild_options)


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    fake: FakeDiscord, world: World, tiny_cache: Path, tmp_path: Path, db_url: str
) -> SettingsFactory:
    """Settings as an operator would write them, pointing at the fake; sections overridable.

    The database is SQLite or PostgreSQL (`db_url` runs each test on both, see
    tests/conftest.py), migrated to head; the bot's own start-up migration then has nothing
    left to do.
    """

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "discord": {
                "token": fake.token,
                "api_base": fake.api_base,
                "gateway_url": fake.gateway_url,
                "dev_guild_id": world.guild.id,
                "guild_ready_timeout": 0.1,
            },
            "model": {
                "id": "builtin:tiny-random",
                "device": "cpu",
                "variant": None,
                # The random safety checker's verdicts are arbitrary; the NSFW policy is
                # covered by tests/bot with forced verdicts.
                "safety_checker": False,
                "cache_dir": str(tiny_cache),
            },
            "generation": {
                "steps": STEPS,
                "width": SIZE,
                "height": SIZE,
                "warmup": False,
                "max_queued_per_user": 3,
            },
            "storage": {"images_dir": str(tmp_path / "images")},
            "database": {"url": db_url},
            "quotas": {"default_limit": 100, "default_period": "day"},
        }
        for section, values in sections.items():
            base[section] = {**base.get(section, {}), **values}
        return load_settings(None, **base)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    fake: FakeDiscord,
    *,
    cogs: Sequence[CogFactory] | None = None,
    service_clock: Clock | None = None,
    generation_factory: GenerationFactory | None = None,
) -> AsyncIterator[ImagineBot]:
    """Build the resources and the bot as `serve` does, start it against `fake`, wait until
    ready; afterwards close the bot, then the resources (in reverse order)."""
    assert settings.discord.token is not None
    async with contextlib.AsyncExitStack() as stack:
        resources = await open_resources(
            settings, stack, service_clock=service_clock, generation_factory=generation_factory
        )
        bot = ImagineBot(resources, cogs=cogs)
        task = asyncio.create_task(bot.start(settings.discord.token.get_secret_value()))
        try:
            ready = asyncio.create_task(bot.wait_until_ready())
            done, _ = await asyncio.wait({task, ready}, timeout=TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                ready.cancel()
                task.result()  # re-raise the start-up failure
            assert ready in done, "the bot did not become ready"
            yield bot
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def bot(fake: FakeDiscord, world: World, settings: Settings) -> AsyncIterator[ImagineBot]:
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        yield bot


class SlowSteps(PassThroughEngine):
    """The real tiny engine, pausing after each denoising step so a job lasts a known minimum
    time (the tiny model alone can finish before its queued message is even sent)."""

    def __init__(self, inner: DiffusersEngine, pause: float) -> None:
        super().__init__(inner)
        self.pause = pause

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        def slow_step(step: int, total: int) -> None:
            time.sleep(self.pause)
            if on_step is not None:
                on_step(step, total)

        return self.inner.generate(requests, slow_step, should_stop)


def slow_generation(settings: Settings) -> GenerationService:
    """A generation service whose jobs take at least 0.1 s per step."""
    spec = ModelSpec(
        settings.model.id, variant=None, device="cpu", safety_checker=False,
        cache_dir=settings.model.cache_dir,
    )
    policy = FairQueuePolicy(max_queued_per_user=settings.generation.max_queued_per_user)
    return GenerationService(SlowSteps(DiffusersEngine(spec), 0.1), policy, warmup=False)


@pytest.fixture
async def slow_bot(
    fake: FakeDiscord, world: World, settings: Settings
) -> AsyncIterator[ImagineBot]:
    """Like `bot`, with jobs slowed to at least 0.1 s per step (queueing and timing tests)."""
    async with running(settings, fake, generation_factory=slow_generation) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        yield bot


# -- a database too slow for Discord's deadline -----------------------------------------------


class SlowSessions:
    """A session factory whose first session in each task (one handler) waits `delay` first:
    a database too slow for Discord's deadline. Off until `slow` is set."""

    def __init__(self, inner: Any, delay: float = 3.5) -> None:
        self._inner = inner
        self.delay = delay
        self._slowed: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.slow = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _SlowSession(self, self._inner(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def wait(self) -> None:
        task = asyncio.current_task()
        if self.slow and task is not None and task not in self._slowed:
            self._slowed.add(task)
            await asyncio.sleep(self.delay)


class _SlowSession:
    def __init__(self, owner: SlowSessions, session: Any) -> None:
        self._owner, self._session = owner, session

    async def __aenter__(self) -> Any:
        await self._owner.wait()
        return await self._session.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._session.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


@pytest.fixture
async def slowed(
    fake: FakeDiscord, world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ImagineBot, list[SlowSessions]]]:
    """The bot (jobs at least 0.1 s a step) on a database that can be slowed."""
    made: list[SlowSessions] = []
    real_open = lifecycle_module.open_database

    async def open_slow(url: str) -> tuple[Any, Any]:
        engine, sessions = await real_open(url)
        made.append(SlowSessions(sessions))
        return engine, made[-1]

    monkeypatch.setattr(lifecycle_module, "open_database", open_slow)
    async with running(settings, fake, generation_factory=slow_generation) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        yield bot, made


# -- helpers for the tests ------------------------------------------------------------------


def png_size(message: Message, index: int = 0) -> tuple[int, int]:
    """The pixel size of an attachment (it must be a decodable image)."""
    with Image.open(io.BytesIO(message.attachments[index].data)) as image:
        image.load()
        return image.size


def has_image(message: Message) -> bool:
    return bool(message.attachments)


def button_ids(message: Message) -> list[str]:
    return [button.custom_id for button in message.buttons()]


def config_toml(settings: Settings) -> str:
    """`settings` as an operator's TOML file (just enough TOML: tables of strings, numbers,
    booleans and lists of numbers or strings); the token is left out, to come from
    DISCORD_TOKEN as an operator would do."""
    lines = []
    for section, values in settings.model_dump(mode="json", exclude_none=True).items():
        assert isinstance(values, dict)
        lines.append(f"[{section}]")
        for key, value in values.items():
            if key == "token":
                continue
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float | list):
                lines.append(f"{key} = {value}")
            elif isinstance(value, dict):  # server shares: an inline table of numbers
                items = ", ".join(f'"{name}" = {number}' for name, number in value.items())
                lines.append(f"{key} = {{{items}}}")
            else:
                lines.append(f"{key} = {str(value)!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"
