"""The component layouts of the bot's messages, built from the persistent buttons."""

from __future__ import annotations

from collections.abc import Collection

import discord

from bot.presentation.buttons import (
    CancelButton,
    DeleteButton,
    RerollButton,
    UpscaleButton,
    VariationButton,
)

__all__ = ["grid_view", "queued_view", "single_view"]


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


def single_view(job_id: str, index: int) -> discord.ui.View:
    """Under one upscaled image: make variations of it, or delete the message."""
    view = discord.ui.View(timeout=None)
    view.add_item(VariationButton(job_id, index, row=0, label="Vary"))
    view.add_item(DeleteButton(job_id, row=0))
    return view
