"""The flag parser against keyboards, punctuation and arbitrary Unicode (issue 9, item 5).

The parser is `generation.flags`, shared by the bot (`bot.core.flags`) and the command line.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.flags import FlagError, ImagineOptions, parse_prompt
from bot.presentation.messages import Caption, finished_text, neutralise, queued_text
from generation.params import GenerationParams, Limits
from generation.request import parse_aspect

# Every way of typing `--` that keyboards and autocorrect produce.
DASH_FORMS = [
    "--",
    "\uff0d\uff0d",  # fullwidth hyphen-minus (CJK keyboards)
    "\u2212\u2212",  # minus sign
    "\u2010\u2010",  # hyphen
    "\u2011\u2011",  # non-breaking hyphen
    "\u2014\u2014",  # two em dashes
    "\u2014",  # em dash (iOS/Android smart punctuation)
    "\u2013",  # en dash
    "\u2013-",
    "\ufe63\ufe63",  # small hyphen-minus
    "\u2e3a",  # two-em dash
]


@pytest.mark.parametrize("dash", DASH_FORMS)
def test_every_dash_form_starts_a_flag(dash: str) -> None:
    parsed = parse_prompt(f"a cat {dash}ar 16:9 {dash}seed 9")
    assert parsed.prompt == "a cat"
    assert parsed.options == ImagineOptions(aspect="16:9", seed=9)


@pytest.mark.parametrize(
    "text",
    [
        "a cat,--ar 16:9",
        "a cat (--ar 16:9)",
        "a cat [--ar 16:9]",
        "a cat; --ar 16:9",
        "a cat\uff0c\uff0d\uff0dar 16:9",  # fullwidth comma and dashes
        "a cat \uff0d\uff0d\uff41\uff52 \uff11\uff16\uff1a\uff19",  # all fullwidth
        "a cat\n--ar 16:9",
    ],
)
def test_flags_glued_to_punctuation(text: str) -> None:
    parsed = parse_prompt(text)
    assert parsed.prompt == "a cat"
    assert parsed.options.aspect == "16:9"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a cat -- ar 16:9", "looks like a flag"),
        ("a cat -ar 16:9", "looks like a flag"),
        ("a cat \u2014 seed 5", "looks like a flag"),
        ("a cat --ar16:9", "put a space"),
        ("a cat \uff0d\uff0dstylize 100", "not a flag I know"),
        ("a cat --\u00e9t\u00e9 1", "not a flag I know"),
        ("a cat (--ar 16:9) --ar 1:1", "more than once"),
    ],
)
def test_flag_like_text_is_always_reported(text: str, needle: str) -> None:
    with pytest.raises(FlagError, match=needle):
        parse_prompt(text)


@pytest.mark.parametrize(
    "text",
    [
        "sci-fi city — at night -- neon",
        "a man \u2014 no hat",
        "well--known e-mail x-ray",
        "count the stars \u2014 count them all",
        "\u5973\u7684 -1 degrees",  # a hyphen before a number is a minus, not a flag
    ],
)
def test_prose_dashes_stay_in_the_prompt(text: str) -> None:
    parsed = parse_prompt(text)
    assert parsed.prompt == text
    assert parsed.options == ImagineOptions()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("16:9", "16:9"), ("16x9", "16:9"), ("16 X 9", "16:9"), ("16\u00d79", "16:9"),
     ("1.91:1", "1.91:1"), ("2/3", "2:3"), ("\uff11\uff16\uff1a\uff19", "16:9")],
)
def test_aspect_flag_reads_what_the_engine_reads(value: str, expected: str) -> None:
    """Every ratio the flag accepts gives the engine's size for it, and vice versa."""
    aspect = parse_prompt(f"cat --ar {value}").options.aspect
    assert aspect == expected
    assert aspect is not None
    assert parse_aspect(aspect, Limits()) == parse_aspect(expected, Limits())


@pytest.mark.parametrize(
    ("text", "guidance"),
    [("cat --cfg -0", 0.0), ("cat --cfg 7,5", 7.5), ("cat --cfg .5", 0.5),
     ("cat --cfg \uff17", 7.0), ("cat --cfg +3", 3.0)],
)
def test_numbers_as_people_write_them(text: str, guidance: float) -> None:
    value = parse_prompt(text).options.guidance
    assert value == guidance
    assert str(value).startswith("-") is False  # -0 is echoed as 0


def test_negative_zero_is_echoed_as_zero() -> None:
    guidance = parse_prompt("cat --cfg -0").options.guidance
    assert guidance is not None
    caption = Caption(GenerationParams("cat", guidance=guidance, seed=1), user_id=1)
    assert "cfg 0 " in finished_text(caption, [1]) + " "
    assert "cfg -0" not in finished_text(caption, [1])


# -- properties over arbitrary Unicode ------------------------------------------------------

_MARKDOWN = re.compile(r"(?<!\\)[*_~`|]")
_MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>")


def _assert_inert(echo: str) -> None:
    assert not _MARKDOWN.search(echo), echo
    assert not _MENTION.search(echo), echo
    assert "://" not in echo, echo


_tricky = st.sampled_from(
    ["--", "\u2014", "\uff0d\uff0d", "ar", "seed", "no", "cfg", " ", ",", "(", ")", "16:9",
     "@everyone", "@here", "<@123456789012345678>", "**", "__", "`", "||", "~~",
     "https://x.example", "[m](http://y)", "# ", "> ", "\u200b", "-0", "1_0", "\n"]
)
_prompts = st.lists(st.one_of(st.text(max_size=8), _tricky), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(_prompts)
def test_any_prompt_parses_or_is_refused_with_a_message(text: str) -> None:
    """No input raises anything but FlagError, and an accepted prompt echoes inert."""
    try:
        parsed = parse_prompt(text)
    except FlagError as exc:
        assert exc.problem
        return
    caption = Caption(
        GenerationParams(parsed.prompt, negative_prompt=parsed.options.negative_prompt or ""),
        user_id=42,
    )
    message = queued_text(caption, 1, None)
    assert len(message) <= 2000
    headline = message.split("\n", 1)[0]
    echo = headline[2 : headline.rindex("** - <@42>")]
    _assert_inert(echo)
    if parsed.options.negative_prompt:
        without = finished_text(caption, [1]).split("Without: ", 1)[1].split("\n", 1)[0]
        _assert_inert(without)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_neutralise_leaves_nothing_active(text: str) -> None:
    _assert_inert(neutralise(" ".join(text.split())))


def test_member_text_quoted_in_an_error_is_short_and_cannot_break_its_code_span() -> None:
    with pytest.raises(FlagError) as info:
        parse_prompt("cat --cfg " + "`@everyone`" * 100)
    problem = info.value.problem
    assert len(problem) < 120
    assert problem.count("`") == 2  # one code span around the quoted flag and value
