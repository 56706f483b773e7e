"""Quota service: precedence, atomic reservations, refunds, periods, server cap, admin."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import GUILD_TOTAL, LedgerKind, Period, QuotaScope, UsageEntry
from bot.errors import InvalidArgument, QuotaExceeded
from bot.services import Services
from bot.services.quota import QuotaService, QuotaSource, next_reset, period_start
from tests.db.fixtures import FakeClock

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver


async def guild_used(services: Services) -> int:
    """The guild's images counted this period: its server-wide counter is kept as the usage
    of the pseudo-member `GUILD_TOTAL`."""
    return (await services.quota.status(GUILD, GUILD_TOTAL, [])).used


GUILD = 2**63 - 1
OTHER_GUILD = 2**62
ALICE = 2**63 - 10
BOB = 2**63 - 11
ADMIN = 42
ROLE_SMALL = 1001
ROLE_BIG = 1002


def _job(i: int | str) -> str:
    return f"{i:0>32}"


# -- periods -------------------------------------------------------------------------------


def test_day_period_starts_at_midnight_utc() -> None:
    """A day runs from 00:00 UTC to the next 00:00 UTC, whatever zone `now` is in."""
    now = datetime(2026, 3, 11, 1, 30, tzinfo=timezone(timedelta(hours=3)))  # 22:30 UTC 10th
    assert period_start(Period.DAY, now) == datetime(2026, 3, 10, tzinfo=UTC)
    assert next_reset(Period.DAY, now) == datetime(2026, 3, 11, tzinfo=UTC)


def test_week_period_starts_on_monday_midnight_utc() -> None:
    """A week runs from Monday 00:00 UTC; Sunday 23:59 still belongs to it."""
    sunday_late = datetime(2026, 3, 15, 23, 59, 59, tzinfo=UTC)
    monday = datetime(2026, 3, 16, tzinfo=UTC)
    assert period_start("week", sunday_late) == datetime(2026, 3, 9, tzinfo=UTC)
    assert next_reset("week", sunday_late) == monday
    assert period_start("week", monday) == monday
    assert next_reset("week", monday) == datetime(2026, 3, 23, tzinfo=UTC)


def test_naive_now_is_refused() -> None:
    """Period maths on a naive datetime would silently use local time, so it raises."""
    with pytest.raises(ValueError, match="naive"):
        period_start(Period.DAY, datetime(2026, 3, 11))


# -- precedence ----------------------------------------------------------------------------


async def test_config_default_applies_without_rules(services: Services) -> None:
    """With no rules, the config default (20 per day in these tests) is the limit."""
    status = await services.quota.status(GUILD, ALICE, [])
    assert (status.limit, status.used, status.remaining) == (20, 0, 20)
    assert status.source is QuotaSource.CONFIG and status.period is Period.DAY


async def test_precedence_member_over_role_over_server(services: Services) -> None:
    """Member rule beats role rules, role rules beat the server rule, which beats config."""
    quota = services.quota
    await quota.set_rule(GUILD, "server", None, 5, "week", ADMIN)
    status = await quota.status(GUILD, ALICE, [ROLE_SMALL])
    assert (status.limit, status.period, status.source) == (5, Period.WEEK, QuotaSource.SERVER)

    await quota.set_rule(GUILD, QuotaScope.ROLE, ROLE_SMALL, 8, "day", ADMIN)
    status = await quota.status(GUILD, ALICE, [ROLE_SMALL])
    assert (status.limit, status.source) == (8, QuotaSource.ROLE)
    # A member without that role still gets the server rule.
    assert (await quota.status(GUILD, BOB, [])).source is QuotaSource.SERVER

    await quota.set_rule(GUILD, "member", ALICE, 2, "day", ADMIN)
    status = await quota.status(GUILD, ALICE, [ROLE_SMALL])
    assert (status.limit, status.source) == (2, QuotaSource.MEMBER)

    assert await quota.clear_rule(GUILD, "member", ALICE, ADMIN)
    assert (await quota.status(GUILD, ALICE, [ROLE_SMALL])).source is QuotaSource.ROLE


async def test_highest_role_rule_wins(services: Services) -> None:
    """Among a member's roles, the most generous rule applies."""
    await services.quota.set_rule(GUILD, "role", ROLE_SMALL, 3, "day", ADMIN)
    await services.quota.set_rule(GUILD, "role", ROLE_BIG, 30, "day", ADMIN)
    status = await services.quota.status(GUILD, ALICE, [ROLE_SMALL, ROLE_BIG, 999])
    assert (status.limit, status.source) == (30, QuotaSource.ROLE)


