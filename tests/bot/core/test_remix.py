"""Remix mode's text: a job's prompt and flags written for editing, read back by the one parser."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.flags import (
    MAX_SEED,
    FlagError,
    ImagineOptions,
    format_flags,
    image_strength,
    parse_prompt,
)
from bot.core.remix import RemixScope, edited_params, parse_remix, remix_text
from generation.params import GenerationParams
from generation.request import parse_aspect, variation_steps

DEFAULTS = GenerationParams("", steps=25, guidance=7.5, width=512, height=512, count=4)
REROLL = RemixScope(aspect=True, count=True)
IMAGE_PROMPT = RemixScope(aspect=True, count=True, image_weight=True)
VARY = RemixScope()


@pytest.mark.parametrize(
    ("prompt", "options"),
    [
        ("a red fox", ImagineOptions()),
        ("a red fox", ImagineOptions(negative_prompt="blur, text, watermark")),
        ("a red fox", ImagineOptions(seed=0)),
        ("a red fox", ImagineOptions(seed=MAX_SEED)),
        ("a red fox", ImagineOptions(aspect="16:9")),
        ("a red fox", ImagineOptions(aspect="1.91:1")),
        ("castle, at dusk (oil)", ImagineOptions(guidance=4.25, steps=30, count=2)),
        ("fog", ImagineOptions(guidance=0.0)),
        ("fog", ImagineOptions(guidance=0.00001)),  # no exponent: the parser refuses those
        ("fog", ImagineOptions(image_weight=2.5)),
        ("fog", ImagineOptions(tier="relax")),
        ("fog", ImagineOptions(count=2, tier="fast")),
        (
            "a — quiet sea, 2 boats",
            ImagineOptions(
                negative_prompt="gulls", aspect="2:3", seed=7, steps=12, guidance=9.0, count=1
            ),
        ),
    ],
)
def test_flags_round_trip_through_the_parser(prompt: str, options: ImagineOptions) -> None:
    """What `format_flags` writes, `parse_prompt` reads back as the same prompt and options."""
    parsed = parse_prompt(format_flags(prompt, options))
    assert parsed.prompt == prompt
    assert parsed.options == options


@settings(max_examples=200, deadline=None)
@given(
    seed=st.none() | st.integers(0, MAX_SEED),
    steps=st.none() | st.integers(1, 500),
    guidance=st.none() | st.floats(0, 30, allow_nan=False),
    count=st.none() | st.integers(1, 4),
    ratio=st.none() | st.tuples(st.integers(1, 4), st.integers(1, 4)),
    negative=st.none() | st.lists(st.sampled_from(["dogs", "blur", "red hat"]), min_size=1),
)
def test_any_options_round_trip(
    seed: int | None,
    steps: int | None,
    guidance: float | None,
    count: int | None,
    ratio: tuple[int, int] | None,
    negative: list[str] | None,
) -> None:
    options = ImagineOptions(
        negative_prompt=", ".join(negative) if negative else None,
        aspect=f"{ratio[0]}:{ratio[1]}" if ratio else None,
        seed=seed,
        steps=steps,
        guidance=guidance,
        count=count,
    )
    assert parse_prompt(format_flags("a lighthouse", options)).options == options


def test_prefill_shows_only_what_differs_from_the_defaults() -> None:
    """A job made with the defaults is just its prompt; each changed parameter is a flag."""
    assert remix_text(replace(DEFAULTS, prompt="a cat", seed=99), DEFAULTS, REROLL) == "a cat"
    job = replace(
        DEFAULTS,
        prompt="a cat",
        negative_prompt="dogs, birds",
        guidance=9.0,
        steps=12,
        count=2,
        width=704,
        height=384,
        seed=1234,
    )
    text = remix_text(job, DEFAULTS, REROLL)
    assert text == "a cat --ar 11:6 --no dogs, birds --steps 12 --cfg 9 --n 2"
    assert "--seed" not in text  # a reroll makes new seeds unless the member pins one


def test_reroll_prefill_makes_the_same_job_again() -> None:
    """Submitted unchanged, the prefill parses to the job's own parameters (seed aside)."""
    width, height = parse_aspect("16:9")
    job = replace(
        DEFAULTS, prompt="a cat", negative_prompt="dogs", guidance=3.5, count=1,
        width=width, height=height,
    )
    parsed = parse_remix(remix_text(job, DEFAULTS, REROLL), REROLL)
    given = parsed.options.given_params()
    given["width"], given["height"] = parse_aspect(parsed.options.aspect or "1:1")
    assert replace(DEFAULTS, prompt=parsed.prompt, **given) == job


