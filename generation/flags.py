"""Midjourney-style parameters typed at the end of a prompt: `a cat --ar 16:9 --seed 7 --no dogs`.

The one flag parser of the project: the Discord bot (`bot.core.flags` re-exports it) and the
command line (`imagine generate "dog --ar 16:9"`) both read inline flags here, so a prompt means
the same thing wherever it is typed. Pure string handling, no discord and no engine.

Rules (documented for members in `FLAGS_HELP`):
- A flag is a dash marker followed by its name, at the start of the prompt or after a space or
  punctuation (`a cat,--ar 16:9`, `a cat (--ar 16:9)`). The marker is two hyphen-like
  characters, whatever keyboard typed them (ASCII `--`, fullwidth `－－`, minus signs `−−`,
  Unicode hyphens `‐‐`/`‑‑`, dashes `——`), or one long dash (`—ar`, `–ar`: phones turn `--`
  into an em or en dash). Everything from the first flag on is parameters; everything before
  it is the prompt.
- Accepted: `--ar W:H` (`--aspect`), `--seed N`, `--no a, b` (negative prompt), `--steps N`,
  `--cfg X` (`--guidance`), `--n N` (`--count`), `--iw X` (image prompt weight, 0-3), and the
  valueless `--fast` / `--relax` (the job's priority tier, as Midjourney's; one of them).
- Anything flag-like that is not understood raises `FlagError`: an unknown or repeated flag, a
  missing or malformed value, a flag name separated from its dashes (`-- ar 16:9`) or written
  with one hyphen (`-ar 16:9`). Nothing is guessed and nothing is silently dropped.
- Numbers are read as people write them: ASCII or fullwidth digits, a decimal point or comma
  (`7.5`, `7,5`); no underscores (`1_0`), exponents, `inf` or `nan`. `-0` is 0.
- Aspect ratios follow `generation.request.parse_ratio`, the engine's own grammar (`16:9`,
  `16x9`, `1.91:1`).
- Precedence: an explicit option (a slash command option, a command-line option) wins over the
  same parameter typed as a flag: it is the more deliberate input.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields, replace
from decimal import Decimal

from generation.errors import RequestError
from generation.params import MAX_SEED, Limits
from generation.request import parse_ratio
from generation.text import cut_text

__all__ = [
    "FLAGS_HELP",
    "MAX_COUNT",
    "MAX_IMAGE_WEIGHT",
    "MAX_SEED",
    "FlagError",
    "ImagineOptions",
    "ParsedPrompt",
    "fold_flag_text",
    "format_flags",
    "image_strength",
    "image_weight_of",
    "merge_options",
    "parse_prompt",
]

MAX_COUNT = Limits().max_count

FLAGS_HELP = (
    "Accepted flags at the end of the prompt: `--ar W:H` (aspect ratio, e.g. `--ar 16:9`), "
    "`--seed N` (0-4294967295), `--no a, b` (things to leave out), `--steps N`, "
    "`--cfg X` or `--guidance X` (how closely to follow the prompt), `--n N` (1-4 images), "
    "`--iw X` (0-3: how closely to follow an image prompt), `--fast` or `--relax` (fast jobs "
    "go first and use your fast GPU time; relax jobs wait for room and use none). "
    "Dashes from any keyboard work as `--` (an em dash — too). When an option and a flag set "
    "the same thing, the option wins."
)

# One long dash stands for `--` (phones autocorrect `--` into an em or en dash).
_LONG_DASHES = frozenset("\u2012\u2013\u2014\u2015\u2e3a\u2e3b\ufe58\ufe31\ufe32")
# Minus signs and hyphen look-alikes that are not in the dash category (Pd).
_MINUS_LIKE = frozenset("\u2212\u02d7\u2796\ufe63\uff0d\u207b\u208b")
# In the folded text: "-" a hyphen-like character, "=" a long dash.
_MARKER = r"(?:=[-=]*|-[-=]+)"
# A flag: a marker after the start, a space or punctuation (not after a letter or digit:
# `sci--fi` stays text), followed by the flag's name.
_FLAG = re.compile(rf"(?<![^\W_]){_MARKER}(?P<name>[^\W\d_][\w-]*)")
# Written almost as a flag: dashes and a name with a space between, or one hyphen, followed
# by a number (`-- ar 16:9`, `-seed 5`); prose such as "a man — no hat" is not flag-like.
_NEAR_FLAG = re.compile(
    rf"(?<![^\W_])(?:{_MARKER}\s*|-)(?P<name>[^\W\d_]+)(?=\s+[+-]?[0-9.,])"
)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]+)?|[.,][0-9]+)")
_INTEGER = re.compile(r"[+-]?[0-9]+")
# Brackets and punctuation that close a flag group (`(--ar 16:9)`) or open it in the prompt.
_CLOSERS = ")]}>»」』】〉》"
_OPENERS = "([{<«「『【〈《"

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
    "fast": "tier",
    "relax": "tier",
}
#: Flags that take no value: the flag's own name is the value.
_VALUELESS = frozenset({"tier"})
#: `--iw` bounds: Midjourney's range.
MAX_IMAGE_WEIGHT = 3.0


class FlagError(RequestError):
    """A flag in the prompt that is unknown or malformed; `user_message` says which and why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem

    @property
    def user_message(self) -> str:
        return f"{self.problem}\n{FLAGS_HELP}"


