"""The `/imagine` slash command's schema, built at start-up from the configured limits.

The bounds Discord shows and enforces (steps up to `generation.max_steps`, guidance up to
`generation.max_guidance`) come from the configuration, so the command is built by a function
rather than declared once with fixed numbers. This module deliberately does not use
`from __future__ import annotations`: discord.py reads the `Range[...]` annotations as objects.
"""

from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bot.core.flags import MAX_SEED, ImagineOptions
from bot.presentation.deadline import DEFER_STYLE, DeferStyle
from generation.params import NO_GUIDANCE

__all__ = ["ASPECT_CHOICES", "ImagineHandler", "build_imagine_command"]

#: (label, ratio) pairs offered in the `aspect` option; `--ar` accepts any W:H within 1:4-4:1.
ASPECT_CHOICES: tuple[tuple[str, str], ...] = (
    ("1:1 square", "1:1"),
    ("3:2 landscape", "3:2"),
    ("2:3 portrait", "2:3"),
    ("4:3 landscape", "4:3"),
    ("3:4 portrait", "3:4"),
    ("16:9 wide", "16:9"),
    ("9:16 tall", "9:16"),
)

PROMPT_MAX_CHARS = 1000
NEGATIVE_MAX_CHARS = 500

ImagineHandler = Callable[[discord.Interaction, str, ImagineOptions], Awaitable[None]]


def build_imagine_command(
    handler: ImagineHandler,
    *,
    max_steps: int,
    max_guidance: float,
    min_steps: int = 1,
    max_count: int = 4,
) -> app_commands.Command:
    """`/imagine` with bounds from the configuration; calls `handler(interaction, prompt, opts)`.

    Options left empty arrive as None in `ImagineOptions`; `bot.flags.merge_options` then lets
    them win over flags typed in the prompt.
    """

    @app_commands.command(
        name="imagine",
        description="Create images from a text prompt (flags like --ar 16:9 --no text work too)",
        # The queued message is public: a slow gate defers with a public "thinking" message.
        extras={DEFER_STYLE: DeferStyle.PUBLIC},
    )
    @app_commands.guild_only()
    @app_commands.describe(
        prompt=(
            "What to draw. Flags at the end: --ar W:H --seed N --no a, b --steps N --cfg X --n N"
        ),
        negative="What to keep out of the images (same as --no)",
        aspect="Width:height of the images (same as --ar)",
        seed="Seed for reproducible images; image n uses seed + n - 1 (same as --seed)",
        steps="Denoising steps: more is slower and more detailed (same as --steps)",
        guidance="How closely to follow the prompt (CFG scale); 1 = no guidance (same as --cfg)",
        count="How many images to make, 1-4 (same as --n)",
        image="An image to start from (an image prompt; --iw 0-3 says how closely to follow it)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=label, value=value) for label, value in ASPECT_CHOICES]
    )
    async def imagine(
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX_CHARS],
        negative: app_commands.Range[str, 1, NEGATIVE_MAX_CHARS] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, min_steps, max_steps] | None = None,
        guidance: app_commands.Range[float, NO_GUIDANCE, float(max_guidance)] | None = None,
        count: app_commands.Range[int, 1, max_count] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        options = ImagineOptions(
            negative_prompt=negative,
            aspect=aspect.value if aspect is not None else None,
            seed=seed,
            steps=steps,
            guidance=guidance,
            count=count,
            image_url=image.url if image is not None else None,
        )
        await handler(interaction, prompt, options)

    return imagine
