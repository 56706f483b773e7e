"""Building a `GenerationService` from plain configuration values.

Takes plain arguments (not the bot's Settings) so that `generation` never imports `bot`; the
caller maps its configuration onto these names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from generation.engine import DiffusersEngine
from generation.fastpath import FastPath
from generation.loading import ModelSpec, resolve_device
from generation.params import Limits
from generation.progress import Stages
from generation.queue_policy import FairQueuePolicy
from generation.service import GenerationService

if TYPE_CHECKING:
    from generation.pool.backend import PoolBackend
    from generation.pool.settings import PoolConfig


def build_pool_backend(config: PoolConfig, model_id: str, limits: Limits) -> PoolBackend:
    """The client of the GPU worker pool `config` describes (not started; needs the `pool`
    extra: procrastinate and psycopg are imported here, not before)."""
    from generation.pool.backend import PoolBackend

    return PoolBackend(config, model_id, limits=limits)


def build_service(
    model_id: str,
    variant: str | None = "fp16",
    device: str = "auto",
    safety_checker: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    inpaint_id: str | None = None,
    upscaler_id: str | None = None,
    captioner_id: str | None = None,
    vae_float32: bool = False,
    memory_budget_gb: float | None = None,
    upscale_tile: int = 768,
    upscale_overlap: int = 128,
    min_steps: int = 1,
    max_steps: int = 100,
    max_guidance: float = 30.0,
    max_pixels: int = 768 * 768,
    max_count: int = 4,
    max_queue: int = 100,
    max_queued_per_user: int = 3,
    max_batch_images: int = 8,
    batching: bool = True,
    warmup: bool = True,
    warmup_size: tuple[int, int] = (512, 512),
    continuous: bool = True,
    freeze_gc: bool = True,
    fast_path: str | FastPath = "auto",
    overlap_decode: bool | None = None,
    server_shares: Mapping[str, int] | None = None,
    warm_buckets: bool | None = None,
    stages: Stages | None = None,
) -> GenerationService:
    """A service (not started yet: `await service.start()` loads the model) for `model_id`.

    `max_batch_images=1` or `batching=False` runs every job in its own pipeline call.
    `continuous` runs txt2img jobs in the step-level batch (`generation.continuous`);
    `fast_path` is "auto" (the GPU fast path on for CUDA only), "on" or "off", or the
    switches themselves (`FastPath.configured`); `overlap_decode` overrides that choice for the
    decode overlap alone (None: keep it); `warm_buckets` compiles its batch buckets at
    start (default: `warmup`); `memory_budget_gb` and `upscale_tile`/`upscale_overlap`: see
    `ModelSpec`; `stages` shows loading, warm-up and compiling as they happen
    (`generation.progress.startup_stages`); `server_shares` gives servers more than one job per
    turn of the fair queue; `freeze_gc`: see `GenerationService`.
    """
    spec = ModelSpec(
        model_id=model_id,
        variant=variant or None,
        device=device,
        safety_checker=safety_checker,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        inpaint_id=inpaint_id,
        upscaler_id=upscaler_id,
        captioner_id=captioner_id,
        vae_float32=vae_float32,
        memory_budget_gb=memory_budget_gb,
        upscale_tile=upscale_tile,
        upscale_overlap=upscale_overlap,
    )
    limits = Limits(
        min_steps=min_steps,
        max_steps=max_steps,
        max_guidance=max_guidance,
        max_pixels=max_pixels,
        max_count=max_count,
    )
    policy = FairQueuePolicy(
        max_queue=max_queue,
        max_queued_per_user=max_queued_per_user,
        max_batch_images=max_batch_images,
        batching=batching,
        server_shares=server_shares,
    )
    fast = fast_path if isinstance(fast_path, FastPath) else FastPath.configured(
        None, fast_path=fast_path
    )
    if overlap_decode is not None:
        fast = dataclasses.replace(
            fast.on_device(resolve_device(device)), overlap_decode=overlap_decode
        )
    return GenerationService(
        DiffusersEngine(spec, fast, stages),
        policy,
        limits=limits,
        warmup=warmup,
        warmup_size=warmup_size,
        continuous=continuous,
        freeze_gc=freeze_gc,
        warm_buckets=warm_buckets,
    )
