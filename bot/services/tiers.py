"""Fast and relax tiers: who may run fast, how much fast time they have, and what they used.

Like Midjourney's modes. A `fast` job starts before every waiting `relax` job and spends the
member's fast time; a `relax` job waits for room on the GPU and spends none. Fast time is GPU
seconds as measured by the generation backend for the job (its share of each batched step, by
image count: `GenerationResult.gpu_seconds`), charged only when the job succeeds.

The allowance of a member (GPU seconds per period; None: unlimited) is the most specific rule:
an admin's member rule, else the most generous of their roles' (an admin's role rule, else the
configured `tiers.role_fast_seconds`), else an admin's server rule, else `tiers.fast_seconds`.
Periods are the quota periods (`bot.services.quota.period_start`); an admin's `/quota reset`
of a member gives their fast time back too (usage is counted from the latest reset on).

When `tiers.fast_roles` is set, only members with one of those roles (or with an admin's rule
naming them or one of their roles) may use fast. A member who asks for fast (or gets it by
default) but may not, or has no fast time left, gets relax with a note saying why: never a
refusal. The check happens at submission: jobs already queued as fast stay fast, so a member
can overshoot by at most the jobs they had waiting (`generation.max_queued_per_user`).

Storage: the tier and the fast seconds charged are columns of the job (`jobs.tier`,
`jobs.fast_seconds`); usage is their sum over the period, so there is no second ledger to keep
in step. Admin allowances are `fast_time_rules` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import (
    GUILD_TOTAL,
    FastTimeRule,
    LedgerKind,
    Period,
    QuotaScope,
    StoredJob,
    UsageEntry,
)
from bot.db.models import Tier as StoredTier
from bot.errors import InvalidArgument
from bot.services._rules import delete_rule, save_rule
from bot.services.clock import Clock, utcnow
from bot.services.quota import QuotaSource, next_reset, period_start

__all__ = [
    "FastStatus",
    "FastTimeRuleView",
    "TierChoice",
    "TierPolicy",
    "TierService",
]

#: The tiers, first served first (the same names as `generation.queue_policy.TIERS`).
TIERS = tuple(tier.value for tier in StoredTier)
#: Scopes a fast-time rule can have (no server-wide cap: fast time is per member).
RULE_SCOPES = (QuotaScope.SERVER, QuotaScope.ROLE, QuotaScope.MEMBER)


@dataclass(frozen=True)
class TierPolicy:
    """The configured side of the tiers (`bot.config.TierSettings`).

    `fast_seconds`: GPU seconds per member per `period` (None: unlimited); `fast_roles`: the
    roles that may use fast (empty: everyone); `role_fast_seconds`: role id -> allowance.
    """

    default: str = "fast"
    fast_seconds: float | None = None
    period: Period = Period.DAY
    fast_roles: frozenset[int] = frozenset()
    role_fast_seconds: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default not in TIERS:
            raise ValueError(f"unknown default tier {self.default!r}; choose one of {TIERS}")


@dataclass(frozen=True)
class FastStatus:
    """A member's fast time now.

    `allowed`: they may use fast at all (`tiers.fast_roles`); `allowance` GPU seconds per
    `period` (None: unlimited) set by `source`; `used` this period; `remaining` (None:
    unlimited); `default_tier`: the tier of a job that asks for none.
    """

    allowed: bool
    allowance: float | None
    used: float
    remaining: float | None
    period: Period
    resets_at: datetime
    source: QuotaSource
    default_tier: str

    @property
    def can_run_fast(self) -> bool:
        return self.allowed and (self.remaining is None or self.remaining > 0)

    @property
    def tier(self) -> str:
        """The tier the member's next job gets when it asks for none."""
        if self.default_tier == "fast" and not self.can_run_fast:
            return "relax"
        return self.default_tier


@dataclass(frozen=True)
class TierChoice:
    """The tier a job runs in, and a note for the member when it is not the one they asked
    for (or would get by default)."""

    tier: str
    status: FastStatus
    note: str | None = None


@dataclass(frozen=True)
class FastTimeRuleView:
    """A stored fast-time rule; `target_id` is None for the server rule."""

    guild_id: int
    scope: QuotaScope
    target_id: int | None
    seconds: float
    period: Period
    updated_by: int | None
    updated_at: datetime


@dataclass(frozen=True)
class _Rule:
    seconds: float
    period: Period