def test_variation_prefill_leaves_out_size_count_and_derived_steps() -> None:
    """A variation keeps its image's size and makes the configured grid; an img2img job's
    steps, raised from the default by its strength, are the default."""
    job = replace(DEFAULTS, prompt="a cat", count=2, width=704, height=384)
    assert remix_text(job, DEFAULTS, VARY) == "a cat"
    img2img = replace(DEFAULTS, prompt="a cat", steps=25, strength=0.7)
    assert remix_text(img2img, DEFAULTS, VARY) == "a cat"
    # A few default steps raised so that the variation denoises some: still the default.
    few = replace(DEFAULTS, steps=4)
    raised = replace(few, prompt="a cat", steps=variation_steps(4, 0.3), strength=0.3)
    assert raised.steps > 4 and remix_text(raised, few, VARY) == "a cat"


def test_an_img2img_jobs_own_steps_are_kept() -> None:
    """A variation (or image prompt) of a `--steps 40` job ran 40 steps: its editor says so,
    so that submitting it unchanged runs what a press with remix off runs."""
    job = replace(DEFAULTS, prompt="a cat", steps=40, strength=0.7)
    text = remix_text(job, DEFAULTS, REROLL)
    assert text == "a cat --steps 40"
    assert edited_params(DEFAULTS, parse_remix(text, REROLL), DEFAULTS).steps == 40


def test_image_prompt_prefill_carries_its_image_weight() -> None:
    job = replace(DEFAULTS, prompt="a cat", strength=image_strength(2.0))
    text = remix_text(job, DEFAULTS, IMAGE_PROMPT)
    assert text == "a cat --iw 2"
    assert parse_remix(text, IMAGE_PROMPT).options.image_weight == 2.0
    # The default weight (1) is not written.
    plain = replace(job, strength=image_strength(None))
    assert remix_text(plain, DEFAULTS, IMAGE_PROMPT) == "a cat"


def test_an_image_alone_is_edited_without_text() -> None:
    """An image prompt with no text: the editor is never empty (its weight is written even at
    the default), flags alone are an edit, and `--iw 0` with no text is refused."""
    alone = replace(DEFAULTS, prompt="", strength=image_strength(None))
    text = remix_text(alone, DEFAULTS, IMAGE_PROMPT)
    assert text == "--iw 1"
    edit = parse_remix(text, IMAGE_PROMPT)
    assert (edit.prompt, edit.options.image_weight) == ("", 1.0)
    with pytest.raises(FlagError) as refused:
        parse_remix("--iw 0 --n 1", IMAGE_PROMPT)
    assert "`--iw 0` ignores the image" in refused.value.user_message
    assert parse_remix("a cat --iw 0", IMAGE_PROMPT).prompt == "a cat"


@pytest.mark.parametrize(
    ("text", "scope", "problem"),
    [
        ("a cat --n 9", REROLL, "`--n` must be between 1 and 4"),
        ("a cat --seed -1", REROLL, "`--seed` must be between"),
        ("a cat --wat 3", REROLL, "is not a flag I know"),
        ("--ar 16:9", REROLL, "The prompt is empty"),
        ("a cat --ar 16:9", VARY, "`--ar` cannot change a variation"),
        ("a cat --iw 2", REROLL, "`--iw` weighs an image prompt"),
    ],
)
def test_bad_edits_are_refused_with_the_parsers_message(
    text: str, scope: RemixScope, problem: str
) -> None:
    with pytest.raises(FlagError) as refused:
        parse_remix(text, scope)
    assert problem in refused.value.user_message


def test_edited_params_take_the_edit_and_the_defaults_for_flags_left_out() -> None:
    """An edit over a variation's source job: prompt and flags from the edit, and what it
    leaves out is the configured default (as in `/imagine`); size and seed stay the job's."""
    job = replace(
        DEFAULTS, prompt="a cat", negative_prompt="dogs", guidance=3.0, steps=9,
        width=704, height=384, seed=5,
    )
    edited = edited_params(job, parse_prompt("a tiger --cfg 11 --no fur"), DEFAULTS)
    assert (edited.prompt, edited.negative_prompt, edited.guidance, edited.steps) == (
        "a tiger", "fur", 11.0, DEFAULTS.steps
    )
    assert (edited.width, edited.height, edited.seed) == (704, 384, 5)
