"""Moderation: blocked-word normalisation, bans, the pre-queue check, settings, channels."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import NsfwPolicy, UsageEntry
from bot.errors import (
    Banned,
    BlockedWord,
    BotDisabled,
    ChannelNotAllowed,
    InvalidArgument,
    QuotaExceeded,
)
from bot.services import Services
from bot.services.moderation import find_blocked, normalize

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver

GUILD = 2**63 - 1
OTHER_GUILD = 7
ALICE = 2**63 - 10
ADMIN = 42
CHANNEL = 2**62 + 1
OTHER_CHANNEL = 2**62 + 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BAD Word", "bad word"),
        ("ｂａｄ", "bad"),  # full-width
        ("b\u200bad", "bad"),  # zero-width space
        ("b\u200c\u200da\u2060d\ufeff", "bad"),  # ZWNJ, ZWJ, word joiner, BOM
        ("b\u00adad", "bad"),  # soft hyphen
        ("b\u0336a\u0336d\u0336", "bad"),  # strike-through overlay marks
        ("ⓑⓐⓓ", "bad"),  # circled letters (NFKC)
        ("  spaced \t out\n ", "spaced out"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold
        ("café", "café"),  # precomposed accents are kept
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    """Case, width, invisible characters and decorations do not change the text compared."""
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [
        ("a BAD dog", "bad"),
        ("a ｂａｄ dog", "bad"),
        ("a b\u200ba\u200bd dog", "bad"),
        ("bad", "bad"),
        ("(bad)", "bad"),
        ("so_bad_", "bad"),
        ("a badge", None),
        ("badbad", None),
        ("not bad2", None),
        ("a teddy bear", "teddy bear"),
        ("a TEDDY-bear", "teddy bear"),
        ("a teddy\u200b  bear", "teddy bear"),
        ("a teddybear", None),
        ("a teddy", None),
    ],
)
def test_find_blocked_whole_words(prompt: str, hit: str | None) -> None:
    """Words and phrases match whole words after normalisation, never inside other words."""
    assert find_blocked(prompt, ["bad", "teddy bear"]) == hit


async def test_blocked_words_are_stored_normalised(services: Services) -> None:
    """Adding stores the normalised form once; removing works with any spelling."""
    moderation = services.moderation
    assert await moderation.add_blocked_word(GUILD, "  ＢＡＤ\u200b ", ADMIN) == "bad"
    assert await moderation.add_blocked_word(GUILD, "bad", ADMIN) == "bad"
    await moderation.add_blocked_word(GUILD, "Teddy   Bear", ADMIN)
    assert await moderation.blocked_words(GUILD) == ["bad", "teddy bear"]
    assert await moderation.blocked_words(OTHER_GUILD) == []

    assert await moderation.remove_blocked_word(GUILD, "BAD", ADMIN)
    assert not await moderation.remove_blocked_word(GUILD, "bad", ADMIN)
    assert await moderation.blocked_words(GUILD) == ["teddy bear"]

    actions = [e.action for e in (await services.audit.list(GUILD)).items]
    assert actions == ["blocklist.remove", "blocklist.add", "blocklist.add"]
    with pytest.raises(InvalidArgument):
        await moderation.add_blocked_word(GUILD, "\u200b \u00ad", ADMIN)


async def test_check_refuses_blocked_words_in_any_disguise(services: Services) -> None:
    """check() raises BlockedWord for case, full-width and zero-width variants only."""
    moderation = services.moderation
    await moderation.add_blocked_word(GUILD, "gore", ADMIN)
    for prompt in ("GORE everywhere", "ｇｏｒｅ", "g\u200bo\u200dr\ufeffe", "blood and gore!"):
        with pytest.raises(BlockedWord) as caught:
            await moderation.check(GUILD, ALICE, prompt)
        assert caught.value.word == "gore"
        assert "gore" in caught.value.user_message
    await moderation.check(GUILD, ALICE, "a gorey gorilla, gorgeous")  # substrings are fine
    await moderation.check(OTHER_GUILD, ALICE, "gore")  # other servers are not affected


async def test_negative_prompt_is_not_matched(services: Services) -> None:
    """A blocked word in the negative prompt (what to avoid) is allowed."""
    await services.moderation.add_blocked_word(GUILD, "nude", ADMIN)
    await services.moderation.check(GUILD, ALICE, "a portrait", "nude, nsfw")
    with pytest.raises(BlockedWord):
        await services.moderation.check(GUILD, ALICE, "a nude portrait", "")


async def test_ban_unban(services: Services) -> None:
    """A banned member is refused with the reason; unban lifts it; both audited."""
    moderation = services.moderation
    info = await moderation.ban(GUILD, ALICE, ADMIN, reason="spam")
    assert (info.user_id, info.reason, info.banned_by) == (ALICE, "spam", ADMIN)
    assert await moderation.is_banned(GUILD, ALICE)
    assert not await moderation.is_banned(OTHER_GUILD, ALICE)
    with pytest.raises(Banned) as caught:
        await moderation.check(GUILD, ALICE, "a cat")
    assert caught.value.reason == "spam" and "spam" in caught.value.user_message

    await moderation.ban(GUILD, ALICE, ADMIN, reason="still spam")
    bans = await moderation.list_bans(GUILD)
    assert [(b.user_id, b.reason) for b in bans] == [(ALICE, "still spam")]

    assert await moderation.unban(GUILD, ALICE, ADMIN)
    assert not await moderation.unban(GUILD, ALICE, ADMIN)
    await moderation.check(GUILD, ALICE, "a cat")
    actions = [e.action for e in (await services.audit.list(GUILD)).items]
    assert actions == ["unban", "ban", "ban"]


async def test_ban_is_checked_before_quota(
    services: Services, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A banned member (even one out of quota, with a blocked word) hears only of the ban,
    and the documented order (check, then reserve) reserves nothing."""
    await services.quota.set_rule(GUILD, "member", ALICE, 0, "day", ADMIN)
    await services.moderation.add_blocked_word(GUILD, "gore", ADMIN)
    await services.moderation.ban(GUILD, ALICE, ADMIN, reason="abuse")

    async def request() -> None:
        await services.moderation.check(GUILD, ALICE, "gore", "")
        await services.quota.reserve(GUILD, ALICE, [], 4, "a" * 32)

    with pytest.raises(Banned):
        await request()
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(UsageEntry)) == 0

    await services.moderation.unban(GUILD, ALICE, ADMIN)
    with pytest.raises(BlockedWord):
        await request()
    await services.moderation.remove_blocked_word(GUILD, "gore", ADMIN)
    with pytest.raises(QuotaExceeded):
        await request()


