"""The GPU fast path: channels_last, fused QKV projections, compiled UNet/VAE per batch bucket.

Each part is a switch; `FastPath.for_device` turns them all on for CUDA and all off elsewhere
(on CPU they cost compile time and gain little, and the equality tests must run the plain
modules). Measured on an H200 (shared/notes/performance.md): channels_last + fused QKV +
`torch.compile` took the UNet from 35% to 48% of peak at batch 32, but every new batch shape
recompiles (87-122 s each), hence fixed *buckets*: a step batch of R UNet rows runs padded to the
smallest bucket >= R, and each bucket is compiled once at start (`DiffusersEngine.warm_buckets`,
one progress step per bucket). Inductor's FX graph cache (`torch._inductor.config.fx_graph_cache`,
on by default in torch >= 2.4) keeps compiled graphs on disk between starts, so only the first
start pays the full compile. Its folder is inductor's documented ``TORCHINDUCTOR_CACHE_DIR``;
inductor's own default is under /tmp, which a reboot or a service manager's private /tmp
(systemd's ``PrivateTmp=``) empties, so `compile_cache_dir` puts it under the project's cache
(``~/.cache/imagine/inductor``) unless the operator chose a folder (the ``cache_dir`` field, or
the variable itself).

All of it uses diffusers' and torch's own switches (`fuse_qkv_projections`,
`memory_format=torch.channels_last`, `torch.compile`); nothing here re-implements a kernel.
"""

from __future__ import annotations

import bisect
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from generation.tiny import default_cache_root

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
    #: Also compile the VAE decoder (only with `compile`). Off by default: decodes run at every
    #: finished-image count, and past 8 shapes torch.compile falls back to eager anyway.
    compile_vae: bool = False
    #: UNet row counts to pad a step batch to; () = run every batch at its own size.
    buckets: tuple[int, ...] = ()
    compile_mode: str = "default"
    #: Inductor's on-disk cache folder (None: ``$TORCHINDUCTOR_CACHE_DIR`` when set, else
    #: ``~/.cache/imagine/inductor``): see `compile_cache_dir`.
    cache_dir: Path | None = None
    #: Apply only on CUDA (the "auto" setting): `on_device` turns everything off elsewhere.
    cuda_only: bool = False
    #: Decode finished jobs (VAE, NaN/black checks, safety checker) on a decoder thread, on
    #: its own CUDA stream, while the step batch goes on (`generation.continuous`). Off on
    #: CPU: on 2 shared cores it gained nothing per CPU-second and delayed the first grid
    #: (`imagine bench --overlap-decode`, README).
    overlap_decode: bool = False

    @classmethod
    def for_device(cls, device: torch.device | str) -> FastPath:
        """Everything on for CUDA, everything off elsewhere."""
        if torch.device(device).type == "cuda":
            return cls(
                channels_last=True,
                fuse_qkv=True,
                compile=True,
                buckets=DEFAULT_BUCKETS,
                overlap_decode=True,
            )
        return cls()

    @classmethod
    def configured(cls, settings: object, **given: object) -> FastPath:
        """The switches an operator set: `given` values, else same-named attributes of
        `settings` (the bot's `[generation]` section), else these defaults.

        Keys: `fast_path` ("auto": on for CUDA only, the default; "on"; "off"),
        `fast_channels_last`, `fast_fuse_qkv`, `fast_compile_unet`, `fast_compile_vae`,
        `fast_buckets` (UNet row counts), `fast_overlap_decode` and `compile_cache_dir`.
        Raises ValueError for an unknown `fast_path`.
        """
        values = {
            "fast_path": "auto",
            "fast_channels_last": True,
            "fast_fuse_qkv": True,
            "fast_compile_unet": True,
            "fast_compile_vae": False,
            "fast_buckets": DEFAULT_BUCKETS,
            "fast_overlap_decode": True,
            "compile_cache_dir": None,
        }
        for key, default in values.items():
            value = given.get(key)
            values[key] = value if value is not None else getattr(settings, key, default)
        choice = values["fast_path"]
        if choice == "off":
            return cls()
        if choice not in ("auto", "on"):
            raise ValueError(f"fast_path must be auto, on or off, got {choice!r}")
        cache_dir = values["compile_cache_dir"]
        return cls(
            channels_last=bool(values["fast_channels_last"]),
            fuse_qkv=bool(values["fast_fuse_qkv"]),
            compile=bool(values["fast_compile_unet"]),
            compile_vae=bool(values["fast_compile_vae"]),
            buckets=tuple(sorted({int(rows) for rows in values["fast_buckets"]})),  # type: ignore[attr-defined]
            cache_dir=Path(str(cache_dir)) if cache_dir is not None else None,
            cuda_only=choice == "auto",
            overlap_decode=bool(values["fast_overlap_decode"]),
        )

    def on_device(self, device: torch.device | str) -> FastPath:
        """These switches for `device`: all off when `cuda_only` and `device` is not CUDA."""
        if self.cuda_only and torch.device(device).type != "cuda":
            return FastPath()
        return replace(self, cuda_only=False)

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of the switches that are on, for logs and the start-up display."""
        named = {
            "channels_last": self.channels_last,
            "fused_qkv": self.fuse_qkv,
            "compiled_unet": self.compile,
            "compiled_vae": self.compile and self.compile_vae,
            "overlapped_decode": self.overlap_decode,
        }
        return tuple(name for name, on in named.items() if on)

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
            compile_cache_dir(self.cache_dir)
            try:
                import torch._inductor.config as inductor_config

                inductor_config.fx_graph_cache = True
            except (ImportError, AttributeError):  # pragma: no cover - older torch
                pass
            # dynamic=False: one graph per bucket, never a slower dynamic-shape graph.
            pipe.unet = torch.compile(pipe.unet, mode=self.compile_mode, dynamic=False)
            if self.compile_vae:  # the VAE is not bucketed: compiled at its first shapes
                pipe.vae.decoder = torch.compile(
                    pipe.vae.decoder, mode=self.compile_mode, dynamic=False
                )
            model.img2img.unet = pipe.unet


def compile_cache_dir(configured: Path | None = None) -> Path:
    """Point inductor's on-disk caches (FX graphs, AOT autograd, Triton kernels) at a folder
    that survives restarts, and return it.

    `configured` wins; else an operator's ``TORCHINDUCTOR_CACHE_DIR`` is kept; else
    ``~/.cache/imagine/inductor`` (``$XDG_CACHE_HOME`` honoured). Inductor reads the variable
    each time it opens its cache (`torch._inductor.runtime.cache_dir_utils.cache_dir`), so
    setting it before the first compile is enough; it is this process's only setting of it.
    """
    if configured is not None:
        folder = Path(configured).expanduser()
    elif os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).expanduser()
    else:
        folder = default_cache_root() / "inductor"
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return folder
