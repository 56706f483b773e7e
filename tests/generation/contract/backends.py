"""The backends the contract suite runs against, and the test engines it drives them with.

To add a backend (for example the worker pool of a later issue), write one factory with the
`BackendFactory` signature and add it to `BACKENDS`: that one line runs the whole suite on it.
A factory gets the engine the suite wants (the tiny random-weight model, possibly wrapped to
fail, block or be slow) and the queue options, and yields a started backend that runs its jobs
on that engine; it closes the backend on the way out. A remote backend runs its workers
in-process for the test, each on the engine it is given.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import pytest

from generation.errors import GenerationError
from generation.interfaces import Engine, GenerationBackend
from generation.params import Limits
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService
from tests.generation.engines import PassThroughEngine


@dataclass(frozen=True)
class QueueOptions:
    """What the suite sets on every backend: the queue's limits and the request limits."""

    max_queue: int = 10
    max_queued_per_user: int = 10
    limits: Limits = field(default_factory=lambda: Limits(max_steps=50))


BackendFactory = Callable[[Engine, QueueOptions], AbstractAsyncContextManager[GenerationBackend]]


@asynccontextmanager
async def in_process(engine: Engine, options: QueueOptions) -> AsyncIterator[GenerationBackend]:
    """`GenerationService`: one worker thread in this process, no cross-member batching."""
    policy = FairQueuePolicy(
        max_queue=options.max_queue,
        max_queued_per_user=options.max_queued_per_user,
        max_batch_images=1,
    )
    service = GenerationService(engine, policy, limits=options.limits, warmup=False)
    await service.start()
    try:
        yield service
    finally:
        await service.close()


_SERVER: list[object] = []


def _postgres_server():  # -> tests.postgres.PostgresServer
    """One throwaway PostgreSQL for the pool's contract runs (started on first use, stopped at
    exit by `PostgresServer` itself); skipped without PostgreSQL binaries."""
    from tests.postgres import PostgresServer, find_bin_dir

    if not _SERVER:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL binaries not found: the pool needs PostgreSQL")
        _SERVER.append(PostgresServer(bin_dir).start())
    return _SERVER[0]


@asynccontextmanager
async def worker_pool(engine: Engine, options: QueueOptions) -> AsyncIterator[GenerationBackend]:
    """`PoolBackend` on a fresh PostgreSQL database with one `PoolWorker` running in this
    process on `engine` (the same claim, abort and heartbeat code as `imagine worker`); no
    cross-member batching, as `in_process` (tests/pool/ covers the pool's batching)."""
    import asyncio
    import tempfile
    from pathlib import Path

    from generation.pool.backend import PoolBackend
    from generation.pool.settings import PoolConfig
    from generation.pool.worker import PoolWorker

    server = _postgres_server()
    name = server.create_database()
    with tempfile.TemporaryDirectory() as results:
        config = PoolConfig(
            dsn=f"postgresql://postgres@127.0.0.1:{server.port}/{name}",
            heartbeat_seconds=0.5,
            stalled_after_seconds=5.0,
            poll_seconds=0.1,
            results_dir=Path(results),
            max_queue=options.max_queue,
            max_queued_per_user=options.max_queued_per_user,
            max_batch_images=1,  # like `in_process`: jobs start one by one
        )
        backend = PoolBackend(config, engine.model_id, limits=options.limits)
        worker = PoolWorker(engine, config, limits=options.limits)
        await backend.start()
        running = asyncio.create_task(worker.run())
        try:
            yield backend
        finally:
            await backend.close()
            worker.stop()
            await running
            server.drop_database(name)


#: Every backend the contract suite runs against; add one line per new backend.
BACKENDS = [
    pytest.param(in_process, id="in-process"),
    pytest.param(worker_pool, id="worker-pool", marks=pytest.mark.pool),
]


class FailingEngine(PassThroughEngine):
    """Loads and closes like the real engine; every generation raises `error`."""

    def __init__(self, inner: Engine, error: Exception) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self.error = error

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        raise self.error


class GatedEngine(PassThroughEngine):
    """The real engine, but each generation first waits for `gate` (so jobs stay queued
    behind it for as long as a test needs); `entered` is set once a generation waits."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        if not self.gate.wait(timeout=60):
            raise GenerationError("the test never opened the gate")
        return super().generate(requests, on_step, should_stop)
