"""Quotas: how many images a member may generate per day or week, and the usage ledger.

The effective limit for a member is the most specific rule: a member rule, else the most
generous of their roles' rules, else the server default, else the config default (None:
unlimited). A server-wide cap (total images for the whole guild per period) may apply on
top.

Why reservations cannot overshoot: usage lives in counter rows (one per member, and one
for the whole guild, per day and per week). Reserving is a conditional
`UPDATE ... SET used = used + n WHERE used + n <= limit`, a single statement that takes
the row's write lock. On PostgreSQL (READ COMMITTED) a concurrent UPDATE of the same row
waits and then re-checks the WHERE clause on the new value; on SQLite the first write
takes the database write lock and the others wait (busy_timeout). Reading and then
writing would let two requests both see "9 used" and both take the 10th image.

Lifecycle: `reserve` before queueing, then `charge` on success or `refund` on failure,
cancellation or a blocked result. The ledger's (job_id, kind) is unique, so a second
refund or charge of the same job does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, Table, Update, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import GUILD_TOTAL, LedgerKind, Period, QuotaScope, UsageCounter, UsageEntry
from bot.db.models import QuotaRule as QuotaRuleRow
from bot.db.upsert import insert_ignore
from bot.errors import InvalidArgument, QuotaExceeded
from bot.services._guilds import ensure_guild
from bot.services._rules import delete_rule, save_rule
from bot.services._session import unit
from bot.services.audit import record
from bot.services.clock import Clock, utcnow

COUNTERS: Table = UsageCounter.__table__  # type: ignore[assignment]
PERIOD_LENGTH = {Period.DAY: timedelta(days=1), Period.WEEK: timedelta(weeks=1)}


class QuotaSource(StrEnum):
    """Where a limit comes from; CAP only appears on QuotaExceeded for the server-wide cap."""

    MEMBER = "member"
    ROLE = "role"
    SERVER = "server"
    CONFIG = "config"
    CAP = "cap"


def period_start(period: Period | str, now: datetime) -> datetime:
    """Start of the period containing `now`: 00:00 UTC, or Monday 00:00 UTC for a week."""
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: pass an aware datetime")
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if Period(period) is Period.DAY:
        return day
    return day - timedelta(days=day.weekday())


def next_reset(period: Period | str, now: datetime) -> datetime:
    """When the period containing `now` ends and usage starts again from zero."""
    period = Period(period)
    return period_start(period, now) + PERIOD_LENGTH[period]


@dataclass(frozen=True)
class Limit:
    """An effective limit: images per period (None: unlimited) and which rule set it."""

    limit: int | None
    period: Period
    source: QuotaSource


@dataclass(frozen=True)
class QuotaRule:
    """A stored rule. target_id is the role or member id; None for server and cap rules."""

    guild_id: int
    scope: QuotaScope
    target_id: int | None
    limit: int
    period: Period
    updated_by: int | None
    updated_at: datetime


@dataclass(frozen=True)
class CapStatus:
    """The server-wide cap: images the whole guild may use per period."""

    limit: int
    used: int
    remaining: int
    period: Period
    resets_at: datetime


@dataclass(frozen=True)
class QuotaStatus:
    """A member's quota now.

    `remaining` is what the member can actually still generate: the smaller of their own
    remaining images and the server cap's (so it may be less than `limit - used`).
    """

    limit: int | None
    used: int
    remaining: int | None
    period: Period
    resets_at: datetime
    source: QuotaSource
    cap: CapStatus | None = None


@dataclass(frozen=True)
class Reservation:
    """Images set aside for a job; `used`/`remaining` are the member's after reserving."""

    job_id: str
    guild_id: int
    user_id: int
    n: int
    period: Period
    period_start: datetime
    resets_at: datetime
    limit: int | None
    used: int
    remaining: int | None
    source: QuotaSource


@dataclass(frozen=True)
class _RuleValue:
    """A rule's numbers, copied out of the ORM row: rows expire on rollback, and reading
    an expired attribute would need IO."""

    limit_images: int
    period: Period


_Rules = Mapping[tuple[QuotaScope, int], _RuleValue]


