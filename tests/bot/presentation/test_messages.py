"""The wording of the bot's public messages."""

from __future__ import annotations

import datetime as dt

from bot.presentation.messages import (
    MAX_CONTENT,
    Caption,
    failed_text,
    finished_text,
    queued_text,
    running_text,
)
from generation.params import GenerationParams

JOB = Caption(GenerationParams("a **bold** fox", seed=10, steps=20), user_id=42)


def test_queued_shows_position_and_relative_eta() -> None:
    """Queued: prompt (markdown escaped), requester, position and a Discord timestamp."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    text = queued_text(JOB, 3, when)
    assert text.startswith("**a \\*\\*bold\\*\\* fox** - <@42>")
    assert "position 3" in text
    assert f"<t:{int(when.timestamp())}:R>" in text
    assert "next in line" in queued_text(JOB, 1, None)


def test_queued_with_a_note_says_why_it_waits_instead_of_an_eta() -> None:
    """A pool with no GPU worker: the member reads why, not a made-up start time."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    text = queued_text(JOB, 2, when, "No GPU worker is running right now.")
    assert text.endswith("position 2 in the queue. No GPU worker is running right now.")
    assert "<t:" not in text


def test_running_shows_step_and_percentage() -> None:
    """Running: step i/n and the percentage done."""
    assert "step 5/20 (25%)" in running_text(JOB, 5, 20)


def test_running_says_a_model_is_loading_until_the_first_step() -> None:
    note = "Loading the upscaler on first use (this takes a moment)."
    assert note in running_text(JOB, 0, 20, note)
    assert note not in running_text(JOB, 1, 20, note)


def test_finished_lists_seeds_parameters_and_withheld() -> None:
    """Finished: seed range, size, steps, cfg, and a note on withheld images."""
    text = finished_text(JOB, [10, 11, 12, 13], withheld=1)
    assert "seeds 10-13" in text and "512×512" in text and "20 steps" in text
    assert "cfg 7.5" in text
    assert "1 image was flagged" in text and "not counted" in text


def test_failed_says_what_and_that_it_was_refunded() -> None:
    """Failed: the error and the refund."""
    text = failed_text(JOB, "The GPU ran out of memory", 4)
    assert "Failed: The GPU ran out of memory." in text
    assert "4 image(s) were not counted" in text


def test_mentions_in_the_prompt_are_shown_inert() -> None:
    """@everyone in a prompt is displayed defused (allowed mentions still do the real work)."""
    text = queued_text(Caption(GenerationParams("@everyone look"), user_id=1), 1, None)
    assert "@everyone" not in text


def test_long_prompts_stay_under_discords_limit() -> None:
    """A very long prompt is shortened so the message fits in 2000 characters."""
    text = finished_text(Caption(GenerationParams("x" * 5000, "y" * 5000), user_id=1), [1])
    assert len(text) <= MAX_CONTENT


# -- every message fits, the echo gives way (issue 9, item 8) -------------------------------

NOTE = "Note: The prompt is longer than the model's 77 tokens and was cut; ignored: “zebra”"
HEAVY = "*_~`|>" * 400  # each character escaped: the echo doubles in length


def _all_texts(job: Caption, warnings: list[str]) -> dict[str, str]:
    from bot.presentation.messages import cancelled_text, moved_text, upscale_text

    return {
        "queued": queued_text(job, 3, None),
        "running": running_text(job, 1, 2),
        "finished": finished_text(job, [1, 2], withheld=1, warnings=warnings, note="model note"),
        "failed": failed_text(job, "the GPU ran out of memory", 4),
        "cancelled": cancelled_text(job),
        "upscale": upscale_text(job, 2),
        "moved": moved_text(job, "https://discord.com/channels/1/2/3"),
    }


