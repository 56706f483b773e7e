"""The bot: `ImagineBot` (a `commands.Bot`) and `run(settings)`, the `imagine run` entry point.

Start-up, in `setup_hook` (discord.py calls it after login, before the gateway connects):

1. migrate the database and open it;
2. build the storage services, the image store and the generation service;
3. load the model and warm it up (on the worker thread; the loop stays free);
4. fail jobs left unfinished by a previous run and refund them;
5. add the cogs, register the persistent buttons, sync the slash commands.

Shutdown (`close`, also on SIGINT/SIGTERM): stop the generation service (queued jobs are
cancelled and refunded, the running one finishes), let the job followers settle and post,
disconnect from Discord, dispose of the database engine.

No globals: everything hangs off the bot instance, built from the `Settings` it is given.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.config import Settings
from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator
from bot.core.retention import start_retention
from bot.core.threads import Threads
from bot.db.session import open_database
from bot.presentation.buttons import ALL_BUTTONS, ImagineActions
from bot.presentation.delivery import Deliverer
from bot.presentation.permissions import invite_url
from bot.services import Services, build_services
from bot.services.clock import Clock
from generation.errors import GenerationError, ModelNotFoundError
from generation.factory import build_service
from generation.interfaces import GenerationBackend

if TYPE_CHECKING:
    import datetime as dt

    from generation.pool.settings import PoolConfig

__all__ = [
    "CogFactory",
    "ImagineBot",
    "StartupError",
    "build_generation",
    "default_cogs",
    "point_discord_at",
    "run",
    "serve",
]

log = logging.getLogger(__name__)

CogFactory = Callable[["ImagineBot"], commands.Cog]


class StartupError(Exception):
    """Start-up failed for a reason the operator can fix; the message says what to do."""


@dataclass(frozen=True)
class DiscordEndpoints:
    """The REST base and gateway URL discord.py uses (class attributes, so process-wide)."""

    api_base: str
    gateway: yarl.URL

    @classmethod
    def current(cls) -> DiscordEndpoints:
        return cls(discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)

    def apply(self) -> None:
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self.gateway


def point_discord_at(api_base: str, gateway_url: str) -> DiscordEndpoints:
    """Send discord.py's REST calls and gateway connection to these URLs (a rate-limit proxy,
    or a test server); returns the previous endpoints so they can be restored."""
    previous = DiscordEndpoints.current()
    DiscordEndpoints(api_base.rstrip("/"), yarl.URL(gateway_url)).apply()
    return previous


def default_cogs() -> tuple[CogFactory, ...]:
    """The cogs `ImagineBot` loads unless told otherwise; later features add theirs here."""
    from bot.cogs.admin import admin_cogs
    from bot.cogs.errors import ErrorHandler
    from bot.cogs.imagine import ImagineCog
    from bot.cogs.info import InfoCog

    return (ErrorHandler, ImagineCog, InfoCog, *admin_cogs())


class ImagineBot(commands.Bot):
    """The Discord client with its resources; built by `run`, or by tests with their settings.

    Resources (database, services, generation) exist after `setup_hook` and are released by
    `close`. Cogs get the bot and read what they need from it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cogs: Sequence[CogFactory] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        service_clock: Clock | None = None,
        generation_factory: Callable[[Settings], GenerationBackend] | None = None,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=discord.Intents.default(),
            # A safety net: messages that should ping pass their own allowed mentions.
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=settings.discord.guild_ready_timeout,
        )
        self.settings = settings
        self._cog_factories = tuple(cogs) if cogs is not None else default_cogs()
        self._service_clock = service_clock
        # Another backend (or a test's instrumented engine) can be swapped in here.
        self._generation_factory = generation_factory or build_generation
        self.deliverer = Deliverer(clock) if clock is not None else Deliverer()
        # The one door into worker threads (encoding, exports, image files); closed last.
        self.threads = Threads()
        self.images = ImageStore(settings.storage.images_dir, self.threads)
        self.imagine_actions: ImagineActions | None = None
        self._db_engine: AsyncEngine | None = None
        self._services: Services | None = None
        self._generation: GenerationBackend | None = None
        self._orchestrator: JobOrchestrator | None = None
        self._previous_endpoints: DiscordEndpoints | None = None
        self._shutdown_hooks: list[Callable[[], Any]] = []
        self._closing = False

    # -- resources (available once setup_hook ran) ------------------------------------------

    @property
    def services(self) -> Services:
        return _ready(self._services, "services")

    @property
    def generation(self) -> GenerationBackend:
        return _ready(self._generation, "generation service")

    @property
    def orchestrator(self) -> JobOrchestrator:
        return _ready(self._orchestrator, "orchestrator")

    def add_shutdown_hook(self, hook: Callable[[], Any]) -> None:
        """Run `hook` (sync or async) early in `close`, after the generator stopped taking jobs
        and before Discord is disconnected (cogs use it to let job followers settle)."""
        self._shutdown_hooks.append(hook)

    # -- start ------------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        discord_settings = self.settings.discord
        self._previous_endpoints = point_discord_at(
            discord_settings.api_base, discord_settings.gateway_url
        )
        await super().login(token)

    async def setup_hook(self) -> None:
        settings = self.settings
        if self.application_id is not None:
            log.info("invite the bot", extra={"url": invite_url(self.application_id)})
        try:
            self._db_engine, sessions = await open_database(settings.database.url)
        except Exception as exc:  # SQLAlchemy, Alembic or the filesystem
            url = make_url(settings.database.url).render_as_string(hide_password=True)
            raise StartupError(f"cannot open the database at {url}: {exc}") from exc
        self._services = build_services(
            sessions,
            settings.quotas.default_limit,
            settings.quotas.default_period,
            clock=self._service_clock,
        )
        self._generation = self._generation_factory(settings)
        try:
            await self._generation.start()
        except ModelNotFoundError as exc:  # its message names the model and the fix
            raise StartupError(str(exc)) from exc
        except (GenerationError, OSError) as exc:
            raise StartupError(f"cannot load the model {settings.model.id!r}: {exc}") from exc
        self._orchestrator = JobOrchestrator(self._services, self._generation, self.images)
        await self._orchestrator.recover()
        start_retention(self.images, settings.storage, self.add_shutdown_hook)

        for factory in self._cog_factories:
            await self.add_cog(factory(self))
        self.add_dynamic_items(*ALL_BUTTONS)
        await self._sync_commands()

    async def _sync_commands(self) -> None:
        guild_id = self.settings.discord.dev_guild_id
        if guild_id is not None:
            # Guild commands update at once; global ones can take a while to show up.
            guild = discord.Object(guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("commands synced", extra={"commands": len(synced), "guild": guild_id})
        else:
            synced = await self.tree.sync()
            log.info("commands synced", extra={"commands": len(synced), "guild": "global"})

    async def on_ready(self) -> None:
        log.info(
            "ready",
            extra={"user": str(self.user), "servers": len(self.guilds)},
        )

    # -- errors -----------------------------------------------------------------------------

    async def report_interaction_error(
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        """The single place interaction errors go (slash commands and buttons alike)."""
        from bot.cogs.errors import ErrorHandler

        handler = self.get_cog(ErrorHandler.__cog_name__)
        if isinstance(handler, ErrorHandler):
            await handler.handle(interaction, error)
        else:
            log.error("interaction error with no handler loaded", exc_info=error)

    # -- stop -------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            if self._generation is not None:
                await self._generation.close(grace=self._shutdown_grace())
            for hook in self._shutdown_hooks:
                result = hook()
                if asyncio.iscoroutine(result):
                    await result
        except Exception:
            log.exception("error while stopping the generation service")
        finally:
            await super().close()
            if self._db_engine is not None:
                await self._db_engine.dispose()
            self.threads.close(wait=False)
            if self._previous_endpoints is not None:
                self._previous_endpoints.apply()

    @staticmethod
    def _shutdown_grace() -> float:
        """Seconds the running job may take to finish on shutdown before it is cancelled."""
        return 30.0


def _ready(value: Any, what: str) -> Any:
    if value is None:
        raise RuntimeError(f"the {what} is not ready: it is built in setup_hook")
    return value


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
        min_steps=gen.min_steps,
        max_steps=gen.max_steps,
        max_guidance=gen.max_guidance,
        max_pixels=gen.max_pixels,
        max_queue=gen.max_queue,
        max_queued_per_user=gen.max_queued_per_user,
        max_batch_images=gen.max_batch_images,
        warmup=gen.warmup,
        warmup_size=(gen.width, gen.height),
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


# -- the `imagine run` entry point ------------------------------------------------------------


def run(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM; returns the process exit code.

    Start-up failures (no or bad token, model missing, database unusable, Discord unreachable)
    become one line on stderr and exit code 1 (2 for a missing token, a configuration error).
    """
    if settings.discord.token is None:
        print(
            "imagine: no Discord bot token: set discord.token in the config file or the "
            "DISCORD_TOKEN environment variable",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(serve(settings))
    except discord.LoginFailure:
        return _fail("Discord refused the bot token (discord.token / DISCORD_TOKEN)")
    except discord.PrivilegedIntentsRequired as exc:
        return _fail(f"Discord refused the gateway intents: {exc}")
    except StartupError as exc:
        return _fail(str(exc))
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as exc:
        return _fail(
            f"cannot reach Discord at {settings.discord.api_base} / "
            f"{settings.discord.gateway_url}: {exc}"
        )
    except discord.HTTPException as exc:
        return _fail(f"Discord answered {exc.status}: {exc.text}")
    except app_commands.CommandSyncFailure as exc:
        return _fail(f"Discord refused the slash commands: {exc}")
    except KeyboardInterrupt:
        pass
    return 0


async def serve(settings: Settings) -> None:
    """Run the bot until it stops or SIGINT/SIGTERM arrives, then shut it down cleanly.

    Start-up failures propagate (see `run` for how they are reported).
    """
    if settings.discord.token is None:
        raise StartupError("no Discord bot token configured")
    token = settings.discord.token.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        async with ImagineBot(settings) as bot:
            runner = asyncio.create_task(bot.start(token), name="discord")
            stopper = asyncio.create_task(stop.wait(), name="signals")
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                stopper.cancel()
                runner.result()  # re-raises a start-up failure
                return
            log.info("signal received: shutting down")
            await bot.close()
            try:
                await runner
            except Exception:
                # Stopped mid-start (e.g. while the model loaded): what start-up raised then
                # follows from the shutdown; it is no failure to report.
                log.debug("start-up interrupted by the shutdown", exc_info=True)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _fail(message: str) -> int:
    print(f"imagine: {message}", file=sys.stderr)
    return 1