class TierService:
    """Tier choice, fast-time accounting and admin allowances, over the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: TierPolicy | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._sessions = sessions
        self.policy = policy or TierPolicy()
        self._now = clock

    # -- members ---------------------------------------------------------------------------

    async def status(self, guild_id: int, user_id: int, role_ids: Iterable[int]) -> FastStatus:
        """The member's allowance, fast seconds used this period, what is left, next reset."""
        role_ids = tuple(role_ids)
        now = self._now()
        async with self._sessions() as session:
            rules = await self._load_rules(session, guild_id, user_id, role_ids)
            allowance, period, source = self._allowance(rules, user_id, role_ids)
            allowed = self._allowed(rules, user_id, role_ids)
            used = await self._used(session, guild_id, user_id, period, now)
        remaining = None if allowance is None else max(allowance - used, 0.0)
        return FastStatus(
            allowed=allowed,
            allowance=allowance,
            used=used,
            remaining=remaining,
            period=period,
            resets_at=next_reset(period, now),
            source=source,
            default_tier=self.policy.default,
        )

    async def choose(
        self, guild_id: int, user_id: int, role_ids: Iterable[int], requested: str | None
    ) -> TierChoice:
        """The tier a new job of the member runs in: `requested` (`--fast`/`--relax`), else
        the configured default; fast falls back to relax, with a note, when the member may
        not use fast or has no fast time left. Raises `InvalidArgument` for an unknown tier."""
        if requested is not None and requested not in TIERS:
            raise InvalidArgument(f"Unknown mode {requested!r}; choose one of {', '.join(TIERS)}.")
        status = await self.status(guild_id, user_id, role_ids)
        wanted = requested or self.policy.default
        if wanted == "relax" or status.can_run_fast:
            return TierChoice(wanted, status)
        return TierChoice("relax", status, fallback_note(status))

    async def charge(self, job_id: str, seconds: float) -> float:
        """Charge a succeeded fast job its measured GPU `seconds`; returns the seconds charged
        (0 for a relax job, or one already charged or refunded)."""
        seconds = max(0.0, float(seconds))
        async with self._sessions() as session:
            result = await session.execute(
                update(StoredJob)
                .where(
                    StoredJob.id == job_id,
                    StoredJob.tier == StoredTier.FAST,
                    StoredJob.fast_seconds.is_(None),
                )
                .values(fast_seconds=seconds)
            )
            await session.commit()
        return seconds if result.rowcount == 1 else 0.0  # type: ignore[attr-defined]

    async def refund(self, job_id: str) -> float:
        """Give back the fast time a job was charged (a result that reached nobody, or a
        settlement that failed after the charge); returns the seconds given back."""
        async with self._sessions() as session:
            charged = await session.scalar(
                select(StoredJob.fast_seconds).where(StoredJob.id == job_id)
            )
            if not charged:
                return 0.0
            result = await session.execute(
                update(StoredJob)
                .where(StoredJob.id == job_id, StoredJob.fast_seconds == charged)
                .values(fast_seconds=0.0)
            )
            await session.commit()
        return float(charged) if result.rowcount == 1 else 0.0  # type: ignore[attr-defined]

    # -- admins ----------------------------------------------------------------------------

    async def set_rule(
        self,
        guild_id: int,
        scope: QuotaScope | str,
        target_id: int | None,
        seconds: float,
        period: Period | str | None,
        actor_id: int,
    ) -> FastTimeRuleView:
        """Create or replace the fast-time allowance of (scope, target); audited.
        `period` None: the configured period. Raises `InvalidArgument`."""
        scope, target = _rule_key(scope, target_id)
        try:
            period = Period(period) if period is not None else self.policy.period
        except ValueError:
            raise InvalidArgument(f"Period must be day or week, got {period!r}.") from None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise InvalidArgument(f"Fast time must be 0 or more GPU seconds, got {seconds}.")
        now = self._now()
        values = {
            "guild_id": guild_id,
            "scope": scope,
            "target_id": target,
            "seconds": float(seconds),
            "period": period,
            "updated_by": actor_id,
            "updated_at": now,
        }
        details = {"scope": scope.value, "target_id": target_id, "seconds": float(seconds),
                   "period": period.value}
        await save_rule(self._sessions, FastTimeRule, values, "fast_time.set", details)
        return FastTimeRuleView(
            guild_id, scope, _public(scope, target), float(seconds), period, actor_id, now
        )

    async def clear_rule(
        self, guild_id: int, scope: QuotaScope | str, target_id: int | None, actor_id: int
    ) -> bool:
        """Delete the fast-time rule of (scope, target); False if there was none. Audited."""
        scope, target = _rule_key(scope, target_id)
        details = {"scope": scope.value, "target_id": target_id}
        return await delete_rule(
            self._sessions, FastTimeRule, guild_id, scope, target, actor_id, "fast_time.clear",
            details, self._now(),
        )

    async def list_rules(self, guild_id: int) -> list[FastTimeRuleView]:
        """The guild's fast-time rules: server first, then roles, then members."""
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(FastTimeRule).where(FastTimeRule.guild_id == guild_id)
                )
            ).all()
        order = {QuotaScope.SERVER: 0, QuotaScope.ROLE: 1, QuotaScope.MEMBER: 2}
        rows = sorted(rows, key=lambda row: (order[row.scope], row.target_id))
        return [
            FastTimeRuleView(
                row.guild_id,
                row.scope,
                _public(row.scope, row.target_id),
                row.seconds,
                row.period,
                row.updated_by,
                row.updated_at,
            )
            for row in rows
        ]

    # -- internals -------------------------------------------------------------------------

    async def _load_rules(
        self, session: AsyncSession, guild_id: int, user_id: int, role_ids: tuple[int, ...]
    ) -> dict[tuple[QuotaScope, int], _Rule]:
        query = select(FastTimeRule).where(
            FastTimeRule.guild_id == guild_id,
            or_(
                FastTimeRule.scope == QuotaScope.SERVER,
                (FastTimeRule.scope == QuotaScope.MEMBER) & (FastTimeRule.target_id == user_id),
                (FastTimeRule.scope == QuotaScope.ROLE) & FastTimeRule.target_id.in_(role_ids),
            ),
        )
        rows = (await session.scalars(query)).all()
        return {(row.scope, row.target_id): _Rule(row.seconds, row.period) for row in rows}

    def _allowance(
        self,
        rules: Mapping[tuple[QuotaScope, int], _Rule],
        user_id: int,
        role_ids: tuple[int, ...],
    ) -> tuple[float | None, Period, QuotaSource]:
        policy = self.policy
        member = rules.get((QuotaScope.MEMBER, user_id))
        if member is not None:
            return member.seconds, member.period, QuotaSource.MEMBER
        roles: list[_Rule] = []
        for role in role_ids:
            rule = rules.get((QuotaScope.ROLE, role))
            if rule is None and role in policy.role_fast_seconds:
                rule = _Rule(policy.role_fast_seconds[role], policy.period)
            if rule is not None:
                roles.append(rule)
        if roles:
            # Most generous: the most seconds; for equal ones a daily rule (renews sooner).
            best = max(roles, key=lambda r: (r.seconds, r.period is Period.DAY))
            return best.seconds, best.period, QuotaSource.ROLE
        server = rules.get((QuotaScope.SERVER, GUILD_TOTAL))
        if server is not None:
            return server.seconds, server.period, QuotaSource.SERVER
        return policy.fast_seconds, policy.period, QuotaSource.CONFIG

    def _allowed(
        self,
        rules: Mapping[tuple[QuotaScope, int], _Rule],
        user_id: int,
        role_ids: tuple[int, ...],
    ) -> bool:
        """`tiers.fast_roles` empty, one of them held, or an admin's rule for the member or
        one of their roles (an admin who grants fast time means it to be usable)."""
        if not self.policy.fast_roles or self.policy.fast_roles.intersection(role_ids):
            return True
        return any(scope is not QuotaScope.SERVER for scope, _ in rules)

    async def _used(
        self, session: AsyncSession, guild_id: int, user_id: int, period: Period, now: datetime
    ) -> float:
        """Fast seconds charged to the member since the period started (or since an admin's
        last reset of the member, if later)."""
        since = period_start(period, now)
        reset = await session.scalar(
            select(func.max(UsageEntry.created_at)).where(
                UsageEntry.guild_id == guild_id,
                UsageEntry.user_id == user_id,
                UsageEntry.kind == LedgerKind.RESET,
            )
        )
        if reset is not None and reset > since:
            since = reset
        used = await session.scalar(
            select(func.coalesce(func.sum(StoredJob.fast_seconds), 0.0)).where(
                StoredJob.guild_id == guild_id,
                StoredJob.user_id == user_id,
                StoredJob.fast_seconds.is_not(None),
                StoredJob.finished_at >= since,
            )
        )
        return float(used or 0.0)


