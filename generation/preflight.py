"""Checks that need neither torch nor diffusers, run before either is imported (seconds saved
on every mistake), and the one message that says how to get a model.

- `check_device`: a device name that cannot work here (a typo, CUDA with a CPU-only torch or no
  NVIDIA/AMD driver, MPS off macOS).
- `check_model_available`: with ``HF_HUB_OFFLINE=1``, a Hub model that is not in the cache; a
  local folder that is not a diffusers model.
- `download_command`: the `hf download` line fetching only the files the bot loads.
- `unwritable_folder`: why a folder cannot be written (created if missing), for output folders.

Each returns None when all is well, else one line naming the setting and the fix.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import tempfile
from pathlib import Path

from generation.tiny import TINY_MODEL_ID

__all__ = [
    "DEVICES_HELP",
    "check_device",
    "check_model_available",
    "download_command",
    "hub_offline",
    "unwritable_folder",
]

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
#: owner/name as the Hub allows them: neither part starts or ends with '.' or '-', and no
#: '..' or '--' (so "./model" and "../x" are paths, never sent to the Hub as ids).
_HUB_PART = r"(?![.-])(?!.*(?:\.\.|--))[\w.-]+(?<![.-])"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")
#: Files that show a GPU driver is present (NVIDIA, WSL's GPU bridge, AMD ROCm).
_GPU_DRIVER_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg", "/dev/kfd")


def hub_offline() -> bool:
    """Whether huggingface_hub is told not to use the network (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def unwritable_folder(folder: Path) -> str | None:
    """Create `folder` if missing and write a scratch file there: None if that works, else
    the reason (e.g. "Permission denied"), so a run fails before its work, not after."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_device(name: str) -> str | None:
    """None if `name` may work here, else why not (without importing torch)."""
    device = name.strip().lower()
    if not _DEVICE.fullmatch(device):
        return f"model.device = {name!r} is not a device; use {DEVICES_HELP}"
    if device.startswith("cuda"):
        torch_version = _torch_version()
        if torch_version is not None and "+cpu" in torch_version:
            return (
                f"model.device = {name!r}, but the installed torch {torch_version} is a "
                'CPU-only build; set device = "cpu" (or "auto"), or install a CUDA build of torch'
            )
        if sys.platform.startswith("linux") and not any(
            os.path.exists(path) for path in _GPU_DRIVER_FILES
        ):
            return (
                f"model.device = {name!r}, but this machine has no GPU driver loaded; "
                'set device = "cpu" (or "auto")'
            )
    if device == "mps" and sys.platform != "darwin":
        return f'model.device = "mps" works on macOS only; use {DEVICES_HELP}'
    return None


def check_model_available(
    model_id: str,
    variant: str | None = "fp16",
    cache_dir: str | os.PathLike[str] | None = None,
    marker: str = "model_index.json",
) -> str | None:
    """None if `model_id` may load, else why not and what to run: checked without the network
    (only what is certain: an offline Hub model missing from the cache, a bad local folder).

    `marker` is the file every model of its kind has: ``model_index.json`` for a diffusers
    pipeline, ``config.json`` for a transformers model (the /describe captioner)."""
    if model_id == TINY_MODEL_ID:
        return None
    path = Path(model_id).expanduser()
    library = "diffusers" if marker == "model_index.json" else "transformers"
    if path.is_dir():
        if not (path / marker).is_file():
            return (
                f"model {model_id!r} is a folder with no {marker}, so not a {library} "
                f"model; fill it with: {download_command('<hub id>', variant, path, marker)}"
            )
        return None
    if not _HUB_ID.fullmatch(model_id):
        return (
            f"model.id {model_id!r} is neither a local model folder nor a Hub id like "
            "stable-diffusion-v1-5/stable-diffusion-v1-5; to make that folder run "
            f"`{download_command('<hub id>', variant, path, marker)}`"
        )
    if not hub_offline():
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(
        model_id, marker, cache_dir=str(cache_dir) if cache_dir else None
    )
    if not isinstance(cached, str):
        return model_problem(model_id, "offline", variant, marker)
    return None


def model_problem(
    model_id: str, reason: str, variant: str | None = "fp16", marker: str = "model_index.json"
) -> str:
    """The one message for a model that cannot load: which, why, and the command that fixes it.

    `reason`: "offline" (not cached, HF_HUB_OFFLINE set), "not found" (no such repository, or
    private), "gated" (licence not accepted / not logged in), "no variant" (no `variant`
    weights), or any other text (shown as it is).
    """
    command = download_command(model_id, variant, marker=marker)
    if reason == "offline":
        return (
            f"model {model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
            f"forbids downloading it: run `{command}` with network access (or unset "
            "HF_HUB_OFFLINE)"
        )
    if reason == "not found":
        return (
            f"model {model_id!r} does not exist on the Hugging Face Hub (or is private: then "
            "run `hf auth login`); check model.id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
        )
    if reason == "gated":
        return (
            f"model {model_id!r} is gated: accept its licence on "
            f"https://huggingface.co/{model_id}, run `hf auth login`, then `{command}`"
        )
    if reason == "no variant":
        return (
            f"model {model_id!r} has no {variant!r} weights: set model.variant = \"\" "
            f"(IMAGINE_MODEL__VARIANT=) to load its default weights"
        )
    return f"cannot load model {model_id!r}: {reason}; to fetch it run `{command}`"


def download_command(
    model_id: str,
    variant: str | None = "fp16",
    local_dir: str | os.PathLike[str] | None = None,
    marker: str = "model_index.json",
) -> str:
    """`hf download` for the files `StableDiffusionPipeline` loads, nothing else (no
    single-file checkpoints, no .ckpt/.bin duplicates, no EMA weights); with `marker`
    ``config.json``, those of a transformers model in one folder (the captioner: its configs,
    tokenizer and safetensors weights, which it ships in one precision only)."""
    if marker != "model_index.json":
        patterns = ["*.json", "*.txt", "*.safetensors"]
    else:
        weights = (
            [f"*/*.{variant}.safetensors"]
            if variant
            else ["*/diffusion_pytorch_model.safetensors", "*/model.safetensors"]
        )
        patterns = ["model_index.json", "*/*.json", "*/*.txt", *weights]
    # huggingface_hub's `hf` (1.x) takes one pattern per --include.
    include = " --include ".join(f"'{p}'" for p in patterns)
    command = f"hf download {model_id} --include {include}"
    if local_dir is not None:
        command += f" --local-dir {local_dir}"
    return command


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
