"""Persistent buttons: all their state is in the custom_id, so they work after a restart.

Each button is a `DynamicItem` whose template carries the job id (uuid hex) and, for U/V, the
image index. discord.py matches a pressed button's custom_id against these templates, so no
view has to be alive in memory; the job's parameters come from the database.

Each press is armed against Discord's 3-second deadline first (`bot.presentation.deadline`), with
the way its answer is shown (`defer_style`). The buttons only parse and dispatch: the work is
done by the `ImagineActions` the bot exposes
(`bot.imagine_actions`, set by the imagine cog), and any exception goes to the bot's single
interaction error handler, because discord.py only logs errors raised in dynamic items.

Who may press a button is decided where discord.py asks: the item's `interaction_check`
(delete: the requester or a moderator; cancel: the requester). discord.py drops a press that
fails it without an answer, so the refusal is answered there, through the same handler.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import discord

from bot.db.models import JobKind
from bot.presentation.deadline import DeferStyle, arm
from bot.presentation.delivery import respond
from bot.presentation.messages import keycap

__all__ = [
    "ALL_BUTTONS",
    "TOOL_LOOKS",
    "CancelButton",
    "DeleteButton",
    "ImagineActions",
    "PressRegistry",
    "RerollButton",
    "SuggestionButton",
    "ToolButton",
    "UpscaleButton",
    "VariationButton",
]

log = logging.getLogger(__name__)

_JOB = r"(?P<job>[0-9a-f]{32})"
_INDEX = r"(?P<i>[1-4])"
_NEVER = r"(?!)"  # matches no custom_id

_Dynamic = discord.ui.DynamicItem[discord.ui.Button]


class PressRegistry:
    """The button presses being handled, so that one member pressing the same button twice
    before the first press is done (a double click, an impatient second try) gets one effect.

    Keyed by button, message and (for `per_member` buttons) member: two members pressing V
    each get their variations, while two members pressing delete delete the message once.
    Owned by whoever handles the presses (the imagine cog), not global.
    """

    def __init__(self) -> None:
        self._busy: set[tuple[str, int, int]] = set()

    def try_claim(
        self, interaction: discord.Interaction, *, per_member: bool = True
    ) -> tuple[str, int, int] | None:
        """The press's key, now marked busy; None if a press of its kind is in progress.
        The caller must `release` the key when the press is handled."""
        data: Any = interaction.data or {}
        message_id = interaction.message.id if interaction.message is not None else 0
        member = interaction.user.id if per_member else 0
        key = (str(data.get("custom_id", "")), member, message_id)
        if key in self._busy:
            return None
        self._busy.add(key)
        return key

    def release(self, key: tuple[str, int, int]) -> None:
        self._busy.discard(key)

    @contextlib.contextmanager
    def claim(
        self, interaction: discord.Interaction, *, per_member: bool = True
    ) -> Iterator[bool]:
        """True while this press is the only one of its kind in progress, else False."""
        key = self.try_claim(interaction, per_member=per_member)
        if key is None:
            yield False
            return
        try:
            yield True
        finally:
            self.release(key)


@runtime_checkable
class ImagineActions(Protocol):
    """What the buttons ask the bot to do; implemented by the imagine cog."""

    presses: PressRegistry

    async def upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None: ...

    async def vary(self, interaction: discord.Interaction, job_id: str, index: int) -> None: ...

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def check_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """Raise a member-facing error unless the presser may delete the job's message."""

    async def check_cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        """Raise a member-facing error unless the presser may cancel the job."""

    async def tool(
        self, interaction: discord.Interaction, job_id: str, index: int, kind: JobKind
    ) -> None: ...

    async def check_suggestion(self, interaction: discord.Interaction, job_id: str) -> None:
        """Raise a member-facing error unless the presser asked for the /describe job."""

    async def imagine_suggestion(
        self, interaction: discord.Interaction, job_id: str, index: int
    ) -> None: ...


class ErrorReporter(Protocol):
    async def report_interaction_error(
        self, interaction: discord.Interaction, error: Exception
    ) -> None: ...


async def _dispatch(interaction: discord.Interaction, action: str, *args: Any) -> bool:
    """Call `ImagineActions.<action>`; False (the error answered) when it raised."""
    client: Any = interaction.client
    actions = getattr(client, "imagine_actions", None)
    try:
        if not isinstance(actions, ImagineActions):
            raise RuntimeError("the imagine cog is not loaded")
        await getattr(actions, action)(interaction, *args)
    except Exception as exc:
        reporter = getattr(client, "report_interaction_error", None)
        if reporter is None:
            log.exception("button %s failed", action)
        else:
            await reporter(interaction, exc)
        return False
    return True


