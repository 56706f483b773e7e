"""Concurrent `imagine db upgrade` on PostgreSQL: the advisory lock makes them wait in turn.

Needs the PostgreSQL 15 server binaries, root (to run the server as `postgres`) and asyncpg;
skipped otherwise. The server is a throwaway on 127.0.0.1 in a temporary folder.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.db.guard import ADVISORY_LOCK_KEY
from tests.cli_helpers import clean_environ, run_imagine, start_imagine

PG_BIN = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.skipif(
    not (PG_BIN / "initdb").exists()
    or importlib.util.find_spec("asyncpg") is None
    or os.geteuid() != 0
    or shutil.which("runuser") is None,
    reason="needs PostgreSQL 15 binaries, root and asyncpg",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="imagine-lockpg-"))
    shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", _free_port()

    def as_postgres(*args: str) -> None:
        # No pipes: the server pg_ctl starts would hold them open and block the wait.
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    log = str(folder / "server.log")
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


async def _tables(url: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def _reset(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


def test_three_concurrent_upgrades_all_succeed(postgres_url: str, tmp_path: Path) -> None:
    asyncio.run(_reset(postgres_url))
    env = clean_environ(IMAGINE_DATABASE__URL=postgres_url)
    procs = [start_imagine(["-q", "db", "upgrade"], tmp_path, env) for _ in range(3)]
    results = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=180)
        results.append((proc.returncode, stderr))
    assert [code for code, _ in results] == [0, 0, 0], results
    assert "jobs" in asyncio.run(_tables(postgres_url))


def test_upgrade_waits_for_the_advisory_lock(postgres_url: str, tmp_path: Path) -> None:
    import asyncpg

    asyncio.run(_reset(postgres_url))
    env = clean_environ(IMAGINE_DATABASE__URL=postgres_url)

    async def scenario() -> None:
        holder = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await holder.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK_KEY})")
            proc = start_imagine(["-q", "db", "upgrade"], tmp_path, env)
            await asyncio.sleep(3)
            assert proc.poll() is None
            assert "jobs" not in await _tables(postgres_url)
            await holder.execute(f"SELECT pg_advisory_unlock({ADVISORY_LOCK_KEY})")
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=180)
            assert proc.returncode == 0, stderr
        finally:
            await holder.close()
        assert "jobs" in await _tables(postgres_url)

    asyncio.run(scenario())
    assert run_imagine(["-q", "db", "upgrade"], tmp_path, env).returncode == 0
