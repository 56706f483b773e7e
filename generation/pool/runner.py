"""Running one worker process until SIGINT/SIGTERM (the body of `imagine worker`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from generation.engine import DiffusersEngine
from generation.errors import GenerationError
from generation.fastpath import FastPath
from generation.loading import ModelSpec, resolve_device
from generation.params import Limits
from generation.pool.settings import PoolConfig
from generation.pool.worker import PoolWorker
from generation.progress import Stages

log = logging.getLogger(__name__)


def describe_device(name: str) -> tuple[str, str]:
    """(device, accelerator name) for `/info`: e.g. ("cuda:0", "NVIDIA H200"), ("cpu", "cpu")."""
    device = resolve_device(name)
    if device.type == "cuda":
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}", torch.cuda.get_device_name(index)
    return str(device), device.type


async def serve_worker(
    spec: ModelSpec,
    config: PoolConfig,
    limits: Limits,
    *,
    warmup: bool = True,
    fast: FastPath | None = None,
    stages: Stages | None = None,
) -> None:
    """Load the model and serve the pool until SIGINT/SIGTERM, finishing the running batch.

    `fast`: the GPU fast path (default: on for CUDA only); `stages`: the start-up display."""
    device, gpu = describe_device(spec.device)
    worker = PoolWorker(
        DiffusersEngine(spec, fast, stages),
        config,
        device=device,
        gpu=gpu,
        limits=limits,
        warmup=warmup,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def run_worker(
    config: PoolConfig,
    limits: Limits,
    *,
    model_id: str,
    variant: str | None,
    device: str,
    safety_checker: bool,
    cache_dir: str | os.PathLike[str] | None,
    warmup: bool = True,
    fast: FastPath | None = None,
    stages: Stages | None = None,
) -> int:
    """`serve_worker` for the model described by plain values, in a fresh event loop; returns
    the process exit code (1: model or database unusable, with one line saying why)."""
    import psycopg

    spec = ModelSpec(
        model_id=model_id,
        variant=variant or None,
        device=device,
        safety_checker=safety_checker,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
    )

    try:
        asyncio.run(serve_worker(spec, config, limits, warmup=warmup, fast=fast, stages=stages))
    except GenerationError as exc:
        log.error("cannot load the model %r: %s", spec.model_id, exc)
        return 1
    except psycopg.OperationalError as exc:
        log.error("cannot reach the pool's database: %s", exc)
        return 1
    return 0