_PRESS_KEY = "imagine_press_key"


async def _claim(interaction: discord.Interaction, *, per_member: bool, busy: str) -> bool:
    """Mark this press busy until `_release` (in `interaction.extras`); False, and the member
    told `busy` quietly, if an earlier press of the same button is still being handled."""
    actions = getattr(interaction.client, "imagine_actions", None)
    if not isinstance(actions, ImagineActions):
        return True  # `_dispatch` reports the missing cog
    key = actions.presses.try_claim(interaction, per_member=per_member)
    if key is None:
        await respond(
            interaction, busy, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )
        return False
    interaction.extras[_PRESS_KEY] = key
    return True


def _release(interaction: discord.Interaction) -> None:
    key = interaction.extras.pop(_PRESS_KEY, None)
    actions = getattr(interaction.client, "imagine_actions", None)
    if key is not None and isinstance(actions, ImagineActions):
        actions.presses.release(key)


ALREADY_HANDLING = "Already on it: your first press of this button is still being handled."


class _JobButton(_Dynamic, template=_NEVER):
    """A button acting on one job: a press calls `ImagineActions.<action>(job_id, *args)`.

    discord.py compiles a template for every DynamicItem class, so this base gets one that
    matches nothing; it is never registered. Each subclass passes its own `template=`.
    """

    action: ClassVar[str]  # the `ImagineActions` method a press calls
    #: The `ImagineActions` check a press must pass first (None: anyone in the server).
    check: ClassVar[str | None] = None
    #: How the deadline guard acknowledges a press whose handler is slow: U, V and reroll
    #: post a new public message; delete and cancel override this.
    defer_style: ClassVar[DeferStyle] = DeferStyle.PUBLIC
    #: The answer to a second press while the first is still being handled.
    busy: ClassVar[str] = ALREADY_HANDLING
    #: False when the effect is the same whoever presses (delete, cancel): one at a time.
    per_member: ClassVar[bool] = True

    def __init__(self, job_id: str, *, custom_id: str, row: int | None, **look: Any) -> None:
        super().__init__(discord.ui.Button(custom_id=custom_id, row=row, **look))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job"], row=item.row)

    def _args(self) -> tuple[Any, ...]:
        return (self.job_id,)

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        arm(interaction, self.defer_style)
        # The press is claimed before its check, so that a second press arriving while the
        # first is still being checked is told so rather than acting twice; discord.py calls
        # `callback` (which releases it) right after a passed check, with no await between.
        if not await _claim(interaction, per_member=self.per_member, busy=self.busy):
            return False
        passed = False
        try:
            passed = self.check is None or await _dispatch(interaction, self.check, self.job_id)
        finally:
            if not passed:
                _release(interaction)
        return passed

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await _dispatch(interaction, self.action, *self._args())
        finally:
            _release(interaction)


class _ImageButton(_JobButton, template=_NEVER):
    """A button acting on image `index` (1-4) of one job."""

    def __init__(
        self, job_id: str, index: int, *, custom_id: str, row: int | None, **look: Any
    ) -> None:
        super().__init__(job_id, custom_id=custom_id, row=row, **look)
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job"], int(match["i"]), row=item.row)

    def _args(self) -> tuple[Any, ...]:
        return (self.job_id, self.index)


class UpscaleButton(_ImageButton, template=rf"imagine:u:{_JOB}:{_INDEX}"):
    """U1-U4: post image i of the job alone, at full size."""

    action = "upscale"

    def __init__(self, job_id: str, index: int, *, row: int | None = 0) -> None:
        super().__init__(
            job_id,
            index,
            label=f"U{index}",
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:u:{job_id}:{index}",
            row=row,
        )