async def test_settings_defaults_and_updates(services: Services) -> None:
    """Unconfigured guilds get defaults; updates change only what is given; audited."""
    moderation = services.moderation
    settings = await moderation.get_settings(GUILD)
    assert (settings.enabled, settings.nsfw_policy, settings.admin_role_id) == (
        True,
        NsfwPolicy.BLOCK,
        None,
    )
    updated = await moderation.update_settings(
        GUILD, ADMIN, nsfw_policy="spoiler", admin_role_id=2**63 - 5
    )
    assert (updated.nsfw_policy, updated.admin_role_id, updated.enabled) == (
        NsfwPolicy.SPOILER,
        2**63 - 5,
        True,
    )
    updated = await moderation.update_settings(GUILD, ADMIN, admin_role_id=None)
    assert (updated.nsfw_policy, updated.admin_role_id) == (NsfwPolicy.SPOILER, None)
    with pytest.raises(InvalidArgument):
        await moderation.update_settings(GUILD, ADMIN, nsfw_policy="anything goes")

    entry = (await services.audit.list(GUILD)).items[-1]
    assert entry.details == {"nsfw_policy": "spoiler", "admin_role_id": 2**63 - 5}
    assert (await moderation.get_settings(OTHER_GUILD)).nsfw_policy is NsfwPolicy.BLOCK


async def test_disabled_guild_refuses(services: Services) -> None:
    """When an admin switches the bot off, check() raises BotDisabled."""
    await services.moderation.update_settings(GUILD, ADMIN, enabled=False)
    with pytest.raises(BotDisabled):
        await services.moderation.check(GUILD, ALICE, "a cat")
    await services.moderation.update_settings(GUILD, ADMIN, enabled=True)
    await services.moderation.check(GUILD, ALICE, "a cat")


