"""The one place interaction errors become messages.

Expected refusals (a quota reached, a ban, a blocked word, a malformed flag, a full queue, a
bad parameter) carry a message for the member and are answered ephemerally, without a
traceback in the logs. Anything else is a bug: logged with its traceback, and the member gets
a short apology rather than Discord's "The application did not respond".
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.flags import FlagError
from bot.errors import MemberError, ServiceError
from bot.presentation.delivery import interaction_expired, is_dead, respond
from bot.presentation.messages import MAX_CONTENT
from generation.errors import GenerationError
from generation.text import cut_text

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["ErrorHandler", "MemberError", "user_message"]

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on my side; it has been logged. Please try again later."


def user_message(error: BaseException) -> str | None:
    """The message for the member if `error` is an expected refusal, else None (a bug)."""
    if isinstance(error, app_commands.CommandInvokeError | commands.CommandInvokeError):
        return user_message(error.original)
    if isinstance(error, ServiceError):
        return error.render(_relative)
    if isinstance(error, FlagError | MemberError):
        return error.user_message
    if isinstance(error, GenerationError):
        # Bad parameters, a full queue, a job cancelled by shutdown, a CUDA out-of-memory:
        # each says what happened in words a member can act on.
        return str(error)
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.MissingPermissions):
        return "You do not have permission to use this command."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.CheckFailure):
        return "You cannot use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"I could not understand the value {error.value!r}."
    return None


def _relative(moment: datetime) -> str:
    return discord.utils.format_dt(moment, "R")


class ErrorHandler(commands.Cog, name="Errors"):
    """Answers failed interactions; installs itself as the command tree's error handler."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error

    async def cog_load(self) -> None:
        self.bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await self.handle(interaction, error)

    async def handle(self, interaction: discord.Interaction, error: BaseException) -> None:
        """Tell the member what went wrong, ephemerally; log bugs with their traceback."""
        original = getattr(error, "original", error)
        if isinstance(original, Exception) and interaction_expired(original):
            # Answering now would be one more callback on a dead interaction (10062 again).
            log.info(
                "interaction %s (%s) expired before it was answered",
                interaction.id,
                _describe(interaction),
            )
            return
        message = user_message(error)
        if message is None:
            log.error(
                "unhandled error in interaction %s (%s)",
                interaction.id,
                _describe(interaction),
                exc_info=(type(original), original, original.__traceback__),
            )
            message = UNEXPECTED
        if is_dead(interaction):  # Discord already called it dead: nothing can reach it
            log.info("interaction %s expired; not answered: %s", interaction.id, message)
            return
        await self.reply(interaction, message)

    @staticmethod
    async def reply(interaction: discord.Interaction, message: str) -> None:
        """An ephemeral answer, as the initial response or as a follow-up if one was sent."""
        mentions = discord.AllowedMentions.none()
        message = cut_text(message, MAX_CONTENT)  # member text quoted in it may be long
        if getattr(interaction.response, "public_placeholder", False):
            # The deadline guard deferred publicly ("thinking…" for everyone): remove that,
            # so the error below is a new private message rather than filling the public one.
            try:
                await interaction.delete_original_response()
            except discord.HTTPException as exc:
                log.warning("could not remove the public placeholder: %s", exc)
        try:
            await respond(interaction, message, ephemeral=True, allowed_mentions=mentions)
        except discord.HTTPException as exc:
            log.warning("could not tell the member about an error: %s", exc)


def _describe(interaction: discord.Interaction) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    data = interaction.data or {}
    return str(data.get("custom_id", interaction.type))
