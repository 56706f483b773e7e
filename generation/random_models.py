"""`builtin:sd15-random` and `builtin:sd15-small-random`: SD v1.5-shaped random-weight models.

Their images are noise. They exist to measure speed where no weights can be downloaded: timing
does not depend on weight values, so `builtin:sd15-random` (the published SD v1.5 component sizes:
UNet 320-640-1280-1280 channels, CLIP ViT-L/14 text encoder, the 128-512 channel VAE and the
safety checker's ViT-L vision tower) gives real GPU timings. `builtin:sd15-small-random` divides
every channel count by 8, for a compute-bound model that runs on a CPU in seconds per step.

Built locally from configs (nothing is downloaded), seeded, saved once as an ``fp16`` variant
model folder under the cache root and loaded back through `generation.loading` like a real
model (about 2 GB on disk for the full size).
"""

from __future__ import annotations

import os
from pathlib import Path

from generation.tiny import _build_tokenizer, default_cache_root, ensure_built, sd_v1_scheduler

#: Model id -> channel divisor.
RANDOM_MODELS: dict[str, int] = {"builtin:sd15-random": 1, "builtin:sd15-small-random": 8}
RANDOM_MODEL_VERSION = "v1"
RANDOM_MODEL_NOTE = "{model} has random weights: its images are noise (it exists for timings)"


def random_model_path(model_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / f"{model_id.removeprefix('builtin:')}-{RANDOM_MODEL_VERSION}"


def ensure_random_model(model_id: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of `model_id` (a key of `RANDOM_MODELS`), built first if needed."""
    scale = RANDOM_MODELS[model_id]
    target = random_model_path(model_id, cache_dir)
    return ensure_built(target, lambda folder: save_sd15_random(folder, scale))


def save_sd15_random(folder: Path, scale: int = 1, device: str = "cpu") -> None:
    """Save SD1.5-shaped random components (channels divided by `scale`) as an fp16 variant."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel

    ch = tuple(c // scale for c in (320, 640, 1280, 1280))
    vae_ch = tuple(c // scale for c in (128, 256, 512, 512))
    hidden = 768 // scale
    groups = 32 // scale if scale > 1 else 32
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=ch,
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=hidden,
            attention_head_dim=8,
            norm_num_groups=groups,
        )
        vae = AutoencoderKL(
            block_out_channels=vae_ch,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
            norm_num_groups=groups,
        )
        tokenizer = _build_tokenizer()
        text = {
            "vocab_size": 49408,
            "hidden_size": hidden,
            "intermediate_size": 3072 // scale,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        text_encoder = CLIPTextModel(CLIPTextConfig(**text))
        vision = {
            "hidden_size": 1024 // scale,
            "intermediate_size": 4096 // scale,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        }
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(text_config=text, vision_config=vision, projection_dim=hidden)
        )
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    feature_extractor = processor_cls(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sd_v1_scheduler(),
        safety_checker=checker,
        feature_extractor=feature_extractor,
    )
    # Random weights in fp32 can overflow fp16 in deep stacks; scale them down like trained
    # weights (small norms) so an fp16 run is numerically like a real model's.
    with torch.no_grad():
        for p in pipe.unet.parameters():
            p.mul_(0.5)
    pipe.to(dtype=torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True, variant="fp16")
    (folder / "README.md").write_text(
        "# SD v1.5-shaped random weights\n\nImages are noise; built locally by imagine's "
        "generation/random_models.py for timings; safe to delete.\n"
    )
