"""Fixtures: the built-in tiny random-weight model, built once per session into a temp folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.queue_policy import FairQueuePolicy
from generation.request import GenerationRequest
from generation.service import GenerationService
from generation.tiny import TINY_MODEL_ID, ensure_tiny_model
from tests.requests import make_request

#: Small and few steps: the tiny model's cost is mostly pixels, and tests only need shapes,
#: seeds and ordering.
SMALL = {"width": 64, "height": 64, "steps": 3}


def small_request(prompt: str = "a red fox", **overrides: Any) -> GenerationRequest:
    """A cheap request for the tiny model (64x64, 3 steps, 2 images, seed 1)."""
    return make_request(prompt, **{**SMALL, "count": 2, "seed": 1, **overrides})


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache root holding `builtin:tiny-random`, built once for the whole session."""
    root = tmp_path_factory.mktemp("imagine-cache")
    ensure_tiny_model(root)
    return root


@pytest.fixture(scope="session")
def tiny_spec(tiny_cache: Path) -> ModelSpec:
    return ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache)


@pytest.fixture(scope="session")
def engine(tiny_spec: ModelSpec) -> Iterator[DiffusersEngine]:
    """One loaded engine shared by the engine tests (used from one thread at a time)."""
    loaded = DiffusersEngine(tiny_spec)
    loaded.load()
    yield loaded
    loaded.close()


def make_service(spec: ModelSpec, **policy: int) -> GenerationService:
    """A service on its own freshly loaded tiny engine (loading from the cache is ~0.1 s)."""
    return GenerationService(
        DiffusersEngine(spec),
        FairQueuePolicy(**policy),  # type: ignore[arg-type]
        warmup=True,
        warmup_size=(64, 64),
    )


@pytest.fixture
async def service(tiny_spec: ModelSpec) -> AsyncIterator[GenerationService]:
    """A started service, batching off (one job per pipeline call)."""
    svc = make_service(tiny_spec, max_batch_images=1, max_queued_per_user=10)
    await svc.start()
    yield svc
    await svc.close()
