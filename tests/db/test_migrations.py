"""Migrations: up, down, up again; the models and the migrations describe the same schema."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.models import Base
from bot.db.session import alembic_config, create_engine, current_revision, downgrade, upgrade
from tests.db.fixtures import sqlite_url

REPO = Path(__file__).resolve().parents[2]
TABLES = {table.name for table in Base.metadata.sorted_tables}


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    """An empty database goes to head, back to base, and to head again."""
    url = empty_db_url

    await upgrade(url)
    assert TABLES <= await _tables(url)
    assert await current_revision(url) == _head()

    await downgrade(url, "base")
    assert not TABLES & await _tables(url)
    assert await current_revision(url) is None

    await upgrade(url, "head")
    assert TABLES <= await _tables(url)
    assert await current_revision(url) == _head()


async def test_models_match_migrations(engine: AsyncEngine) -> None:
    """After upgrade to head, autogenerate finds nothing to add, drop or alter."""

    def diff(sync_conn):  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_upgrade_keeps_application_logging(tmp_path: Path) -> None:
    """Running migrations neither replaces root handlers nor disables existing loggers."""
    existing = logging.getLogger("imagine.test.existing")
    root_handlers = list(logging.getLogger().handlers)

    await upgrade(sqlite_url(tmp_path / "log.db"))

    assert logging.getLogger().handlers == root_handlers
    assert not existing.disabled


@pytest.mark.sqlite_only
async def test_upgrade_creates_parent_directory(tmp_path: Path) -> None:
    """A database path in a directory that does not exist yet works."""
    path = tmp_path / "data" / "nested" / "imagine.db"
    await upgrade(sqlite_url(path))
    assert TABLES <= _sqlite_tables(path)


def test_cli_db_upgrade_creates_tables(empty_db_url: str) -> None:
    """`python -m bot.cli db upgrade` migrates the database named by IMAGINE_DATABASE__URL."""
    env = {**os.environ, "IMAGINE_DATABASE__URL": empty_db_url}
    result = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "upgrade"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert TABLES <= asyncio.run(_tables(empty_db_url))
    assert "upgraded to head" in result.stdout


def test_migrations_render_postgresql_ddl() -> None:
    """Offline (--sql) the migrations render PostgreSQL DDL: BIGINT ids, timestamptz, BIGSERIAL."""
    out = io.StringIO()
    config = alembic_config("postgresql://user@localhost/imagine")
    config.output_buffer = out
    command.upgrade(config, "head", sql=True)
    command.downgrade(config, f"{_head()}:base", sql=True)
    ddl = out.getvalue()
    assert "CREATE TABLE jobs" in ddl and "DROP TABLE jobs" in ddl
    assert "guild_id BIGINT NOT NULL" in ddl
    assert "created_at TIMESTAMP WITH TIME ZONE NOT NULL" in ddl
    assert "id BIGSERIAL NOT NULL" in ddl
    assert "prompt TEXT NOT NULL" in ddl
