"""Fixtures shared by every test folder: the throwaway PostgreSQL server.

`postgres_server` (session) starts one PostgreSQL cluster for the whole run (see
tests/postgres.py); `pg_url` (function) is an asyncpg URL of a fresh database cloned from
the template migrated to head, dropped after the test.

Without PostgreSQL binaries the PostgreSQL tests are skipped with a message saying what to
install, except in CI (`CI=true`), where a missing PostgreSQL fails them: CI must test both.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator

import pytest

from tests.postgres import PostgresServer, PostgresUnavailable, app_template, find_bin_dir


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One running PostgreSQL server for the session, stopped (and deleted) at the end."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = (
            "PostgreSQL binaries not found (looked in $IMAGINE_PG_BINDIR, "
            "/usr/lib/postgresql/*/bin and PATH); install the Debian package `postgresql` "
            "to run the PostgreSQL tests"
        )
        if in_ci():
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    _exit_cleanly_on_sigterm()
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except PostgresUnavailable as exc:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def _exit_cleanly_on_sigterm() -> None:
    """A run stopped by SIGTERM (`timeout`, CI cancelling) still stops the server: exit
    through SystemExit, so atexit (which PostgresServer.start registered) runs."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database migrated to head (cloned from the template), as an asyncpg URL."""
    name = postgres_server.clone(app_template(postgres_server))
    yield postgres_server.url(name)
    postgres_server.drop_database(name, wait=False)


#: The databases every test using `database` (through `db_url`) runs against: SQLite and
#: PostgreSQL through asyncpg (the `postgres` extra's driver).
DATABASES = ("sqlite", "postgresql")
#: Tests marked `every_driver` also run on PostgreSQL through psycopg 3, whose rowcount for
#: `INSERT ... ON CONFLICT DO NOTHING` SQLAlchemy only reports when asked to preserve it.
PSYCOPG = "postgresql+psycopg"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that depends on `database` once per database, unless it is marked."""
    if "database" not in metafunc.fixturenames:
        return
    marks = {mark.name for mark in metafunc.definition.iter_markers()}
    databases = list(DATABASES)
    if "sqlite_only" in marks:
        databases = ["sqlite"]
    elif "postgres_only" in marks:
        databases = ["postgresql"]
    if "every_driver" in marks and "sqlite_only" not in marks:
        databases.append(PSYCOPG)
    metafunc.parametrize("database", databases)