class QuotaService:
    """Quota rules, reservations and usage for all guilds."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        default_limit: int | None,
        default_period: Period | str = Period.DAY,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self._default = Limit(default_limit, Period(default_period), QuotaSource.CONFIG)
        self._now = clock

    # -- member side ---------------------------------------------------------------------

    async def reserve(
        self,
        guild_id: int,
        user_id: int,
        role_ids: Iterable[int],
        n: int,
        job_id: str,
        *,
        session: AsyncSession | None = None,
    ) -> Reservation:
        """Set aside `n` images for `job_id`, or raise QuotaExceeded and change nothing.

        Steps: find the effective limit and cap, record the reservation in the ledger,
        then take `n` from the member's counter and the guild's, each a conditional
        UPDATE; if either refuses, roll everything back.

        `session`: the caller's open transaction (`Services.transaction`), so the reservation
        commits together with the caller's other writes (the job's history row and queue
        entry) or not at all; a refusal then rolls back that whole transaction.
        """
        if n < 1:
            raise InvalidArgument(f"A reservation needs at least 1 image, got {n}.")
        role_ids = tuple(role_ids)
        now = self._now()
        starts = _starts(now)
        async with unit(self._sessions, session) as session:
            rules = await self._load_rules(session, guild_id, user_id, role_ids)
            own = self._effective(rules, user_id, role_ids)
            cap = rules.get((QuotaScope.CAP, GUILD_TOTAL))
            await ensure_guild(session, guild_id, now)
            entry = {
                "guild_id": guild_id,
                "user_id": user_id,
                "job_id": job_id,
                "kind": LedgerKind.RESERVE,
                "n": n,
                "period": own.period,
                "period_start": starts[own.period],
                "created_at": now,
            }
            inserted = await session.execute(insert_ignore(session, UsageEntry, entry))
            if inserted.rowcount != 1:  # type: ignore[attr-defined]
                raise InvalidArgument(f"Images for job {job_id} are already reserved.")
            await session.execute(
                insert_ignore(session, UsageCounter, _counter_rows(guild_id, user_id, starts))
            )

            used = await _take(session, guild_id, user_id, starts, own.period, n, own.limit)
            if used is None:
                assert own.limit is not None  # an unlimited take cannot fail
                raise await _refusal(
                    session, guild_id, user_id, starts, own.period, n, own.limit,
                    own.source.value, now,
                )
            cap_period = cap.period if cap is not None else own.period
            cap_limit = cap.limit_images if cap is not None else None
            cap_used = await _take(session, guild_id, GUILD_TOTAL, starts, cap_period, n, cap_limit)
            if cap_used is None:
                assert cap is not None
                raise await _refusal(
                    session, guild_id, GUILD_TOTAL, starts, cap.period, n, cap.limit_images,
                    QuotaSource.CAP.value, now,
                )

        remaining = None if own.limit is None else own.limit - used
        return Reservation(
            job_id=job_id,
            guild_id=guild_id,
            user_id=user_id,
            n=n,
            period=own.period,
            period_start=starts[own.period],
            resets_at=next_reset(own.period, now),
            limit=own.limit,
            used=used,
            remaining=remaining,
            source=own.source,
        )

    async def charge(self, job_id: str) -> bool:
        """Mark a job's reserved images as spent. False if not reserved, refunded, or done."""
        async with self._sessions() as session:
            entries = await _entries(session, job_id)
            reserved = entries.get(LedgerKind.RESERVE)
            if reserved is None or LedgerKind.REFUND in entries:
                return False
            result = await session.execute(
                insert_ignore(
                    session,
                    UsageEntry,
                    _follow_up(reserved, LedgerKind.CHARGE, reserved.n, self._now()),
                )
            )
            await session.commit()
            return result.rowcount == 1  # type: ignore[attr-defined]

    async def refund(self, job_id: str, n: int | None = None) -> int:
        """Give a job's images back (all, or `n` of them); returns how many were given back.

        Allowed after `charge` (an NSFW-blocked result is refunded after it ran). Only the
        first refund of a job counts; later calls return 0.
        """
        now = self._now()
        async with self._sessions() as session:
            reserved = (await _entries(session, job_id)).get(LedgerKind.RESERVE)
            if reserved is None:
                return 0
            amount = reserved.n if n is None else max(0, min(n, reserved.n))
            result = await session.execute(
                insert_ignore(
                    session, UsageEntry, _follow_up(reserved, LedgerKind.REFUND, amount, now)
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                return 0
            # The images come back to the periods they were taken from; not to the member's
            # counters an admin reset since (the reset already gave these images back).
            starts = _starts(reserved.created_at)
            reset_since = await _reset_periods_since(session, reserved, starts)
            own_starts = {p: s for p, s in starts.items() if p not in reset_since}
            await _give_back(session, reserved.guild_id, reserved.user_id, own_starts, amount)
            await _give_back(session, reserved.guild_id, GUILD_TOTAL, starts, amount)
            await session.commit()
            return amount

    async def status(self, guild_id: int, user_id: int, role_ids: Iterable[int]) -> QuotaStatus:
        """The member's effective limit, usage, remaining images and next reset."""
        role_ids = tuple(role_ids)
        now = self._now()
        starts = _starts(now)
        async with self._sessions() as session:
            rules = await self._load_rules(session, guild_id, user_id, role_ids)
            own = self._effective(rules, user_id, role_ids)
            used = await _read_used(session, guild_id, user_id, own.period, starts)
            cap = await self._cap_status(session, rules, guild_id, starts, now)
        remaining = None if own.limit is None else max(own.limit - used, 0)
        if cap is not None:
            remaining = cap.remaining if remaining is None else min(remaining, cap.remaining)
        return QuotaStatus(
            limit=own.limit,
            used=used,
            remaining=remaining,
            period=own.period,
            resets_at=next_reset(own.period, now),
            source=own.source,
            cap=cap,
        )

    # -- admin side ----------------------------------------------------------------------

    async def set_rule(
        self,
        guild_id: int,
        scope: QuotaScope | str,
        target_id: int | None,
        limit: int,
        period: Period | str,
        actor_id: int,
    ) -> QuotaRule:
        """Create or replace the rule for (scope, target); audited."""
        scope, target = _rule_key(scope, target_id)
        try:
            period = Period(period)
        except ValueError:
            raise InvalidArgument(f"Period must be day or week, got {period!r}.") from None
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgument(f"The limit must be a whole number of images >= 0, got {limit}.")
        now = self._now()
        values = {
            "guild_id": guild_id,
            "scope": scope,
            "target_id": target,
            "limit_images": limit,
            "period": period,
            "updated_by": actor_id,
            "updated_at": now,
        }
        details = {"scope": scope.value, "target_id": target_id, "limit": limit,
                   "period": period.value}
        await save_rule(self._sessions, QuotaRuleRow, values, "quota.set", details)
        return QuotaRule(
            guild_id, scope, _public_target(scope, target), limit, period, actor_id, now
        )

    async def clear_rule(
        self, guild_id: int, scope: QuotaScope | str, target_id: int | None, actor_id: int
    ) -> bool:
        """Delete the rule for (scope, target); False if there was none. Audited."""
        scope, target = _rule_key(scope, target_id)
        details = {"scope": scope.value, "target_id": target_id}
        return await delete_rule(
            self._sessions, QuotaRuleRow, guild_id, scope, target, actor_id, "quota.clear",
            details, self._now(),
        )

    async def list_rules(self, guild_id: int) -> list[QuotaRule]:
        """All rules of a guild: server and cap first, then roles, then members."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(select(QuotaRuleRow).where(QuotaRuleRow.guild_id == guild_id))
            ).all()
        order = {QuotaScope.SERVER: 0, QuotaScope.CAP: 1, QuotaScope.ROLE: 2, QuotaScope.MEMBER: 3}
        rows = sorted(rows, key=lambda row: (order[row.scope], row.target_id))
        return [_rule(row) for row in rows]

    async def reset_member(
        self, guild_id: int, user_id: int, actor_id: int, role_ids: Iterable[int] = ()
    ) -> int:
        """Give a member's used images back for the current day and week; audited.

        Returns the images given back in the member's effective period (pass `role_ids`
        so role rules count when finding it). The server-wide total is not reduced: the
        images were still generated.
        """
        role_ids = tuple(role_ids)
        now = self._now()
        starts = _starts(now)
        async with self._sessions() as session:
            rules = await self._load_rules(session, guild_id, user_id, role_ids)
            own = self._effective(rules, user_id, role_ids)
            await ensure_guild(session, guild_id, now)
            given = await _read_used(session, guild_id, user_id, own.period, starts)
            for period, start in starts.items():
                await session.execute(
                    _counter_update(guild_id, user_id, period, start).values(used=0)
                )
            session.add(
                UsageEntry(
                    guild_id=guild_id,
                    user_id=user_id,
                    job_id=None,
                    kind=LedgerKind.RESET,
                    n=given,
                    period=own.period,
                    period_start=starts[own.period],
                    created_at=now,
                )
            )
            details = {"user_id": user_id, "given_back": given, "period": own.period.value}
            await record(session, guild_id, actor_id, "quota.reset_member", details, now)
            await session.commit()
        return given

    # -- internals -------------------------------------------------------------------------

    async def _load_rules(
        self, session: AsyncSession, guild_id: int, user_id: int, role_ids: Iterable[int]
    ) -> _Rules:
        role_ids = list(role_ids)
        query = select(QuotaRuleRow).where(
            QuotaRuleRow.guild_id == guild_id,
            or_(
                QuotaRuleRow.scope.in_([QuotaScope.SERVER, QuotaScope.CAP]),
                (QuotaRuleRow.scope == QuotaScope.MEMBER) & (QuotaRuleRow.target_id == user_id),
                (QuotaRuleRow.scope == QuotaScope.ROLE) & QuotaRuleRow.target_id.in_(role_ids),
            ),
        )
        rows = (await session.scalars(query)).all()
        return {
            (row.scope, row.target_id): _RuleValue(row.limit_images, row.period) for row in rows
        }

    def _effective(self, rules: _Rules, user_id: int, role_ids: Iterable[int]) -> Limit:
        member = rules.get((QuotaScope.MEMBER, user_id))
        if member is not None:
            return Limit(member.limit_images, member.period, QuotaSource.MEMBER)
        roles = [
            rules[(QuotaScope.ROLE, rid)] for rid in role_ids if (QuotaScope.ROLE, rid) in rules
        ]
        if roles:
            # Most generous: the highest limit; for equal limits a daily one (it renews sooner).
            best = max(roles, key=lambda r: (r.limit_images, r.period is Period.DAY))
            return Limit(best.limit_images, best.period, QuotaSource.ROLE)
        server = rules.get((QuotaScope.SERVER, GUILD_TOTAL))
        if server is not None:
            return Limit(server.limit_images, server.period, QuotaSource.SERVER)
        return self._default

    async def _cap_status(
        self,
        session: AsyncSession,
        rules: _Rules,
        guild_id: int,
        starts: Mapping[Period, datetime],
        now: datetime,
    ) -> CapStatus | None:
        cap = rules.get((QuotaScope.CAP, GUILD_TOTAL))
        if cap is None:
            return None
        used = await _read_used(session, guild_id, GUILD_TOTAL, cap.period, starts)
        return CapStatus(
            limit=cap.limit_images,
            used=used,
            remaining=max(cap.limit_images - used, 0),
            period=cap.period,
            resets_at=next_reset(cap.period, now),
        )


def _starts(now: datetime) -> dict[Period, datetime]:
    return {period: period_start(period, now) for period in Period}


def _period_is(period: Period, start: datetime) -> ColumnElement[bool]:
    return (COUNTERS.c.period == period) & (COUNTERS.c.period_start == start)


def _counter_update(guild_id: int, subject: int, period: Period, start: datetime) -> Update:
    """UPDATE of one counter row. Rows are always updated one at a time in the same order
    (member before guild, day before week), so PostgreSQL transactions cannot deadlock."""
    return update(COUNTERS).where(
        COUNTERS.c.guild_id == guild_id, COUNTERS.c.user_id == subject, _period_is(period, start)
    )


def _counter_rows(
    guild_id: int, user_id: int, starts: Mapping[Period, datetime]
) -> list[dict[str, object]]:
    return [
        {
            "guild_id": guild_id,
            "user_id": subject,
            "period": period,
            "period_start": start,
            "used": 0,
        }
        for subject in (user_id, GUILD_TOTAL)
        for period, start in starts.items()
    ]


async def _take(
    session: AsyncSession,
    guild_id: int,
    subject: int,
    starts: Mapping[Period, datetime],
    limited_period: Period,
    n: int,
    limit: int | None,
) -> int | None:
    """Add n to the subject's day and week counters; the `limited_period` one only if it
    stays within `limit`. Returns that counter's new value, or None if it would not fit."""
    used: int | None = None
    for period, start in starts.items():
        stmt = (
            _counter_update(guild_id, subject, period, start)
            .values(used=COUNTERS.c.used + n)
            .returning(COUNTERS.c.used)
        )
        if period is limited_period:
            if limit is not None:
                stmt = stmt.where(COUNTERS.c.used + n <= limit)
            used = (await session.execute(stmt)).scalar_one_or_none()
            if used is None:
                return None
        else:
            await session.execute(stmt)
    return used


async def _give_back(
    session: AsyncSession,
    guild_id: int,
    subject: int,
    starts: Mapping[Period, datetime],
    n: int,
) -> None:
    """Subtract n from the subject's day and week counters, never below zero (an admin
    reset may already have given the images back)."""
    for period, start in starts.items():
        await session.execute(
            _counter_update(guild_id, subject, period, start).values(
                used=case((COUNTERS.c.used >= n, COUNTERS.c.used - n), else_=0)
            )
        )


async def _reset_periods_since(
    session: AsyncSession, reserved: UsageEntry, starts: Mapping[Period, datetime]
) -> set[Period]:
    """The periods of `starts` whose member counter an admin reset after `reserved`."""
    resets = await session.scalars(
        select(UsageEntry.created_at).where(
            UsageEntry.guild_id == reserved.guild_id,
            UsageEntry.user_id == reserved.user_id,
            UsageEntry.kind == LedgerKind.RESET,
            UsageEntry.id > reserved.id,
        )
    )
    periods: set[Period] = set()
    for at in resets.all():
        reset_starts = _starts(at)
        periods.update(p for p, start in starts.items() if reset_starts[p] == start)
    return periods


async def _refusal(
    session: AsyncSession,
    guild_id: int,
    subject: int,
    starts: Mapping[Period, datetime],
    period: Period,
    n: int,
    limit: int,
    source: str,
    now: datetime,
) -> QuotaExceeded:
    """After a `_take` that did not fit: roll the reservation back, then say why, with the
    subject's counter as it now stands."""
    await session.rollback()
    current = await _read_used(session, guild_id, subject, period, starts)
    return QuotaExceeded(
        limit, current, next_reset(period, now), source, requested=n, period=period.value
    )


async def _read_used(
    session: AsyncSession,
    guild_id: int,
    subject: int,
    period: Period,
    starts: Mapping[Period, datetime],
) -> int:
    used = await session.scalar(
        select(COUNTERS.c.used).where(
            COUNTERS.c.guild_id == guild_id,
            COUNTERS.c.user_id == subject,
            _period_is(period, starts[period]),
        )
    )
    return int(used or 0)


async def _entries(session: AsyncSession, job_id: str) -> dict[LedgerKind, UsageEntry]:
    rows = (await session.scalars(select(UsageEntry).where(UsageEntry.job_id == job_id))).all()
    return {row.kind: row for row in rows}


def _follow_up(reserved: UsageEntry, kind: LedgerKind, n: int, now: datetime) -> dict[str, object]:
    return {
        "guild_id": reserved.guild_id,
        "user_id": reserved.user_id,
        "job_id": reserved.job_id,
        "kind": kind,
        "n": n,
        "period": reserved.period,
        "period_start": reserved.period_start,
        "created_at": now,
    }


def _rule_key(scope: QuotaScope | str, target_id: int | None) -> tuple[QuotaScope, int]:
    try:
        scope = QuotaScope(scope)
    except ValueError:
        names = ", ".join(s.value for s in QuotaScope)
        raise InvalidArgument(f"Scope must be one of {names}, got {scope!r}.") from None
    if scope in (QuotaScope.SERVER, QuotaScope.CAP):
        return scope, GUILD_TOTAL
    if target_id is None or target_id <= 0:
        raise InvalidArgument(f"A {scope.value} rule needs the {scope.value}'s id.")
    return scope, target_id


def _public_target(scope: QuotaScope, target: int) -> int | None:
    return None if scope in (QuotaScope.SERVER, QuotaScope.CAP) else target


def _rule(row: QuotaRuleRow) -> QuotaRule:
    return QuotaRule(
        guild_id=row.guild_id,
        scope=row.scope,
        target_id=_public_target(row.scope, row.target_id),
        limit=row.limit_images,
        period=row.period,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )
