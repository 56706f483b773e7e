"""Members' own preferences (remix mode), one row per Discord user, the same in every server.

Per user rather than per server because Midjourney's `/prefer` and `/settings` are per account:
a member who turns remix on expects it wherever they press a button. A member with no row has
the defaults; the row appears on the first change.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import MemberSettings as MemberSettingsRow
from bot.db.upsert import upsert
from bot.services.clock import Clock, utcnow

__all__ = ["MemberPreferences", "PreferencesService"]


@dataclass(frozen=True)
class MemberPreferences:
    """One member's preferences; the defaults for a member who never changed any."""

    user_id: int
    #: Reroll, V1-V4 and Vary (Subtle/Strong) open an editor of the prompt and flags first.
    remix: bool = False


class PreferencesService:
    """Read and change members' preferences."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    async def get(self, user_id: int) -> MemberPreferences:
        """`user_id`'s preferences (the defaults if they never changed one)."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(MemberSettingsRow).where(MemberSettingsRow.user_id == user_id)
            )
        if row is None:
            return MemberPreferences(user_id)
        return MemberPreferences(user_id, remix=row.remix)

    async def set_remix(self, user_id: int, on: bool) -> MemberPreferences:
        """Turn `user_id`'s remix mode on or off (one upsert, safe against a concurrent one)."""
        now = self._clock()
        values = {"user_id": user_id, "remix": on, "created_at": now, "updated_at": now}
        async with self._sessions() as session:
            await session.execute(
                upsert(session, MemberSettingsRow, values, ["user_id"], ["remix", "updated_at"])
            )
            await session.commit()
        return MemberPreferences(user_id, remix=on)
