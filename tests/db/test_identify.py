"""IdentifyGate: one IDENTIFY per bucket per window, across gates that share only the database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from bot.db.identify import (
    FileIdentifyGate,
    IdentifyGate,
    LocalIdentifyGate,
    PostgresIdentifyGate,
    identify_gate_for,
)

SPACING = 0.6


@contextlib.asynccontextmanager
async def two_gates(database: str, db_url: str) -> AsyncIterator[tuple[IdentifyGate, ...]]:
    """Two gates as two bot processes would build them from the same database URL."""
    gates = identify_gate_for(db_url, SPACING), identify_gate_for(db_url, SPACING)
    expected = PostgresIdentifyGate if database.startswith("postgresql") else FileIdentifyGate
    assert all(isinstance(gate, expected) for gate in gates)
    try:
        yield gates
    finally:
        for gate in gates:
            await gate.close()


@pytest.mark.parametrize(("second_bucket", "waits"), [(0, True), (1, False)])
async def test_second_process_waits_for_the_window_of_its_bucket(
    database: str, db_url: str, second_bucket: int, waits: bool
) -> None:
    """Gate B's acquire in the bucket gate A just took returns only after A's window; in
    another bucket at once (max_concurrency IDENTIFYs may go out together)."""
    async with two_gates(database, db_url) as (a, b):
        start = time.monotonic()
        await a.acquire(0)
        await b.acquire(second_bucket)
        assert (time.monotonic() - start >= SPACING) is waits


async def test_close_releases_at_once(database: str, db_url: str) -> None:
    """A closed gate (a stopped process) holds nothing: the next process identifies at once."""
    async with two_gates(database, db_url) as (a, b):
        await a.acquire(0)
        await a.close()
        start = time.monotonic()
        await asyncio.wait_for(b.acquire(0), SPACING)
        assert time.monotonic() - start < SPACING


@pytest.mark.postgres_only
async def test_postgres_lock_is_released_when_the_process_dies(
    db_url: str, postgres_server: object
) -> None:
    """The advisory lock lives on its connection: a killed holder frees the bucket."""
    a = PostgresIdentifyGate(db_url, spacing=60)
    b = PostgresIdentifyGate(db_url, spacing=SPACING)
    try:
        await a.acquire(3)
        waiting = asyncio.create_task(b.acquire(3))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        # What the server sees when a process dies: its connection ends.
        await a._held[3].close()
        await asyncio.wait_for(waiting, 10)
    finally:
        await a.close()
        await b.close()


def test_in_memory_sqlite_gets_an_in_process_gate() -> None:
    """Only one process can use an in-memory database: an asyncio lock is enough."""
    assert isinstance(identify_gate_for("sqlite+aiosqlite://"), LocalIdentifyGate)


async def test_local_gate_spaces_acquires() -> None:
    gate = LocalIdentifyGate(SPACING)
    try:
        start = time.monotonic()
        await gate.acquire(0)
        await gate.acquire(0)
        assert time.monotonic() - start >= SPACING
    finally:
        await gate.close()
