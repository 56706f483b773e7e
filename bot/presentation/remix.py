"""The remix editor: a modal with the job's prompt and flags, opened instead of running a button.

Like the buttons, the modal keeps all its state in its custom_id (`RemixTarget`: the button it
replaces, the job, the image), so a submission is handled the same way whether or not the bot
restarted while the member was typing: the imagine cog reads it from the interaction
(`ImagineCog.on_remix_submit`), never from a modal object kept in memory. The modal is
therefore stopped before it is sent, so that discord.py does not keep it waiting for a submission
that may never come (a member closing the editor sends nothing at all).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import discord

from bot.core.remix import RemixAction
from bot.db.models import JobKind
from bot.presentation.buttons import TOOL_LOOKS
from bot.presentation.imagine_command import NEGATIVE_MAX_CHARS, PROMPT_MAX_CHARS

__all__ = [
    "REMIX_INPUT",
    "REMIX_MAX_CHARS",
    "RemixTarget",
    "remix_modal",
    "submitted_text",
]

#: The custom_id of the modal's one text input.
REMIX_INPUT = "prompt"
#: The editor's length limit: `/imagine`'s prompt and negative prompt, and room for the flags
#: (Discord allows up to 4000 in a text input).
REMIX_MAX_CHARS = PROMPT_MAX_CHARS + NEGATIVE_MAX_CHARS + 100
_TEMPLATE = re.compile(
    r"imagine:remix:(?P<action>[rvt]):(?:(?P<kind>[a-z0-9_.]+):)?(?P<job>[0-9a-f]{32})"
    r"(?::(?P<i>[1-4]))?"
)


@dataclass(frozen=True)
class RemixTarget:
    """What a remix edit is for: the button (`action`), its job and image, and for a tool its
    kind. Written into the modal's custom_id and read back from the submission."""

    action: RemixAction
    job_id: str
    index: int | None = None
    kind: JobKind | None = None

    @property
    def custom_id(self) -> str:
        parts = ["imagine", "remix", self.action.value]
        if self.kind is not None:
            parts.append(self.kind.value)
        parts.append(self.job_id)
        if self.index is not None:
            parts.append(str(self.index))
        return ":".join(parts)

    @classmethod
    def from_custom_id(cls, custom_id: str) -> RemixTarget | None:
        """The target a modal's custom_id names; None if it is not a remix modal's."""
        match = _TEMPLATE.fullmatch(custom_id)
        if match is None:
            return None
        action = RemixAction(match["action"])
        index = int(match["i"]) if match["i"] else None
        kind = JobKind(match["kind"]) if match["kind"] else None
        if kind is not None and kind not in TOOL_LOOKS:
            return None
        wants_index = action is not RemixAction.REROLL
        wants_kind = action is RemixAction.TOOL
        if (index is not None) != wants_index or (kind is not None) != wants_kind:
            return None
        return cls(action, match["job"], index, kind)

    @property
    def title(self) -> str:
        """The modal's title (Discord: at most 45 characters)."""
        if self.action is RemixAction.REROLL:
            return "Remix: Reroll"
        if self.action is RemixAction.VARY:
            return f"Remix: V{self.index}"
        assert self.kind is not None
        return f"Remix: {TOOL_LOOKS[self.kind].title} of image #{self.index}"


def remix_modal(target: RemixTarget, text: str) -> discord.ui.Modal:
    """The editor for `target`, pre-filled with `text` (the job's prompt and flags), stopped
    (see the module docstring): send it with `interaction.response.send_modal`."""
    modal = discord.ui.Modal(title=target.title, custom_id=target.custom_id, timeout=None)
    modal.add_item(
        discord.ui.Label(
            text="Prompt and flags",
            description="Edit, then submit to run it (e.g. --ar 16:9 --no text --seed 7).",
            component=discord.ui.TextInput(
                custom_id=REMIX_INPUT,
                style=discord.TextStyle.paragraph,
                default=text[:REMIX_MAX_CHARS],
                min_length=1,
                max_length=REMIX_MAX_CHARS,
                required=True,
            ),
        )
    )
    modal.stop()
    return modal


def submitted_text(data: Mapping[str, Any]) -> str:
    """The text the member submitted in a remix modal (`interaction.data`); "" if none."""
    for component in _inputs(data.get("components") or []):
        if component.get("custom_id") == REMIX_INPUT:
            return str(component.get("value") or "")
    return ""


def _inputs(components: list[Any]) -> Iterator[Mapping[str, Any]]:
    """The inputs of a modal submission, out of their action rows (1) and labels (18)."""
    for component in components:
        if component.get("type") == 1:
            yield from _inputs(component.get("components") or [])
        elif component.get("type") == 18:
            yield from _inputs([component.get("component") or {}])
        else:
            yield component
