"""Engines, sessions and migrations, usable from inside a running event loop.

The bot migrates at start-up inside `setup_hook`, where `asyncio.run` is not allowed, so
Alembic runs on an async engine's connection through `run_sync`. Alembic is configured in
code (no alembic.ini at runtime, no `fileConfig` that would replace the app's logging);
the migration scripts are the installed `migrations` package.

PostgreSQL: `postgresql+asyncpg://` (the `postgres` extra) or `postgresql+psycopg://`; a
bare `postgresql://` picks whichever of the two is installed. Before migrating, `upgrade`
checks that the database folds case the way history search needs (UTF-8 encoding and a
UTF-8 LC_CTYPE) and refuses with `UnsupportedDatabase` and the fix otherwise.

SQLite transactions: the driver's default (legacy) mode opens a transaction at the first
INSERT/UPDATE/DELETE, not at a SELECT. The services rely on that: their transactions start
with a write, so a writer waits for the lock (busy_timeout) instead of failing with
SQLITE_BUSY on a stale read snapshot, and atomicity comes from conditional UPDATEs.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000

#: Async drivers per database, in order of preference for a URL that names none.
ASYNC_DRIVERS = {"postgresql": ("asyncpg", "psycopg"), "sqlite": ("aiosqlite",)}
#: Text whose lower() shows whether the database folds non-ASCII capitals.
_FOLD_PROBE = ("ÀÉÎÕÜ ÇŒ Ω", "àéîõü çœ ω")


class UnsupportedDatabase(Exception):
    """The database URL or the database itself cannot work; the message says how to fix it."""


def async_url(url: str | URL) -> URL:
    """`url` with an installed async driver: `postgresql://` becomes `postgresql+asyncpg://`
    (or `+psycopg` if only psycopg is installed), `sqlite://` becomes `sqlite+aiosqlite://`.

    Raises UnsupportedDatabase, naming what to install, when the driver is missing.
    """
    url = make_url(url)
    backend = url.get_backend_name()
    if backend == "postgres":  # the old spelling (Heroku and others still hand it out)
        url = url.set(drivername="postgresql" + url.drivername.removeprefix("postgres"))
        backend = "postgresql"
    choices = ASYNC_DRIVERS.get(backend)
    if choices is None:
        return url
    driver = url.get_driver_name() if "+" in url.drivername else None
    if driver is None:
        installed = [name for name in choices if _installed(name)]
        driver = installed[0] if installed else choices[0]
        url = url.set(drivername=f"{backend}+{driver}")
    if not _installed(driver):
        hint = (
            "pip install 'imagine-bot[postgres]'" if backend == "postgresql"
            else f"pip install {driver}"
        )
        raise UnsupportedDatabase(
            f"the {backend} driver {driver!r} is not installed: {hint}"
        )
    return url


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def create_engine(url: str | URL, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; SQLite connections get WAL, foreign keys and a busy timeout.

    For a SQLite file, the parent directory is created, so a fresh deployment's
    `data/imagine.db` just works. Raises UnsupportedDatabase if the driver is missing.
    """
    url = async_url(url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, **kwargs)
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Open the file once here, synchronously: when aiosqlite fails to open it, its worker
        # thread reports to an event loop that `asyncio.run` may have closed, printing a
        # thread traceback after the error. This raises sqlite3's error alone instead.
        sqlite3.connect(path).close()
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (services return plain data)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def open_database(url: str | URL) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """Migrate the database to head, then return an engine and a session factory.

    The caller owns the engine and must `await engine.dispose()` on shutdown.
    """
    await upgrade(url)
    engine = create_engine(url)
    return engine, session_factory(engine)


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Check the database is usable (see `check_database`), then apply migrations up to
    `revision`; concurrent calls wait for each other (see `bot.db.guard.migration_lock`).
    Raises UnsupportedDatabase before touching an unsuitable database."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await check_database(conn)
    finally:
        await engine.dispose()
    await _run_alembic(url, lambda config: command.upgrade(config, revision))


async def check_database(conn: AsyncConnection) -> None:
    """Refuse a PostgreSQL database whose lower() does not fold non-ASCII capitals.

    History search matches case-insensitively with lower(), which follows the database's
    encoding and LC_CTYPE: under SQL_ASCII or LC_CTYPE 'C', 'ÉCLAIR' would not match
    'éclair'. SQLite needs no check (the connect hook installs a Unicode lower()).
    """
    if conn.dialect.name != "postgresql":
        return
    name, encoding, ctype = (
        await conn.exec_driver_sql(
            "SELECT current_database(), pg_encoding_to_char(encoding), datctype "
            "FROM pg_database WHERE datname = current_database()"
        )
    ).one()
    upper, lower = _FOLD_PROBE
    if encoding == "UTF8":
        folded = (await conn.exec_driver_sql(f"SELECT lower('{upper}')")).scalar()
        if folded == lower:
            return
    raise UnsupportedDatabase(
        f"the PostgreSQL database {name!r} has encoding {encoding} and LC_CTYPE {ctype!r}, "
        f"so lower() does not fold accented capitals and history search would miss them. "
        f"Create it with UTF-8 and a UTF-8 locale, e.g. "
        f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' "
        f"TEMPLATE template0 (or initdb --encoding UTF8 --locale C.UTF-8)"
    )


async def downgrade(url: str | URL, revision: str = "base") -> None:
    """Revert migrations down to `revision`."""
    await _run_alembic(url, lambda config: command.downgrade(config, revision))


async def current_revision(url: str | URL) -> str | None:
    """The revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def migrations_dir() -> Path:
    """The directory of the installed `migrations` package (Alembic's script_location)."""
    import migrations

    return Path(migrations.__file__).resolve().parent


def alembic_config(url: str | URL | None = None, connection: Connection | None = None) -> Config:
    """An Alembic Config built in code; pass `connection` to run on it (see env.py).

    With only `url`, Alembic's own commands (e.g. `command.revision(cfg, autogenerate=True)`)
    work from a development checkout.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        rendered = make_url(url).render_as_string(hide_password=False)
        # ConfigParser interpolation: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def _run_alembic(url: str | URL, action: Callable[[Config], None]) -> None:
    from bot.db.guard import sqlite_file_lock

    async with sqlite_file_lock(sqlite_file(make_url(url))):
        await _migrate(url, action)


async def _migrate(url: str | URL, action: Callable[[Config], None]) -> None:
    from bot.db.guard import migration_lock

    engine = create_engine(url)
    try:
        async with engine.connect() as conn, migration_lock(url, conn):
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations recreate tables; with foreign keys on, dropping the old
                # copy would cascade. The pragma only takes effect outside a transaction.
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.run_sync(lambda sync: action(alembic_config(url, connection=sync)))
            await conn.commit()
            if sqlite:
                await _check_foreign_keys(conn)
    finally:
        await engine.dispose()


async def _check_foreign_keys(conn: AsyncConnection) -> None:
    result = await conn.exec_driver_sql("PRAGMA foreign_key_check")
    problems = result.fetchall()
    if problems:
        raise RuntimeError(f"foreign key violations after migration: {problems[:10]}")


def sqlite_file(url: URL) -> Path | None:
    """The SQLite file a URL names; None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
    # SQLite's lower() folds ASCII only; history text search uses lower() (via ILIKE's
    # SQLite rendering), so make it fold Unicode like PostgreSQL does.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
