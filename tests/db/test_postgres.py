"""PostgreSQL specifics: driver selection from the URL and the start-up locale check."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from bot.db import session as db_session
from bot.db.session import UnsupportedDatabase, async_url, create_engine, open_database, upgrade
from tests.postgres import PostgresServer


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/imagine", "postgresql+asyncpg://u:p@db:5432/imagine"),
        ("postgres://u@db/imagine", "postgresql+asyncpg://u@db/imagine"),
        ("postgresql+psycopg://u@db/imagine", "postgresql+psycopg://u@db/imagine"),
        ("sqlite:///data/imagine.db", "sqlite+aiosqlite:///data/imagine.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_async_url_picks_an_installed_async_driver(given: str, expected: str) -> None:
    """A URL without a driver gets asyncpg (PostgreSQL) or aiosqlite; an explicit one stays."""
    assert async_url(given).render_as_string(hide_password=False) == expected


def test_bare_postgresql_url_falls_back_to_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only psycopg installed, `postgresql://` uses it."""
    monkeypatch.setattr(db_session, "_installed", lambda module: module == "psycopg")
    assert async_url("postgresql://db/imagine").drivername == "postgresql+psycopg"


def test_missing_postgresql_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """No asyncpg and no psycopg: a message naming the extra, not a ModuleNotFoundError."""
    monkeypatch.setattr(db_session, "_installed", lambda module: False)
    with pytest.raises(UnsupportedDatabase, match=r"pip install 'imagine-bot\[postgres\]'"):
        create_engine("postgresql://db/imagine")


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ("LC_CTYPE 'C' LC_COLLATE 'C'", "LC_CTYPE 'C'"),
        ("ENCODING 'SQL_ASCII' LC_CTYPE 'C' LC_COLLATE 'C'", "encoding SQL_ASCII"),
    ],
)
async def test_database_that_cannot_fold_case_is_refused_before_migrating(
    postgres_server: PostgresServer, options: str, shown: str
) -> None:
    """A database whose lower() leaves 'É' alone is refused with the fix, and left untouched."""
    name = postgres_server.create_database(options=options)
    url = postgres_server.url(name)
    try:
        with pytest.raises(UnsupportedDatabase) as caught:
            await open_database(url)
        message = str(caught.value)
        assert shown in message
        assert "history search" in message
        assert "LC_CTYPE 'C.UTF-8'" in message and "TEMPLATE template0" in message
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                assert await conn.run_sync(lambda sync: inspect(sync).get_table_names()) == []
        finally:
            await engine.dispose()
    finally:
        postgres_server.drop_database(name)


async def test_utf8_database_is_accepted(postgres_server: PostgresServer) -> None:
    """The recommended C.UTF-8 database passes the check and migrates."""
    name = postgres_server.create_database(
        options="ENCODING 'UTF8' LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8'"
    )
    try:
        await upgrade(postgres_server.url(name, driver="psycopg"))
    finally:
        postgres_server.drop_database(name)
