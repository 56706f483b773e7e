"""Deferring a job inside the bot's own transaction: procrastinate's deferral, on the
connection that also reserves the quota and writes the job's history row.

procrastinate (3.10) supports this for psycopg: `configure_task(..., connection=conn)` runs its
`defer_jobs` query (`procrastinate_defer_jobs_v1` over `procrastinate_job_to_defer_v1` rows:
queue, task, priority, lock, queueing lock, JSON arguments, schedule) on the caller's psycopg
connection, and the caller commits. The bot's SQLAlchemy engine runs on psycopg or asyncpg:

- psycopg: the driver connection under SQLAlchemy's is handed to procrastinate as is, through
  the pool's own `App` and its `PsycopgConnector` (so its JSON encoding too);
- asyncpg: procrastinate has no asyncpg connector, so `AsyncpgConnector` below is one, for
  this single use. procrastinate's `JobManager` still builds the job (`JobToDefer`) and the
  query; the connector only turns `%(name)s` placeholders into `$n`, encodes the arguments
  with `json.dumps` (what psycopg's `Jsonb`, hence `PsycopgConnector`, uses by default) and
  maps a queueing-lock violation to procrastinate's `UniqueViolation`, as its psycopg
  connector does.

Either way the row is the one `defer_async` makes; it becomes visible (and procrastinate's
insert trigger NOTIFYs) only when the bot's transaction commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from procrastinate import App, exceptions, manager
from procrastinate.connector import BaseAsyncConnector

from generation.errors import GenerationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["AsyncpgConnector", "TransactionDeferrer", "database_identity", "driver_connection"]

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_LOCK_DETAIL = re.compile(r"Key \((.*?)\)=\((.*?)\)")

#: Which server and database a connection reaches: the pool's must be the bot's, or jobs
#: would be deferred where no worker looks.
IDENTITY_SQL = (
    "SELECT current_database()::text, extract(epoch FROM pg_postmaster_start_time())::text"
)


class AsyncpgConnector(BaseAsyncConnector):
    """A procrastinate connector that only runs queries on a caller's asyncpg connection
    (`execute_query_*_async_with_connection`); it has no pool of its own and cannot listen.
    """

    def __init__(self, json_dumps: Callable[[Any], str] = json.dumps) -> None:
        self.json_dumps = json_dumps

    async def open_async(self, pool: object = None) -> None:
        """Nothing to open: every query runs on the connection it is given."""

    async def close_async(self) -> None:
        """Nothing to close."""

    def _encode(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.json_dumps(value)
        if isinstance(value, list):
            return [self._encode(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._encode(item) for item in value)
        return value

    def _numbered(self, query: str, arguments: dict[str, Any]) -> tuple[str, list[Any]]:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        text = _PLACEHOLDER.sub(number, query).replace("%%", "%")
        return text, [self._encode(arguments[name]) for name in names]

    async def execute_query_all_async_with_connection(
        self, connection: Any, query: str, **arguments: Any
    ) -> list[dict[str, Any]]:
        import asyncpg

        text, values = self._numbered(query, arguments)
        try:
            rows = await connection.fetch(text, *values)
        except asyncpg.UniqueViolationError as exc:
            constraint = exc.constraint_name
            lock = None
            if constraint == manager.QUEUEING_LOCK_CONSTRAINT:
                match = _LOCK_DETAIL.search(exc.detail or "")
                lock = match[2] if match else None
            raise exceptions.UniqueViolation(
                constraint_name=constraint, queueing_lock=lock
            ) from exc
        except asyncpg.PostgresError as exc:
            raise exceptions.ConnectorException(str(exc)) from exc
        return [dict(row) for row in rows]

    async def execute_query_one_async_with_connection(
        self, connection: Any, query: str, **arguments: Any
    ) -> dict[str, Any]:
        rows = await self.execute_query_all_async_with_connection(
            connection, query, **arguments
        )
        if not rows:
            raise exceptions.NoResult
        return rows[0]


async def database_identity(connection: AsyncConnection) -> tuple[str, str]:
    """(database name, server start time) of the database `connection` reaches.

    Run through SQLAlchemy, so its driver adapter has begun the transaction (SQLAlchemy's
    asyncpg adapter sends BEGIN lazily, at its first statement). Raises `GenerationError`
    when the bot's database is not PostgreSQL.
    """
    if connection.dialect.name != "postgresql":
        raise GenerationError(
            "The worker pool needs the bot's database on PostgreSQL (database.url), so that "
            "a job is queued in the same transaction as its quota reservation."
        )
    row = (await connection.exec_driver_sql(IDENTITY_SQL)).one()
    return (str(row[0]), str(row[1]))


async def driver_connection(connection: AsyncConnection) -> Any:
    """The psycopg or asyncpg connection under SQLAlchemy's `connection`, checked to be
    inside its transaction (a statement outside one would commit on its own).

    Raises `GenerationError` when no transaction is open on it.
    """
    driver = (await connection.get_raw_connection()).driver_connection
    if isinstance(driver, psycopg.AsyncConnection):
        idle = driver.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
    else:
        is_in_transaction = getattr(driver, "is_in_transaction", None)
        idle = is_in_transaction is not None and not is_in_transaction()
    if idle:
        raise GenerationError(
            "A pool job can only be queued inside the transaction that reserves its quota: "
            "the connection has none open."
        )
    return driver


class TransactionDeferrer:
    """Defers one task name into one queue on the caller's connection, inside its open
    transaction (see the module docstring). `app` is the pool's psycopg `App`; the asyncpg
    one is made on first use."""

    def __init__(self, app: App, task: str, queue: str) -> None:
        self._app = app
        self._asyncpg_app: App | None = None
        self._task = task
        self._queue = queue

    def _app_for(self, driver: Any) -> App:
        if isinstance(driver, psycopg.AsyncConnection):
            return self._app
        if type(driver).__module__.split(".")[0] == "asyncpg":
            if self._asyncpg_app is None:
                self._asyncpg_app = App(connector=AsyncpgConnector())
            return self._asyncpg_app
        raise GenerationError(
            f"Cannot queue a pool job through a {type(driver).__name__} connection: use the "
            "asyncpg or psycopg driver (postgresql+asyncpg:// or postgresql+psycopg://)."
        )

    async def defer(
        self, connection: AsyncConnection, queueing_lock: str, args: dict[str, Any]
    ) -> int:
        """Defer the task with `args` (JSON values) on `connection`; the caller commits.
        Returns procrastinate's job id.

        Raises procrastinate's `AlreadyEnqueued` when a job with `queueing_lock` still waits,
        its `ConnectorException` on a database error, `GenerationError` when the connection is
        not a PostgreSQL one through psycopg or asyncpg.
        """
        driver = await driver_connection(connection)
        deferrer = self._app_for(driver).configure_task(
            self._task, queue=self._queue, queueing_lock=queueing_lock, connection=driver
        )
        return await deferrer.defer_async(**args)
