"""Which errors reach the member as words, and which are treated as bugs."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.cogs.errors import user_message
from bot.errors import MemberError, QuotaExceeded
from generation.errors import JobCancelledError, OutOfMemoryError, QueueFullError, RequestError


def test_generation_errors_are_told_to_the_member() -> None:
    """Bad parameters, a full queue, a cancelled job and an out-of-memory each have words."""
    for error in (
        RequestError("steps must be between 1 and 100, got 500."),
        QueueFullError("The queue is full."),
        JobCancelledError("The bot shut down."),
        OutOfMemoryError("The GPU ran out of memory for this job; it was refunded."),
    ):
        assert user_message(error) == str(error)


def test_refusals_carry_their_own_message() -> None:
    """Service and Discord-layer refusals use their user_message."""
    assert user_message(MemberError("Only the requester can do that.")) == (
        "Only the requester can do that."
    )
    resets = datetime(2026, 11, 27, tzinfo=UTC)
    message = user_message(QuotaExceeded(10, 10, resets, "member", requested=4, period="day"))
    assert message is not None and f"<t:{int(resets.timestamp())}:R>" in message


def test_anything_else_is_a_bug() -> None:
    """An unexpected exception has no member message (it is logged with its traceback)."""
    assert user_message(KeyError("x")) is None
    assert user_message(RuntimeError("boom")) is None
