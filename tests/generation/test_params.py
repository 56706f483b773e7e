"""`GenerationParams`: defaults from a settings object, seeds, and the img2img rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from PIL import Image

from generation.errors import RequestError
from generation.params import MAX_SEED, PARAM_FIELDS, GenerationParams, Limits
from generation.request import GenerationRequest


@dataclass(frozen=True)
class Section:
    """Stands in for the bot's `[generation]` settings: same field names, other values."""

    steps: int = 30
    guidance: float = 5.0
    width: int = 640
    height: int = 384
    count: int = 2
    scheduler: str = "euler_a"
    max_steps: int = 40
    native_pixels: int = 640 * 384


def test_with_defaults_takes_every_configured_field() -> None:
    """Fields the settings name come from them; given values (not None) win."""
    params = GenerationParams.with_defaults(Section(), prompt="a fox", steps=None, count=1)
    assert params == GenerationParams(
        "a fox", steps=30, guidance=5.0, width=640, height=384, count=1, scheduler="euler_a"
    )
    assert params.seed is None and params.strength is None and params.negative_prompt == ""


def test_limits_with_defaults() -> None:
    """Limits read the same way; what the settings lack keeps the library default."""
    limits = Limits.with_defaults(Section())
    assert (limits.max_steps, limits.native_pixels, limits.max_count) == (40, 640 * 384, 4)


def test_field_names_are_public() -> None:
    """`PARAM_FIELDS` lists the fields in order (the CSV and database columns follow it)."""
    assert PARAM_FIELDS[:2] == ("prompt", "negative_prompt") and PARAM_FIELDS[-1] == "strength"


def test_seeds_wrap_past_the_largest() -> None:
    """Image i uses seed + i, wrapping to 0 past MAX_SEED."""
    assert GenerationParams("x", seed=MAX_SEED, count=2).seeds == [MAX_SEED, 0]
    with pytest.raises(ValueError, match="validated"):
        _ = GenerationParams("x").seeds


def test_strength_goes_with_a_source_image() -> None:
    """A variation needs a strength; a strength without a source image is refused."""
    image = Image.new("RGB", (64, 64))
    with pytest.raises(RequestError, match="needs a strength"):
        GenerationRequest(GenerationParams("x"), init_image=image).validated()
    with pytest.raises(RequestError, match="only applies to variations"):
        GenerationRequest(GenerationParams("x", strength=0.5)).validated()
    ok = GenerationRequest(GenerationParams("x", strength=0.5), init_image=image).validated()
    assert ok.is_variation and ok.params.strength == 0.5


def test_batch_key_leaves_out_only_what_each_job_brings() -> None:
    """Prompts, seeds and counts may differ within one pipeline call; anything else may not,
    including fields added later (they join the key without being named)."""
    base = GenerationParams("a fox", seed=1, count=4)
    same = GenerationParams("a whale", "fog", seed=99, count=1)
    assert base.batch_key == same.batch_key
    for change in ({"steps": 30}, {"guidance": 3.0}, {"width": 576}, {"scheduler": "ddim"},
                   {"strength": 0.5}):  # fmt: skip
        assert GenerationParams("a fox", **change).batch_key != base.batch_key
    assert len(base.batch_key) == len(PARAM_FIELDS) - 4


@pytest.mark.parametrize(("text", "shown"), [
    ("a\x00cat", "U+0000) at position 2"),  # PostgreSQL text cannot hold NUL
    ("a cat\x1b[31m", "U+001B) at position 6"),
    ("\x7f", "U+007F) at position 1"),
    ("a\x85cat", "U+0085) at position 2"),
])
def test_control_characters_are_refused_in_either_prompt(text: str, shown: str) -> None:
    """Refused with their code point and place, never silently stripped (stripping after the
    moderation check could join a blocked word); in the prompt and the negative prompt."""
    expected = re.escape(f"The prompt contains a control character ({shown}")
    with pytest.raises(RequestError, match=expected):
        GenerationParams(text).validated()
    with pytest.raises(RequestError, match="The negative prompt contains a control character"):
        GenerationParams("a cat", negative_prompt=text).validated()


def test_line_breaks_and_tabs_are_kept_inside_a_prompt() -> None:
    assert GenerationParams(" a\tcat\r\non a mat \n").validated().prompt == "a\tcat\r\non a mat"