def fallback_note(status: FastStatus) -> str:
    """Why a job that would run fast runs in relax instead, in words for the member."""
    if not status.allowed:
        return (
            "Fast mode is for members with certain roles on this server, so this job runs in "
            "relax mode: it starts when no fast job is waiting, and uses no fast time."
        )
    span = "today" if status.period is Period.DAY else "this week"
    allowance = f"{status.allowance:g} s" if status.allowance is not None else "fast time"
    return (
        f"You have used your {allowance} of fast GPU time {span}, so this job runs in relax "
        f"mode: it starts when no fast job is waiting, and uses no fast time. Fast time comes "
        f"back <t:{int(status.resets_at.timestamp())}:R>."
    )


def _rule_key(scope: QuotaScope | str, target_id: int | None) -> tuple[QuotaScope, int]:
    try:
        scope = QuotaScope(scope)
    except ValueError:
        scope = None  # type: ignore[assignment]
    if scope not in RULE_SCOPES:
        names = ", ".join(s.value for s in RULE_SCOPES)
        raise InvalidArgument(f"A fast-time rule's scope must be one of {names}.")
    if scope is QuotaScope.SERVER:
        return scope, GUILD_TOTAL
    if target_id is None or target_id <= 0:
        raise InvalidArgument(f"A {scope.value} rule needs the {scope.value}'s id.")
    return scope, target_id


def _public(scope: QuotaScope, target: int) -> int | None:
    return None if scope is QuotaScope.SERVER else target
