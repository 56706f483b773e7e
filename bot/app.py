"""The bot: `ImagineBot` (a `commands.AutoShardedBot`) and `run(settings)`, the `imagine run`
entry point.

One process runs the shards `[discord] shard_ids` of `shard_count` (all of them by default;
Discord's recommended count when `shard_count` is unset). Processes of one deployment space
their IDENTIFYs through the database they share (`bot.db.identify`).

Start-up (`serve`): `bot.lifecycle.open_resources` builds the database, services, image store
and generation backend under one `AsyncExitStack` and hands them to `ImagineBot`. Its
`setup_hook` (after login, before the gateway connects) only wires: cogs (the imagine cog
resumes the jobs a previous run left, see `ImagineCog.resume_jobs`), persistent buttons,
command sync.

Shutdown (`close`, also on SIGINT/SIGTERM), within `jobs.shutdown_grace` seconds:

1. stop accepting work (members are told the bot is restarting; nothing is charged);
2. let the running batch finish; waiting jobs stay queued in the database, in order;
3. deliver the finished results and tell the waiting jobs' members they keep their place;
4. disconnect from Discord; then the exit stack closes the backend, then the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator
from bot.core.threads import Threads
from bot.db.identify import IDENTIFY_SPACING_S, IdentifyGate, identify_gate_for
from bot.lifecycle import Resources, StartupError, build_generation, open_resources
from bot.presentation.buttons import ALL_BUTTONS, ImagineActions
from bot.presentation.deadline import DeadlineTree
from bot.presentation.delivery import Deliverer
from bot.presentation.permissions import invite_url
from bot.services import Services
from generation.interfaces import GenerationBackend

if TYPE_CHECKING:
    import datetime as dt

    from bot.config import Settings

__all__ = [
    "CogFactory",
    "ImagineBot",
    "Resources",
    "ShutdownHook",
    "StartupError",
    "build_generation",
    "default_cogs",
    "point_discord_at",
    "run",
    "serve",
]

log = logging.getLogger(__name__)

CogFactory = Callable[["ImagineBot"], commands.Cog]
#: Called on shutdown with the seconds left of the grace time.
ShutdownHook = Callable[[float], Awaitable[None]]


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
    from bot.cogs.preferences import PreferencesCog

    return (ErrorHandler, ImagineCog, InfoCog, PreferencesCog, *admin_cogs())


class ImagineBot(commands.AutoShardedBot):
    """The Discord client, given its `Resources` (built by `bot.lifecycle.open_resources`).

    The resources belong to whoever built them (their exit stack releases them after the bot
    closed); the bot only uses them. Cogs get the bot and read what they need from it.
    """

    def __init__(
        self,
        resources: Resources,
        *,
        cogs: Sequence[CogFactory] | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        settings = resources.settings
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=discord.Intents.default(),
            # A safety net: messages that should ping pass their own allowed mentions.
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=settings.discord.guild_ready_timeout,
            # Answers or defers every slash command within Discord's 3 seconds.
            tree_cls=DeadlineTree,
            shard_count=settings.discord.shard_count,
            shard_ids=settings.discord.shard_ids,
        )
        self.settings = settings
        self.resources = resources
        self._identify_gate: IdentifyGate = identify_gate_for(settings.database.url)
        self._max_concurrency: int | None = None
        self._identified_shards: set[int] = set()
        self._cog_factories = tuple(cogs) if cogs is not None else default_cogs()
        self.deliverer = Deliverer(clock) if clock is not None else Deliverer()
        self.imagine_actions: ImagineActions | None = None
        self._previous_endpoints: DiscordEndpoints | None = None
        self._shutdown_hooks: list[ShutdownHook] = []
        self._closing = False

    # -- resources --------------------------------------------------------------------------

    @property
    def services(self) -> Services:
        return self.resources.services

    @property
    def generation(self) -> GenerationBackend:
        return self.resources.generation

    @property
    def threads(self) -> Threads:
        """The one door into worker threads (encoding, exports, image files)."""
        return self.resources.threads

    @property
    def orchestrator(self) -> JobOrchestrator:
        return self.resources.orchestrator

    @property
    def images(self) -> ImageStore:
        return self.resources.images

    def add_shutdown_hook(self, hook: ShutdownHook) -> None:
        """Run `hook(seconds_left)` in `close`, after the running batch finished (or the grace
        time ran out) and before Discord is disconnected: cogs post what their jobs made."""
        self._shutdown_hooks.append(hook)

    # -- start ------------------------------------------------------------------------------

    async def login(self, token: str) -> None:
        discord_settings = self.settings.discord
        self._previous_endpoints = point_discord_at(
            discord_settings.api_base, discord_settings.gateway_url
        )
        await super().login(token)

    async def setup_hook(self) -> None:
        if self.application_id is not None:
            log.info("invite the bot", extra={"url": invite_url(self.application_id)})
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

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait for this shard's IDENTIFY turn across every process of the deployment
        (replaces discord.py's 5 s sleep, which only spaces the shards of one process).

        A shard identifying again (its session was invalidated, perhaps because a process
        restarted within 5 s of its last IDENTIFY) first waits out a whole window, as
        discord.py's default does, so a refused IDENTIFY is never repeated at once.
        """
        shard = shard_id or 0
        if shard in self._identified_shards:
            await asyncio.sleep(IDENTIFY_SPACING_S)
        self._identified_shards.add(shard)
        if self._max_concurrency is None:
            try:
                limits = await self.fetch_session_start_limits()
                self._max_concurrency = max(1, limits.max_concurrency)
            except (discord.HTTPException, discord.GatewayNotFound):
                log.warning("no session start limits from Discord; one IDENTIFY per 5 s")
                self._max_concurrency = 1
        bucket = shard % self._max_concurrency
        await self._identify_gate.acquire(bucket)
        log.debug("shard %s may IDENTIFY (bucket %d)", shard_id, bucket)

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
        """Drain the jobs (see the module docstring), then disconnect from Discord.

        The resources stay open: their owner's exit stack closes them afterwards.
        """
        if self._closing:
            await super().close()
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        grace = self.settings.jobs.shutdown_grace
        deadline = loop.time() + grace
        try:
            log.info("shutting down: new requests are refused, the running batch finishes")
            await self.orchestrator.stop(grace=grace)
            for hook in self._shutdown_hooks:
                await hook(max(1.0, deadline - loop.time()))
        except Exception:
            log.exception("error while draining the jobs")
        finally:
            await super().close()
            await self._identify_gate.close()
            if self._previous_endpoints is not None:
                self._previous_endpoints.apply()


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
        async with AsyncExitStack() as stack:
            resources = await open_resources(settings, stack)
            if stop.is_set():  # a signal came while the model loaded
                return
            bot = await stack.enter_async_context(ImagineBot(resources))
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
                # Stopped mid-start: what start-up raised then follows from the shutdown;
                # it is no failure to report.
                log.debug("start-up interrupted by the shutdown", exc_info=True)
        # The stack closed the bot, then the generation backend, then the database.
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _fail(message: str) -> int:
    print(f"imagine: {message}", file=sys.stderr)
    return 1