@dataclass(frozen=True)
class ImagineOptions:
    """Everything a member can set for one image job; None means "use the default".

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
    #: The priority tier asked for (`--fast`/`--relax`; `generation.queue_policy.TIERS`).
    tier: str | None = None

    def given_params(self) -> dict[str, object]:
        """The generation parameters the member set (not None), by field name; aspect and the
        image prompt's fields aside."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in _NOT_PARAMS and getattr(self, f.name) is not None
        }


#: `ImagineOptions` fields that are not `GenerationParams` fields.
_NOT_PARAMS = frozenset({"aspect", "image_weight", "image_url", "tier"})


def image_strength(image_weight: float | None) -> float:
    """img2img strength for `--iw`: weight 1 (the default) redoes 70% of the denoising from the
    image, 0 ignores it (strength 1), 3 keeps it nearly as it is (0.1); linear in between."""
    weight = 1.0 if image_weight is None else image_weight
    return round(max(0.1, 1.0 - 0.3 * weight), 4)


def image_weight_of(strength: float) -> float:
    """The `--iw` that gives img2img `strength` (the inverse of `image_strength`; a strength at
    its 0.1 floor reads back as the largest weight)."""
    return round(min(MAX_IMAGE_WEIGHT, max(0.0, (1.0 - strength) / 0.3)), 4)


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt split into its text and the parameters typed after it."""

    prompt: str
    options: ImagineOptions


def fold_flag_text(text: str) -> str:
    """`text` with every character folded for flag matching, one character for one.

    Compatibility forms become their plain form where that is one character (fullwidth
    `ａｒ１６` -> `ar16`), hyphen-like characters become "-" and long dashes "=". Same length
    as `text`, so a position in the folded text is the same position in the original.
    """
    out = []
    for ch in text:
        if ch in _LONG_DASHES:
            out.append("=")
            continue
        if ch in _MINUS_LIKE or (ch != "=" and unicodedata.category(ch) == "Pd"):
            out.append("-")
            continue
        plain = unicodedata.normalize("NFKC", ch)
        out.append(plain if len(plain) == 1 and plain not in "=" else ch)
    return "".join(out)


def parse_prompt(text: str, *, allow_empty: bool = False) -> ParsedPrompt:
    """Split `text` into the prompt and its flags; raise `FlagError` on anything not understood.

    `allow_empty`: flags alone are fine (an attached image is the prompt).

    The prompt keeps the member's own characters (whitespace squashed); flag values are read
    from the folded text (`fold_flag_text`).
    """
    folded = fold_flag_text(text)
    matches = list(_FLAG.finditer(folded))
    cut = matches[0].start() if matches else len(text)
    _refuse_near_flags(folded[:cut])
    if not matches:
        return ParsedPrompt(prompt=_squash(text), options=ImagineOptions())
    # What glues the prompt to its first flag (`a cat,--ar`, `a cat (--ar`) is not prompt.
    head = folded[:cut]
    while head and (head[-1].isspace() or head[-1] in _OPENERS + ",;:"):
        head = head[:-1]
    prompt = _squash(text[: len(head)])
    values: dict[str, object] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(folded)
        raw_name = match["name"]
        field = _ALIASES.get(raw_name.lower())
        if field is None:
            glued = re.fullmatch(r"([^\W\d_]+)([0-9].*)", raw_name)
            if glued is not None and glued[1].lower() in _ALIASES:
                raise FlagError(
                    f"`--{raw_name}`: put a space between the flag and its value "
                    f"(`--{glued[1]} {glued[2]}`)."
                )
            raise FlagError(f"`--{raw_name}` is not a flag I know.")
        if field in values:
            if field in _VALUELESS and values[field] != raw_name.lower():
                raise FlagError("`--fast` and `--relax` cannot both be given: choose one.")
            raise FlagError(f"`--{raw_name}` is given more than once.")
        value = _squash(folded[match.end() : end]).rstrip(_CLOSERS + ",;").strip()
        if field in _VALUELESS:
            if value:
                raise FlagError(
                    f"`--{raw_name}` takes no value; put the prompt before the flags "
                    f"(found {_code(value)} after it)."
                )
            values[field] = raw_name.lower()
            continue
        values[field] = _parse_value(field, raw_name, value)
    if not prompt and not allow_empty:
        raise FlagError("The prompt is empty: write what to draw before the flags.")
    return ParsedPrompt(prompt=prompt, options=ImagineOptions(**values))  # type: ignore[arg-type]


def format_flags(prompt: str, options: ImagineOptions) -> str:
    """`prompt` followed by `options` written as the flags `parse_prompt` reads back:
    `parse_prompt(format_flags(p, o))` gives `p` (whitespace squashed) and `o` (the negative
    prompt's commas as `, `). The image link (`image_url`) is not a flag and is left out.

    Used where a member edits a job's prompt and flags as text (remix mode).
    """
    parts = [_squash(prompt)]
    if options.aspect is not None:
        parts.append(f"--ar {options.aspect}")
    if options.negative_prompt:
        parts.append(f"--no {_squash(options.negative_prompt)}")
    if options.steps is not None:
        parts.append(f"--steps {options.steps}")
    if options.guidance is not None:
        parts.append(f"--cfg {_plain_number(options.guidance)}")
    if options.count is not None:
        parts.append(f"--n {options.count}")
    if options.seed is not None:
        parts.append(f"--seed {options.seed}")
    if options.image_weight is not None:
        parts.append(f"--iw {_plain_number(options.image_weight)}")
    if options.tier is not None:
        parts.append(f"--{options.tier}")
    return " ".join(part for part in parts if part)


def _plain_number(value: float) -> str:
    """`value` as the parser reads numbers: digits and a point, never an exponent."""
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def merge_options(explicit: ImagineOptions, typed: ImagineOptions) -> ImagineOptions:
    """Combine explicit options and typed flags: an explicit (non-None) option wins."""
    chosen = {f.name: getattr(explicit, f.name) for f in fields(explicit)}
    return replace(typed, **{k: v for k, v in chosen.items() if v is not None})


def _refuse_near_flags(prompt: str) -> None:
    """Report a known flag name written almost as a flag (`-- ar`, `-ar`) in the prompt."""
    for match in _NEAR_FLAG.finditer(prompt):
        name = match["name"]
        if name.lower() in _ALIASES:
            raise FlagError(
                f"`{match.group(0).strip()}` looks like a flag: write it as `--{name}` "
                "(two dashes, no space)."
            )


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
    """The ratio as the engine reads it, written back plainly ("16 x 9" -> "16:9")."""
    try:
        width, height = parse_ratio(value)
    except RequestError as exc:
        raise FlagError(f"{_code(f'--{name} {value}')}: {exc}") from None
    return f"{width:g}:{height:g}"


def _parse_int(name: str, value: str, low: int, high: int | None) -> int:
    if not _INTEGER.fullmatch(value):
        raise FlagError(f"{_code(f'--{name} {value}')} is not a whole number.")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FlagError(f"`--{name}` must be {bound}, got {number}.")
    return number


def _parse_float(name: str, value: str) -> float:
    if not _NUMBER.fullmatch(value):
        raise FlagError(f"{_code(f'--{name} {value}')} is not a number.")
    number = float(value.replace(",", "."))
    if number < 0:
        raise FlagError(f"`--{name}` must be a number of 0 or more, got {_code(value)}.")
    return number + 0.0  # -0.0 becomes 0.0, so it is echoed as "0"


def _code(text: str, limit: int = 60) -> str:
    """Member text quoted in an error: a code span (no markdown inside), cut short."""
    return "`" + cut_text(text.replace("`", "\u02cb"), limit) + "`"


def _squash(text: str) -> str:
    """Collapse runs of whitespace (Discord keeps newlines from pasted prompts)."""
    return " ".join(text.split())
