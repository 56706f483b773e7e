import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import Services, build_services
from tests.db.fixtures import FakeClock, clock, db_url, engine, migrated_template, sessions

__all__ = ["clock", "db_url", "engine", "migrated_template", "services", "sessions"]


@pytest.fixture
def services(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> Services:
    return build_services(sessions, default_limit=20, default_period="day", clock=clock)
