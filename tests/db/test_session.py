"""Engines and sessions: SQLite pragmas, 64-bit ids, aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.models import Guild, JobKind, JobStatus, StoredJob
from bot.db.session import SQLITE_BUSY_TIMEOUT_MS, open_database
from generation.params import PARAM_FIELDS, GenerationParams

BIG = 2**63 - 1


def _job(guild_id: int, created_at: datetime) -> StoredJob:
    return StoredJob(
        id="a" * 32,
        guild_id=guild_id,
        channel_id=BIG - 1,
        user_id=BIG - 2,
        params=GenerationParams("p", scheduler="ddim", seed=2**63 - 5),
        model_id="builtin:tiny-random",
        created_at=created_at,
    )


@pytest.mark.sqlite_only
async def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(
    engine: AsyncEngine,
) -> None:
    """Every pooled SQLite connection is configured by the connect hook."""
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
        assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
        timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert timeout == SQLITE_BUSY_TIMEOUT_MS


async def test_lower_folds_unicode(engine: AsyncEngine) -> None:
    """lower() folds non-ASCII letters (used by case-insensitive search): on SQLite through
    the connect hook, on PostgreSQL through the database's UTF-8 locale."""
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT lower('ÉCLAIR Ü')"))).scalar() == "éclair ü"


async def test_foreign_keys_are_enforced(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A job for a guild that does not exist is refused (foreign_keys=ON)."""
    async with sessions() as session:
        session.add(_job(12345, datetime.now(UTC)))
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            await session.commit()


async def test_64_bit_ids_round_trip(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Snowflake-sized ids (up to 2**63-1) come back unchanged."""
    now = datetime.now(UTC)
    async with sessions() as session:
        session.add(Guild(id=BIG, admin_role_id=BIG - 3, created_at=now, updated_at=now))
        session.add(_job(BIG, now))
        await session.commit()
    async with sessions() as session:
        job = (await session.scalars(select(StoredJob))).one()
        guild = await session.get(Guild, BIG)
    assert (job.guild_id, job.channel_id, job.user_id, job.seed) == (
        BIG,
        BIG - 1,
        BIG - 2,
        2**63 - 5,
    )
    assert guild is not None and guild.admin_role_id == BIG - 3
    assert job.kind is JobKind.TXT2IMG and job.status is JobStatus.QUEUED


async def test_aware_datetimes_round_trip_as_utc(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A datetime in any zone is stored as UTC and loaded aware, equal to the original."""
    ist = timezone(timedelta(hours=5, minutes=30))
    moment = datetime(2026, 3, 1, 2, 15, 30, 123456, tzinfo=ist)
    async with sessions() as session:
        session.add(Guild(id=1, created_at=moment, updated_at=moment))
        await session.commit()
    async with sessions() as session:
        guild = await session.get(Guild, 1)
        found = await session.scalar(select(Guild.id).where(Guild.created_at == moment))
    assert guild is not None
    assert guild.created_at == moment
    assert guild.created_at.tzinfo is UTC
    assert guild.created_at.hour == 20  # 02:15 at +05:30 is 20:45 UTC the day before
    assert found == 1


async def test_naive_datetimes_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A naive datetime never reaches the database (PostgreSQL would misread it)."""
    naive = datetime(2026, 3, 1, 12, 0)
    async with sessions() as session:
        session.add(Guild(id=1, created_at=naive, updated_at=naive))
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()


async def test_open_database_migrates_and_returns_sessions(empty_db_url: str) -> None:
    """open_database upgrades a new database to head and hands back a working session factory."""
    engine, sessions = await open_database(empty_db_url)
    try:
        async with sessions() as session:
            assert (await session.scalars(select(Guild))).all() == []
    finally:
        await engine.dispose()


async def test_generation_params_round_trip_through_their_columns(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Every `GenerationParams` field has its own column and comes back unchanged."""
    columns = set(StoredJob.__table__.columns.keys())
    assert set(PARAM_FIELDS) <= columns
    params = GenerationParams(
        "a fox", "blur", steps=7, guidance=3.5, width=320, height=448, count=2,
        scheduler="euler_a", seed=11, strength=0.4,
    )  # fmt: skip
    now = datetime.now(UTC)
    async with sessions() as session:
        session.add(Guild(id=1, created_at=now, updated_at=now))
        job = _job(1, now)
        job.params = params
        session.add(job)
        await session.commit()
    async with sessions() as session:
        stored = (await session.scalars(select(StoredJob))).one()
    assert stored.params == params
    assert (stored.prompt, stored.strength) == ("a fox", 0.4)


def test_sqlite_file_names_only_sqlite_files(tmp_path: Path) -> None:
    """Only a SQLite URL names a file (and so a migration lock file beside it); a PostgreSQL
    database name is no path, so nothing is created in the current folder."""
    from sqlalchemy.engine import make_url

    from bot.db.session import sqlite_file

    assert sqlite_file(make_url(f"sqlite+aiosqlite:///{tmp_path}/x.db")) == tmp_path / "x.db"
    assert sqlite_file(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert sqlite_file(make_url("postgresql+asyncpg://u@127.0.0.1/imagine")) is None


def test_a_sqlite_file_that_cannot_be_opened_fails_before_any_driver_thread(
    tmp_path: Path,
) -> None:
    """The file is opened synchronously when the engine is made, so the error comes alone:
    aiosqlite, failing to open it, would report from its worker thread to an event loop that
    `asyncio.run` may already have closed (a thread traceback after the error line)."""
    import sqlite3

    from bot.db.session import create_engine

    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "imagine.db").mkdir()  # a folder where the file should be: never openable
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        create_engine(f"sqlite+aiosqlite:///{folder / 'imagine.db'}")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'fine.db'}")
    assert (tmp_path / "fine.db").is_file()
    assert engine.url.get_backend_name() == "sqlite"


@pytest.mark.parametrize("folder", ["plain", "with#hash", "with?mark", "with%20percent", "spa ce"])
def test_sqlite_backup_copies_the_file_whatever_its_folder_is_called(
    tmp_path: Path, folder: str
) -> None:
    """The backup taken before a downgrade holds the database, also under a folder whose name
    has URI characters (it was an empty file, or an error, for '#', '?' and '%'); a second
    backup within the same second does not replace the first."""
    import sqlite3

    from bot.db.guard import backup_sqlite

    db_file = tmp_path / folder / "imagine.db"
    db_file.parent.mkdir()
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TABLE kept (x)")
    now = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    first = backup_sqlite(db_file, now)
    with sqlite3.connect(db_file) as conn:
        conn.execute("CREATE TABLE later (x)")
    second = backup_sqlite(db_file, now)
    assert first is not None and second is not None and first != second
    for backup, tables in ((first, [("kept",)]), (second, [("kept",), ("later",)])):
        with sqlite3.connect(backup) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
        assert rows == tables, backup
