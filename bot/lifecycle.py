"""What the bot runs on, built in one place and released in reverse order.

`open_resources` builds, in this order, under the caller's `AsyncExitStack`:

1. the thread helper (`bot.core.threads.Threads`: encoding, exports, image files);
2. the database (migrated, then opened) and the storage services on it;
3. the image store (on the thread helper) and its retention task (`bot.core.retention`);
4. the generation backend, with its model loaded and warmed up (on its own worker thread);
5. the job orchestrator that ties them together.

The stack releases them in reverse: the backend is closed (model unloaded, its thread ended)
before the database engine is disposed, and the thread helper is closed last. `ImagineBot`
receives the `Resources` ready-made, as discord.py's `advanced_startup` example passes its
database pool and HTTP session in, so its `setup_hook` only wires cogs, buttons and commands;
its `close` drains the jobs (see `bot.app`) before this stack unwinds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator
from bot.core.retention import start_retention
from bot.core.threads import Threads
from bot.db.guard import explain
from bot.db.models import Period
from bot.db.session import UnsupportedDatabase, open_database
from bot.services import Services, TierPolicy, build_services
from bot.services.clock import Clock
from generation.errors import GenerationError, ModelNotFoundError
from generation.factory import build_service
from generation.fastpath import FastPath
from generation.interfaces import GenerationBackend
from generation.progress import startup_stages

if TYPE_CHECKING:
    from generation.pool.settings import PoolConfig

__all__ = [
    "GenerationFactory",
    "Resources",
    "StartupError",
    "build_generation",
    "build_pool_backend",
    "open_resources",
    "pool_config",
    "resources",
]

log = logging.getLogger(__name__)

GenerationFactory = Callable[[Settings], GenerationBackend]


class StartupError(Exception):
    """Start-up failed for a reason the operator can fix; the message says what to do."""


@dataclass(frozen=True)
class Resources:
    """Everything the bot needs besides Discord, ready to use; owned by an exit stack."""

    settings: Settings
    threads: Threads
    db_engine: AsyncEngine
    services: Services
    images: ImageStore
    generation: GenerationBackend
    orchestrator: JobOrchestrator


def tier_policy(settings: Settings) -> TierPolicy:
    """The `[tiers]` section as the tier service takes it."""
    tiers = settings.tiers
    return TierPolicy(
        default=tiers.default,
        fast_seconds=tiers.fast_seconds,
        period=Period(settings.fast_period),
        fast_roles=frozenset(tiers.fast_roles),
        role_fast_seconds=dict(tiers.role_fast_seconds),
    )


def build_generation(settings: Settings) -> GenerationBackend:
    """The generation backend configured by `settings` (not started): the in-process service,
    or with `[generation] backend = "pool"` the client of the GPU worker pool."""
    model, gen = settings.model, settings.generation
    if gen.backend == "pool":
        return build_pool_backend(settings)
    return build_service(
        model.id,
        variant=model.variant,
        device=model.device,
        safety_checker=model.safety_checker,
        cache_dir=model.cache_dir,
        inpaint_id=model.inpaint_id,
        upscaler_id=model.upscaler_id,
        captioner_id=model.captioner_id,
        vae_float32=model.vae_float32,
        memory_budget_gb=model.memory_budget_gb,
        upscale_tile=model.upscale_tile,
        upscale_overlap=model.upscale_overlap,
        min_steps=gen.min_steps,
        max_steps=gen.max_steps,
        max_guidance=gen.max_guidance,
        max_pixels=gen.max_pixels,
        max_queue=gen.max_queue,
        max_queued_per_user=gen.max_queued_per_user,
        max_batch_images=gen.max_batch_images,
        warmup=gen.warmup,
        warmup_size=(gen.width, gen.height),
        continuous=gen.continuous_batching,
        fast_path=FastPath.configured(gen),
        server_shares=gen.server_shares,
        stages=startup_stages(),
    )


def pool_config(settings: Settings) -> PoolConfig:
    """The `[pool]` section as the generation package's `PoolConfig`; raises StartupError
    when no PostgreSQL is configured."""
    from generation.pool.settings import PoolConfig, ResultsMode

    pool, gen = settings.pool, settings.generation
    try:
        dsn = pool.resolved_dsn(settings.database.url)
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    return PoolConfig(
        dsn=dsn,
        queue=pool.queue,
        results=ResultsMode(pool.results),
        results_dir=pool.results_dir,
        heartbeat_seconds=pool.heartbeat_seconds,
        stalled_after_seconds=pool.stalled_after_seconds,
        poll_seconds=pool.poll_seconds,
        max_attempts=pool.max_attempts,
        max_batch_images=gen.max_batch_images,
        max_queue=gen.max_queue,
        max_queued_per_user=gen.max_queued_per_user,
    )


def build_pool_backend(settings: Settings) -> GenerationBackend:
    """The client of the GPU worker pool configured by `[pool]` (not started)."""
    from generation.factory import build_pool_backend as build

    return build(pool_config(settings), settings.model.id, settings.generation.limits())


async def open_resources(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    service_clock: Clock | None = None,
    generation_factory: GenerationFactory | None = None,
) -> Resources:
    """Build the bot's resources under `stack` (see the module docstring for the order).

    Raises `StartupError` when the database cannot be opened or the model cannot load;
    whatever was built before is released by the stack.
    """
    threads = Threads()
    stack.callback(threads.close, wait=False)
    try:
        engine, sessions = await open_database(settings.database.url)
    except UnsupportedDatabase as exc:  # its message names the fix
        url = make_url(settings.database.url).render_as_string(hide_password=True)
        raise StartupError(f"cannot open the database at {url}: {exc}") from exc
    except Exception as exc:  # SQLAlchemy, Alembic or the filesystem: one line, what to do
        raise StartupError(explain(exc, settings.database.url)) from exc
    stack.push_async_callback(_dispose, engine)
    services = build_services(
        sessions,
        settings.quotas.default_limit,
        settings.quotas.default_period,
        clock=service_clock,
        tiers=tier_policy(settings),
    )
    images = ImageStore(settings.storage.images_dir, threads)
    start_retention(images, settings.storage, stack.callback)
    generation = (generation_factory or build_generation)(settings)
    stack.push_async_callback(_close_generation, generation)
    try:
        await generation.start()
    except ModelNotFoundError as exc:  # its message names the model and the fix
        raise StartupError(str(exc)) from exc
    except (GenerationError, OSError) as exc:
        raise StartupError(f"cannot load the model {settings.model.id!r}: {exc}") from exc
    orchestrator = JobOrchestrator(
        services, generation, images, charge_describe=settings.quotas.charge_describe
    )
    return Resources(settings, threads, engine, services, images, generation, orchestrator)


@contextlib.asynccontextmanager
async def resources(settings: Settings, **options: object) -> AsyncIterator[Resources]:
    """`open_resources` with a stack of its own: `async with resources(settings) as res:`."""
    async with AsyncExitStack() as stack:
        yield await open_resources(settings, stack, **options)  # type: ignore[arg-type]


async def _close_generation(generation: GenerationBackend) -> None:
    await generation.close()
    log.info("image generator closed")


async def _dispose(engine: AsyncEngine) -> None:
    await engine.dispose()
    log.info("database closed")
