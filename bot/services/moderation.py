"""Moderation: server settings, channel allow-list, blocked words, bans.

`check()` runs before any quota is reserved or anything queued: a refused prompt costs
nothing. Blocked words are matched on normalised text (NFKC, invisible characters and
stray combining marks removed, case-folded) as whole words, so "ｂａｄ", "b\u200bad" and
"BAD" all match "bad" while "badge" does not.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AllowedChannel, Ban, Guild, NsfwPolicy
from bot.db.models import BlockedWord as BlockedWordRow
from bot.db.upsert import insert_ignore, upsert
from bot.errors import (
    Banned,
    BlockedWord,
    BotDisabled,
    ChannelNotAllowed,
    InvalidArgument,
)
from bot.services._guilds import ensure_guild
from bot.services.audit import record
from bot.services.clock import Clock, utcnow

MAX_WORD_CHARS = 200
# Removed before matching: format characters (category Cf: zero-width space/joiners,
# word joiner, BOM, soft hyphen, bidi controls) and combining marks (Mn) left over after
# NFKC, which only decorate letters (e.g. strike-through overlays).
_STRIPPED_CATEGORIES = frozenset({"Cf", "Mn"})
# Hangul fillers: letters (Lo) that render as nothing or a blank, a known invisible trick.
_STRIPPED_CHARS = frozenset("\u115f\u1160\u3164\uffa0")
# Punctuation between two letters or digits of a blocked phrase: a word separator.
_INNER_SEPARATOR = re.compile(r"(?<=[^\W_])[\W_]+(?=[^\W_])")
# Letters and digits (a "word character" without the underscore): whole-word boundaries.
_WORD_CHAR = r"[^\W_]"


def normalize(text: str) -> str:
    """Text as the blocklist compares it: NFKC, invisible characters removed, casefolded,
    runs of whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFKC", _strip_invisible(text).casefold())
    # Case folding can add marks ("İ" -> "i" + combining dot above): strip again.
    return " ".join(_strip_invisible(text).split())


def _strip_invisible(text: str) -> str:
    return "".join(
        ch
        for ch in text
        if ch not in _STRIPPED_CHARS and unicodedata.category(ch) not in _STRIPPED_CATEGORIES
    )


def find_blocked(text: str, words: Iterable[str]) -> str | None:
    """The first blocked word or phrase (already normalised) found in `text`, or None.

    Whole words only; between the words of a phrase any run of spaces or punctuation
    counts, in the prompt and in the blocked phrase alike ("teddy bear" matches
    "teddy-bear", "x-rated" matches "x rated").
    """
    haystack = normalize(text)
    for word in sorted(words, key=len, reverse=True):
        parts = [re.escape(part) for part in _INNER_SEPARATOR.split(word) if part.strip()]
        if not parts:
            continue
        pattern = rf"(?<!{_WORD_CHAR})" + r"[\W_]+".join(parts) + rf"(?!{_WORD_CHAR})"
        if re.search(pattern, haystack):
            return word
    return None


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class GuildSettings:
    """A guild's bot settings; defaults when the guild has never been configured."""

    guild_id: int
    enabled: bool = True
    nsfw_policy: NsfwPolicy = NsfwPolicy.BLOCK
    admin_role_id: int | None = None
    allowed_channels: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class BanInfo:
    guild_id: int
    user_id: int
    reason: str | None
    banned_by: int | None
    created_at: datetime