def test_markdown_heavy_prompt_keeps_the_note_and_parameters() -> None:
    """The prompt's echo is shortened, never the note, the seeds or the status."""
    warning = NOTE.removeprefix("Note: ")
    params = GenerationParams(HEAVY, HEAVY, seed=1, steps=2, guidance=3, width=64, height=64,
                              count=2, scheduler="ddim")
    job = Caption(params, user_id=7, label="Reroll")
    texts = _all_texts(job, [warning, warning])
    for name, text in texts.items():
        assert len(text) <= MAX_CONTENT, name
        assert "<@7>" in text and "(Reroll)" in text, name
    finished = texts["finished"]
    assert finished.count(NOTE) == 2 and finished.endswith("model note")
    assert "seeds 1-2" in finished and "1 image was flagged" in finished
    assert "Failed: the GPU ran out of memory. The 4 image(s)" in texts["failed"]


def test_echo_is_cut_between_whole_characters() -> None:
    """A cut echo ends in "…" after a whole grapheme: no half flag, no lone accent or ZWJ."""
    from generation.text import graphemes

    for unit in ["🇫🇷", "e\u0301", "👩\u200d👩\u200d👧", "猫"]:
        text = queued_text(Caption(GenerationParams(unit * 1000), user_id=1), 1, None)
        echo = text.split("**")[1]
        assert echo.endswith("…") and len(text) <= MAX_CONTENT
        assert set(graphemes(echo.removesuffix("…"))) == {unit}


def test_links_and_masked_links_in_a_prompt_are_inert() -> None:
    prompt = "see [here](https://evil.example) https://x.y"
    text = queued_text(Caption(GenerationParams(prompt), user_id=1), 1, None)
    assert "://" not in text and "\\[here\\]" in text


def test_a_relax_job_is_promised_no_position() -> None:
    """Relax: how many jobs are ahead now and the earliest start, with the warning that fast
    jobs (later ones too) go first; never "position N" or "starting <t>"."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    relax = Caption(JOB.params, JOB.user_id, tier="relax")
    text = queued_text(relax, 3, when)
    assert "relax mode: 2 jobs are ahead of it now" in text
    assert f"not before <t:{int(when.timestamp())}:R>" in text
    assert "Fast jobs go first, including ones submitted later" in text
    assert "position" not in text and "starting" not in text
    assert "no job is ahead of it now" in queued_text(relax, 1, None)


def test_the_tier_and_its_note_are_in_the_caption() -> None:
    """The tier is shown with the parameters; the fall-back note in every status message;
    a fast job's caption says how much fast time it used."""
    note = "You have used your 60 s of fast GPU time today, so this job runs in relax mode."
    relax = Caption(JOB.params, JOB.user_id, tier="relax", tier_note=note)
    assert note in queued_text(relax, 2, None)
    assert note in running_text(relax, 1, 20)
    final = finished_text(relax, [10])
    assert "· --relax" in final and note in final
    fast = finished_text(Caption(JOB.params, JOB.user_id, tier="fast"), [10], fast_seconds=1.234)
    assert "· --fast" in fast and "Fast time used: 1.23 GPU seconds." in fast
    assert "--fast" not in finished_text(JOB, [10])  # tier unknown: not shown


def test_describe_lists_suggestions_neutralised_with_their_keycaps() -> None:
    from bot.presentation.messages import (
        DESCRIBE_LABEL,
        describe_text,
        describing_text,
        keycap,
    )

    caption = Caption(GenerationParams(""), user_id=42, label=DESCRIBE_LABEL)
    text = describe_text(
        caption, ["a **bold** fox", "@everyone at [dusk](http://x.y)", "an owl", "a cat"],
        note="the test captioner's suggestions are noise",
    )
    lines = text.splitlines()
    assert lines[0] == "**/describe** - <@42>"  # no prompt: the command is the headline
    assert lines[1] == f"{keycap(1)} a \\*\\*bold\\*\\* fox"
    assert "@everyone" not in text and "http://" not in text  # no ping, no link
    assert lines[4].startswith(keycap(4)) and "Press a number" in text
    assert lines[-1] == "the test captioner's suggestions are noise"
    long = describe_text(caption, ["x" * 1000] * 4)
    assert len(long) <= MAX_CONTENT
    empty = describe_text(caption, [], error="every suggestion had a blocked word", refunded=1)
    assert "every suggestion had a blocked word" in empty and "Nothing was counted" in empty
    assert "Describing" in describing_text(caption)


