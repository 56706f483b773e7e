"""Remix mode: a job's prompt and flags as the text a member edits, and that text read back.

With remix on, reroll, V1-V4 and Vary (Subtle/Strong) first show the member the prompt and its
flags, written as `/imagine` reads them (`generation.flags.format_flags`, the inverse of the one
parser); what the member submits is parsed by that same parser, so an edit means exactly what
it would mean typed into `/imagine`.

What the text holds depends on what the button makes (`RemixScope`):
- a reroll of a text-to-image job makes a new grid like `/imagine`: every flag, `--ar` included;
- a reroll of an image prompt keeps its image: `--iw` instead of a size;
- a variation or Vary keeps its image's size and makes the configured grid: no `--ar`.
`--steps` is written where the job ran other steps than the default would have made: a reroll
or variation of an img2img job (its steps raised only where too few would denoise nothing)
keeps them, as it does with remix off.
Flags equal to the configured default are left out (the text stays short; leaving one out
means "the default", as in `/imagine`). The seed is never written: a reroll or a variation
makes new images; a member may type `--seed N` to pin one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from math import gcd
from typing import Any

from generation.flags import (
    FlagError,
    ImagineOptions,
    ParsedPrompt,
    format_flags,
    image_weight_of,
    parse_prompt,
)
from generation.params import GenerationParams
from generation.request import variation_steps

__all__ = [
    "IMAGE_IGNORED",
    "RemixAction",
    "RemixScope",
    "edited_params",
    "parse_remix",
    "remix_text",
]


#: An image prompt with no text and `--iw 0` (which ignores the image): nothing to draw.
IMAGE_IGNORED = (
    "`--iw 0` ignores the image, and there is no text to draw instead: raise `--iw` or "
    "describe what to draw."
)


class RemixAction(StrEnum):
    """The button a remix edit replaces (the letter is its code in the modal's custom_id)."""

    REROLL = "r"
    VARY = "v"  # V1-V4 under a grid
    TOOL = "t"  # Vary (Subtle) / Vary (Strong) under a single image


@dataclass(frozen=True)
class RemixScope:
    """Which flags an edit shows and accepts, from what the button makes."""

    #: The size may change (`--ar`): a reroll that makes a new grid, as `/imagine` does.
    aspect: bool = False
    #: An image prompt: `--iw` weighs its image.
    image_weight: bool = False
    #: The grid size (`--n`) is shown: a reroll keeps the job's; variations make the
    #: configured one unless the member types `--n`.
    count: bool = False

    @property
    def reason_no_aspect(self) -> str:
        return "`--ar` cannot change a variation: it keeps the size of its image."


def remix_text(params: GenerationParams, defaults: GenerationParams, scope: RemixScope) -> str:
    """`params`' prompt and the flags that set it apart from `defaults` (the configured
    parameters), as the member edits them: `a cat --ar 16:9 --no dogs --cfg 9`."""
    options: dict[str, Any] = {}
    if params.negative_prompt:
        options["negative_prompt"] = params.negative_prompt
    if params.guidance != defaults.guidance:
        options["guidance"] = params.guidance
    # An img2img job (an image prompt, a variation) ran the steps asked for, raised where too
    # few would denoise nothing at its strength: the default is what the default becomes.
    default_steps = defaults.steps
    if params.strength is not None:
        default_steps = variation_steps(defaults.steps, params.strength)
    if params.steps != default_steps:
        options["steps"] = params.steps
    if scope.count and params.count != defaults.count:
        options["count"] = params.count
    if scope.aspect and (params.width, params.height) != (defaults.width, defaults.height):
        common = gcd(params.width, params.height)
        options["aspect"] = f"{params.width // common}:{params.height // common}"
    if scope.image_weight and params.strength is not None:
        weight = image_weight_of(params.strength)
        if weight != 1.0 or not params.prompt:
            # An image alone: its weight is written even at the default, so that the editor
            # never opens empty (a member could not submit it).
            options["image_weight"] = weight
    return format_flags(params.prompt, ImagineOptions(**options))


def parse_remix(text: str, scope: RemixScope) -> ParsedPrompt:
    """The member's edit read by the one parser; raises `FlagError` (a clear message, the same
    `/imagine` gives) for anything it refuses, and for a flag this button cannot use.

    An image prompt's edit may leave the text out (the image alone is the prompt, as in
    `/imagine`), unless `--iw 0` ignores the image too."""
    parsed = parse_prompt(text, allow_empty=scope.image_weight)
    options = parsed.options
    if not parsed.prompt and options.image_weight == 0:
        raise FlagError(IMAGE_IGNORED)
    if options.aspect is not None and not scope.aspect:
        raise FlagError(scope.reason_no_aspect)
    if options.image_weight is not None and not scope.image_weight:
        raise FlagError("`--iw` weighs an image prompt: this job has none.")
    return parsed


def edited_params(
    params: GenerationParams, parsed: ParsedPrompt, defaults: GenerationParams
) -> GenerationParams:
    """`params` (a job a variation starts from) with the member's edit: the prompt, and each
    flag the edit sets, the configured default for each it leaves out (as `/imagine` does).
    Size, count and seed are the caller's: they come from the source image and the button."""
    options = parsed.options
    return replace(
        params,
        prompt=parsed.prompt,
        negative_prompt=options.negative_prompt or "",
        steps=options.steps if options.steps is not None else defaults.steps,
        guidance=options.guidance if options.guidance is not None else defaults.guidance,
    )
