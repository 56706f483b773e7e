"""Tests for the Midjourney-style flag parser."""

from __future__ import annotations

import pytest

from bot.core.flags import FLAGS_HELP, FlagError, ImagineOptions, merge_options, parse_prompt


def test_plain_prompt_has_no_options() -> None:
    """A prompt without flags is returned whitespace-squashed with empty options."""
    parsed = parse_prompt("  dog sitting\nin autumn   leaves ")
    assert parsed.prompt == "dog sitting in autumn leaves"
    assert parsed.options == ImagineOptions()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cat --ar 16:9", ImagineOptions(aspect="16:9")),
        ("cat --aspect 2 : 3", ImagineOptions(aspect="2:3")),
        ("cat --seed 42", ImagineOptions(seed=42)),
        ("cat --seed 4294967295", ImagineOptions(seed=4294967295)),
        ("cat --no dogs,  birds , ", ImagineOptions(negative_prompt="dogs, birds")),
        ("cat --steps 12", ImagineOptions(steps=12)),
        ("cat --cfg 4.5", ImagineOptions(guidance=4.5)),
        ("cat --guidance 0", ImagineOptions(guidance=0.0)),
        ("cat --n 2", ImagineOptions(count=2)),
        ("cat --count 1", ImagineOptions(count=1)),
        ("cat --AR 1:1", ImagineOptions(aspect="1:1")),
    ],
)
def test_each_flag(text: str, expected: ImagineOptions) -> None:
    """Each accepted flag (and alias) sets its option and leaves the prompt clean."""
    parsed = parse_prompt(text)
    assert parsed.prompt == "cat"
    assert parsed.options == expected


def test_all_flags_together() -> None:
    """Several flags combine, in any order."""
    parsed = parse_prompt("a red fox --no blur, text --seed 7 --ar 3:2 --steps 3 --cfg 9 --n 3")
    assert parsed.prompt == "a red fox"
    assert parsed.options == ImagineOptions(
        negative_prompt="blur, text", aspect="3:2", seed=7, steps=3, guidance=9.0, count=3
    )


@pytest.mark.parametrize("dash", ["\u2014", "\u2013", "\u2014-"])
def test_em_and_en_dash_count_as_double_hyphen(dash: str) -> None:
    """Phones turn `--` into an em dash (or en dash); both work as a flag prefix."""
    parsed = parse_prompt(f"castle {dash}ar 16:9 {dash}no fog")
    assert parsed.prompt == "castle"
    assert parsed.options == ImagineOptions(aspect="16:9", negative_prompt="fog")


def test_dashes_inside_words_and_spaced_dashes_stay_in_prompt() -> None:
    """Hyphenated words and a free-standing dash are prompt text, not flags."""
    parsed = parse_prompt("sci-fi city — at night -- neon")
    assert parsed.prompt == "sci-fi city — at night -- neon"
    assert parsed.options == ImagineOptions()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("cat --stylize 100", "--stylize"),
        ("cat --v 5", "--v"),
        ("cat --seed", "needs a value"),
        ("cat --seed abc", "not a whole number"),
        ("cat --seed -1", "between 0 and 4294967295"),
        ("cat --seed 4294967296", "between 0 and 4294967295"),
        ("cat --ar 16/", "W:H"),
        ("cat --ar 9:1", "too extreme"),
        ("cat --ar 0:1", "zero side"),
        ("cat --steps 0", "at least 1"),
        ("cat --cfg lots", "not a number"),
        ("cat --cfg -2", "0 or more"),
        ("cat --cfg nan", "not a number"),
        ("cat --cfg inf", "not a number"),
        ("cat --cfg 1e1", "not a number"),
        ("cat --cfg 1_0", "not a number"),
        ("cat --seed 1_000", "not a whole number"),
        ("cat --steps 2.5", "not a whole number"),
        ("cat --n 5", "between 1 and 4"),
        ("cat --no , ,", "needs a value"),
        ("cat --seed 1 --seed 2", "more than once"),
        ("cat --cfg 3 --guidance 4", "more than once"),
        ("--ar 1:1", "prompt is empty"),
    ],
)
def test_malformed_or_unknown_flags_are_refused(text: str, needle: str) -> None:
    """Unknown, malformed, repeated or valueless flags raise FlagError naming the problem."""
    with pytest.raises(FlagError) as info:
        parse_prompt(text)
    assert needle in info.value.problem
    assert info.value.user_message.endswith(FLAGS_HELP)


def test_help_lists_every_flag() -> None:
    """The help text names each accepted flag, so members can fix their prompt."""
    for flag in ("--ar", "--seed", "--no", "--steps", "--cfg", "--guidance", "--n"):
        assert f"`{flag}" in FLAGS_HELP


def test_slash_option_wins_over_flag() -> None:
    """Precedence: an explicit slash option beats the same parameter typed as a flag."""
    typed = parse_prompt("cat --seed 1 --ar 16:9 --no dogs --n 2").options
    explicit = ImagineOptions(seed=99, count=4)
    merged = merge_options(explicit, typed)
    assert merged == ImagineOptions(seed=99, aspect="16:9", negative_prompt="dogs", count=4)


def test_flags_fill_unset_slash_options() -> None:
    """Flags apply where the member left the slash option empty."""
    typed = parse_prompt("cat --steps 5 --cfg 2").options
    assert merge_options(ImagineOptions(), typed) == typed


@pytest.mark.parametrize(
    ("text", "tier"),
    [
        ("cat --fast", "fast"),
        ("cat --relax", "relax"),
        ("cat —relax", "relax"),  # a phone's em dash
        ("cat --RELAX --ar 16:9", "relax"),
        ("cat --ar 16:9 --fast", "fast"),
        ("cat (--relax)", "relax"),
    ],
)
def test_tier_flags_take_no_value(text: str, tier: str) -> None:
    """`--fast` and `--relax` choose the tier; they are not generation parameters."""
    parsed = parse_prompt(text)
    assert parsed.prompt == "cat"
    assert parsed.options.tier == tier
    assert "tier" not in parsed.options.given_params()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cat --fast --relax", "cannot both be given"),
        ("cat --relax --relax", "given more than once"),
        ("cat --relax please hurry", "takes no value"),
        ("cat --fast 2", "takes no value"),
    ],
)
def test_tier_flag_mistakes_are_refused(text: str, problem: str) -> None:
    """Both tiers at once, a repeated tier, or text after a tier flag is refused, not guessed."""
    with pytest.raises(FlagError, match=problem):
        parse_prompt(text)


def test_tier_flags_are_in_the_help() -> None:
    assert "`--fast`" in FLAGS_HELP and "`--relax`" in FLAGS_HELP
