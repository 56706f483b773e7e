"""Loading a Stable Diffusion v1.x pipeline, choosing its device and dtype, and its schedulers.

Everything here runs on the worker thread (loading takes seconds to minutes). A model is a Hub
id (``CompVis/stable-diffusion-v1-4``), a local folder in diffusers layout, or
``builtin:tiny-random`` (built by `generation.tiny`, then loaded by the same code as the others).

Choices and why:

- float16 on CUDA/MPS (SD v1.x is fine in fp16, half the memory, about 2x faster), float32 on
  CPU (fp16 matmuls are slow or missing there). The ``fp16`` weight variant is tried first
  everywhere (half the download; diffusers casts it to the dtype asked for) and plain weights
  are used when a model has no such variant.
- No autocast (mixed-precision context): it is slower than pure fp16 and can give black
  images. Attention is diffusers' default with torch 2, ``scaled_dot_product_attention``;
  nothing here changes it.
- The pipeline's own safety checker is detached: it blacks out flagged images. We keep the
  checker and call it ourselves on copies of the images (`LoadedModel.nsfw_flags`), so flagged
  images come back unmodified with a flag, and the caller (the bot) decides what to do.
- ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub itself; a model that is neither cached nor
  downloadable becomes a `ModelNotFoundError` that says how to get it.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from generation.errors import GenerationError, ModelNotFoundError
from generation.params import SCHEDULERS
from generation.preflight import check_model_available, hub_offline, model_problem
from generation.progress import Stages
from generation.random_models import RANDOM_MODELS, ensure_random_model
from generation.residency import Loaded
from generation.tiny import TINY_MODEL_ID, TINY_MODEL_NOTE, TinyKind, ensure_tiny_model

if TYPE_CHECKING:
    from diffusers import (
        SchedulerMixin,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionPipeline,
    )
    from PIL.Image import Image

    from generation.describe import Captioner

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how (the `[model]` configuration section).

    `cache_dir` is where `builtin:tiny-random` is saved (default ``~/.cache/imagine``) and is
    passed to huggingface_hub as its cache for Hub models (default: huggingface_hub's own).
    `inpaint_id` (an SD v1.x inpainting model, 9-channel UNet: Zoom Out and Pan) and
    `upscaler_id` (a latent x2 upscaler: Upscale Subtle) and `captioner_id` (a BLIP image
    captioner, a transformers model: /describe) are optional; None turns the tool off.
    ``builtin:tiny-random`` names the tiny random-weight version of each.
    """

    model_id: str
    variant: str | None = "fp16"
    device: str = "auto"
    safety_checker: bool = True
    cache_dir: Path | None = None
    inpaint_id: str | None = None
    upscaler_id: str | None = None
    captioner_id: str | None = None
    #: Decode with the VAE in float32 even where the pipeline runs in float16: the fix for
    #: models whose fp16 VAE overflows into black or NaN images (about 160 MB more memory).
    vae_float32: bool = False
    #: GiB of device memory for the main pipeline plus the optional models kept on the device
    #: (`generation.residency`); None: no limit, every optional model stays once loaded.
    memory_budget_gb: float | None = None
    #: Upscale (Creative) runs in one pass up to this side squared in pixels, and in
    #: overlapping tiles of this side past it (`generation.tiling`); `upscale_overlap` is
    #: the least overlap of two tiles, in pixels.
    upscale_tile: int = 768
    upscale_overlap: int = 128

    @property
    def is_test_model(self) -> bool:
        return self.model_id == TINY_MODEL_ID


