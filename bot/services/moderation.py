"""Moderation: server settings, channel allow-list, blocked words, bans.

`check()` runs before any quota is reserved or anything queued: a refused prompt costs
nothing.

Blocked words are stored normalised (NFKC, invisible characters and stray combining marks
removed, case-folded) and matched as whole words, so "ｂａｄ", "b\u200bad" and "BAD" match "bad"
while "badge" does not (no Scunthorpe problem). A prompt is also compared in disguise-free
spellings (`spellings`), each a fold of the whole text:

- look-alike letters by their TR39 prototype (Unicode's confusables data, through the
  `confusable_homoglyphs` package): Cyrillic "nudе" is "nude";
- letters transliterated (`anyascii`), one letter for one: Greek "νude" is "nude";
- punctuation inside a word dropped ("n.u.d.e", "nu.de"), and leetspeak digits read as
  letters in words that mix both ("nud3");
- words spelled out letter by letter ("n u d e") joined.

An entry may end (or start) with `*` to match the words that begin (or end) with it: `nude*`
blocks "nudes" and "nudewoman"; plain `nude` does not, and never matches inside a word.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from anyascii import anyascii
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
#: A wildcard entry needs this many letters or digits besides its `*`.
MIN_WILDCARD_CHARS = 3
WILDCARD = "*"
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
_TOKEN = re.compile(_WORD_CHAR + "+")
# Three or more single letters or digits with separators between them: "n.u.d.e", "n u d e".
_SPACED_LETTERS = re.compile(r"(?<![^\W_])[^\W_](?:[\W_]+[^\W_](?![^\W_])){2,}")
_SPACED_ONE = re.compile(r"(?<![^\W_])[^\W_](?![^\W_])")
# Punctuation (not spaces) between letters inside a word: "nu.de", "nu-de".
_INNER_PUNCTUATION = re.compile(r"(?<=[^\W\d_])[^\w\s]+(?=[^\W\d_])")
# A word with both letters and digits, where digits may stand for letters ("nud3").
_MIXED_WORD = re.compile(r"[^\W_]*(?:[^\W\d_][^\W_]*[0-9@$]|[0-9@$][^\W_]*[^\W\d_])[^\W_]*|"
                         r"\S*[@$]\S*")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s"})


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


@functools.cache
def _prototypes() -> dict[str, str]:
    """Non-ASCII characters and the ASCII letter or digit they are confusable with (TR39).

    Built once from Unicode's confusables data as `confusable_homoglyphs` ships it (offline).
    ASCII characters are left alone: folding them among themselves as a full TR39 skeleton
    does ("m" -> "rn", "l" -> "I") would make innocent words collide.
    """
    from confusable_homoglyphs.confusables import confusables_data

    table: dict[str, str] = {}
    for char, homoglyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in homoglyphs:
            target = glyph["c"]
            if len(target) == 1 and target.isascii() and target.isalnum():
                table[char] = target.lower()
                break
    return table


def skeleton(text: str) -> str:
    """`text` with each non-ASCII look-alike replaced by its ASCII prototype ("nudе" with a
    Cyrillic е -> "nude")."""
    table = _prototypes()
    return "".join(table.get(ch, ch) for ch in text)


def transliterate(text: str) -> str:
    """`text` with each letter that transliterates to one ASCII letter or digit replaced by
    it (Greek "ν" -> "n"); longer transliterations (a Chinese syllable) are left alone, so
    they cannot spell an English word by accident."""
    out = []
    for ch in text:
        if not ch.isascii() and ch.isalpha():
            latin = anyascii(ch).lower()
            if len(latin) == 1 and latin.isalnum():
                out.append(latin)
                continue
        out.append(ch)
    return "".join(out)


def _undisguise(text: str) -> str:
    """Punctuation inside words dropped ("nu.de"), leetspeak digits in words that mix
    letters and digits read as letters ("nud3")."""
    text = _INNER_PUNCTUATION.sub("", text)
    return _MIXED_WORD.sub(lambda m: m.group(0).translate(_LEET), text)


def spellings(text: str) -> set[str]:
    """The normalised text and its disguise-free spellings, all compared with the blocklist."""
    base = normalize(text)
    folds = {base, skeleton(base), transliterate(base)}
    return folds | {_undisguise(fold) for fold in folds}


def spelled_out(texts: Iterable[str]) -> set[str]:
    """Runs of three or more single letters ("n u d e", "a n u d 3"), joined and read
    without leetspeak: every letter of a run is a word of its own, so a blocked word may
    start at any of them."""
    runs = set()
    for text in texts:
        for match in _SPACED_LETTERS.finditer(text):
            letters = "".join(_SPACED_ONE.findall(match.group(0)))
            runs.add(letters.translate(_LEET) if not letters.isdigit() else letters)
    return runs


def _pattern(word: str, fold: Callable[[str], str]) -> str | None:
    """The regex source matching `word` (an entry, already normalised) folded by `fold`."""
    prefix = word.startswith(WILDCARD)
    suffix = word.endswith(WILDCARD)
    core = fold(word.strip(WILDCARD))
    parts = [re.escape(part) for part in _INNER_SEPARATOR.split(core) if part.strip()]
    if not parts:
        return None
    before = f"{_WORD_CHAR}*" if prefix else f"(?<!{_WORD_CHAR})"
    after = f"{_WORD_CHAR}*" if suffix else f"(?!{_WORD_CHAR})"
    return before + r"[\W_]+".join(parts) + after


@dataclass(frozen=True)
class _Matcher:
    """A blocklist prepared for matching: one-word entries by their folded forms (set and
    prefix look-ups on a prompt's words), phrases as regexes."""

    exact: dict[str, str]
    starts: tuple[tuple[str, str], ...]  # (folded core, entry) of `core*`
    ends: tuple[tuple[str, str], ...]  # of `*core`
    inside: tuple[tuple[str, str], ...]  # of `*core*`
    phrases: tuple[tuple[re.Pattern[str], str], ...]


@functools.lru_cache(maxsize=256)
def _matcher(words: tuple[str, ...]) -> _Matcher:
    """Cached per blocklist: a guild's list changes rarely and is checked on every prompt."""
    exact: dict[str, str] = {}
    starts, ends, inside, phrases = [], [], [], []
    for word in words:
        for fold in (str, skeleton, transliterate):
            core = fold(word.strip(WILDCARD))
            if not core.isalnum():
                source = _pattern(word, fold)
                if source is not None:
                    phrases.append((re.compile(source), word))
                continue
            wild = (word.startswith(WILDCARD), word.endswith(WILDCARD))
            if wild == (False, False):
                exact.setdefault(core, word)
            elif wild == (False, True):
                starts.append((core, word))
            elif wild == (True, False):
                ends.append((core, word))
            else:
                inside.append((core, word))
    return _Matcher(exact, tuple(starts), tuple(ends), tuple(inside), tuple(phrases))


def find_blocked(text: str, words: Iterable[str]) -> str | None:
    """A blocked word or phrase (entries already normalised) found in `text`, or None.

    Whole words only (a `*` at either end of an entry allows more letters there); between
    the words of a phrase any run of spaces or punctuation counts, in the prompt and in the
    blocked phrase alike ("teddy bear" matches "teddy-bear", "x-rated" matches "x rated").
    Each spelling of the prompt (`spellings`) is compared with the entries folded the same
    way, and a one-word entry is also looked for in the prompt's spelled-out runs
    (`spelled_out`), where every letter starts a word.
    """
    matcher = _matcher(tuple(sorted(set(words), key=lambda w: (-len(w), w))))
    haystacks = sorted(spellings(text))
    tokens = {token for haystack in haystacks for token in _TOKEN.findall(haystack)}
    for token in sorted(tokens):
        if token in matcher.exact:
            return matcher.exact[token]
        for core, word in matcher.starts:
            if token.startswith(core):
                return word
        for core, word in matcher.ends:
            if token.endswith(core):
                return word
        for core, word in matcher.inside:
            if core in token:
                return word
    for pattern, word in matcher.phrases:
        if any(pattern.search(haystack) for haystack in haystacks):
            return word
    for run in sorted(spelled_out(haystacks)):
        for core, word in (*matcher.exact.items(), *matcher.starts, *matcher.ends,
                           *matcher.inside):
            if core in run:
                return word
    return None


def check_wildcards(word: str) -> None:
    """Refuse a blocklist entry whose `*` is not at an end, or that would match too much."""
    core = word.strip(WILDCARD)
    if WILDCARD in core:
        raise InvalidArgument(
            f"`*` may only start or end a blocked word (`nude*`, `*porn`), got {word!r}."
        )
    if core != word and sum(ch.isalnum() for ch in core) < MIN_WILDCARD_CHARS:
        raise InvalidArgument(
            f"A blocked word with `*` needs at least {MIN_WILDCARD_CHARS} letters, "
            f"so it cannot block every word; got {word!r}."
        )


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

    async def allowed_texts(self, guild_id: int, texts: Iterable[str]) -> list[str]:
        """`texts` without those containing one of the guild's blocked words (same matching
        as `check`), in order: what the bot may offer as prompts (/describe's suggestions)."""
        async with self._sessions() as session:
            words = await _blocked_words(session, guild_id)
        return [text for text in texts if find_blocked(text, words) is None]

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
        if not normalised.strip(WILDCARD):
            raise InvalidArgument("A blocked word needs at least one visible character.")
        check_wildcards(normalised)
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
