"""What a caller asks the generator for: `GenerationParams` plus what is not a parameter.

A request is the parameters (`generation.params`) and, for image-to-image work, the source
image. Validation is the parameters' own (`GenerationParams.validated`) plus the one rule that
ties them to the image: a source image needs a strength, and a strength needs a source image.
`parse_aspect` maps a member's aspect ratio ("16:9") to a size for this model.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from generation.errors import RequestError
from generation.params import MAX_ASPECT, MIN_SIDE, GenerationParams, Limits

if TYPE_CHECKING:
    from PIL.Image import Image



class Operation(enum.StrEnum):
    """Which pipeline a request runs; each needs its own inputs (checked by `validated`).

    - GENERATE: txt2img, or img2img when `init_image` is set (variations, image prompts).
    - UPSCALE: `init_image` doubled by the latent upscaler (needs `[model] upscaler_id`); the
      parameters' width/height are the output size, twice the source's.
    - UPSCALE_CREATIVE: `init_image` resized to twice its size, then img2img at
      `params.strength` on the main model, so the diffusion model adds detail.
    - OUTPAINT: the inpainting model (`[model] inpaint_id`) fills the white part of
      `mask_image` on the `init_image` canvas (see `generation.canvas`).
    - DESCRIBE: the captioner (`[model] captioner_id`) suggests prompts for `init_image`
      (`generation.describe`); the result has `captions` and no images. `params.count` is 1
      (one job; what it is charged when the admin charges /describe), the size is unused.
    """

    GENERATE = "generate"
    UPSCALE = "upscale"
    UPSCALE_CREATIVE = "upscale_creative"
    OUTPAINT = "outpaint"
    DESCRIBE = "describe"

    @property
    def upscales(self) -> bool:
        return self in (Operation.UPSCALE, Operation.UPSCALE_CREATIVE)


__all__ = [
    "MIN_VARIATION_DENOISE",
    "GenerationRequest",
    "Operation",
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
    operation: Operation = Operation.GENERATE
    #: OUTPAINT only: white where the model paints, black where `init_image` is kept.
    mask_image: Image | None = field(default=None, compare=False, repr=False)

    @property
    def seeds(self) -> list[int]:
        """The seed of each image (requires a validated request, whose seed is set)."""
        return self.params.seeds

    @property
    def is_variation(self) -> bool:
        """img2img on the main model (a variation, an image prompt or a creative upscale)."""
        return self.init_image is not None and self.operation in (
            Operation.GENERATE,
            Operation.UPSCALE_CREATIVE,
        )

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys may share one pipeline call (prompts and seeds may differ)."""
        return (self.operation, self.is_variation, *self.params.batch_key)

    def validated(self, limits: Limits | None = None) -> GenerationRequest:
        """The request with validated parameters (concrete seed); raises `RequestError`.

        Upscales are checked against `limits.max_upscale_pixels` instead of `max_pixels`."""
        self._check_inputs()
        if self.is_variation and self.params.strength is None:
            raise RequestError("A variation needs a strength between 0 and 1.")
        if not self.is_variation and self.params.strength is not None:
            raise RequestError("A strength only applies to variations of an image.")
        params = self.params.validated(
            limits, upscale=self.operation.upscales, image=self.init_image is not None
        )
        return replace(self, params=params)

    def _check_inputs(self) -> None:
        """The images each operation needs (programming errors of the caller, said plainly)."""
        operation = self.operation
        if operation is not Operation.GENERATE and self.init_image is None:
            raise RequestError(f"A {operation.value} request needs a source image.")
        if operation is Operation.DESCRIBE and self.params.count != 1:
            raise RequestError("A describe request is one job: its count must be 1.")
        if (operation is Operation.OUTPAINT) != (self.mask_image is not None):
            raise RequestError("A mask image goes with an outpaint request, and only with one.")
        if operation.upscales:
            assert self.init_image is not None
            source = self.init_image.size
            size = (self.params.width, self.params.height)
            if size != (2 * source[0], 2 * source[1]):
                raise RequestError(
                    f"An upscale doubles its {source[0]}x{source[1]} source: the output must be "
                    f"{2 * source[0]}x{2 * source[1]}, got {size[0]}x{size[1]}."
                )
        if operation is Operation.OUTPAINT:
            assert self.init_image is not None and self.mask_image is not None
            size = (self.params.width, self.params.height)
            sizes = {self.init_image.size, self.mask_image.size, size}
            if len(sizes) != 1:
                raise RequestError("The outpaint canvas, its mask and the output size must agree.")


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
