"""Members' preferences (remix mode) on the database, SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import MemberSettings
from bot.services import MemberPreferences, Services
from tests.db.fixtures import FakeClock

pytestmark = pytest.mark.every_driver

ALICE = 2**62 + 11  # a snowflake past int32, as Discord's are
BOB = 4242


async def test_a_member_who_never_chose_has_the_defaults(services: Services) -> None:
    assert await services.preferences.get(ALICE) == MemberPreferences(ALICE, remix=False)


async def test_remix_is_stored_per_user_and_changes_back(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """On, then off: one row per user, its update time moving; other users unaffected."""
    created = clock()
    assert await services.preferences.set_remix(ALICE, True) == MemberPreferences(ALICE, True)
    assert (await services.preferences.get(ALICE)).remix is True
    assert (await services.preferences.get(BOB)).remix is False

    later = clock.advance(minutes=5)
    await services.preferences.set_remix(ALICE, False)
    assert (await services.preferences.get(ALICE)).remix is False
    async with sessions() as session:
        rows = (await session.scalars(select(MemberSettings))).all()
    assert [(row.user_id, row.remix, row.created_at, row.updated_at) for row in rows] == [
        (ALICE, False, created, later)
    ]


async def test_concurrent_changes_leave_one_row(
    services: Services, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two changes at once (a double press): no duplicate-key error, one row, one answer."""
    await asyncio.gather(*(services.preferences.set_remix(BOB, True) for _ in range(4)))
    async with sessions() as session:
        rows = (await session.scalars(select(MemberSettings))).all()
    assert [(row.user_id, row.remix) for row in rows] == [(BOB, True)]
