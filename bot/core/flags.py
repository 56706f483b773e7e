"""Midjourney-style parameters typed at the end of a prompt: `a cat --ar 16:9 --seed 7 --no dogs`.

Pure string handling, no discord and no engine: the `/imagine` cog parses the prompt with
`parse_prompt`, then merges the result with the slash options by `merge_options`.

Rules (documented for members in `FLAGS_HELP`):
- A flag starts with `--` (or an em/en dash, which phones type for `--`) after whitespace,
  followed by its name; everything from the first flag on is parameters, everything before
  it is the prompt.
- Accepted: `--ar W:H` (`--aspect`), `--seed N`, `--no a, b` (negative prompt), `--steps N`,
  `--cfg X` (`--guidance`), `--n N` (`--count`).
- Unknown, repeated, empty or malformed flags raise `FlagError`; nothing is guessed.
- Precedence: an explicit slash option wins over the same parameter typed as a flag
  (the option is the more deliberate input: a picked value in a form rather than text that
  may have been pasted along with a prompt).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace

from generation.params import MAX_SEED, Limits

__all__ = [
    "FLAGS_HELP",
    "MAX_SEED",
    "FlagError",
    "ImagineOptions",
    "ParsedPrompt",
    "merge_options",
    "parse_prompt",
]

MAX_COUNT = Limits().max_count

FLAGS_HELP = (
    "Accepted flags at the end of the prompt: `--ar W:H` (aspect ratio, e.g. `--ar 16:9`), "
    "`--seed N` (0-4294967295), `--no a, b` (things to leave out), `--steps N`, "
    "`--cfg X` or `--guidance X` (how closely to follow the prompt), `--n N` (1-4 images), "
    "`--iw X` (0-3: how closely to follow an image prompt). "
    "A phone's em dash (—) works as `--`. When a slash option and a flag set the same thing, "
    "the slash option wins."
)

# A flag: `--name`, `—name` or `–name` (an em/en dash optionally followed by a hyphen, as some
# keyboards produce `—-`), at the start or after whitespace, followed by a letter.
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:--|[\u2014\u2013\u2012\u2015]-?)(?P<name>[A-Za-z][\w-]*)")
_ASPECT = re.compile(r"^(?P<w>\d{1,4})\s*:\s*(?P<h>\d{1,4})$")

_ALIASES = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "no": "negative_prompt",
    "steps": "steps",
    "cfg": "guidance",
    "guidance": "guidance",
    "n": "count",
    "count": "count",
    "iw": "image_weight",
}
#: `--iw` bounds: Midjourney's range.
MAX_IMAGE_WEIGHT = 3.0


class FlagError(ValueError):
    """A flag in the prompt that is unknown or malformed; `user_message` says which and why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    @property
    def user_message(self) -> str:
        return f"{self.problem}\n{FLAGS_HELP}"


@dataclass(frozen=True)
class ImagineOptions:
    """Everything a member can set for one `/imagine`; None means "use the server default".

    Every field but `aspect` and the image prompt's (`image_weight`, `image_url`) is named like
    the `GenerationParams` field it sets (`aspect` becomes width and height for the model), so
    `given_params` hands them on by name.
    """

    negative_prompt: str | None = None
    aspect: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    count: int | None = None
    #: How closely an image prompt is followed (`--iw`, 0-3); see `image_strength`.
    image_weight: float | None = None
    #: An image prompt's link (the attachment of `/imagine`); links typed in the prompt are
    #: found by `bot.core.image_fetch.find_image_links`.
    image_url: str | None = None

    def given_params(self) -> dict[str, object]:
        """The generation parameters the member set (not None), by field name; aspect and the
        image prompt's fields aside."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in _NOT_PARAMS and getattr(self, f.name) is not None
        }


#: `ImagineOptions` fields that are not `GenerationParams` fields.
_NOT_PARAMS = frozenset({"aspect", "image_weight", "image_url"})


def image_strength(image_weight: float | None) -> float:
    """img2img strength for `--iw`: weight 1 (the default) redoes 70% of the denoising from the
    image, 0 ignores it (strength 1), 3 keeps it nearly as it is (0.1); linear in between."""
    weight = 1.0 if image_weight is None else image_weight
    return round(max(0.1, 1.0 - 0.3 * weight), 4)


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into its text and the parameters typed after it."""

    prompt: str
    options: ImagineOptions


