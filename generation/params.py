"""`GenerationParams`: the parameters of one generation, held once and carried everywhere.

The request (`generation.request.GenerationRequest`), the stored job (the bot's history), its
database row (one SQLAlchemy composite), the caption, the CSV export and the command line all
carry or derive this one frozen value; none of them re-spells its fields. A new kind of job
(upscale, zoom, image prompts) adds its fields here, teaches the engine to read them, and, where
members see them, one renderer to show them.

Validation happens once, at submission, and every problem is reported with a message the member
can act on ("steps must be between 1 and 100, got 500"); nothing is silently corrected. The one
thing validation fills in is a missing seed, drawn at random so that every image can be
reproduced: image ``i`` always uses seed ``seed + i`` (wrapping past `MAX_SEED`), so one image
can be re-made on its own.

Defaults: the field defaults below are the generation package's documented defaults for library
users (Stable Diffusion v1.x: 512x512, 25 steps of DPM++ 2M Karras, guidance 7.5, 4 images). The
bot takes its defaults from its configuration instead (`[generation]`), through `with_defaults`.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, fields, replace
from typing import Any

from generation.errors import RequestError

__all__ = [
    "MAX_ASPECT",
    "MAX_SEED",
    "MIN_SIDE",
    "NO_GUIDANCE",
    "PARAM_FIELDS",
    "PER_JOB_FIELDS",
    "SCHEDULERS",
    "SIZE_MULTIPLE",
    "GenerationParams",
    "Limits",
]

#: Scheduler names a request may use; `generation.loading.build_scheduler` maps them to classes.
SCHEDULERS: tuple[str, ...] = ("pndm", "ddim", "euler_a", "unipc", "dpmpp_2m_karras")

#: Seeds are 32-bit, as in Midjourney; image i of a request uses seed + i, wrapping past
#: MAX_SEED to 0, so every image's own seed can be typed back in.
MAX_SEED = 2**32 - 1
#: Widest aspect ratio accepted, either way round (4:1 ... 1:4).
MAX_ASPECT = 4.0
#: Smallest side in pixels; also the rounding unit of `parse_aspect`.
MIN_SIDE = 64
#: Latent space is 1/8 of the image: sizes must be multiples of this.
SIZE_MULTIPLE = 8
#: Guidance at or below this turns classifier-free guidance off in diffusers
#: (`do_classifier_free_guidance` is ``guidance_scale > 1``): every value from 0 to 1 gives
#: the same image and the negative prompt is ignored. So 1 is the lowest guidance accepted,
#: meaning "no guidance".
NO_GUIDANCE = 1.0


@dataclass(frozen=True)
class Limits:
    """Bounds parameters must stay within (from the `[generation]` configuration)."""

    min_steps: int = 1
    max_steps: int = 100
    max_guidance: float = 30.0
    max_pixels: int = 768 * 768
    #: The model's native resolution in pixels (512x512 for SD v1.x); aspect ratios aim here.
    native_pixels: int = 512 * 512
    max_count: int = 4
    #: Largest output of an upscale (twice each side of a source within `max_pixels`).
    max_upscale_pixels: int = 4 * 768 * 768

    @classmethod
    def with_defaults(cls, defaults: object, **given: Any) -> Limits:
        """Limits from `given` (None: not given), the rest from same-named attributes of
        `defaults` (the bot's `[generation]` settings), else the dataclass defaults."""
        return cls(**_values(cls, defaults, given))


@dataclass(frozen=True)
class GenerationParams:
    """Everything that decides what a job's images look like (besides the model).

    Units: `width`/`height` in pixels (multiples of 8), `steps` denoising steps, `guidance` the
    classifier-free guidance scale, `count` images (1-4), `seed` the first image's seed (None
    until validated). `strength` is set only for image-to-image work (variations): how far
    (0-1] the images may move from their source image; None means text-to-image.

    The field order is also the column order of the database composite (`bot.db.models`).
    """

    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    count: int = 4
    scheduler: str = "dpmpp_2m_karras"
    seed: int | None = None
    strength: float | None = None

    @classmethod
    def with_defaults(cls, defaults: object, **given: Any) -> GenerationParams:
        """Parameters from `given` (None: not given), the rest from `defaults`.

        `defaults` is any object with attributes named like the fields (the bot's
        `[generation]` settings); a field it lacks keeps the dataclass default (prompt, seed,
        negative prompt and strength are never configured).
        """
        return cls(**_values(cls, defaults, given))

    @property
    def batch_key(self) -> tuple[object, ...]:
        """Parameters with equal keys may share one pipeline call: every field except those
        each job brings to the call on its own (`PER_JOB_FIELDS`). A new field joins the key
        by itself, so jobs differing in it are never batched until the engine says they can."""
        return tuple(getattr(self, name) for name in PARAM_FIELDS if name not in PER_JOB_FIELDS)

    @property
    def seeds(self) -> list[int]:
        """The seed of each image (requires validated parameters, whose seed is set)."""
        if self.seed is None:
            raise ValueError("seeds of unvalidated parameters: call validated() first")
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.count)]

    def validated(
        self, limits: Limits | None = None, *, upscale: bool = False, image: bool = False
    ) -> GenerationParams:
        """Check every field against `limits` and return a copy with a concrete seed.

        `upscale`: the size is an upscale's output, checked against `limits.max_upscale_pixels`
        instead of `limits.max_pixels`. `image`: a source image comes with the parameters, so
        the prompt may be empty (the image alone is the prompt).

        Raises `RequestError` naming the first bad value. The prompt is stripped of surrounding
        whitespace; a prompt longer than the text encoder's 77 tokens is not an error here (the
        tokenizer lives with the model): the engine truncates it and reports a warning.
        """
        limits = limits or Limits()
        prompt = _clean_text(self.prompt, "prompt")
        if not prompt and not image:
            raise RequestError("The prompt is empty: describe what to draw.")
        negative = _clean_text(self.negative_prompt, "negative prompt")
        _check_int("count", self.count, 1, limits.max_count, "images")
        _check_int("steps", self.steps, limits.min_steps, limits.max_steps)
        guidance = _check_guidance(self.guidance, limits)
        if negative and guidance <= NO_GUIDANCE:
            raise RequestError(
                f"A negative prompt needs guidance above {NO_GUIDANCE:g}: at {guidance:g}, "
                "classifier-free guidance is off and the negative prompt would have no "
                "effect. Raise the guidance (e.g. 7) or leave the negative prompt out."
            )
        _check_size(self.width, self.height, limits, upscale)
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
        if strength is not None:
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


