"""Make sure a guild row exists before writing anything that references it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.db.models import Guild, NsfwPolicy
from bot.db.upsert import insert_ignore


async def ensure_guild(session: AsyncSession, guild_id: int, now: datetime) -> None:
    """Insert the guild with default settings unless it is already there."""
    await session.execute(
        insert_ignore(
            session,
            Guild,
            {
                "id": guild_id,
                "enabled": True,
                "nsfw_policy": NsfwPolicy.BLOCK,
                "created_at": now,
                "updated_at": now,
            },
        )
    )
