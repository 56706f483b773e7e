"""Spacing gateway IDENTIFYs across bot processes: Discord's session start rate limit.

Discord accepts `max_concurrency` IDENTIFYs per 5 seconds, one per rate-limit bucket
(`shard_id % max_concurrency`); a faster one is answered with INVALID_SESSION. discord.py
spaces the shards of one process (its default `before_identify_hook` sleeps 5 s), but
processes started together (a sharded deployment) know nothing of each other.

An `IdentifyGate` is what they share: `acquire(bucket)` returns when this process may
IDENTIFY in that bucket and keeps the bucket closed to everyone for `IDENTIFY_SPACING_S`
afterwards (the IDENTIFY goes out right after `acquire` returns). Which gate follows from
the database URL, because every bot process of one deployment shares its database:

- PostgreSQL: a session advisory lock per bucket (`pg_advisory_lock`), held on its own
  connection; works across machines, and a process that dies releases it with its
  connection.
- SQLite file: an exclusive `flock` on a lock file next to the database file; works across
  processes on the one machine that can share a SQLite file.
- SQLite in memory: an in-process lock (there is only one process).

Closing a gate releases what it holds at once: a bot restarted within 5 s of its last
IDENTIFY may be answered INVALID_SESSION once, after which discord.py waits and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from bot.db.session import create_engine, sqlite_file

log = logging.getLogger(__name__)

#: Discord's window is 5 s; the margin covers the time between `acquire` and the IDENTIFY
#: frame reaching Discord.
IDENTIFY_SPACING_S = 5.5
#: First key of the two-key advisory locks: "imag" in ASCII, so no other application's
#: advisory locks on the same database collide with ours.
ADVISORY_NAMESPACE = 0x696D6167
_POLL_S = 0.1


class IdentifyGate(ABC):
    """Lets one IDENTIFY per bucket through per `spacing` seconds, across processes."""

    def __init__(self, spacing: float = IDENTIFY_SPACING_S) -> None:
        self.spacing = spacing
        # What each bucket's lock holds (one at a time: the lock excludes this gate too),
        # and the tasks that release them after the window.
        self._held: dict[int, Any] = {}
        self._releases: set[asyncio.Task[None]] = set()

    async def acquire(self, bucket: int) -> None:
        """Wait until this process may IDENTIFY in `bucket`; the bucket then stays closed to
        every process for `spacing` seconds. Raises what the lock backend raises."""
        self._held[bucket] = await self._lock(bucket)
        task = asyncio.create_task(self._release_later(bucket), name=f"identify-{bucket}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def close(self) -> None:
        """Release every bucket still held (see the module docstring) and free resources."""
        for task in list(self._releases):
            task.cancel()
        for task in list(self._releases):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for bucket in list(self._held):
            await self._release(bucket)
        await self._dispose()

    async def _release_later(self, bucket: int) -> None:
        await asyncio.sleep(self.spacing)
        await self._release(bucket)

    async def _release(self, bucket: int) -> None:
        held = self._held.pop(bucket, None)
        if held is None:
            return
        try:
            await self._unlock(bucket, held)
        except Exception:
            log.exception("could not release the IDENTIFY lock of bucket %d", bucket)

    @abstractmethod
    async def _lock(self, bucket: int) -> Any:
        """Take the bucket's lock; returns what `_unlock` needs."""

    @abstractmethod
    async def _unlock(self, bucket: int, held: Any) -> None:
        """Release what `_lock` took."""

    async def _dispose(self) -> None:  # noqa: B027 (optional hook, nothing to free by default)
        """Free the gate's own resources (after every bucket was released)."""


class PostgresIdentifyGate(IdentifyGate):
    """A PostgreSQL session advisory lock per bucket, each on its own connection."""

    def __init__(self, url: str | URL, spacing: float = IDENTIFY_SPACING_S) -> None:
        super().__init__(spacing)
        # No pool: a lock lives exactly as long as its connection.
        self._engine: AsyncEngine = create_engine(url, poolclass=NullPool)

    async def _lock(self, bucket: int) -> AsyncConnection:
        conn = await self._engine.connect()
        try:
            await conn.execute(
                text("SELECT pg_advisory_lock(:namespace, :bucket)"),
                {"namespace": ADVISORY_NAMESPACE, "bucket": bucket},
            )
            await conn.commit()  # the lock is the session's; do not idle in a transaction
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _unlock(self, bucket: int, held: AsyncConnection) -> None:
        try:
            await held.execute(
                text("SELECT pg_advisory_unlock(:namespace, :bucket)"),
                {"namespace": ADVISORY_NAMESPACE, "bucket": bucket},
            )
            await held.commit()
        finally:
            await held.close()

    async def _dispose(self) -> None:
        await self._engine.dispose()


class FileIdentifyGate(IdentifyGate):
    """An exclusive `flock` per bucket on `<prefix>.identify-<bucket>.lock`."""

    def __init__(self, prefix: Path, spacing: float = IDENTIFY_SPACING_S) -> None:
        super().__init__(spacing)
        self.prefix = prefix

    def path(self, bucket: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.identify-{bucket}.lock")

    async def _lock(self, bucket: int) -> int:
        path = self.path(bucket)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    await asyncio.sleep(_POLL_S)  # flock has no async form; poll
        except BaseException:
            os.close(fd)
            raise

    async def _unlock(self, bucket: int, held: int) -> None:
        try:
            fcntl.flock(held, fcntl.LOCK_UN)
        finally:
            os.close(held)


class LocalIdentifyGate(IdentifyGate):
    """An asyncio lock per bucket: spacing within this one process only."""

    def __init__(self, spacing: float = IDENTIFY_SPACING_S) -> None:
        super().__init__(spacing)
        self._locks: dict[int, asyncio.Lock] = {}

    async def _lock(self, bucket: int) -> asyncio.Lock:
        lock = self._locks.setdefault(bucket, asyncio.Lock())
        await lock.acquire()
        return lock

    async def _unlock(self, bucket: int, held: asyncio.Lock) -> None:
        held.release()


def identify_gate_for(url: str | URL, spacing: float = IDENTIFY_SPACING_S) -> IdentifyGate:
    """The gate every bot process sharing the database at `url` agrees on (see the module)."""
    parsed = make_url(url)
    if parsed.get_backend_name() in {"postgresql", "postgres"}:
        return PostgresIdentifyGate(parsed, spacing)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is not None:
            return FileIdentifyGate(path.resolve(), spacing)
    return LocalIdentifyGate(spacing)
