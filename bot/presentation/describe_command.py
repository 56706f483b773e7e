"""The `/describe` slash command's schema: one required image attachment.

Like `bot.presentation.imagine_command`, no `from __future__ import annotations`: discord.py
reads the parameter annotations as objects.
"""

from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bot.presentation.deadline import DEFER_STYLE, DeferStyle

__all__ = ["DescribeHandler", "build_describe_command"]

#: Called with the interaction and the attachment's URL (fetched through the CDN guard).
DescribeHandler = Callable[[discord.Interaction, str], Awaitable[None]]


def build_describe_command(handler: DescribeHandler) -> app_commands.Command:
    """`/describe image:<attachment>`: four prompt suggestions for the image, each with a
    button that imagines it; calls `handler(interaction, attachment_url)`."""

    @app_commands.command(
        name="describe",
        description="Get four prompt suggestions for an image; a button imagines each",
        # The queued message is public, as /imagine's: a slow gate defers publicly.
        extras={DEFER_STYLE: DeferStyle.PUBLIC},
    )
    @app_commands.guild_only()
    @app_commands.describe(image="The image to describe (PNG, JPEG, WebP or GIF)")
    async def describe(interaction: discord.Interaction, image: discord.Attachment) -> None:
        await handler(interaction, image.url)

    return describe