#: The field names, in order: the CSV export's and the database composite's columns.
PARAM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(GenerationParams))
#: Fields that may differ between jobs sharing one pipeline call: each image gets its own
#: prompt, negative prompt and seed, and the count only sizes the batch.
PER_JOB_FIELDS = frozenset({"prompt", "negative_prompt", "seed", "count"})


def _values(cls: type, defaults: object, given: dict[str, Any]) -> dict[str, Any]:
    values = {f.name: getattr(defaults, f.name) for f in fields(cls) if hasattr(defaults, f.name)}
    values.update({name: value for name, value in given.items() if value is not None})
    return values


#: Control characters (Unicode Cc) other than tab, line feed and carriage return. They are
#: refused, not stripped: PostgreSQL text cannot hold NUL, the text encoder's tokenizer drops
#: them anyway, and removing them after the moderation check could join a blocked word.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _clean_text(value: object, name: str) -> str:
    """`value` stripped of surrounding whitespace; raises `RequestError` for non-text and
    for a control character (naming it and its 1-based position)."""
    if not isinstance(value, str):
        raise RequestError(f"The {name} must be text, got {type(value).__name__}.")
    control = _CONTROL.search(value)
    if control is not None:
        raise RequestError(
            f"The {name} contains a control character (U+{ord(control[0]):04X}) at position "
            f"{control.start() + 1}; remove it (only line breaks and tabs are allowed)."
        )
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


def _check_guidance(value: object, limits: Limits) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < NO_GUIDANCE:
        raise RequestError(
            f"guidance {value:g} has the same effect as {NO_GUIDANCE:g}: at {NO_GUIDANCE:g} or "
            "below, classifier-free guidance is off, so every value from 0 to 1 gives the same "
            f"image. Use {NO_GUIDANCE:g} for no guidance, or more to follow the prompt more "
            f"closely (up to {limits.max_guidance:g})."
        )
    return _check_float("guidance", value, NO_GUIDANCE, limits.max_guidance)


def _check_size(width: object, height: object, limits: Limits, upscale: bool = False) -> None:
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
    budget = limits.max_upscale_pixels if upscale else limits.max_pixels
    if width * height > budget:
        side = math.isqrt(budget)
        what = "an upscale" if upscale else "an image"
        raise RequestError(
            f"{width}x{height} is {width * height:,} pixels, over the limit of "
            f"{budget:,} for {what} (about {side}x{side}); ask for a smaller size."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise RequestError(
            f"{width}x{height} is too elongated; keep the sides within 4:1 of each other."
        )