@dataclass
class LoadedModel:
    """A loaded pipeline plus what the engine needs around it. Lives on the worker thread.

    `txt2img` and `img2img` share every component (no second copy of the weights).
    """

    model_id: str
    txt2img: StableDiffusionPipeline
    img2img: StableDiffusionImg2ImgPipeline
    device: torch.device
    dtype: torch.dtype
    scheduler_config: dict[str, Any]
    safety_checker: torch.nn.Module | None
    feature_extractor: Any
    is_test_model: bool = False

    @property
    def generator_device(self) -> torch.device:
        """Device for the per-image `torch.Generator`s (MPS has none of its own)."""
        return torch.device("cpu") if self.device.type == "mps" else self.device

    def nsfw_flags(self, images: Sequence[Image]) -> list[bool] | None:
        """Run the model's own safety checker on `images`; None when it is off or absent.

        The checker blacks out what it flags in the arrays it is handed, so it gets copies:
        the caller keeps every image unmodified, with its flag, and decides what to do.
        """
        import numpy as np

        checker = self.safety_checker
        if checker is None or self.feature_extractor is None or not images:
            return None
        pixels = self.feature_extractor(list(images), return_tensors="pt").pixel_values
        pixels = pixels.to(device=self.device, dtype=self.dtype)
        copies = [np.array(image) for image in images]
        _, flags = checker(clip_input=pixels, images=copies)
        return [bool(flag) for flag in flags]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the best available of cuda, mps, cpu; anything else must be available."""
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise GenerationError(
            f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps."
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerationError(
                f"Device {name!r} asked for, but torch sees no CUDA GPU "
                f'(torch {torch.__version__}); use device = "cpu" or install a CUDA build.'
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise GenerationError(f"Device {name!r} asked for, but torch sees {count} CUDA GPU(s).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise GenerationError("Device 'mps' asked for, but MPS is not available here.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise GenerationError(f"Unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps.")
    return device


def vae_decoder_modules(vae: Any) -> list[torch.nn.Module]:
    """The VAE's modules that decode latents (`post_quant_conv`, when the VAE has one, and
    the decoder): where fp16 overflows, so what `decode_in_float32` converts."""
    return [m for m in (getattr(vae, "post_quant_conv", None), vae.decoder) if m is not None]


def decode_in_float32(vae: Any) -> None:
    """Keep the VAE's decoding half in float32 (as diffusers' SDXL pipelines do for
    `force_upcast` VAEs, but for good). The encoder, used for variations, keeps the
    pipeline's dtype so the img2img pipeline's own casts still match it."""
    for module in vae_decoder_modules(vae):
        module.to(torch.float32)


def dtype_for(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cpu" else torch.float16


def load_model(spec: ModelSpec, stages: Stages | None = None) -> LoadedModel:
    """Load `spec` onto its device; raises `ModelNotFoundError` / `GenerationError`.

    Runs on the worker thread. Reports the stages "load components" and "move to device" to
    `stages`; download progress bars are huggingface_hub's own (stderr, on a terminal).
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    stages = stages or Stages()
    quiet_progress_bars()
    device = resolve_device(spec.device)
    dtype = dtype_for(device)
    with stages.stage(
        "load components", own_output=may_download(spec.model_id), model=spec.model_id
    ):
        source = _resolve_source(spec)
        pipe = _from_pretrained(spec, source, dtype)

    # Keep the checker for `nsfw_flags`; the pipeline itself must not run it (see module doc).
    checker = pipe.safety_checker if spec.safety_checker else None
    feature_extractor = getattr(pipe, "feature_extractor", None)
    if spec.safety_checker and checker is None:
        log.warning("model %s has no safety checker: NSFW flags will all be false", spec.model_id)
    pipe.register_modules(safety_checker=None)
    pipe.register_to_config(requires_safety_checker=False)

    with stages.stage("move to device", device=str(device), dtype=str(dtype)[6:]):
        pipe.to(device)
        if spec.vae_float32:
            decode_in_float32(pipe.vae)
        if checker is not None:
            checker.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    if spec.is_test_model:
        if device.type == "cpu":
            # The tiny model's convolutions have 4-16 channels: oneDNN's per-shape set-up and
            # thread hand-offs cost 10-30x the arithmetic there, torch's native kernels do not.
            # This switch is process-wide; only test/demo processes load this model.
            torch.backends.mkldnn.enabled = False
    note = {"note": TINY_MODEL_NOTE} if spec.is_test_model else {}
    log.info(
        "model loaded",
        extra={"model": spec.model_id, "device": str(device), "dtype": str(dtype)[6:], **note},
    )
    return LoadedModel(
        model_id=spec.model_id,
        txt2img=pipe,
        img2img=img2img,
        device=device,
        dtype=dtype,
        scheduler_config=dict(pipe.scheduler.config),
        safety_checker=checker,
        feature_extractor=feature_extractor,
        is_test_model=spec.is_test_model,
    )


def may_download(model_id: str) -> bool:
    """Whether loading `model_id` may download files (a Hub id while the Hub may be used):
    huggingface_hub then draws its download bars on stderr."""
    if model_id.startswith("builtin:") or hub_offline():
        return False
    return not Path(model_id).expanduser().is_dir()


def quiet_progress_bars() -> None:
    """Turn off diffusers' and transformers' own progress bars ("Loading pipeline components",
    "Loading weights", "Writing model shards"): local steps of a second that would otherwise
    scroll the operator's terminal. Process-wide.

    huggingface_hub's download bars stay as they were (shown on a terminal, by its own TTY
    check, unless the operator turned them off): transformers' switch turns them off too, so
    their state is put back after it.
    """
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    downloads_shown = not are_progress_bars_disabled()
    diffusers_logging.disable_progress_bar()
    with warnings.catch_warnings():  # huggingface_hub's "cannot disable" when the operator
        warnings.simplefilter("ignore")  # pinned HF_HUB_DISABLE_PROGRESS_BARS=0: as wished
        transformers_logging.disable_progress_bar()
    if downloads_shown:
        enable_progress_bars()


