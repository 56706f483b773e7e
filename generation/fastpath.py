"""The GPU fast path: channels_last, fused QKV projections, compiled UNet/VAE per batch bucket.

Each part is a switch; `FastPath.for_device` turns them all on for CUDA and all off elsewhere
(on CPU they cost compile time and gain little, and the equality tests must run the plain
modules). Measured on an H200 (shared/notes/performance.md): channels_last + fused QKV +
`torch.compile` took the UNet from 35% to 48% of peak at batch 32, but every new batch shape
recompiles (87-122 s each), hence fixed *buckets*: a step batch of R UNet rows runs padded to the
smallest bucket >= R, and each bucket is compiled once at start. Inductor's FX graph cache
(`torch._inductor.config.fx_graph_cache`, on by default in torch >= 2.4) keeps compiled graphs on
disk between starts, so only the first start pays the full compile.

All of it uses diffusers' and torch's own switches (`fuse_qkv_projections`,
`memory_format=torch.channels_last`, `torch.compile`); nothing here re-implements a kernel.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from generation.loading import LoadedModel

log = logging.getLogger(__name__)

#: UNet row buckets (a CFG image is 2 rows): 1, 2, 4 and 8 images, then 12 and 16.
DEFAULT_BUCKETS: tuple[int, ...] = (2, 4, 8, 16, 24, 32)


@dataclass(frozen=True)
class FastPath:
    """Which speed-ups to apply to a loaded model (see module doc)."""

    channels_last: bool = False
    fuse_qkv: bool = False
    compile: bool = False
    #: Also compile the VAE decoder. Off by default: decodes run at every finished-image count,
    #: and past 8 shapes torch.compile falls back to eager anyway.
    compile_vae: bool = False
    #: UNet row counts to pad a step batch to; () = run every batch at its own size.
    buckets: tuple[int, ...] = ()
    compile_mode: str = "default"

    @classmethod
    def for_device(cls, device: torch.device | str) -> FastPath:
        """Everything on for CUDA, everything off elsewhere."""
        if torch.device(device).type == "cuda":
            return cls(channels_last=True, fuse_qkv=True, compile=True, buckets=DEFAULT_BUCKETS)
        return cls()

    def bucket(self, rows: int) -> int:
        """The row count to run `rows` UNet rows at (the smallest bucket that holds them)."""
        if not self.buckets:
            return rows
        index = bisect.bisect_left(self.buckets, rows)
        return self.buckets[index] if index < len(self.buckets) else rows

    def apply(self, model: LoadedModel) -> None:
        """Apply the switches to `model`'s shared components (both pipelines see them)."""
        pipe = model.txt2img
        if self.fuse_qkv:
            try:
                pipe.fuse_qkv_projections()
            except Exception as exc:  # e.g. attention processors that cannot be fused
                log.warning("fused QKV projections not applied: %s", exc)
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile:
            try:
                import torch._inductor.config as inductor_config

                inductor_config.fx_graph_cache = True
            except (ImportError, AttributeError):  # pragma: no cover - older torch
                pass
            # dynamic=False: one graph per bucket, never a slower dynamic-shape graph.
            pipe.unet = torch.compile(pipe.unet, mode=self.compile_mode, dynamic=False)
            if self.compile_vae:
                pipe.vae.decoder = torch.compile(
                    pipe.vae.decoder, mode=self.compile_mode, dynamic=False
                )
            model.img2img.unet = pipe.unet
