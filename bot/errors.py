"""Errors a member or admin may see, each with a message ready to show them.

    ServiceError                 .user_message: text for people; .render(when): the same with
                                 its times written by `when` (the Discord layer: format_dt)
    ├── NotFound                 no such job / rule / entry (in this server)
    ├── InvalidArgument          an admin's value is out of range (limit < 0, bad scope, ...)
    ├── InvalidTransition        a job cannot move to that status (e.g. succeeded -> running)
    ├── QuotaExceeded            not enough images left in the period (member or server cap)
    ├── Banned                   the member is banned from the bot in this server
    ├── BlockedWord              the prompt contains a word the server blocks
    ├── BotDisabled              an admin switched the bot off in this server
    ├── ChannelNotAllowed        the server limits /imagine to other channels
    └── Restarting               the bot is shutting down and takes no new work

The bot's error handler shows `.user_message` (ephemeral) and logs nothing for these:
they are expected outcomes, not bugs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

#: Writes a moment for a reader: `plain_time` here, `discord.utils.format_dt` on Discord.
TimeFormat = Callable[[datetime], str]


def plain_time(moment: datetime) -> str:
    """A moment as plain UTC text (logs, tests, anything that is not Discord)."""
    return f"at {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class ServiceError(Exception):
    """Base class: an expected refusal with a message for the person who asked."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message

    def render(self, when: TimeFormat) -> str:
        """The message with any moment in it written by `when` (Discord: each reader's own
        time zone through `format_dt`); errors without moments return `user_message`."""
        return self.user_message


class NotFound(ServiceError):
    """The thing asked for does not exist (or belongs to another server)."""


class InvalidArgument(ServiceError):
    """A value an admin gave is not acceptable; the message says which and why."""


class InvalidTransition(ServiceError):
    """A job status change that the state machine does not allow."""

    def __init__(self, job_id: str, current: str, target: str) -> None:
        super().__init__(f"Job `{job_id}` is {current}; it cannot become {target}.")
        self.job_id = job_id
        self.current = current
        self.target = target


class QuotaExceeded(ServiceError):
    """Reserving `requested` images would go over `limit` for the period.

    `source` says which rule limited: "member", "role", "server", "config", or "cap"
    (the server-wide cap).
    """

    def __init__(
        self,
        limit: int,
        used: int,
        resets_at: datetime,
        source: str,
        *,
        requested: int = 1,
        period: str = "day",
    ) -> None:
        self.limit = limit
        self.used = used
        self.resets_at = resets_at
        self.source = source
        self.requested = requested
        self.period = period
        super().__init__(self.render(plain_time))

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def render(self, when: TimeFormat) -> str:
        span = "today" if self.period == "day" else "this week"
        reset = when(self.resets_at)
        if self.source == "cap":
            return (
                f"This server has used {self.used} of its {self.limit} images {span}, "
                f"so it cannot make {self.requested} more. The server's quota resets {reset}."
            )
        if self.limit == 0:
            return "Your image quota on this server is 0, so you cannot generate images."
        if self.remaining == 0:
            return f"You have used all {self.limit} of your images {span}. It resets {reset}."
        return (
            f"This needs {self.requested} images but you have {self.remaining} of "
            f"{self.limit} left {span}. Ask for fewer, or wait for the reset {reset}."
        )


class Banned(ServiceError):
    """The member is banned from using the bot in this server."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        message = "You are banned from generating images on this server."
        if reason:
            message += f" Reason: {reason}"
        super().__init__(message)


class BlockedWord(ServiceError):
    """The prompt contains `word`, which this server blocks."""

    def __init__(self, word: str) -> None:
        self.word = word
        super().__init__(
            f'Your prompt contains "{word}", which is blocked on this server. Please rephrase it.'
        )


class BotDisabled(ServiceError):
    """An admin switched image generation off for this server."""

    def __init__(self) -> None:
        super().__init__("Image generation is switched off on this server.")


class ChannelNotAllowed(ServiceError):
    """This server allows /imagine only in some channels, and this is not one of them."""

    def __init__(self, channel_id: int, allowed: Iterable[int]) -> None:
        self.channel_id = channel_id
        self.allowed = tuple(sorted(allowed))
        where = ", ".join(f"<#{cid}>" for cid in self.allowed[:10])
        super().__init__(f"Images can't be generated in this channel. Try {where}.")


class Restarting(ServiceError):
    """The bot is shutting down: new work is refused before anything is reserved."""

    def __init__(self) -> None:
        super().__init__(
            "The bot is restarting; try again in a minute. Nothing was counted against your quota."
        )


class MemberError(Exception):
    """A refusal raised by the Discord layer itself (e.g. "only the requester can...")."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message