async def test_rules_are_per_guild(services: Services) -> None:
    """A rule in one guild does not affect another guild."""
    await services.quota.set_rule(GUILD, "member", ALICE, 1, "day", ADMIN)
    status = await services.quota.status(OTHER_GUILD, ALICE, [])
    assert status.source is QuotaSource.CONFIG


async def test_unlimited_config_default(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """default_limit None means no limit: reservations succeed, remaining is None."""
    quota = QuotaService(sessions, None, "week", clock=clock)
    reservation = await quota.reserve(GUILD, ALICE, [], 4, _job(1))
    assert (reservation.limit, reservation.remaining, reservation.used) == (None, None, 4)
    status = await quota.status(GUILD, ALICE, [])
    assert (status.limit, status.remaining, status.used) == (None, None, 4)
    assert status.resets_at == datetime(2026, 3, 16, tzinfo=UTC)


# -- reservations --------------------------------------------------------------------------


async def test_reserve_counts_and_refuses_over_limit(services: Services) -> None:
    """Reservations add up; one that would go over raises and changes nothing."""
    quota = services.quota
    await quota.set_rule(GUILD, "member", ALICE, 6, "day", ADMIN)
    first = await quota.reserve(GUILD, ALICE, [], 4, _job(1))
    assert (first.used, first.remaining, first.source) == (4, 2, QuotaSource.MEMBER)

    with pytest.raises(QuotaExceeded) as caught:
        await quota.reserve(GUILD, ALICE, [], 4, _job(2))
    error = caught.value
    assert (error.limit, error.used, error.requested, error.source) == (6, 4, 4, "member")
    assert error.resets_at == datetime(2026, 3, 12, tzinfo=UTC)
    assert "2 of 6" in error.user_message
    # The services speak plain UTC; Discord's own timestamps are the error cog's business.
    assert "at 2026-03-12 00:00 UTC" in error.user_message
    assert "reset <when>" in error.render(lambda moment: "<when>")

    assert (await quota.status(GUILD, ALICE, [])).used == 4
    # The refused job left no ledger entry, so it can be retried later.
    assert not await quota.refund(_job(2))


async def test_quota_exceeded_message_when_used_up(services: Services) -> None:
    """A member at the limit is told it is used up and when it resets."""
    await services.quota.set_rule(GUILD, "server", None, 1, "week", ADMIN)
    await services.quota.reserve(GUILD, ALICE, [], 1, _job(1))
    with pytest.raises(QuotaExceeded) as caught:
        await services.quota.reserve(GUILD, ALICE, [], 1, _job(2))
    assert "all 1 of your images this week" in caught.value.user_message
    assert caught.value.resets_at == datetime(2026, 3, 16, tzinfo=UTC)


async def test_same_job_cannot_reserve_twice(services: Services) -> None:
    """A second reservation for the same job id is refused instead of double counting."""
    await services.quota.reserve(GUILD, ALICE, [], 1, _job(1))
    with pytest.raises(InvalidArgument):
        await services.quota.reserve(GUILD, ALICE, [], 1, _job(1))
    assert (await services.quota.status(GUILD, ALICE, [])).used == 1


async def test_concurrent_reservations_never_exceed_limit(services: Services) -> None:
    """100 concurrent one-image reservations against a limit of 10 grant exactly 10."""
    await services.quota.set_rule(GUILD, "member", ALICE, 10, "day", ADMIN)

    results = await asyncio.gather(
        *(services.quota.reserve(GUILD, ALICE, [], 1, _job(i)) for i in range(100)),
        return_exceptions=True,
    )

    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(granted) == 10
    assert len(refused) == 90
    assert sorted(r.used for r in granted) == list(range(1, 11))
    assert (await services.quota.status(GUILD, ALICE, [])).used == 10


async def test_concurrent_reservations_respect_server_cap(services: Services) -> None:
    """Many members reserving at once cannot push the guild past its server-wide cap."""
    await services.quota.set_rule(GUILD, "cap", None, 7, "day", ADMIN)

    results = await asyncio.gather(
        *(services.quota.reserve(GUILD, 5000 + i, [], 1, _job(i)) for i in range(40)),
        return_exceptions=True,
    )

    granted = [r for r in results if not isinstance(r, BaseException)]
    assert len(granted) == 7
    assert all(
        isinstance(r, QuotaExceeded) and r.source == "cap"
        for r in results
        if isinstance(r, BaseException)
    )
    assert await guild_used(services) == 7


async def test_server_cap_applies_on_top_of_member_limits(services: Services) -> None:
    """Members with room left are refused once the guild's total reaches the cap."""
    quota = services.quota
    await quota.set_rule(GUILD, "server", None, 10, "day", ADMIN)
    await quota.set_rule(GUILD, "cap", None, 5, "week", ADMIN)
    await quota.reserve(GUILD, ALICE, [], 3, _job(1))
    await quota.reserve(GUILD, BOB, [], 2, _job(2))

    with pytest.raises(QuotaExceeded) as caught:
        await quota.reserve(GUILD, BOB, [], 1, _job(3))
    assert (caught.value.source, caught.value.limit, caught.value.used) == ("cap", 5, 5)
    assert "This server has used 5 of its 5 images this week" in caught.value.user_message

    status = await quota.status(GUILD, BOB, [])
    assert (status.limit, status.used, status.remaining) == (10, 2, 0)
    assert status.cap is not None
    assert (status.cap.limit, status.cap.used, status.cap.period) == (5, 5, Period.WEEK)
    # The refused reservation did not count against Bob either.
    await quota.clear_rule(GUILD, "cap", None, ADMIN)
    assert (await quota.status(GUILD, BOB, [])).remaining == 8


# -- charge and refund ---------------------------------------------------------------------


async def test_refund_restores_images_once(
    services: Services, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A refund gives the images back; refunding again gives nothing more."""
    quota = services.quota
    await quota.reserve(GUILD, ALICE, [], 4, _job(1))
    await quota.reserve(GUILD, ALICE, [], 2, _job(2))
    assert (await quota.status(GUILD, ALICE, [])).used == 6

    assert await quota.refund(_job(1)) == 4
    assert await quota.refund(_job(1)) == 0
    assert (await quota.status(GUILD, ALICE, [])).used == 2
    assert await guild_used(services) == 2

    async with sessions() as session:
        refunds = await session.scalar(
            select(func.count()).where(UsageEntry.kind == LedgerKind.REFUND)
        )
    assert refunds == 1


async def test_concurrent_refunds_refund_once(services: Services) -> None:
    """Ten refunds of the same job racing each other give the images back once."""
    await services.quota.reserve(GUILD, ALICE, [], 3, _job(1))
    await services.quota.reserve(GUILD, ALICE, [], 1, _job(2))
    given = await asyncio.gather(*(services.quota.refund(_job(1)) for _ in range(10)))
    assert sorted(given) == [0] * 9 + [3]
    assert (await services.quota.status(GUILD, ALICE, [])).used == 1


async def test_charge_then_refund_for_blocked_result(services: Services) -> None:
    """A charged job can still be refunded (NSFW-blocked result); charging is idempotent."""
    quota = services.quota
    await quota.reserve(GUILD, ALICE, [], 4, _job(1))
    assert await quota.charge(_job(1))
    assert not await quota.charge(_job(1))
    assert (await quota.status(GUILD, ALICE, [])).used == 4

    assert await quota.refund(_job(1), n=1) == 1  # one of four images blocked
    assert (await quota.status(GUILD, ALICE, [])).used == 3
    assert await quota.refund(_job(1)) == 0


async def test_charge_after_refund_or_without_reservation_does_nothing(
    services: Services,
) -> None:
    """Charging a refunded or unknown job returns False and changes no usage."""
    await services.quota.reserve(GUILD, ALICE, [], 2, _job(1))
    assert await services.quota.refund(_job(1)) == 2
    assert not await services.quota.charge(_job(1))
    assert not await services.quota.charge(_job(99))
    assert await services.quota.refund(_job(99)) == 0
    assert (await services.quota.status(GUILD, ALICE, [])).used == 0


# -- periods in the service ----------------------------------------------------------------


async def test_daily_quota_resets_at_midnight_utc(services: Services, clock: FakeClock) -> None:
    """Used up at 23:59 UTC, available again at 00:00 UTC."""
    quota = services.quota
    await quota.set_rule(GUILD, "member", ALICE, 2, "day", ADMIN)
    clock.set(datetime(2026, 3, 11, 23, 59, tzinfo=UTC))
    await quota.reserve(GUILD, ALICE, [], 2, _job(1))
    with pytest.raises(QuotaExceeded):
        await quota.reserve(GUILD, ALICE, [], 1, _job(2))
    assert (await quota.status(GUILD, ALICE, [])).resets_at == datetime(2026, 3, 12, tzinfo=UTC)

    clock.set(datetime(2026, 3, 12, 0, 0, tzinfo=UTC))
    status = await quota.status(GUILD, ALICE, [])
    assert (status.used, status.remaining) == (0, 2)
    assert (await quota.reserve(GUILD, ALICE, [], 2, _job(3))).used == 2


async def test_weekly_quota_resets_on_monday(services: Services, clock: FakeClock) -> None:
    """A weekly quota survives day changes and resets at Monday 00:00 UTC."""
    quota = services.quota
    await quota.set_rule(GUILD, "server", None, 3, "week", ADMIN)
    clock.set(datetime(2026, 3, 9, 8, 0, tzinfo=UTC))  # Monday
    await quota.reserve(GUILD, ALICE, [], 2, _job(1))
    clock.set(datetime(2026, 3, 15, 23, 0, tzinfo=UTC))  # Sunday
    await quota.reserve(GUILD, ALICE, [], 1, _job(2))
    with pytest.raises(QuotaExceeded) as caught:
        await quota.reserve(GUILD, ALICE, [], 1, _job(3))
    assert caught.value.resets_at == datetime(2026, 3, 16, tzinfo=UTC)

    clock.set(datetime(2026, 3, 16, 0, 0, tzinfo=UTC))
    assert (await quota.status(GUILD, ALICE, [])).used == 0
    await quota.reserve(GUILD, ALICE, [], 3, _job(4))


async def test_refund_after_reset_returns_to_the_old_period(
    services: Services, clock: FakeClock
) -> None:
    """Refunding yesterday's job does not hand out extra images today."""
    quota = services.quota
    await quota.reserve(GUILD, ALICE, [], 3, _job(1))
    clock.advance(days=1)
    await quota.reserve(GUILD, ALICE, [], 1, _job(2))
    assert await quota.refund(_job(1)) == 3
    assert (await quota.status(GUILD, ALICE, [])).used == 1


async def test_changing_rule_period_keeps_counting(services: Services, clock: FakeClock) -> None:
    """Day and week usage are both tracked, so switching a rule's period loses nothing."""
    quota = services.quota
    await quota.reserve(GUILD, ALICE, [], 2, _job(1))
    clock.advance(days=1)  # Thursday, same week
    await quota.reserve(GUILD, ALICE, [], 3, _job(2))
    await quota.set_rule(GUILD, "member", ALICE, 10, "week", ADMIN)
    assert (await quota.status(GUILD, ALICE, [])).used == 5


# -- admin ---------------------------------------------------------------------------------


async def test_rules_crud_is_audited(services: Services) -> None:
    """set_rule replaces, list_rules lists, clear_rule deletes; each change is audited."""
    quota = services.quota
    await quota.set_rule(GUILD, "role", ROLE_BIG, 5, "day", ADMIN)
    await quota.set_rule(GUILD, "role", ROLE_BIG, 7, "week", ADMIN)
    await quota.set_rule(GUILD, "server", 12345, 3, "day", ADMIN)  # target ignored
    rules = await quota.list_rules(GUILD)
    assert [(r.scope, r.target_id, r.limit, r.period) for r in rules] == [
        (QuotaScope.SERVER, None, 3, Period.DAY),
        (QuotaScope.ROLE, ROLE_BIG, 7, Period.WEEK),
    ]
    assert await quota.clear_rule(GUILD, "role", ROLE_BIG, ADMIN)
    assert not await quota.clear_rule(GUILD, "role", ROLE_BIG, ADMIN)
    assert len(await quota.list_rules(GUILD)) == 1

    page = await services.audit.list(GUILD)
    assert [e.action for e in page.items] == ["quota.clear", "quota.set", "quota.set", "quota.set"]
    assert page.items[1].details == {
        "scope": "server",
        "target_id": 12345,
        "limit": 3,
        "period": "day",
    }
    assert all(e.actor_id == ADMIN for e in page.items)


@pytest.mark.parametrize(
    ("scope", "target", "limit", "period"),
    [
        ("planet", 1, 5, "day"),
        ("role", None, 5, "day"),
        ("member", 1, -1, "day"),
        ("member", 1, 5, "month"),
    ],
)
async def test_set_rule_rejects_bad_values(
    services: Services, scope: str, target: int | None, limit: int, period: str
) -> None:
    """Unknown scopes/periods, missing targets and negative limits are refused."""
    with pytest.raises(InvalidArgument):
        await services.quota.set_rule(GUILD, scope, target, limit, period, ADMIN)
    assert await services.quota.list_rules(GUILD) == []


async def test_reset_member_gives_images_back(services: Services) -> None:
    """reset_member zeroes the member's current usage, leaves others alone, and is audited."""
    quota = services.quota
    await quota.set_rule(GUILD, "role", ROLE_SMALL, 5, "day", ADMIN)
    await quota.reserve(GUILD, ALICE, [ROLE_SMALL], 5, _job(1))
    await quota.reserve(GUILD, BOB, [], 2, _job(2))

    assert await quota.reset_member(GUILD, ALICE, ADMIN, [ROLE_SMALL]) == 5
    assert (await quota.status(GUILD, ALICE, [ROLE_SMALL])).remaining == 5
    assert (await quota.status(GUILD, BOB, [])).used == 2
    # A late refund of a job from before the reset cannot push usage below zero.
    assert await quota.refund(_job(1)) == 5
    assert (await quota.status(GUILD, ALICE, [ROLE_SMALL])).used == 0

    entry = (await services.audit.list(GUILD, action="quota.reset_member")).items[0]
    assert entry.details == {"user_id": ALICE, "given_back": 5, "period": "day"}


async def test_refund_of_a_job_reserved_before_a_reset_gives_nothing_back_twice(
    services: Services,
) -> None:
    """A job in flight during /quota reset, refunded later, does not free images again."""
    quota = services.quota
    await quota.set_rule(GUILD, "member", ALICE, 5, "day", ADMIN)
    await quota.reserve(GUILD, ALICE, [], 5, _job(1))  # in flight
    assert await quota.reset_member(GUILD, ALICE, ADMIN) == 5
    await quota.reserve(GUILD, ALICE, [], 5, _job(2))  # the 5 images the reset gave back

    assert await quota.refund(_job(1)) == 5  # the in-flight job fails afterwards
    status = await quota.status(GUILD, ALICE, [])
    assert (status.used, status.remaining) == (5, 0)
    assert await guild_used(services) == 5
    with pytest.raises(QuotaExceeded):
        await quota.reserve(GUILD, ALICE, [], 1, _job(3))
