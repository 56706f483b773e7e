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
