"""One helper for services whose writes may join a caller's transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@contextlib.asynccontextmanager
async def unit(
    sessions: async_sessionmaker[AsyncSession], shared: AsyncSession | None = None
) -> AsyncIterator[AsyncSession]:
    """`shared`, the caller's open transaction (the caller commits or rolls back), or a
    session of our own, committed when the block ends without an error (rolled back when
    the block raises, as closing an uncommitted session does)."""
    if shared is not None:
        yield shared
        return
    async with sessions() as session:
        yield session
        await session.commit()
