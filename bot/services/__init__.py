"""The bot's domain services over the database: quotas, tiers, history, moderation, audit and
members' preferences.

No Discord here: the cogs translate interactions into these calls and `ServiceError`s
back into messages. Build them once at start-up with `build_services`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import JobKind, JobStatus, NsfwPolicy, Period, QuotaScope
from bot.services._session import unit
from bot.services.audit import AuditService
from bot.services.clock import Clock, utcnow
from bot.services.history import HistoryService
from bot.services.moderation import ModerationService
from bot.services.preferences import MemberPreferences, PreferencesService
from bot.services.quota import QuotaService
from bot.services.tiers import TierPolicy, TierService

__all__ = [
    "AuditService",
    "HistoryService",
    "JobKind",
    "JobStatus",
    "MemberPreferences",
    "ModerationService",
    "NsfwPolicy",
    "Period",
    "PreferencesService",
    "QuotaScope",
    "QuotaService",
    "Services",
    "TierPolicy",
    "TierService",
    "build_services",
]


@dataclass(frozen=True)
class Services:
    """Everything the cogs need from storage, passed into the bot's constructor."""

    quota: QuotaService
    history: HistoryService
    moderation: ModerationService
    audit: AuditService
    preferences: PreferencesService
    tiers: TierService
    sessions: async_sessionmaker[AsyncSession]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One database transaction for several service calls (pass it as their `session=`):
        committed when the block ends, rolled back when it raises. The job gate uses it so
        the quota reservation, the history row and the generator's queue entry commit
        together or not at all."""
        async with unit(self.sessions) as session:
            yield session


def build_services(
    sessions: async_sessionmaker[AsyncSession],
    default_limit: int | None,
    default_period: Period | str = Period.DAY,
    clock: Clock | None = None,
    tiers: TierPolicy | None = None,
) -> Services:
    """Wire the services to one session factory and one clock (tests pass a fake clock);
    `tiers`: the fast/relax configuration (default: everyone fast, unlimited)."""
    now = clock or utcnow
    return Services(
        tiers=TierService(sessions, tiers, clock=now),
        quota=QuotaService(sessions, default_limit, default_period, clock=now),
        history=HistoryService(sessions, clock=now),
        moderation=ModerationService(sessions, clock=now),
        audit=AuditService(sessions, clock=now),
        preferences=PreferencesService(sessions, clock=now),
        sessions=sessions,
    )
