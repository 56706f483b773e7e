"""A member's tier and fast time in words, for `/info` and `/quota show`."""

from __future__ import annotations

from bot.db.models import Period
from bot.presentation.messages import relative_time
from bot.services.tiers import FastStatus

__all__ = ["fast_time_text"]


def fast_time_text(status: FastStatus) -> str:
    """The tier the member's next job gets, and their fast GPU seconds used, left and when
    they come back (one or two lines, well within an embed field's 1,024 characters)."""
    mode = f"Mode: **{status.tier}**"
    if status.default_tier == "fast" and status.tier == "relax":
        mode += " (your jobs run in relax mode until your fast time is back)"
    if not status.allowed:
        return f"{mode}; fast mode is for members with certain roles on this server."
    span = "today" if status.period is Period.DAY else "this week"
    if status.allowance is None:
        return f"{mode}\nFast time: {status.used:.1f} GPU s used {span}, no limit."
    left = status.remaining if status.remaining is not None else 0.0
    return (
        f"{mode}\nFast time: {status.used:.1f} of {status.allowance:g} GPU s used {span}, "
        f"**{left:.1f} s** left; resets {relative_time(status.resets_at)}."
    )
