"""Discord's 3-second deadline, kept on every path by one mechanism.

Discord drops an interaction (10062 "Unknown interaction", the member sees "The application
did not respond") unless its first callback arrives within 3 seconds. Handlers read the
database, which can be slow; rather than each handler racing the clock, every slash command
(through `DeadlineTree.interaction_check`) and every button (through `arm` in its own
`interaction_check`) is armed when it arrives:

- the interaction gets a `GuardedResponse`, which sends its callbacks one at a time;
- `ACK_WITHIN` seconds later, if the handler has not answered, the guard defers in the way
  the command or button declared (`DeferStyle`): a public or private "thinking" message, or a
  silent acknowledgement of a button press;
- a handler answering after that is unaffected in its code: `send_message` becomes the
  follow-up that fills the deferred answer, `edit_message` an edit of the original message,
  `defer` a no-op. So the handler's effect (a message, a deletion, an edit) still happens.

The only private discord.py detail used is the slot that caches `Interaction.response`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any

import discord
from discord import app_commands

from bot.errors import MemberError
from bot.presentation.delivery import interaction_expired, is_dead, mark_dead

__all__ = [
    "ACK_WITHIN",
    "DEFER_STYLE",
    "MODAL_TOO_LATE",
    "DeadlineTree",
    "DeferStyle",
    "GuardedResponse",
    "arm",
    "elapsed",
]

log = logging.getLogger(__name__)

#: Seconds after an interaction reached the bot by which it is answered or deferred (Discord
#: allows 3; the rest is margin for the network and a busy event loop).
ACK_WITHIN = 2.0
#: The key in a command's `extras` naming its `DeferStyle` (default: private).
DEFER_STYLE = "defer_style"
#: Said when a modal could not be opened in time (Discord allows one only as a first answer).
MODAL_TOO_LATE = (
    "I took too long to open the editor (Discord allows 3 seconds). Nothing was run or "
    "counted: press the button again."
)
_ARMED_AT = "deadline_armed_at"
_TASK = "deadline_task"

_SEND_KEYS = frozenset(
    {"content", "tts", "embed", "embeds", "file", "files", "view", "ephemeral",
     "allowed_mentions", "suppress_embeds", "silent", "poll"}
)
_EDIT_KEYS = frozenset({"content", "embed", "embeds", "attachments", "view", "allowed_mentions"})


class DeferStyle(enum.Enum):
    """How the guard acknowledges an interaction whose handler is late."""

    #: "Thinking…" visible to everyone; the answer (e.g. /imagine's queued message) fills it.
    PUBLIC = "public"
    #: "Thinking…" only the member sees; for private answers (most commands, errors).
    PRIVATE = "private"
    #: Nothing visible (buttons only): the answer edits the pressed message or follows up.
    UPDATE = "update"


class GuardedResponse(discord.InteractionResponse):  # type: ignore[type-arg]
    """An `InteractionResponse` whose callbacks are serialised with the deadline guard's, so
    the guard and a handler never both send a first callback (Discord's 40060)."""

    def __init__(self, parent: discord.Interaction) -> None:
        super().__init__(parent)
        self._lock = asyncio.Lock()
        self.deferred_by_guard = False
        #: The guard put up a public "thinking" message: a private answer (an error) must
        #: not fill it, or everyone would see it.
        self.public_placeholder = False

    async def defer(self, **kwargs: Any) -> Any:
        async with self._lock:
            if self.deferred_by_guard:
                return None  # already acknowledged in time on the handler's behalf
            result = await self._first(super().defer(**kwargs))
            if kwargs.get("thinking") and not kwargs.get("ephemeral"):
                self.public_placeholder = True  # a handler's own public "thinking…"
            return result

    async def send_message(self, content: Any = None, **kwargs: Any) -> Any:
        async with self._lock:
            if not self.deferred_by_guard:
                return await self._first(super().send_message(content, **kwargs))
        extra = {k: v for k, v in kwargs.items() if k in _SEND_KEYS and v is not None}
        return await self._parent.followup.send(content, wait=True, **extra)

    async def edit_message(self, **kwargs: Any) -> Any:
        async with self._lock:
            if not self.deferred_by_guard:
                return await self._first(super().edit_message(**kwargs))
        extra = {k: v for k, v in kwargs.items() if k in _EDIT_KEYS}
        return await self._parent.edit_original_response(**extra)

    async def send_modal(self, modal: Any) -> Any:
        """A modal is only ever a first callback: once the guard has deferred, it cannot be
        opened any more, and the member is told to press again (nothing was run)."""
        async with self._lock:
            if self.deferred_by_guard or self.is_done():
                raise MemberError(MODAL_TOO_LATE)
            return await self._first(super().send_modal(modal))

    async def _first(self, call: Any) -> Any:
        """Await a first callback; one refused as too late (10062) marks the interaction
        dead, so that the guard does not try another callback on it."""
        try:
            return await call
        except discord.HTTPException as exc:
            if interaction_expired(exc):
                mark_dead(self._parent)
            raise

    async def guard(self, style: DeferStyle) -> None:
        """Defer now in `style`, unless the interaction was answered already or is dead."""
        async with self._lock:
            if self.is_done() or is_dead(self._parent):
                return
            try:
                if style is DeferStyle.UPDATE:
                    await super().defer()
                else:
                    await super().defer(ephemeral=style is DeferStyle.PRIVATE, thinking=True)
            except discord.HTTPException as exc:
                if interaction_expired(exc):
                    # Too late already: the handler's answer is dropped, not sent (10062 again).
                    mark_dead(self._parent)
                    log.info("interaction %s expired before it could be deferred",
                             self._parent.id)
                    return
                log.warning("could not defer interaction %s in time: %s", self._parent.id, exc)
                return
            self.deferred_by_guard = True
            self.public_placeholder = style is DeferStyle.PUBLIC
            log.debug("interaction %s deferred (%s) by the deadline guard", self._parent.id,
                      style.value)


def arm(
    interaction: discord.Interaction, style: DeferStyle, within: float = ACK_WITHIN
) -> GuardedResponse | None:
    """Give `interaction` a `GuardedResponse` and defer it in `style` after `within` seconds
    unless answered by then. Idempotent; None if it was already answered."""
    current = getattr(interaction, "_cs_response", None)
    if isinstance(current, GuardedResponse):
        return current
    if current is not None and current.is_done():
        return None
    response = GuardedResponse(interaction)
    if current is not None:
        response._response_type = current._response_type
    # discord.py caches `Interaction.response` in this slot; every later access, ours and
    # discord.py's, gets the guarded one.
    interaction._cs_response = response  # type: ignore[attr-defined]
    interaction.extras[_ARMED_AT] = time.monotonic()

    async def watchdog() -> None:
        await asyncio.sleep(within)
        await response.guard(style)

    interaction.extras[_TASK] = asyncio.get_running_loop().create_task(
        watchdog(), name=f"deadline-{interaction.id}"
    )
    return response


def elapsed(interaction: discord.Interaction) -> float:
    """Seconds since the interaction was armed (0 if it never was)."""
    armed = interaction.extras.get(_ARMED_AT)
    return time.monotonic() - armed if armed is not None else 0.0


class DeadlineTree(app_commands.CommandTree):  # type: ignore[type-arg]
    """The bot's command tree: arms every slash command as it arrives (see the module doc).

    A command declares a public answer with ``extras={DEFER_STYLE: DeferStyle.PUBLIC}``.
    """

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.type is discord.InteractionType.application_command:
            command = interaction.command
            extras = getattr(command, "extras", None) or {}
            # Group commands: the subcommand's style, else its parents'.
            parent = getattr(command, "parent", None)
            while DEFER_STYLE not in extras and parent is not None:
                extras = parent.extras or {}
                parent = parent.parent
            arm(interaction, extras.get(DEFER_STYLE, DeferStyle.PRIVATE))
        return True