async def test_channel_allow_list(services: Services) -> None:
    """An empty list allows every channel; otherwise only listed channels pass check()."""
    moderation = services.moderation
    await moderation.check(GUILD, ALICE, "a cat", channel_id=OTHER_CHANNEL)
    assert await moderation.set_channel_allowed(GUILD, CHANNEL, True, ADMIN)
    assert not await moderation.set_channel_allowed(GUILD, CHANNEL, True, ADMIN)
    assert await moderation.allowed_channels(GUILD) == frozenset({CHANNEL})

    await moderation.check(GUILD, ALICE, "a cat", channel_id=CHANNEL)
    with pytest.raises(ChannelNotAllowed) as caught:
        await moderation.check(GUILD, ALICE, "a cat", channel_id=OTHER_CHANNEL)
    assert f"<#{CHANNEL}>" in caught.value.user_message

    assert await moderation.set_channel_allowed(GUILD, CHANNEL, False, ADMIN)
    assert await moderation.allowed_channels(GUILD) == frozenset()
    await moderation.check(GUILD, ALICE, "a cat", channel_id=OTHER_CHANNEL)
    actions = [e.action for e in (await services.audit.list(GUILD)).items]
    assert actions == ["channel.disallow", "channel.allow"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KİLL", "kill"),  # capital dotted I casefolds to i + a combining dot
        ("b\u3164ad", "bad"),  # Hangul filler, an invisible "blank" used on Discord
        ("b\u115fa\u1160d\uffa0", "bad"),  # the other Hangul fillers
    ],
)
def test_normalize_removes_marks_and_fillers_left_by_casefolding(raw: str, expected: str) -> None:
    """Marks that case folding creates and invisible Hangul fillers do not survive."""
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [
        ("an x rated film", "x-rated"),
        ("an X_RATED film", "x-rated"),
        ("I DON’T care", "don't"),
        ("a taxi-rated review", None),
    ],
)
def test_blocked_phrase_with_punctuation_matches_any_separator(
    prompt: str, hit: str | None
) -> None:
    """Punctuation inside a blocked phrase separates words like a space does."""
    assert find_blocked(prompt, ["x-rated", "don't"]) == hit


# -- look-alikes, separators, leetspeak and wildcards (issue 9, item 7) --------------------

DISGUISED_NUDE = [
    "nud\u0435",  # Cyrillic ie
    "\u03bdude",  # Greek nu
    "\u0578ude",  # Armenian vo (TR39 prototype n)
    "n.u.d.e",
    "n u d e",
    "n-u-d-e",
    "n_u_d_e",
    "n . u . d . e",
    "nud3",
    "nu.de",
    "n\u00fcde",
    "\U0001d427\U0001d42e\U0001d41d\U0001d41e",  # mathematical bold
    "a n u d e girl",
    "n u d 3",
    "portrait, NUD\u0395",  # Greek capital epsilon
]
INNOCENT = [
    "denude the hillside",
    "a nudge",
    "menu de jour",
    "un d\u00e9jeuner",
    "a b c",
    "1girl, 2boys",
    "nudibranch",
    "\u5973\u7684",  # Chinese "woman": transliterated syllables never spell a word
    "\u043d\u0443\u0434\u0435\u043b\u044c",  # Russian, Cyrillic letters only
    "scunthorpe",
    "16:9 nu 3d",
]


@pytest.mark.parametrize("prompt", DISGUISED_NUDE)
def test_disguised_words_are_found(prompt: str) -> None:
    assert find_blocked(f"a photo, {prompt}, studio light", ["nude"]) == "nude"


@pytest.mark.parametrize("prompt", INNOCENT)
def test_innocent_words_pass(prompt: str) -> None:
    assert find_blocked(prompt, ["nude", "cunt", "ass"]) is None


@pytest.mark.parametrize(
    ("prompt", "exact", "wildcard"),
    [
        ("nudes", None, "nude*"),
        ("nudewoman", None, "nude*"),
        ("NUD\u0435S", None, "nude*"),
        ("n.u.d.e.s", "nude", "nude*"),  # spelled out: "nude" starts a run of letters
        ("nude", "nude", "nude*"),
        ("denudes", None, None),
    ],
)
def test_wildcard_entries_match_plurals_and_compounds(
    prompt: str, exact: str | None, wildcard: str | None
) -> None:
    assert find_blocked(prompt, ["nude"]) == exact
    assert find_blocked(prompt, ["nude*"]) == wildcard


def test_leading_wildcard_matches_word_endings() -> None:
    assert find_blocked("childp0rn", ["*porn"]) == "*porn"
    assert find_blocked("pornography", ["*porn"]) is None
    assert find_blocked("a popcorn", ["*porn"]) is None


async def test_wildcard_entries_are_validated(services: Services) -> None:
    moderation = services.moderation
    assert await moderation.add_blocked_word(GUILD, "Nude*", ADMIN) == "nude*"
    with pytest.raises(BlockedWord):
        await moderation.check(GUILD, ALICE, "two nudewomen")
    await moderation.check(GUILD, ALICE, "denude")
    for bad in ("*", "a*", "n*de", "**"):
        with pytest.raises(InvalidArgument):
            await moderation.add_blocked_word(GUILD, bad, ADMIN)


async def test_check_refuses_every_reported_disguise(services: Services) -> None:
    """The inputs of the report: with "nude" blocked, each is refused before anything is
    reserved."""
    await services.moderation.add_blocked_word(GUILD, "nude", ADMIN)
    for prompt in ("nud\u0435", "\u03bdude", "n.u.d.e", "n u d e", "nud3"):
        with pytest.raises(BlockedWord):
            await services.moderation.check(GUILD, ALICE, prompt)
