"""The audit log of admin actions: who changed what, when.

Other services write their entries with `record()` inside their own transaction, so a
change and its audit entry are committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import AuditEntry as AuditRow
from bot.services._guilds import ensure_guild
from bot.services.clock import Clock, utcnow


@dataclass(frozen=True)
class AuditEntry:
    id: int
    guild_id: int
    actor_id: int
    action: str
    details: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AuditPage:
    """Entries newest first; pass `next_cursor` as `before` to get the next page."""

    items: list[AuditEntry] = field(default_factory=list)
    next_cursor: int | None = None


async def record(
    session: AsyncSession,
    guild_id: int,
    actor_id: int,
    action: str,
    details: Mapping[str, Any] | None,
    at: datetime,
) -> None:
    """Add an audit entry to `session`'s transaction (the caller commits)."""
    await ensure_guild(session, guild_id, at)
    session.add(
        AuditRow(
            guild_id=guild_id,
            actor_id=actor_id,
            action=action,
            details=dict(details or {}),
            created_at=at,
        )
    )


class AuditService:
    """Write and read a guild's audit log."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._now = clock

    async def log(
        self, guild_id: int, actor_id: int, action: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Record an admin action that no other service records itself."""
        async with self._sessions() as session:
            await record(session, guild_id, actor_id, action, details, self._now())
            await session.commit()

    async def list(
        self,
        guild_id: int,
        *,
        limit: int = 20,
        before: int | None = None,
        actor_id: int | None = None,
        action: str | None = None,
    ) -> AuditPage:
        """A page of `guild_id`'s entries, newest first (ids increase with time)."""
        limit = max(1, min(limit, 100))
        query = select(AuditRow).where(AuditRow.guild_id == guild_id)
        if before is not None:
            query = query.where(AuditRow.id < before)
        if actor_id is not None:
            query = query.where(AuditRow.actor_id == actor_id)
        if action is not None:
            query = query.where(AuditRow.action == action)
        query = query.order_by(AuditRow.id.desc()).limit(limit + 1)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        items = [_entry(row) for row in rows[:limit]]
        next_cursor = items[-1].id if len(rows) > limit else None
        return AuditPage(items=items, next_cursor=next_cursor)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        guild_id=row.guild_id,
        actor_id=row.actor_id,
        action=row.action,
        details=dict(row.details or {}),
        created_at=row.created_at,
    )