def build_scheduler(name: str, config: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler `name` (one of `SCHEDULERS`) configured from the model's own config.

    Fresh per call: schedulers keep per-run state (timesteps, multistep history), so two runs
    must never share one.
    """
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        PNDMScheduler,
        UniPCMultistepScheduler,
    )

    if name == "pndm":
        return PNDMScheduler.from_config(config)
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config)
    if name == "dpmpp_2m_karras":
        # DPM++ 2M with Karras sigmas: PNDM-50 quality in 20-25 steps.
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    raise GenerationError(f"Unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")


def model_source(spec: ModelSpec) -> str:
    """The folder or Hub id to hand to `from_pretrained` (built-in models are built first)."""
    return _resolve_source(spec)


def _resolve_source(
    spec: ModelSpec, model_id: str | None = None, kind: TinyKind = TinyKind.PIPELINE
) -> str:
    """The folder or Hub id to hand to `from_pretrained` (`model_id`: default the main one;
    `kind` says which tiny model ``builtin:tiny-random`` is, and which file a real one has);
    what is certain to fail (a bad folder, an offline Hub model missing from the cache) fails
    here, before diffusers or transformers waits."""
    model_id = model_id or spec.model_id
    if model_id == TINY_MODEL_ID:
        return str(ensure_tiny_model(spec.cache_dir, kind))
    if model_id in RANDOM_MODELS:
        return str(ensure_random_model(model_id, spec.cache_dir))
    if model_id.startswith("builtin:"):
        known = ", ".join([TINY_MODEL_ID, *RANDOM_MODELS])
        raise ModelNotFoundError(
            f"Unknown built-in model {model_id!r}; the built-in ones are {known}."
        )
    problem = check_model_available(model_id, spec.variant, spec.cache_dir, kind.marker)
    if problem is not None:
        raise ModelNotFoundError(problem)
    path = Path(model_id).expanduser()
    return str(path) if path.is_dir() else model_id


def _from_pretrained(spec: ModelSpec, source: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = {}
    if not spec.safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    return _pretrained(StableDiffusionPipeline, spec, spec.model_id, source, dtype, **kwargs)


def _pretrained(
    cls: Any,
    spec: ModelSpec,
    model_id: str,
    source: str,
    dtype: torch.dtype | None,
    marker: str = "model_index.json",
    **extra: Any,
) -> Any:
    """`cls.from_pretrained(source)`: the `fp16` variant first, plain weights when the model has
    none; missing models become `ModelNotFoundError` saying how to get them. `dtype` None:
    not weights (a processor), loaded with neither dtype nor variant."""
    kwargs: dict[str, Any] = {**extra}
    if dtype is not None:
        library = "diffusers" if marker == "model_index.json" else "transformers"
        kwargs[dtype_keyword(library)] = dtype
    if spec.cache_dir is not None and not model_id.startswith("builtin:"):
        kwargs["cache_dir"] = str(spec.cache_dir)
    try:
        if spec.variant and dtype is not None:
            try:
                return cls.from_pretrained(source, variant=spec.variant, **kwargs)
            except (ValueError, OSError) as exc:
                if not _is_missing_variant(exc, spec.variant):
                    raise
                log.info("%s has no %s variant; loading its default weights", source, spec.variant)
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ConnectionError, ValueError) as exc:  # huggingface_hub's HTTP errors too
        reason = _why_not_loaded(exc, spec.variant)
        raise ModelNotFoundError(model_problem(model_id, reason, spec.variant, marker)) from exc


def load_inpainter(model: LoadedModel, spec: ModelSpec) -> Loaded:
    """The inpainting pipeline for Zoom Out and Pan, next to the loaded main pipeline; its own
    module (the UNet) is left on the CPU for `generation.residency` to place.

    Only the inpainting model's UNet is loaded: the text encoder, tokenizer and VAE of SD v1.x
    inpainting models are SD v1.x's own, so they are shared with the main pipeline
    (`from_pipe`: no second copy). Raises `ModelNotFoundError`, or `GenerationError` when the
    UNet is not a 9-channel inpainting one. Runs on the worker thread.
    """
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel

    if spec.inpaint_id is None:
        raise GenerationError("No inpainting model is configured (model.inpaint_id).")
    source = _resolve_source(spec, spec.inpaint_id, TinyKind.INPAINT)
    unet = _pretrained(
        UNet2DConditionModel, spec, spec.inpaint_id, source, model.dtype, subfolder="unet"
    )
    channels = int(unet.config.in_channels)
    if channels != 9:
        raise GenerationError(
            f"{spec.inpaint_id} is not an inpainting model: its UNet takes {channels} channels, "
            "an SD v1.x inpainting UNet takes 9 (latents, masked image, mask)."
        )
    pipe = StableDiffusionInpaintPipeline.from_pipe(model.txt2img, unet=unet)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded inpainting model %s", spec.inpaint_id)
    return Loaded(pipe, [unet])


def load_upscaler(model: LoadedModel, spec: ModelSpec) -> Loaded:
    """The latent x2 upscaler for Upscale Subtle, sharing the main pipeline's VAE (the upscaler
    works in SD v1.x's latent space). Its text encoder is its own: it reads the pooled output
    and last hidden states of CLIP, which need not be the main model's fine-tuned copy. Its
    own modules (UNet, text encoder) are left on the CPU for `generation.residency` to place.
    Raises `ModelNotFoundError`. Runs on the worker thread.
    """
    from diffusers import StableDiffusionLatentUpscalePipeline

    if spec.upscaler_id is None:
        raise GenerationError("No upscaler model is configured (model.upscaler_id).")
    source = _resolve_source(spec, spec.upscaler_id, TinyKind.UPSCALER)
    pipe = _pretrained(
        StableDiffusionLatentUpscalePipeline,
        spec,
        spec.upscaler_id,
        source,
        model.dtype,
        vae=model.txt2img.vae,
    )
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded upscaler %s", spec.upscaler_id)
    return Loaded(pipe, [pipe.unet, pipe.text_encoder])


def main_modules(model: LoadedModel) -> list[torch.nn.Module]:
    """The main pipeline's modules (shared by txt2img and img2img) and the safety checker:
    what the memory budget counts as always resident."""
    modules = [c for c in model.txt2img.components.values() if isinstance(c, torch.nn.Module)]
    if model.safety_checker is not None:
        modules.append(model.safety_checker)
    return modules


def load_captioner(spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> Captioner:
    """The BLIP image captioner for /describe (`BlipForConditionalGeneration` and its
    `BlipProcessor`) from `spec.captioner_id`: a Hub id such as
    ``Salesforce/blip-image-captioning-base``, a local folder, or ``builtin:tiny-random`` (the
    tiny random-weight one: its captions are noise). It shares nothing with the SD pipeline.
    Raises `ModelNotFoundError` (the same one-line message as the other models) or
    `GenerationError`. Runs on the worker thread.
    """
    from transformers import BlipForConditionalGeneration, BlipProcessor

    from generation.describe import Captioner

    model_id = spec.captioner_id
    if model_id is None:
        raise GenerationError("No captioner model is configured (model.captioner_id).")
    quiet_progress_bars()
    kind = TinyKind.CAPTIONER
    source = _resolve_source(spec, model_id, kind)
    model = _pretrained(BlipForConditionalGeneration, spec, model_id, source, dtype, kind.marker)
    processor = _pretrained(BlipProcessor, spec, model_id, source, None, kind.marker)
    model.to(device).eval()
    log.info("loaded captioner %s on %s", model_id, device)
    # The tiny test captioner runs on one CPU thread (see `Captioner.threads`).
    captioner = Captioner(model_id, model, processor, device, dtype)
    if captioner.is_test_model and device.type == "cpu":
        captioner.threads = 1
    return captioner


def dtype_keyword(library: str = "diffusers") -> str:
    """`dtype` from diffusers 0.40 (transformers 4.56) on, which deprecate `torch_dtype`,
    `torch_dtype` before: decided by the installed version of `library`, a public fact."""
    import importlib

    from packaging.version import Version

    first = {"diffusers": "0.40.0.dev0", "transformers": "4.56.0"}[library]
    version = importlib.import_module(library).__version__
    return "dtype" if Version(version) >= Version(first) else "torch_dtype"


def _is_missing_variant(exc: BaseException, variant: str) -> bool:
    text = str(exc)
    return "variant" in text and variant in text


def _why_not_loaded(exc: BaseException, variant: str | None) -> str:
    """A `model_problem` reason for a failed `from_pretrained`, from the exception chain."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated" in text.lower():
        return "gated"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return "not found"
    if variant and _is_missing_variant(exc, variant):
        return "no variant"
    offline = any(isinstance(e, LocalEntryNotFoundError | OfflineModeIsEnabled) for e in chain)
    if offline or "local_files_only" in text or "offline" in text.lower():
        return "offline" if hub_offline() else "the Hugging Face Hub cannot be reached"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # huggingface_hub points at a stack trace we do not show.
    return re.sub(r"\s*Please check out the root cause.*", "", text.splitlines()[0])
