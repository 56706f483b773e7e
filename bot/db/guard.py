"""Keeping database commands safe and their failures readable.

- `check_url`: a database URL the bot can use (parsable, an asyncio driver, the driver
  installed), checked before anything connects; `DatabaseSetupError` says what to write.
- `sqlite_file_lock` / `migration_lock`: concurrent migrations (three bots or `imagine db
  upgrade`s starting at once) wait for each other: an exclusive file lock next to a SQLite file
  (taken before connecting), a PostgreSQL advisory lock on the migrating connection.
- `backup_sqlite`: a consistent copy of a SQLite file (SQLite's online backup, WAL included),
  taken before any downgrade.
- `explain`: one line for what went wrong, for the operator (no traceback).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: migrations are not serialised there
    fcntl = None  # type: ignore[assignment]

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "DatabaseSetupError",
    "backup_sqlite",
    "check_url",
    "explain",
    "migration_lock",
    "redact_url",
    "sqlite_file_lock",
    "sqlite_lock",
]

#: The asyncio driver to suggest for a backend given with a synchronous one.
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
}
#: Packages providing the drivers, when their import name differs or an extra exists.
_DRIVER_PACKAGES = {"asyncpg": "asyncpg", "aiosqlite": "aiosqlite", "psycopg": "psycopg[binary]"}
#: Seconds between two tries of a SQLite migration lock held by another process.
LOCK_POLL_SECONDS = 0.1
#: Key of the PostgreSQL advisory lock held while migrating ("imagine" in ASCII).
ADVISORY_LOCK_KEY = 0x696D6167696E65

_EXAMPLES = "sqlite+aiosqlite:///data/imagine.db or postgresql+asyncpg://user:password@host/db"


class DatabaseSetupError(Exception):
    """`database.url` cannot work as written; the message says what to write instead."""


def check_url(url: str | URL) -> URL:
    """Parse `url` and check its driver is an installed asyncio driver; raises
    `DatabaseSetupError` with the fix."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseSetupError(
            f"database.url {str(url)!r} is not a database URL; write it like {_EXAMPLES}"
        ) from None
    if parsed.get_backend_name() in ("postgresql", "postgres") and "+" not in parsed.drivername:
        # A bare PostgreSQL URL takes whichever async driver is installed, as the session
        # layer does (`bot.db.session.async_url`) and the README promises.
        from bot.db.session import UnsupportedDatabase, async_url

        try:
            parsed = async_url(parsed)
        except UnsupportedDatabase as exc:
            raise DatabaseSetupError(str(exc)) from None
    try:
        # The async flavour: `postgresql+psycopg` names psycopg 3, which SQLAlchemy runs
        # asynchronously under an async engine.
        dialect = parsed.get_dialect(_is_async=True)
    except NoSuchModuleError:
        raise DatabaseSetupError(
            f"database.url names an unknown database or driver {parsed.drivername!r}; "
            f"use sqlite+aiosqlite or postgresql+asyncpg"
        ) from None
    if not getattr(dialect, "is_async", False):
        backend = parsed.get_backend_name()
        suggestion = ASYNC_DRIVERS.get(backend)
        fix = (
            f": write {parsed.set(drivername=suggestion).render_as_string(hide_password=True)}"
            if suggestion
            else f"; use an asyncio driver, e.g. {_EXAMPLES}"
        )
        raise DatabaseSetupError(
            f"database.url uses the synchronous driver {parsed.drivername!r}, "
            f"but the bot needs an asyncio driver{fix}"
        )
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (exc.name or parsed.get_driver_name()).split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module)
        raise DatabaseSetupError(
            f"the database driver {module!r} for {parsed.drivername} is not installed: "
            f"pip install {package!r}"
        ) from None
    return parsed