class VariationButton(_ImageButton, template=rf"imagine:v:{_JOB}:{_INDEX}"):
    """V1-V4: four variations of image i (img2img from it with the same prompt)."""

    action = "vary"

    def __init__(
        self, job_id: str, index: int, *, row: int | None = 1, label: str | None = None
    ) -> None:
        super().__init__(
            job_id,
            index,
            label=label or f"V{index}",
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:v:{job_id}:{index}",
            row=row,
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        label = getattr(item, "label", None)
        return cls(match["job"], int(match["i"]), row=item.row, label=label)


@dataclass(frozen=True)
class ToolLook:
    """How a tool's button looks (`label` and/or `emoji`), and what its result is called."""

    title: str
    label: str | None = None
    emoji: str | None = None


#: The tools under a single image, in the order they are shown.
TOOL_LOOKS: dict[JobKind, ToolLook] = {
    JobKind.UPSCALE: ToolLook("Upscale (Subtle)", label="Upscale (Subtle)"),
    JobKind.UPSCALE_CREATIVE: ToolLook("Upscale (Creative)", label="Upscale (Creative)"),
    JobKind.VARY_SUBTLE: ToolLook("Vary (Subtle)", label="Vary (Subtle)"),
    JobKind.VARY_STRONG: ToolLook("Vary (Strong)", label="Vary (Strong)"),
    JobKind.ZOOM_2X: ToolLook("Zoom Out 2x", label="Zoom Out 2x"),
    JobKind.ZOOM_1_5X: ToolLook("Zoom Out 1.5x", label="Zoom Out 1.5x"),
    JobKind.PAN_LEFT: ToolLook("Pan left", emoji="\N{LEFTWARDS BLACK ARROW}"),
    JobKind.PAN_RIGHT: ToolLook("Pan right", emoji="\N{BLACK RIGHTWARDS ARROW}"),
    JobKind.PAN_UP: ToolLook("Pan up", emoji="\N{UPWARDS BLACK ARROW}"),
    JobKind.PAN_DOWN: ToolLook("Pan down", emoji="\N{DOWNWARDS BLACK ARROW}"),
}
_TOOL = "(?P<tool>" + "|".join(re.escape(kind.value) for kind in TOOL_LOOKS) + ")"


class ToolButton(_ImageButton, template=rf"imagine:t:{_TOOL}:{_JOB}:{_INDEX}"):
    """A creative tool (upscale, vary, zoom, pan) on image i of the job."""

    action = "tool"

    def __init__(self, job_id: str, index: int, kind: JobKind, *, row: int | None = 0) -> None:
        look = TOOL_LOOKS[kind]
        super().__init__(
            job_id,
            index,
            label=look.label,
            emoji=look.emoji,
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:t:{kind.value}:{job_id}:{index}",
            row=row,
        )
        self.kind = kind

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["job"], int(match["i"]), JobKind(match["tool"]), row=item.row)

    def _args(self) -> tuple[Any, ...]:
        return (self.job_id, self.index, self.kind)


class RerollButton(_JobButton, template=rf"imagine:r:{_JOB}"):
    """Run the job again with the same parameters and new seeds."""

    action = "reroll"

    def __init__(self, job_id: str, *, row: int | None = 2) -> None:
        super().__init__(
            job_id,
            emoji="\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}",
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:r:{job_id}",
            row=row,
        )


class SuggestionButton(_ImageButton, template=rf"imagine:s:{_JOB}:{_INDEX}"):
    """Under /describe's suggestions: `/imagine` suggestion i; the member who asked only."""

    action = "imagine_suggestion"
    check = "check_suggestion"

    def __init__(self, job_id: str, index: int, *, row: int | None = 0) -> None:
        super().__init__(
            job_id,
            index,
            # The keycap digit, as in the message's list of suggestions.
            emoji=keycap(index),
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:s:{job_id}:{index}",
            row=row,
        )


class DeleteButton(_JobButton, template=rf"imagine:d:{_JOB}"):
    """Delete the message it is on; the requester or an admin only."""

    action = "delete"
    check = "check_delete"
    defer_style = DeferStyle.UPDATE  # the effect is on the pressed message itself
    busy = "This message is already being deleted."
    per_member = False

    def __init__(self, job_id: str, *, row: int | None = 2) -> None:
        super().__init__(
            job_id,
            emoji="\N{WASTEBASKET}",
            style=discord.ButtonStyle.danger,
            custom_id=f"imagine:d:{job_id}",
            row=row,
        )


class CancelButton(_JobButton, template=rf"imagine:c:{_JOB}"):
    """Cancel a job still waiting in the queue; its owner only. Refunds the reservation."""

    action = "cancel"
    check = "check_cancel"
    defer_style = DeferStyle.PRIVATE
    busy = "Already cancelling this job; nothing will be counted against your quota."
    per_member = False

    def __init__(self, job_id: str, *, row: int | None = 0) -> None:
        super().__init__(
            job_id,
            label="Cancel",
            style=discord.ButtonStyle.secondary,
            custom_id=f"imagine:c:{job_id}",
            row=row,
        )


ALL_BUTTONS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    UpscaleButton,
    ToolButton,
    VariationButton,
    RerollButton,
    DeleteButton,
    CancelButton,
    SuggestionButton,
)