class ModerationService:
    """Per-guild settings, blocklist and bans, and the pre-queue `check`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._now = clock

    # -- the gate --------------------------------------------------------------------------

    async def check(
        self,
        guild_id: int,
        user_id: int,
        prompt: str,
        negative: str = "",
        *,
        channel_id: int | None = None,
    ) -> None:
        """Raise if this member may not generate this prompt here; call before reserving.

        In order: BotDisabled, ChannelNotAllowed (only with `channel_id`), Banned,
        BlockedWord. The negative prompt is not matched: it names what to keep out of
        the image ("nsfw, nude" is a common, well-meant negative prompt).
        """
        del negative  # accepted so callers pass the whole request; see the docstring
        async with self._sessions() as session:
            guild = await session.get(Guild, guild_id)
            if guild is not None and not guild.enabled:
                raise BotDisabled()
            if channel_id is not None:
                allowed = await _allowed_channels(session, guild_id)
                if allowed and channel_id not in allowed:
                    raise ChannelNotAllowed(channel_id, allowed)
            ban = await session.get(Ban, (guild_id, user_id))
            if ban is not None:
                raise Banned(ban.reason)
            words = await _blocked_words(session, guild_id)
        word = find_blocked(prompt, words)
        if word is not None:
            raise BlockedWord(word)

    # -- settings --------------------------------------------------------------------------

    async def get_settings(self, guild_id: int) -> GuildSettings:
        """The guild's settings (defaults if it has none stored)."""
        async with self._sessions() as session:
            guild = await session.get(Guild, guild_id)
            channels = await _allowed_channels(session, guild_id)
        if guild is None:
            return GuildSettings(guild_id=guild_id, allowed_channels=channels)
        return GuildSettings(
            guild_id=guild_id,
            enabled=guild.enabled,
            nsfw_policy=guild.nsfw_policy,
            admin_role_id=guild.admin_role_id,
            allowed_channels=channels,
        )

    async def update_settings(
        self,
        guild_id: int,
        actor_id: int,
        *,
        enabled: bool | _Unset = UNSET,
        nsfw_policy: NsfwPolicy | str | _Unset = UNSET,
        admin_role_id: int | _Unset | None = UNSET,
    ) -> GuildSettings:
        """Change the given settings (others stay); audited as "settings.update"."""
        changes: dict[str, object] = {}
        if enabled is not UNSET:
            changes["enabled"] = bool(enabled)
        if nsfw_policy is not UNSET:
            try:
                changes["nsfw_policy"] = NsfwPolicy(nsfw_policy)
            except ValueError:
                names = ", ".join(p.value for p in NsfwPolicy)
                raise InvalidArgument(
                    f"NSFW policy must be one of {names}, got {nsfw_policy!r}."
                ) from None
        if admin_role_id is not UNSET:
            changes["admin_role_id"] = admin_role_id
        if changes:
            now = self._now()
            async with self._sessions() as session:
                await ensure_guild(session, guild_id, now)
                guild = await session.get(Guild, guild_id)
                assert guild is not None
                for name, value in changes.items():
                    setattr(guild, name, value)
                guild.updated_at = now
                details = {k: (v.value if isinstance(v, Enum) else v) for k, v in changes.items()}
                await record(session, guild_id, actor_id, "settings.update", details, now)
                await session.commit()
        return await self.get_settings(guild_id)

    async def allowed_channels(self, guild_id: int) -> frozenset[int]:
        """Channels where /imagine may run; empty means all channels."""
        async with self._sessions() as session:
            return await _allowed_channels(session, guild_id)

    async def set_channel_allowed(
        self, guild_id: int, channel_id: int, allowed: bool, actor_id: int
    ) -> bool:
        """Add or remove a channel from the allow-list; False if nothing changed. Audited."""
        now = self._now()
        async with self._sessions() as session:
            await ensure_guild(session, guild_id, now)
            if allowed:
                values = {
                    "guild_id": guild_id,
                    "channel_id": channel_id,
                    "added_by": actor_id,
                    "created_at": now,
                }
                result = await session.execute(insert_ignore(session, AllowedChannel, values))
            else:
                result = await session.execute(
                    delete(AllowedChannel).where(
                        AllowedChannel.guild_id == guild_id,
                        AllowedChannel.channel_id == channel_id,
                    )
                )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                await session.rollback()
                return False
            action = "channel.allow" if allowed else "channel.disallow"
            await record(session, guild_id, actor_id, action, {"channel_id": channel_id}, now)
            await session.commit()
            return True

    # -- blocklist -------------------------------------------------------------------------

    async def add_blocked_word(self, guild_id: int, word: str, actor_id: int) -> str:
        """Block a word or phrase; returns it normalised (as stored and matched). Audited."""
        normalised = normalize(word)
        if not normalised:
            raise InvalidArgument("A blocked word needs at least one visible character.")
        if len(normalised) > MAX_WORD_CHARS:
            raise InvalidArgument(f"Blocked words have at most {MAX_WORD_CHARS} characters.")
        now = self._now()
        async with self._sessions() as session:
            await ensure_guild(session, guild_id, now)
            values = {
                "guild_id": guild_id,
                "word": normalised,
                "added_by": actor_id,
                "created_at": now,
            }
            result = await session.execute(insert_ignore(session, BlockedWordRow, values))
            if result.rowcount == 1:  # type: ignore[attr-defined]
                await record(
                    session, guild_id, actor_id, "blocklist.add", {"word": normalised}, now
                )
            await session.commit()
        return normalised

    async def remove_blocked_word(self, guild_id: int, word: str, actor_id: int) -> bool:
        """Unblock a word (given in any spelling that normalises to it). Audited."""
        normalised = normalize(word)
        now = self._now()
        async with self._sessions() as session:
            result = await session.execute(
                delete(BlockedWordRow).where(
                    BlockedWordRow.guild_id == guild_id, BlockedWordRow.word == normalised
                )
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                await session.rollback()
                return False
            await record(session, guild_id, actor_id, "blocklist.remove", {"word": normalised}, now)
            await session.commit()
            return True

    async def blocked_words(self, guild_id: int) -> list[str]:
        """The guild's blocked words, normalised, alphabetically."""
        async with self._sessions() as session:
            return sorted(await _blocked_words(session, guild_id))

    # -- bans ------------------------------------------------------------------------------

    async def ban(
        self, guild_id: int, user_id: int, actor_id: int, reason: str | None = None
    ) -> BanInfo:
        """Ban a member from the bot in this guild (again: updates the reason). Audited."""
        now = self._now()
        values = {
            "guild_id": guild_id,
            "user_id": user_id,
            "reason": reason,
            "banned_by": actor_id,
            "created_at": now,
        }
        async with self._sessions() as session:
            await ensure_guild(session, guild_id, now)
            await session.execute(
                upsert(
                    session,
                    Ban,
                    values,
                    key=("guild_id", "user_id"),
                    update=("reason", "banned_by", "created_at"),
                )
            )
            await record(
                session, guild_id, actor_id, "ban", {"user_id": user_id, "reason": reason}, now
            )
            await session.commit()
        return BanInfo(guild_id, user_id, reason, actor_id, now)

    async def unban(self, guild_id: int, user_id: int, actor_id: int) -> bool:
        """Lift a ban; False if the member was not banned. Audited."""
        now = self._now()
        async with self._sessions() as session:
            result = await session.execute(
                delete(Ban).where(Ban.guild_id == guild_id, Ban.user_id == user_id)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                await session.rollback()
                return False
            await record(session, guild_id, actor_id, "unban", {"user_id": user_id}, now)
            await session.commit()
            return True

    async def get_ban(self, guild_id: int, user_id: int) -> BanInfo | None:
        async with self._sessions() as session:
            ban = await session.get(Ban, (guild_id, user_id))
        return None if ban is None else _ban_info(ban)

    async def is_banned(self, guild_id: int, user_id: int) -> bool:
        return await self.get_ban(guild_id, user_id) is not None

    async def list_bans(self, guild_id: int) -> list[BanInfo]:
        """The guild's bans, most recent first."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(Ban).where(Ban.guild_id == guild_id).order_by(Ban.created_at.desc())
                )
            ).all()
        return [_ban_info(row) for row in rows]


async def _allowed_channels(session: AsyncSession, guild_id: int) -> frozenset[int]:
    rows = await session.scalars(
        select(AllowedChannel.channel_id).where(AllowedChannel.guild_id == guild_id)
    )
    return frozenset(rows.all())


async def _blocked_words(session: AsyncSession, guild_id: int) -> list[str]:
    rows = await session.scalars(
        select(BlockedWordRow.word).where(BlockedWordRow.guild_id == guild_id)
    )
    return list(rows.all())


def _ban_info(ban: Ban) -> BanInfo:
    return BanInfo(
        guild_id=ban.guild_id,
        user_id=ban.user_id,
        reason=ban.reason,
        banned_by=ban.banned_by,
        created_at=ban.created_at,
    )