def _lock_path(db_file: Path) -> Path:
    """The lock file beside `db_file` (created with its folder if missing).

    A separate file, not the database: SQLite's own locks are per transaction, and a migration
    run spans several.
    """
    lock_path = db_file.with_name(db_file.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return lock_path


@contextlib.contextmanager
def sqlite_lock(db_file: Path) -> Iterator[object]:
    """Hold the migration lock of `db_file`, blocking until other holders finish (for scripts
    and tests; the bot waits with `sqlite_file_lock`). Without `fcntl` (Windows): no lock."""
    if fcntl is None:  # pragma: no cover - Windows
        yield None
        return
    with _lock_path(db_file).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.asynccontextmanager
async def migration_lock(url: str | URL, conn: AsyncConnection) -> AsyncIterator[None]:
    """Serialise migrations on `conn`'s database: an advisory lock on PostgreSQL (held by
    `conn`), nothing else (SQLite files are locked before connecting, `sqlite_file_lock`)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    await conn.exec_driver_sql(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
    await conn.commit()
    try:
        yield
    finally:
        await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})")
        await conn.commit()


@contextlib.asynccontextmanager
async def sqlite_file_lock(db_file: Path | None) -> AsyncIterator[None]:
    """`sqlite_lock` for the event loop: it polls (every `LOCK_POLL_SECONDS`) instead of
    blocking, so the loop stays free and no thread is needed. None: no lock."""
    if db_file is None or fcntl is None:
        yield
        return
    with _lock_path(db_file).open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def backup_sqlite(db_file: Path, now: dt.datetime | None = None) -> Path | None:
    """Copy `db_file` to ``<name>.<UTC timestamp>.bak`` beside it; None when there is no file.

    Uses SQLite's online backup, so the copy is consistent even with a WAL and other readers.
    """
    if not db_file.is_file():
        return None
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    target = db_file.with_name(f"{db_file.name}.{stamp}.bak")
    number = 2
    while target.exists():  # two downgrades within a second keep both backups
        target = db_file.with_name(f"{db_file.name}.{stamp}-{number}.bak")
        number += 1
    # A percent-encoded URI: a '#', '?' or '%' in the path would otherwise end or change
    # the file name (an empty "backup" of another file, or none).
    source = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return target


def explain(exc: BaseException, url: str | URL) -> str:
    """One line saying what failed and what to do, for an error from a database command."""
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import DBAPIError, OperationalError

    from bot.db.session import UnsupportedDatabase

    shown = redact_url(url)
    text = _first_line(exc)
    if isinstance(exc, UnsupportedDatabase):  # already says what to do
        return str(exc)
    if isinstance(exc, CommandError):
        if "Can't locate revision" in text or "No such revision" in text:
            return f"{text}; known revisions: {', '.join(_known_revisions())} (or head, base)"
        return f"migration refused: {text}"
    if not _is_sqlite(url) and isinstance(exc, OSError | OperationalError):
        # A server database: refused or unreachable connections, not a folder to fix.
        return (
            f"cannot connect to the database at {shown}: {_reason(exc)}; check that the "
            "server is running and reachable and that database.url is right"
        )
    if isinstance(exc, OSError) or (
        isinstance(exc, OperationalError | sqlite3.OperationalError)
        and any(s in text for s in ("unable to open", "readonly", "read-only"))
    ):
        return (
            f"cannot write the database at {shown}: {_reason(exc)}; make its folder writable "
            "or point database.url somewhere writable"
        )
    if isinstance(exc, DBAPIError):
        return f"cannot use the database at {shown}: {_reason(exc)}"
    return f"database command failed on {shown}: {type(exc).__name__}: {text}"


def _is_sqlite(url: str | URL) -> bool:
    try:
        return make_url(url).get_backend_name() == "sqlite"
    except ArgumentError:
        return False


def _known_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from bot.db.session import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    return sorted(rev.revision for rev in script.walk_revisions())


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return _first_line(orig)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact_url(url: str | URL) -> str:
    """`url` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"
