"""Storing and deleting a per-(guild, scope, target) rule with its audit entry: the one way the
quota rules (`quota_rules`) and the fast-time allowances (`fast_time_rules`) are written."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.upsert import upsert
from bot.services._guilds import ensure_guild
from bot.services.audit import record

_KEY = ("guild_id", "scope", "target_id")


async def save_rule(
    sessions: async_sessionmaker[AsyncSession],
    model: type[Any],
    values: Mapping[str, Any],
    action: str,
    details: Mapping[str, Any],
) -> None:
    """Create or replace the rule row `values` (keyed by guild, scope and target) and audit
    it as `action` by `values["updated_by"]` at `values["updated_at"]`, in one transaction."""
    guild_id, now = values["guild_id"], values["updated_at"]
    changed = tuple(name for name in values if name not in _KEY)
    async with sessions() as session:
        await ensure_guild(session, guild_id, now)
        await session.execute(upsert(session, model, dict(values), key=_KEY, update=changed))
        await record(session, guild_id, values["updated_by"], action, dict(details), now)
        await session.commit()


async def delete_rule(
    sessions: async_sessionmaker[AsyncSession],
    model: type[Any],
    guild_id: int,
    scope: Any,
    target: int,
    actor_id: int,
    action: str,
    details: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Delete the rule of (scope, target) and audit it; False (nothing audited) if none."""
    async with sessions() as session:
        result = await session.execute(
            delete(model).where(
                model.guild_id == guild_id, model.scope == scope, model.target_id == target
            )
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            await session.rollback()
            return False
        await record(session, guild_id, actor_id, action, dict(details), now)
        await session.commit()
        return True
