"""The component layouts of the bot's messages, built from the persistent buttons."""

from __future__ import annotations

from collections.abc import Collection

import discord

from bot.db.models import JobKind
from bot.presentation.buttons import (
    TOOL_LOOKS,
    CancelButton,
    DeleteButton,
    RerollButton,
    SuggestionButton,
    ToolButton,
    UpscaleButton,
    VariationButton,
)

__all__ = ["describe_view", "grid_view", "queued_view", "single_view"]


def queued_view(job_id: str) -> discord.ui.View:
    """Under a queued job: a Cancel button (owner only, checked when pressed)."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def grid_view(job_id: str, count: int, withheld: Collection[int] = ()) -> discord.ui.View:
    """Under a grid: U1..Un, V1..Vn, reroll, delete; withheld images get no U/V buttons."""
    view = discord.ui.View(timeout=None)
    shown = [i for i in range(1, count + 1) if i not in withheld]
    for index in shown:
        view.add_item(UpscaleButton(job_id, index, row=0))
    for index in shown:
        view.add_item(VariationButton(job_id, index, row=1))
    view.add_item(RerollButton(job_id, row=2))
    view.add_item(DeleteButton(job_id, row=2))
    return view


#: The row of each tool under a single image (Discord: at most 5 buttons a row).
_TOOL_ROWS = {
    JobKind.UPSCALE: 0,
    JobKind.UPSCALE_CREATIVE: 0,
    JobKind.VARY_SUBTLE: 0,
    JobKind.VARY_STRONG: 0,
    JobKind.ZOOM_2X: 1,
    JobKind.ZOOM_1_5X: 1,
    JobKind.PAN_LEFT: 2,
    JobKind.PAN_RIGHT: 2,
    JobKind.PAN_UP: 2,
    JobKind.PAN_DOWN: 2,
}


def single_view(job_id: str, index: int, tools: Collection[JobKind] = ()) -> discord.ui.View:
    """Under one image: the `tools` available (upscale, vary, zoom, pan), and delete.

    A tool whose model is not configured is left out by the caller."""
    view = discord.ui.View(timeout=None)
    for kind in TOOL_LOOKS:
        if kind in tools:
            view.add_item(ToolButton(job_id, index, kind, row=_TOOL_ROWS[kind]))
    view.add_item(DeleteButton(job_id, row=2))
    return view


def describe_view(job_id: str, count: int) -> discord.ui.View:
    """Under /describe's `count` suggestions: one button each (imagines it), and delete."""
    view = discord.ui.View(timeout=None)
    for index in range(1, count + 1):
        view.add_item(SuggestionButton(job_id, index, row=0))
    view.add_item(DeleteButton(job_id, row=0 if count < 5 else 1))
    return view
