"""Fixtures for the bot's Discord-free parts: real tiny model, real migrated SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.core.image_store import ImageStore
from bot.core.jobs import JobOrchestrator
from bot.core.threads import Threads
from bot.services import Services, build_services
from generation.engine import DiffusersEngine
from generation.errors import OutOfMemoryError
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.request import GenerationRequest
from generation.service import GenerationService
from generation.tiny import TINY_MODEL_ID, ensure_tiny_model
from tests.db.fixtures import clock, db_url, engine, migrated_template, sessions
from tests.generation.engines import PassThroughEngine
from tests.requests import make_request

__all__ = ["clock", "db_url", "engine", "migrated_template", "sessions"]


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache root holding `builtin:tiny-random`, built once for the whole session."""
    root = tmp_path_factory.mktemp("imagine-cache")
    ensure_tiny_model(root)
    return root


class FlaggingEngine(PassThroughEngine):
    """The real tiny engine, with the safety checker's verdict forced (NSFW policy tests)."""

    def __init__(self, inner: DiffusersEngine, flagged: Sequence[int]) -> None:
        super().__init__(inner)
        self.flagged = set(flagged)  # 1-based image indexes to flag

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        results = self.inner.generate(requests, on_step, should_stop)
        return [
            replace(r, nsfw=[i in self.flagged for i in range(1, len(r.images) + 1)])
            for r in results
        ]


class FailingEngine(FlaggingEngine):
    """The real tiny engine that runs out of memory on every job (failure-path tests)."""

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        raise OutOfMemoryError("The GPU ran out of memory for this job; try fewer images.")


def tiny_service(cache: Path, wrap=None) -> GenerationService:  # type: ignore[no-untyped-def]
    engine = DiffusersEngine(ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=cache))
    return GenerationService(
        wrap(engine) if wrap else engine,
        FairQueuePolicy(max_batch_images=1, max_queued_per_user=3),
        warmup=False,
    )


def small(prompt: str = "a red fox", **overrides: Any) -> GenerationRequest:
    """A cheap request for the tiny model."""
    return make_request(prompt, **{"width": 64, "height": 64, "steps": 2, "count": 2, **overrides})


@pytest.fixture
def services(sessions, clock) -> Services:  # type: ignore[no-untyped-def]
    return build_services(sessions, default_limit=10, clock=clock)


@pytest.fixture
def threads() -> Iterator[Threads]:
    pool = Threads()
    yield pool
    pool.close()


@pytest.fixture
def image_store(tmp_path: Path, threads: Threads) -> ImageStore:
    return ImageStore(tmp_path / "images", threads)


@pytest.fixture
def engine_wrapper():  # type: ignore[no-untyped-def]
    """Override in a test module (or parametrize indirectly) to wrap the engine."""
    return None


@pytest.fixture
async def generation(tiny_cache: Path, engine_wrapper) -> AsyncIterator[GenerationService]:  # type: ignore[no-untyped-def]
    service = tiny_service(tiny_cache, engine_wrapper)
    await service.start()
    yield service
    await service.close()


@pytest.fixture
def orchestrator(services, generation, image_store) -> JobOrchestrator:  # type: ignore[no-untyped-def]
    return JobOrchestrator(services, generation, image_store)
