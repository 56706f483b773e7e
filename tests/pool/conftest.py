"""Fixtures for the worker pool: a fresh PostgreSQL database per test, the tiny model, and
`imagine worker` subprocesses on the CPU.

The tiny model (`builtin:tiny-random`) has random weights: its images are noise; the tests
check shapes, seeds, events, fairness and bookkeeping, never what the images show.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from generation.pool.backend import PoolBackend
from generation.pool.settings import PoolConfig
from generation.request import Limits
from generation.tiny import TINY_MODEL_ID
from tests.generation.conftest import tiny_cache  # noqa: F401  (session fixture)
from tests.postgres import PostgresServer

#: Fast timings for tests: a worker silent for 3 s is dead.
HEARTBEAT = 0.5
STALLED_AFTER = 3.0


def libpq(server: PostgresServer, database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def pool_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database (the pool creates its own schema), as a libpq URL."""
    name = postgres_server.create_database()
    yield libpq(postgres_server, name)
    postgres_server.drop_database(name)


def pool_config(dsn: str, tmp_path: Path, **changes: object) -> PoolConfig:
    values: dict[str, object] = {
        "dsn": dsn,
        "heartbeat_seconds": HEARTBEAT,
        "stalled_after_seconds": STALLED_AFTER,
        "poll_seconds": 0.2,
        "results_dir": tmp_path / "results",
        "max_queued_per_user": 10,
        **changes,
    }
    return PoolConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
async def backend(pool_dsn: str, tmp_path: Path) -> AsyncIterator[PoolBackend]:
    """A started pool backend; its `limits` allow 200 steps (workers allow 100)."""
    pool = PoolBackend(
        pool_config(pool_dsn, tmp_path), TINY_MODEL_ID, limits=Limits(max_steps=200)
    )
    await pool.start()
    yield pool
    await pool.close(grace=5)


class NoModel:
    """An engine for workers that only claim (tests, the claim benchmark): never generates."""

    model_id = "builtin:tiny-random"

    def load(self) -> None: ...

    def close(self) -> None: ...

    def warmup(self, width: int, height: int):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")


class Workers:
    """`imagine worker` subprocesses on the tiny model; stopped (SIGTERM, then SIGKILL) at
    the end of the test."""

    def __init__(self, dsn: str, cache: Path, tmp_path: Path, **env: str) -> None:
        self.dsn = dsn
        self.cache = cache
        self.tmp_path = tmp_path
        self.extra_env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "IMAGINE_POOL__DSN": self.dsn,
            "IMAGINE_POOL__HEARTBEAT_SECONDS": str(HEARTBEAT),
            "IMAGINE_POOL__STALLED_AFTER_SECONDS": str(STALLED_AFTER),
            "IMAGINE_POOL__POLL_SECONDS": "0.2",
            "IMAGINE_POOL__RESULTS_DIR": str(self.tmp_path / "results"),
            "IMAGINE_MODEL__ID": TINY_MODEL_ID,
            "IMAGINE_MODEL__CACHE_DIR": str(self.cache),
            "IMAGINE_MODEL__DEVICE": "cpu",
            "IMAGINE_GENERATION__WARMUP": "false",
            "OMP_NUM_THREADS": "1",
            **self.extra_env,
        }
        log = open(self.tmp_path / f"worker-{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "worker"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.tmp_path.glob("worker-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(
    pool_dsn: str, tiny_cache: Path, tmp_path: Path  # noqa: F811
) -> Iterator[Workers]:
    started = Workers(pool_dsn, tiny_cache, tmp_path)
    yield started
    started.stop_all()


async def wait_for(
    condition: Callable[[], object], within: float = 60.0, what: str = "condition"
) -> None:
    """Poll `condition` every 50 ms until it is truthy; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)
