"""`builtin:tiny-random`: a tiny random-weight Stable Diffusion pipeline for tests and demos.

Its images are noise. It exists so that the whole path (tokenizer, text encoder, UNet, VAE,
scheduler, safety checker, `from_pretrained`, the `fp16` variant) runs on any CPU in well under a
second, with no download: every component has the real SD v1.x class and wiring (a VAE that
scales by 8, 4 latent channels, a 77-token CLIP tokenizer), only with a few thousand weights
drawn from a fixed seed.

The components are built once, saved with `save_pretrained` (fp32 files plus `fp16` variant
files) into a cache folder, and then loaded back by `generation.loading` exactly like a real model
folder. Saving is atomic (a temporary folder renamed into place), so concurrent processes (test
workers, a bot and a CLI) can race to build it safely.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TINY_MODEL_ID = "builtin:tiny-random"
#: Bump when the architecture or weights below change, so stale caches are not reused.
TINY_MODEL_VERSION = "tiny-random-v1"
TINY_MODEL_NOTE = "builtin:tiny-random is a random-weight test model: its images are noise"

_SEED = 1234
_MAX_TOKENS = 77
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def default_cache_root() -> Path:
    """`~/.cache/imagine` (or `$XDG_CACHE_HOME/imagine`): where the tiny model is saved."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imagine"


def tiny_model_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The tiny model's folder under `cache_dir` (default: `default_cache_root()`)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / TINY_MODEL_VERSION


def ensure_tiny_model(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the tiny model's folder, building and saving it first if it is not there yet."""
    return ensure_built(tiny_model_path(cache_dir), _save_tiny_pipeline)


def ensure_built(target: Path, save: Callable[[Path], None]) -> Path:
    """`target`, after `save(folder)` wrote a model there if it had none yet.

    The folder only ever appears complete: it is written under a temporary name in the same
    parent and renamed into place; a process that loses the race throws its copy away (the
    built-in models are seeded, so every copy is identical).
    """
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_tiny_pipeline(folder: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.loading import quiet_progress_bars

    quiet_progress_bars()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        components = _build_components()
    pipe = StableDiffusionPipeline(**components, requires_safety_checker=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # fp16 variant files too, so the `variant="fp16"` loading path is exercised as for a real
    # model (diffusers casts them to the requested dtype on load).
    pipe.to(dtype=torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True, variant="fp16")
    (folder / "README.md").write_text(
        f"# {TINY_MODEL_ID}\n\n{TINY_MODEL_NOTE}.\n\n"
        "Built locally by imagine's generation/tiny.py; safe to delete (it is rebuilt on demand).\n"
    )


def _build_components() -> dict[str, object]:
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    # transformers 5 splits CLIP's image processor into a torchvision and a PIL backend; the PIL
    # one needs nothing extra. Older transformers only has `CLIPImageProcessor`.
    image_processor_cls = getattr(
        transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor
    )

    tokenizer = _build_tokenizer()
    vocab_size = len(tokenizer)
    # Attention only at the coarsest level (16x16 tokens for a 512x512 image): the prompt still
    # conditions the image through cross-attention, but no 4096-token self-attention is paid.
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(4, 8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=4,
    )
    # Four blocks give SD's 8x latent scaling; 4 channels and no extra resnets keep decoding at
    # 512x512 (the costliest part on a CPU) cheap.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=0,
        norm_num_groups=4,
        sample_size=512,
        mid_block_add_attention=False,
    )
    tiny_clip = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
    }
    text_config = {
        **tiny_clip,
        "vocab_size": vocab_size,
        "max_position_embeddings": _MAX_TOKENS,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config, projection_dim=32))
    safety_checker = StableDiffusionSafetyChecker(
        CLIPConfig(
            text_config=text_config,
            vision_config={**tiny_clip, "image_size": 32, "patch_size": 8},
            projection_dim=32,
        )
    )
    feature_extractor = image_processor_cls(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    scheduler = sd_v1_scheduler()
    return {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
        "safety_checker": safety_checker,
        "feature_extractor": feature_extractor,
    }


def sd_v1_scheduler():  # -> diffusers.PNDMScheduler
    """The PNDM scheduler with SD v1.x's own configuration (what its model_index ships)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


def _build_tokenizer():  # -> transformers.CLIPTokenizer
    """A byte-level CLIP BPE tokenizer with no merges, written locally (no download).

    Its vocabulary is the 256 byte symbols, each also with CLIP's end-of-word suffix, plus the
    start/end tokens, so any text tokenizes (one token per byte: long prompts reach the 77-token
    limit sooner than with a real CLIP vocabulary).
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_MAX_TOKENS)