def parse_prompt(text: str, *, allow_empty: bool = False) -> ParsedPrompt:
    """Split `text` into the prompt and its flags; raise `FlagError` on anything not understood.

    `allow_empty`: flags alone are fine (an attached image is the prompt)."""
    matches = list(_FLAG.finditer(text))
    if not matches:
        return ParsedPrompt(prompt=_squash(text), options=ImagineOptions())

    prompt = _squash(text[: matches[0].start()])
    values: dict[str, object] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw_name = match["name"]
        field = _ALIASES.get(raw_name.lower())
        if field is None:
            raise FlagError(f"`--{raw_name}` is not a flag I know.")
        if field in values:
            raise FlagError(f"`--{raw_name}` is given more than once.")
        values[field] = _parse_value(field, raw_name, _squash(text[match.end() : end]))
    if not prompt and not allow_empty:
        raise FlagError("The prompt is empty: write what to draw before the flags.")
    return ParsedPrompt(prompt=prompt, options=ImagineOptions(**values))  # type: ignore[arg-type]


def merge_options(explicit: ImagineOptions, typed: ImagineOptions) -> ImagineOptions:
    """Combine slash options and typed flags: an explicit (non-None) slash option wins."""
    chosen = {f.name: getattr(explicit, f.name) for f in fields(explicit)}
    return replace(typed, **{k: v for k, v in chosen.items() if v is not None})


def _parse_value(field: str, name: str, value: str) -> object:
    if not value:
        raise FlagError(f"`--{name}` needs a value.")
    if field == "aspect":
        return _parse_aspect(name, value)
    if field == "seed":
        return _parse_int(name, value, 0, MAX_SEED)
    if field == "negative_prompt":
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not parts:
            raise FlagError(f"`--{name}` needs a value.")
        return ", ".join(parts)
    if field == "steps":
        # The upper bound is the server's; the engine checks it against its limits.
        return _parse_int(name, value, 1, None)
    if field == "guidance":
        return _parse_float(name, value)
    if field == "count":
        return _parse_int(name, value, 1, MAX_COUNT)
    if field == "image_weight":
        weight = _parse_float(name, value)
        if weight > MAX_IMAGE_WEIGHT:
            raise FlagError(f"`--{name}` must be between 0 and {MAX_IMAGE_WEIGHT:g}, got {value}.")
        return weight
    raise AssertionError(f"unhandled flag field {field}")  # pragma: no cover


def _parse_aspect(name: str, value: str) -> str:
    match = _ASPECT.match(value)
    if match is None:
        raise FlagError(f"`--{name} {value}` is not an aspect ratio; write it as W:H, e.g. 16:9.")
    width, height = int(match["w"]), int(match["h"])
    if width == 0 or height == 0:
        raise FlagError(f"`--{name} {value}`: both sides of the ratio must be above 0.")
    return f"{width}:{height}"


def _parse_int(name: str, value: str, low: int, high: int | None) -> int:
    if not re.fullmatch(r"[+-]?\d+", value):
        raise FlagError(f"`--{name} {value}` is not a whole number.")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FlagError(f"`--{name}` must be {bound}, got {number}.")
    return number


def _parse_float(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FlagError(f"`--{name} {value}` is not a number.") from None
    if not math.isfinite(number) or number < 0:
        raise FlagError(f"`--{name}` must be a number of 0 or more, got {value}.")
    return number


def _squash(text: str) -> str:
    """Collapse runs of whitespace (Discord keeps newlines from pasted prompts)."""
    return " ".join(text.split())
