"""What a caller asks the generator for: `GenerationParams` plus what is not a parameter.

A request is the parameters (`generation.params`) and, for image-to-image work, the source
image. Validation is the parameters' own (`GenerationParams.validated`) plus the one rule that
ties them to the image: a source image needs a strength, and a strength needs a source image.
`parse_aspect` maps a member's aspect ratio ("16:9") to a size for this model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from generation.errors import RequestError
from generation.params import MAX_ASPECT, MIN_SIDE, GenerationParams, Limits

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "MIN_VARIATION_DENOISE",
    "GenerationRequest",
    "parse_aspect",
    "parse_ratio",
    "variation_steps",
]

#: Denoising steps a variation runs at least (img2img runs ``int(steps * strength)`` of its
#: steps): fewer gives a blurred copy of the source, and 0 runs nothing at all.
MIN_VARIATION_DENOISE = 4


@dataclass(frozen=True)
class GenerationRequest:
    """One job's work: `params.count` images from `params`, from `init_image` when set.

    `init_image` set means img2img: the images are variations of it, and `params.strength`
    (0-1] says how far they may move away from it.
    """

    params: GenerationParams
    init_image: Image | None = field(default=None, compare=False, repr=False)

    @property
    def seeds(self) -> list[int]:
        """The seed of each image (requires a validated request, whose seed is set)."""
        return self.params.seeds

    @property
    def is_variation(self) -> bool:
        return self.init_image is not None

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys may share one pipeline call (prompts and seeds may differ)."""
        return (self.is_variation, *self.params.batch_key)

    def validated(self, limits: Limits | None = None) -> GenerationRequest:
        """The request with validated parameters (concrete seed); raises `RequestError`."""
        if self.is_variation and self.params.strength is None:
            raise RequestError("A variation needs a strength between 0 and 1.")
        if not self.is_variation and self.params.strength is not None:
            raise RequestError("A strength only applies to variations of an image.")
        return replace(self, params=self.params.validated(limits))


def variation_steps(steps: int, strength: float, limits: Limits | None = None) -> int:
    """The steps a variation of a `steps`-step image runs at `strength` (0-1].

    img2img denoises only ``int(steps * strength)`` of its steps, so a variation of a
    few-step image would denoise nothing (or one blurred step). The steps are raised until
    at least `MIN_VARIATION_DENOISE` are denoised, within `limits.max_steps`; returns at
    least `steps`.
    """
    limits = limits or Limits()
    if not 0.0 < strength <= 1.0:
        raise RequestError(f"strength must be above 0 and at most 1, got {strength:g}.")
    needed = steps
    while int(needed * strength) < MIN_VARIATION_DENOISE and needed < limits.max_steps:
        needed += 1
    return max(steps, needed)


def parse_aspect(text: str, limits: Limits | None = None) -> tuple[int, int]:
    """Map an aspect ratio such as ``"16:9"`` to (width, height) for this model.

    The size is a multiple of 64 on each side, close to the requested ratio and to
    `limits.native_pixels` (the resolution the model was trained at), within
    `limits.max_pixels`: "1:1" -> 512x512, "16:9" -> 704x384, "2:3" -> 384x576. Ratios may
    use ``:``, ``x`` or ``/`` and decimals ("1.91:1"); anything past 4:1 either way is refused.
    """
    limits = limits or Limits()
    w, h = parse_ratio(text)
    ratio = w / h
    best: tuple[float, int, int] | None = None
    max_side = math.isqrt(limits.max_pixels * int(MAX_ASPECT)) + MIN_SIDE
    for height in range(MIN_SIDE, max_side + 1, MIN_SIDE):
        width = max(MIN_SIDE, round(height * ratio / MIN_SIDE) * MIN_SIDE)
        if width * height > limits.max_pixels:
            continue
        # Twice as much weight on the ratio as on the pixel count: a 16:9 request should look
        # 16:9 first, and be about as big as the model's native size second. Ties go to more
        # pixels (the later candidate).
        score = 2 * abs(math.log(width / height / ratio)) + abs(
            math.log(width * height / limits.native_pixels)
        )
        if best is None or score <= best[0]:
            best = (score, width, height)
    if best is None:
        raise RequestError(f"No size for aspect ratio {text.strip()} fits the pixel limit.")
    return best[1], best[2]


#: The one grammar of an aspect ratio, for `parse_aspect` and the inline `--ar` flag alike:
#: ASCII digits with an optional decimal part, separated by ``:``, ``x``, ``×`` or ``/``.
_RATIO = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*[:xX/×]\s*([0-9]+(?:\.[0-9]+)?)\s*")


def parse_ratio(text: str) -> tuple[float, float]:
    """The sides (w, h) of an aspect ratio such as ``"16:9"``, ``"16x9"`` or ``"1.91:1"``.

    Raises `RequestError` for text that is not a ratio, a zero side, or a ratio past 4:1
    either way. `parse_aspect` turns the ratio into a size.
    """
    match = _RATIO.fullmatch(text)
    if match is None:
        raise RequestError(f"Aspect ratio must look like W:H, for example 16:9; got {text!r}.")
    w, h = float(match.group(1)), float(match.group(2))
    if w <= 0 or h <= 0:
        raise RequestError(f"Aspect ratio {text.strip()} has a zero side.")
    if not 1 / MAX_ASPECT <= w / h <= MAX_ASPECT:
        raise RequestError(
            f"Aspect ratio {text.strip()} is too extreme; use one between 1:4 and 4:1."
        )
    return w, h
