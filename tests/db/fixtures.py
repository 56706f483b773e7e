"""Database fixtures shared by tests/db, tests/services, tests/bot and the e2e tests.

Every test that uses `db_url` runs twice, once per database (`database` is parametrised
in tests/conftest.py; `@pytest.mark.sqlite_only` or `postgres_only` narrows it):
- SQLite: its own file created through the real migrations: the migrations run once per
  session into a template file, which each test copies (a copy is ~1 ms, an upgrade
  ~100 ms);
- PostgreSQL: its own database cloned from a migrated template (`pg_url`, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.session import create_engine, session_factory, upgrade
from tests.postgres import PostgresServer


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class FakeClock:
    """A settable clock for the services: call it for now, `advance` or `set` to move."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return self.now


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(upgrade(sqlite_url(path)))
    return path


@pytest.fixture
def db_url(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to head, of the kind `database` names, for this test alone."""
    if database.startswith("postgresql"):
        url = make_url(request.getfixturevalue("pg_url"))
        if "+" in database:  # another driver than the default asyncpg
            url = url.set(drivername=database)
        return url.render_as_string(hide_password=False)
    migrated_template: Path = request.getfixturevalue("migrated_template")
    path = tmp_path / "imagine.db"
    shutil.copyfile(migrated_template, path)
    return sqlite_url(path)


@pytest.fixture
def empty_db_url(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet (migrations not applied), for this test alone."""
    if database.startswith("postgresql"):
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = server.create_database()
        yield server.url(name, driver=database.partition("+")[2] or "asyncpg")
        server.drop_database(name)
    else:
        yield sqlite_url(tmp_path / "new" / "imagine.db")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def clock() -> FakeClock:
    # A Wednesday afternoon, so day and week boundaries differ.
    return FakeClock(datetime(2026, 3, 11, 15, 30, tzinfo=UTC))
