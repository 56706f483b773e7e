"""`/prefer remix`: a member's own preferences, the same in every server (as Midjourney's).

Remix mode (see `bot.core.remix`): with it on, reroll, V1-V4 and Vary (Subtle/Strong) open an
editor of the job's prompt and flags before running; the job then costs what the button costs,
and closing the editor costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["PreferencesCog", "remix_state_text"]


def remix_state_text(on: bool) -> str:
    """What a member is told about their remix mode."""
    if on:
        return (
            "Remix mode is **on**. Reroll, V1-V4 and Vary (Subtle/Strong) on your own images "
            "first open an editor with the prompt and its flags: change them and submit to run "
            "it (it costs what the button costs), or close the editor to run nothing. "
            "`/prefer remix` turns it off."
        )
    return (
        "Remix mode is **off**: the buttons run at once with the same prompt. "
        "`/prefer remix` turns it on."
    )


class PreferencesCog(commands.Cog, name="Preferences"):
    """`/prefer`: each member's own settings, answered privately."""

    prefer = app_commands.Group(
        name="prefer", description="Your own preferences (the same in every server)"
    )

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @prefer.command(
        name="remix", description="Remix mode: edit the prompt before a reroll or variation runs"
    )
    @app_commands.describe(mode="on or off; leave it out to switch remix mode over")
    async def remix(
        self, interaction: discord.Interaction, mode: Literal["on", "off"] | None = None
    ) -> None:
        preferences = self.bot.services.preferences
        user_id = interaction.user.id
        if mode is None:
            on = not (await preferences.get(user_id)).remix
        else:
            on = mode == "on"
        await preferences.set_remix(user_id, on)
        await interaction.response.send_message(remix_state_text(on), ephemeral=True)
