"""A small real discord.py bot whose command bodies each self-test supplies.

The commands exercise what the fake must get right: option types, ``Range`` bounds, choices, a
subcommand group, a DynamicItem button and a modal. A test sets ``bot.handlers[name]`` to the
coroutine that should run and reads the outcomes from ``bot.outcomes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import FakeDiscord

Handler = Callable[..., Awaitable[Any]]


class CounterButton(discord.ui.DynamicItem[discord.ui.Button], template=r"counter:(?P<n>\d+)"):
    """A button whose state lives in its custom_id, so it works after a restart."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Count {n}", custom_id=f"counter:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> CounterButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        view = discord.ui.View(timeout=None)
        view.add_item(CounterButton(self.n + 1))
        await interaction.response.edit_message(content=f"count={self.n + 1}", view=view)
        bot = interaction.client
        assert isinstance(bot, SelfTestBot)
        bot.outcomes.put_nowait(("counter", self.n))


class NoteModal(discord.ui.Modal, title="Add a note"):
    note = discord.ui.TextInput(label="Note", max_length=50)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"noted: {self.note.value}", ephemeral=True)


class SelfTestBot(commands.Bot):
    """Syncs a small command tree in setup_hook; command bodies come from ``handlers``."""

    def __init__(self, *, dev_guild_id: int | None = None) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.handlers: dict[str, Handler] = {}
        self.outcomes: asyncio.Queue[Any] = asyncio.Queue()
        self.dev_guild_id = dev_guild_id
        self.errors: list[BaseException] = []

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CounterButton)
        tree = self.tree

        @tree.command(description="Make an image")
        @app_commands.describe(prompt="What to draw", count="How many images",
                               aspect="Aspect ratio", guidance="CFG scale")
        async def imagine(
            interaction: discord.Interaction,
            prompt: app_commands.Range[str, 1, 100],
            count: app_commands.Range[int, 1, 4] = 4,
            aspect: Literal["1:1", "16:9"] = "1:1",
            guidance: app_commands.Range[float, 0.0, 30.0] = 7.5,
            private: bool = False,
        ) -> None:
            await self._run("imagine", interaction, prompt=prompt, count=count, aspect=aspect,
                            guidance=guidance, private=private)

        quota = app_commands.Group(name="quota", description="Quotas",
                                   default_permissions=discord.Permissions(manage_guild=True))

        @quota.command(name="set", description="Set a quota")
        async def quota_set(
            interaction: discord.Interaction,
            scope: Literal["server", "role", "member"],
            limit: app_commands.Range[int, 0, 1000],
            member: discord.Member | None = None,
            role: discord.Role | None = None,
        ) -> None:
            await self._run("quota set", interaction, scope=scope, limit=limit, member=member,
                            role=role)

        rules = app_commands.Group(name="rules", description="Rules", parent=quota)

        @rules.command(name="show", description="Show rules")
        async def rules_show(interaction: discord.Interaction) -> None:
            await self._run("quota rules show", interaction)

        tree.add_command(quota)

        @tree.command(description="Counter button")
        async def counter(interaction: discord.Interaction) -> None:
            await self._run("counter", interaction)

        @tree.command(description="Open a modal")
        async def note(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(NoteModal())

        await tree.sync()
        if self.dev_guild_id is not None:
            guild = discord.Object(self.dev_guild_id)

            @app_commands.command(description="Guild only")
            async def local(interaction: discord.Interaction) -> None:
                await self._run("local", interaction)

            tree.add_command(local, guild=guild)
            await tree.sync(guild=guild)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py waits 5 s before a non-initial IDENTIFY; the self-tests skip that wait
        (a test that re-identifies lifts the fake's IDENTIFY spacing instead)."""

    async def _run(self, name: str, interaction: discord.Interaction, **kwargs: Any) -> None:
        handler = self.handlers.get(name)
        if handler is None:
            await interaction.response.send_message(f"{name} ok")
            return
        try:
            result = await handler(interaction, **kwargs)
        except Exception as exc:  # handed to the test, which asserts on it
            self.outcomes.put_nowait(exc)
        else:
            self.outcomes.put_nowait(result)

    async def next_outcome(self) -> Any:
        """The next thing a handler returned or raised (5 s at most)."""
        return await asyncio.wait_for(self.outcomes.get(), 5.0)


def point_discord_py_at(fake: FakeDiscord) -> None:
    """What the real bot does from its config (``discord.api_base`` / ``gateway_url``)."""
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)


@contextlib.asynccontextmanager
async def running(bot: commands.Bot, fake: FakeDiscord) -> AsyncIterator[commands.Bot]:
    """Start ``bot`` against ``fake``, wait until it is ready, and close it cleanly afterwards."""
    point_discord_py_at(fake)
    task = asyncio.create_task(bot.start(fake.token))
    try:
        waiter = asyncio.create_task(fake.wait_until_ready(timeout=10))
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()
        await waiter
        await bot.wait_until_ready()
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
