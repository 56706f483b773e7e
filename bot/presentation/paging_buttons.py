"""The Prev/Next buttons under `/history list` and `/audit` pages, and the footer they share.

A paging button is a `DynamicItem` whose custom_id carries the list's filters and a cursor
(`bot.history_format`, `bot.audit_format`), so it keeps working after a restart. A press
hands the parsed ref to its cog's `turn_page`, which re-checks who may see what.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, cast, runtime_checkable

import discord

from bot.errors import MemberError
from bot.presentation.deadline import DeferStyle, arm

if TYPE_CHECKING:
    from bot.app import ImagineBot

__all__ = ["NEWEST_FIRST", "PageButton", "page_footer"]

NEWEST_FIRST = "Newest first; times in your time zone."


def page_footer(filters: str) -> str:
    """A list page's footer: the filters in force (if any), then how the list is ordered."""
    return f"Filters: {filters}. {NEWEST_FIRST}" if filters else NEWEST_FIRST


@runtime_checkable
class _Pager(Protocol):
    async def turn_page(self, interaction: discord.Interaction, ref: Any) -> None: ...


class PageButton(discord.ui.DynamicItem[discord.ui.Button], template=r"(?!)"):
    """Prev/Next under a page of a list; all its state is in the custom_id.

    discord.py compiles a template for every DynamicItem class, so this base gets one that
    matches nothing and is never registered. A subclass passes its own `template=` and sets
    the class attributes below.
    """

    cog_name: ClassVar[str]  # the cog whose `turn_page` a press calls
    command: ClassVar[str]  # what to run again when a button is out of date
    prefix: ClassVar[str]  # of the custom_ids, also for the disabled stand-ins

    def __init__(self, ref: Any | None, custom_id: str, label: str) -> None:
        super().__init__(
            discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, custom_id=custom_id)
        )
        self.ref = ref

    @staticmethod
    def parse_ref(match: re.Match[str]) -> Any:
        """The ref in a custom_id matched by the template; ValueError if malformed."""
        raise NotImplementedError

    @staticmethod
    def custom_id_of(ref: Any) -> str | None:
        """The custom_id carrying `ref`; None if it cannot fit."""
        raise NotImplementedError

    @classmethod
    def prev_next(cls, newer: Any | None, older: Any | None) -> discord.ui.View:
        """Prev (to `newer`) and Next (to `older`); None: that end of the list."""
        view = discord.ui.View(timeout=None)
        view.add_item(cls._for_ref("Prev", newer))
        view.add_item(cls._for_ref("Next", older))
        return view

    @classmethod
    def _for_ref(cls, label: str, ref: Any | None) -> discord.ui.Item[Any]:
        """A paging button, or a disabled stand-in at either end (or if the ref cannot fit)."""
        custom_id = cls.custom_id_of(ref) if ref is not None else None
        if custom_id is None:
            placeholder = f"{cls.prefix}none:{label.lower()}"
            return discord.ui.Button(label=label, custom_id=placeholder, disabled=True)
        return cls(ref, custom_id, label)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        try:
            ref = cls.parse_ref(match)
        except ValueError:
            ref = None  # answered in the callback: an error here would only be logged
        return cls(ref, match.string, getattr(item, "label", None) or "Page")

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # A page turn edits the pressed message: a silent acknowledgement if it is slow.
        arm(interaction, DeferStyle.UPDATE)
        return True

    async def callback(self, interaction: discord.Interaction) -> None:
        client = cast("ImagineBot", interaction.client)
        try:
            cog = client.get_cog(self.cog_name)
            if not isinstance(cog, _Pager):
                raise RuntimeError(f"the {self.cog_name.lower()} cog is not loaded")
            if self.ref is None:
                raise MemberError(f"This page is out of date: run `{self.command}` again.")
            await cog.turn_page(interaction, self.ref)
        except Exception as exc:
            await client.report_interaction_error(interaction, exc)
