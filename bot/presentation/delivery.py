"""Getting a finished result to the member, whatever happened to the interaction meanwhile.

An interaction token lives 15 minutes; a job that waited longer in the queue can no longer edit
its "queued" message (Discord answers 401 / code 50027, and the peers' bots lose the result).
So the result goes, in order of preference:

1. into the original response (edited), while the token has more than `TOKEN_MARGIN` left;
2. into a new message in the same channel, mentioning the requester;
3. into a DM to the requester, when the bot may not post in the channel (Forbidden);
4. nowhere: the caller keeps the images stored, logs it and records `delivered = False`.

After a restart there is no `discord.Interaction` any more; `StoredInteraction` rebuilds what
the `Deliverer` needs of one from the ids stored with the job (`bot.services.history.ShownAt`).
"""

from __future__ import annotations

import datetime as dt
import enum
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord

from bot.services.history import JobView

__all__ = [
    "TOKEN_LIFETIME",
    "TOKEN_MARGIN",
    "Attachment",
    "Delivered",
    "Deliverer",
    "DeliveryMethod",
    "OutgoingMessage",
    "StoredInteraction",
    "Throttle",
    "interaction_expired",
    "is_dead",
    "mark_dead",
    "respond",
]

log = logging.getLogger(__name__)

TOKEN_LIFETIME = dt.timedelta(minutes=15)
TOKEN_MARGIN = dt.timedelta(seconds=60)

# Discord error codes after which editing the interaction is pointless, so we fall back.
_UNKNOWN_INTERACTION = 10062
_UNKNOWN_MESSAGE = 10008
_UNKNOWN_WEBHOOK = 10015
_INVALID_WEBHOOK_TOKEN = 50027


_EXPIRED = "imagine_expired"


def interaction_expired(error: BaseException) -> bool:
    """True if Discord refused an interaction's first answer because it came too late (404,
    10062 Unknown interaction): the interaction is dead and takes no further callbacks."""
    return isinstance(error, discord.NotFound) and error.code == _UNKNOWN_INTERACTION


def mark_dead(interaction: discord.Interaction) -> None:
    """Remember (in `interaction.extras`) that Discord called the interaction dead."""
    interaction.extras[_EXPIRED] = True


def is_dead(interaction: discord.Interaction) -> bool:
    """True once `mark_dead` was called: nothing more may be sent on the interaction."""
    return bool(interaction.extras.get(_EXPIRED))


class Throttle:
    """Lets an action through at most once per `interval` seconds (Discord rate-limits message
    edits, and members do not need more than a progress update every couple of seconds).

    It starts as if it had just fired: the message being edited was itself just sent.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = clock()

    def ready(self) -> bool:
        """True (and the interval restarts) if `interval` has passed since the last time."""
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


class DeliveryMethod(enum.Enum):
    """How a result reached the member (NONE: it did not; it is kept on disk)."""

    EDIT = "edit"
    CHANNEL = "channel"
    DM = "dm"
    NONE = "none"


@dataclass(frozen=True)
class Attachment:
    """A file kept as bytes: a discord.File is consumed by one send, a retry needs a fresh one."""

    filename: str
    data: bytes
    spoiler: bool = False

    def to_file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename, spoiler=self.spoiler)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message that may be tried several ways; `mention` is the only user it may ping."""

    content: str
    mention: int | None = None
    files: Sequence[Attachment] = ()
    view: discord.ui.View | None = None
    embeds: Sequence[discord.Embed] = field(default_factory=tuple)

    @property
    def allowed_mentions(self) -> discord.AllowedMentions:
        """Never @everyone, @here or a role, whatever the prompt says: only the requester."""
        users = [discord.Object(self.mention)] if self.mention is not None else False
        return discord.AllowedMentions(everyone=False, roles=False, users=users, replied_user=False)

    def files_for_send(self) -> list[discord.File]:
        return [attachment.to_file() for attachment in self.files]


@dataclass(frozen=True)
class Delivered:
    """The outcome of `Deliverer.deliver`."""

    method: DeliveryMethod
    message: discord.Message | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.method is not DeliveryMethod.NONE


async def respond(
    interaction: discord.Interaction, content: str | None = None, **kwargs: Any
) -> None:
    """Answer the interaction, or follow up when it was already answered or deferred.

    The one respond-or-follow-up helper: `kwargs` are those both `InteractionResponse.
    send_message` and `Webhook.send` take (`ephemeral`, `embed`, `file(s)`, `view`,
    `allowed_mentions`).
    """
    if interaction.response.is_done():
        await interaction.followup.send(content, **kwargs)
    else:
        await interaction.response.send_message(content, **kwargs)


class _UserById:
    """The member as `interaction.user` offers it for DMs, fetched when first needed."""

    def __init__(self, client: discord.Client, user_id: int) -> None:
        self._client = client
        self.id = user_id

    async def send(self, **kwargs: object) -> discord.Message:
        user = self._client.get_user(self.id) or await self._client.fetch_user(self.id)
        return await user.send(**kwargs)  # type: ignore[arg-type]


