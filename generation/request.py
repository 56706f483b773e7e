"""What a member asks for: a typed, validated generation request, and aspect ratios.

Validation happens once, at submission, and every problem is reported with a message the member
can act on ("steps must be between 1 and 100, got 500"); nothing is silently corrected. The one
thing validation fills in is a missing seed, drawn at random so that every image can be
reproduced: image ``i`` of a request always uses seed ``seed + i``, so one image can be re-made
on its own.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from generation.errors import RequestError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Scheduler names a request may use; `generation.loading.build_scheduler` maps them to classes.
SCHEDULERS: tuple[str, ...] = ("pndm", "ddim", "euler_a", "unipc", "dpmpp_2m_karras")
DEFAULT_SCHEDULER = "dpmpp_2m_karras"

#: Seeds are 32-bit, as in Midjourney; image i of a request uses seed + i, wrapping past
#: MAX_SEED to 0, so every image's own seed can be typed back in.
MAX_SEED = 2**32 - 1
#: Widest aspect ratio accepted, either way round (4:1 ... 1:4).
MAX_ASPECT = 4.0
#: Smallest side in pixels; also the rounding unit of `parse_aspect`.
MIN_SIDE = 64
#: Latent space is 1/8 of the image: sizes must be multiples of this.
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class Limits:
    """Bounds a request must stay within (from the `[generation]` configuration)."""

    min_steps: int = 1
    max_steps: int = 100
    max_guidance: float = 30.0
    max_pixels: int = 768 * 768
    #: The model's native resolution in pixels (512x512 for SD v1.x); aspect ratios aim here.
    native_pixels: int = 512 * 512
    max_count: int = 4


@dataclass(frozen=True)
class GenerationRequest:
    """One /imagine (or variation) request: `count` images from one prompt.

    `init_image` set means img2img: the images are variations of it, `strength` (0-1] says how far
    they may move away from it. `variant_of` optionally records (job id, image index) of the
    image being varied, for the caller's bookkeeping; the engine ignores it.
    """

    prompt: str
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    count: int = 4
    scheduler: str = DEFAULT_SCHEDULER
    init_image: Image | None = field(default=None, compare=False, repr=False)
    strength: float = 0.6
    variant_of: tuple[str, int] | None = None

    @property
    def seeds(self) -> list[int]:
        """The seed of each image (requires a validated request, whose seed is set)."""
        if self.seed is None:
            raise ValueError("seeds of an unvalidated request: call validated() first")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    @property
    def is_variation(self) -> bool:
        return self.init_image is not None

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Requests with equal keys may share one pipeline call (prompts and seeds may differ)."""
        strength = self.strength if self.is_variation else None
        return (
            self.is_variation,
            self.width,
            self.height,
            self.steps,
            self.scheduler,
            self.guidance,
            strength,
        )

    def validated(self, limits: Limits | None = None) -> GenerationRequest:
        """Check every field against `limits` and return a copy with a concrete seed.

        Raises `RequestError` naming the first bad value. The prompt is stripped of surrounding
        whitespace; a prompt longer than the text encoder's 77 tokens is not an error here (the
        tokenizer lives with the model): the engine truncates it and reports a warning.
        """
        limits = limits or Limits()
        prompt = _clean_text(self.prompt, "prompt")
        if not prompt:
            raise RequestError("The prompt is empty: describe what to draw.")
        negative = _clean_text(self.negative_prompt, "negative prompt")
        _check_int("count", self.count, 1, limits.max_count, "images")
        _check_int("steps", self.steps, limits.min_steps, limits.max_steps)
        guidance = _check_float("guidance", self.guidance, 0.0, limits.max_guidance)
        _check_size(self.width, self.height, limits)
        if self.scheduler not in SCHEDULERS:
            raise RequestError(
                f"Unknown scheduler {self.scheduler!r}; choose one of: {', '.join(SCHEDULERS)}."
            )
        seed = self.seed
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        else:
            _check_int("seed", seed, 0, MAX_SEED)
        strength = self.strength
        if self.init_image is not None:
            strength = _check_float("strength", strength, 0.0, 1.0)
            if strength == 0.0 or int(self.steps * strength) < 1:
                raise RequestError(
                    f"strength {strength:g} with {self.steps} steps runs no denoising step; "
                    "raise the strength or the steps."
                )
        return replace(
            self,
            prompt=prompt,
            negative_prompt=negative,
            seed=seed,
            guidance=guidance,
            strength=strength,
        )


def parse_aspect(text: str, limits: Limits | None = None) -> tuple[int, int]:
    """Map an aspect ratio such as ``"16:9"`` to (width, height) for this model.

    The size is a multiple of 64 on each side, close to the requested ratio and to
    `limits.native_pixels` (the resolution the model was trained at), within
    `limits.max_pixels`: "1:1" -> 512x512, "16:9" -> 704x384, "2:3" -> 384x576. Ratios may
    use ``:``, ``x`` or ``/`` and decimals ("1.91:1"); anything past 4:1 either way is refused.
    """
    limits = limits or Limits()
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[:x/×]\s*(\d+(?:\.\d+)?)\s*", text)
    if match is None:
        raise RequestError(f"Aspect ratio must look like W:H, for example 16:9; got {text!r}.")
    w, h = float(match.group(1)), float(match.group(2))
    if w <= 0 or h <= 0:
        raise RequestError(f"Aspect ratio {text.strip()} has a zero side.")
    ratio = w / h
    if not 1 / MAX_ASPECT <= ratio <= MAX_ASPECT:
        raise RequestError(
            f"Aspect ratio {text.strip()} is too extreme; use one between 1:4 and 4:1."
        )
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


def _clean_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"The {name} must be text, got {type(value).__name__}.")
    return value.strip()


def _check_int(name: str, value: object, low: int, high: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be a whole number, got {value!r}.")
    if not low <= value <= high:
        what = f" {unit}" if unit else ""
        raise RequestError(f"{name} must be between {low} and {high}{what}, got {value}.")


def _check_float(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{name} must be a number, got {value!r}.")
    number = float(value)
    if not math.isfinite(number):
        raise RequestError(f"{name} must be a finite number, got {value!r}.")
    if not low <= number <= high:
        raise RequestError(f"{name} must be between {low:g} and {high:g}, got {number:g}.")
    return number


def _check_size(width: object, height: object, limits: Limits) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(f"{name} must be a whole number of pixels, got {value!r}.")
        if value < MIN_SIDE:
            raise RequestError(f"{name} must be at least {MIN_SIDE} pixels, got {value}.")
        if value % SIZE_MULTIPLE:
            raise RequestError(
                f"{name} must be a multiple of {SIZE_MULTIPLE}, got {value} "
                f"(try {value - value % SIZE_MULTIPLE} or {value - value % SIZE_MULTIPLE + 8})."
            )
    assert isinstance(width, int) and isinstance(height, int)
    if width * height > limits.max_pixels:
        side = math.isqrt(limits.max_pixels)
        raise RequestError(
            f"{width}x{height} is {width * height:,} pixels, over the limit of "
            f"{limits.max_pixels:,} (about {side}x{side}); ask for a smaller size."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise RequestError(
            f"{width}x{height} is too elongated; keep the sides within 4:1 of each other."
        )
