"""build_services wires all services to one session factory and one clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import build_services
from bot.services.history import JobRecord
from generation.params import GenerationParams
from tests.db.fixtures import FakeClock

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver


async def test_build_services_shares_the_clock(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Times written by every service come from the injected clock."""
    clock = FakeClock(datetime(2030, 1, 7, 9, 0, tzinfo=UTC))
    services = build_services(sessions, default_limit=3, default_period="week", clock=clock)

    job_id = await services.history.create_job(JobRecord(1, 2, 3, GenerationParams("p"), "m"))
    await services.audit.log(1, 9, "x")
    status = await services.quota.status(1, 3, [])

    assert (await services.history.require(job_id)).created_at == clock.now
    assert (await services.audit.list(1)).items[0].created_at == clock.now
    assert (status.limit, status.resets_at) == (3, datetime(2030, 1, 14, tzinfo=UTC))
