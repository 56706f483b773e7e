"""INSERT ... ON CONFLICT for the two dialects we run on.

SQLAlchemy has no generic upsert; SQLite and PostgreSQL share the same syntax through
their dialect-specific `insert()` constructs, so this picks one by dialect name.

The services read `rowcount` to learn whether a row went in (a reservation, a charge, a
refund happens once). SQLAlchemy only guarantees rowcount for UPDATE and DELETE: for an
INSERT, psycopg 3 reports -1 unless the statement asks to preserve it, so every statement
built here does (`preserve_rowcount=True`; asyncpg and aiosqlite report it either way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


def _insert(session: AsyncSession, model: type[DeclarativeBase]) -> Any:
    # The Table, not the ORM class: a Core statement reports an honest rowcount.
    table = model.__table__
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert(table).execution_options(preserve_rowcount=True)
    if name == "postgresql":
        return postgresql.insert(table).execution_options(preserve_rowcount=True)
    raise NotImplementedError(f"unsupported database dialect {name!r} (sqlite, postgresql)")


def insert_ignore(
    session: AsyncSession,
    model: type[DeclarativeBase],
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING`: rowcount tells whether a row was inserted."""
    return _insert(session, model).values(values).on_conflict_do_nothing()


def upsert(
    session: AsyncSession,
    model: type[DeclarativeBase],
    values: Mapping[str, Any],
    key: Sequence[str],
    update: Sequence[str],
) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE SET` the `update` columns from `values`."""
    stmt = _insert(session, model).values(dict(values))
    return stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: stmt.excluded[name] for name in update}
    )