class StoredInteraction:
    """What `Deliverer` (and `upload_limit`) use of an interaction, for a job whose
    interaction was handled by a previous run of the bot, or that Discord called dead
    (`use_token=False`: nothing more is sent on it).

    The original response is edited with the stored token while it lives (a webhook edit of
    the stored message); without a token the interaction counts as expired, so results go to
    the channel, then to a DM, as for any old interaction.
    """

    def __init__(self, client: discord.Client, job: JobView, *, use_token: bool = True) -> None:
        shown = job.shown_at
        self.client = client
        self.id = job.id
        self.guild_id: int | None = job.guild_id
        self.channel_id = shown.channel_id if shown is not None else job.channel_id
        self.channel = None
        self.message_id = shown.message_id if shown is not None else None
        self.user = _UserById(client, job.user_id)
        self.guild = client.get_guild(job.guild_id)
        self.filesize_limit = (
            self.guild.filesize_limit if self.guild is not None else DEFAULT_UPLOAD_LIMIT
        )
        self._webhook: discord.Webhook | None = None
        if use_token and shown is not None and shown.token and shown.app_id and shown.created_at:
            self._webhook = discord.Webhook.partial(shown.app_id, shown.token, client=client)
            self.created_at = shown.created_at
        else:
            self.created_at = job.created_at - TOKEN_LIFETIME  # no token: already expired

    async def edit_original_response(self, **fields: object) -> discord.Message:
        if self._webhook is None:
            raise discord.ClientException("no interaction token was stored for this job")
        # The stored id, or Discord's alias when the answer's id was never stored.
        target: object = self.message_id if self.message_id is not None else "@original"
        return await self._webhook.edit_message(target, **fields)  # type: ignore[arg-type]


#: What the deliverer works with: a live interaction or one rebuilt after a restart.
Target = discord.Interaction | StoredInteraction


def _default_clock() -> dt.datetime:
    return discord.utils.utcnow()


class Deliverer:
    """Sends results and progress for an interaction, falling back as its token ages."""

    def __init__(self, clock: Callable[[], dt.datetime] = _default_clock) -> None:
        self._clock = clock

    def token_usable(self, interaction: Target) -> bool:
        """True while the interaction's token has more than `TOKEN_MARGIN` of life left."""
        expires = interaction.created_at + TOKEN_LIFETIME
        return expires - self._clock() > TOKEN_MARGIN

    async def update(self, interaction: Target, message: OutgoingMessage) -> bool:
        """Best-effort progress edit of the original response; False when it was not possible.

        Progress is cosmetic: an old token or a deleted message must not fail the job.
        """
        if not self.token_usable(interaction):
            return False
        try:
            await interaction.edit_original_response(
                content=message.content,
                view=message.view,
                allowed_mentions=message.allowed_mentions,
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("progress edit for interaction %s failed: %s", interaction.id, exc)
            return False
        return True

    async def deliver(
        self, interaction: Target, message: OutgoingMessage
    ) -> Delivered:
        """Deliver `message` by the best available route; never raises for Discord errors."""
        errors: list[str] = []
        if self.token_usable(interaction):
            sent = await self._try(errors, "edit", self._edit_original(interaction, message))
            if sent is not None:
                return Delivered(DeliveryMethod.EDIT, sent)
        else:
            errors.append("edit: interaction token too old")

        channel = self._channel(interaction)
        if channel is not None:
            sent = await self._try(errors, "channel", channel.send(**self._send_kwargs(message)))
            if sent is not None:
                return Delivered(DeliveryMethod.CHANNEL, sent)

        sent = await self._try(errors, "dm", interaction.user.send(**self._send_kwargs(message)))
        if sent is not None:
            return Delivered(DeliveryMethod.DM, sent)

        error = "; ".join(errors)
        log.warning("could not deliver a result for interaction %s: %s", interaction.id, error)
        return Delivered(DeliveryMethod.NONE, None, error)

    async def retire(
        self,
        interaction: Target,
        message_id: int | None,
        content: str,
        view: discord.ui.View | None = None,
    ) -> bool:
        """Best effort: rewrite the old "queued" message (by default dropping its Cancel
        button) after the result went elsewhere, or when the token is too old to edit it.
        Uses the channel route, which needs no interaction token."""
        channel = self._channel(interaction)
        get_partial = getattr(channel, "get_partial_message", None)
        if message_id is None or get_partial is None:
            return False
        try:
            await get_partial(message_id).edit(
                content=content, view=view, allowed_mentions=discord.AllowedMentions.none()
            )
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("could not retire message %s: %s", message_id, exc)
            return False
        return True

    async def _edit_original(
        self, interaction: Target, message: OutgoingMessage
    ) -> discord.Message:
        return await interaction.edit_original_response(
            content=message.content,
            attachments=message.files_for_send(),
            embeds=list(message.embeds),
            view=message.view,
            allowed_mentions=message.allowed_mentions,
        )

    @staticmethod
    def _send_kwargs(message: OutgoingMessage) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "content": message.content,
            "files": message.files_for_send(),
            "embeds": list(message.embeds),
            "allowed_mentions": message.allowed_mentions,
        }
        if message.view is not None:
            kwargs["view"] = message.view
        return kwargs

    @staticmethod
    def _channel(interaction: Target) -> discord.abc.Messageable | None:
        channel = interaction.channel
        if isinstance(channel, discord.abc.Messageable):
            return channel
        if interaction.channel_id is not None:
            return interaction.client.get_partial_messageable(
                interaction.channel_id, guild_id=interaction.guild_id
            )
        return None

    @staticmethod
    async def _try(errors: list[str], route: str, send: object) -> discord.Message | None:
        try:
            return await send  # type: ignore[misc]
        except discord.HTTPException as exc:
            errors.append(f"{route}: {exc.status} {exc.code} {exc.text}".strip())
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(f"{route}: {exc!r}")
        return None


#: Discord's attachment limit for a server without boosts.
DEFAULT_UPLOAD_LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


def upload_limit(interaction: Target) -> int:
    """Bytes an attachment may have: the interaction's limit, and the guild's for channel
    messages (a late result is posted there), whichever is smaller."""
    limit = interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
    if interaction.guild is not None:
        limit = min(limit, interaction.guild.filesize_limit)
    return limit
