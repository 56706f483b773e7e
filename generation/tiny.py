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

import enum
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TINY_MODEL_ID = "builtin:tiny-random"
#: Bump when the architecture or weights below change, so stale caches are not reused.
TINY_MODEL_VERSION = "tiny-random-v1"
TINY_MODEL_NOTE = "builtin:tiny-random is a random-weight test model: its images are noise"
#: Shown with /describe's suggestions when they come from the tiny captioner.
TINY_CAPTIONER_NOTE = (
    "builtin:tiny-random's captioner has random weights: its suggestions are noise"
)


class TinyKind(enum.StrEnum):
    """The tiny models, each in its own folder: the txt2img pipeline, an inpainting pipeline
    (9-channel UNet, for Zoom Out and Pan), a latent x2 upscaler (Upscale Subtle) and a BLIP
    image captioner (/describe; a transformers model, not a diffusers pipeline)."""

    PIPELINE = "pipeline"
    INPAINT = "inpaint"
    UPSCALER = "upscaler"
    CAPTIONER = "captioner"

    @property
    def marker(self) -> str:
        """The file whose presence says the model folder is complete."""
        return "config.json" if self is TinyKind.CAPTIONER else "model_index.json"


_FOLDERS = {
    TinyKind.PIPELINE: TINY_MODEL_VERSION,
    TinyKind.INPAINT: "tiny-random-inpaint-v1",
    TinyKind.UPSCALER: "tiny-random-upscaler-v1",
    TinyKind.CAPTIONER: "tiny-random-captioner-v1",
}

_SEED = 1234
_MAX_TOKENS = 77
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def default_cache_root() -> Path:
    """`~/.cache/imagine` (or `$XDG_CACHE_HOME/imagine`): where the tiny model is saved."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imagine"


def tiny_model_path(
    cache_dir: str | os.PathLike[str] | None = None, kind: TinyKind = TinyKind.PIPELINE
) -> Path:
    """The tiny model's folder under `cache_dir` (default: `default_cache_root()`)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    return root / _FOLDERS[kind]


def ensure_tiny_model(
    cache_dir: str | os.PathLike[str] | None = None, kind: TinyKind = TinyKind.PIPELINE
) -> Path:
    """Return the tiny model's folder, building and saving it first if it is not there yet."""
    if kind is TinyKind.CAPTIONER:
        return ensure_built(tiny_model_path(cache_dir, kind), _save_tiny_captioner, kind.marker)
    return ensure_built(
        tiny_model_path(cache_dir, kind), lambda folder: _save_tiny_pipeline(folder, kind)
    )


def ensure_built(
    target: Path, save: Callable[[Path], None], marker: str = "model_index.json"
) -> Path:
    """`target`, after `save(folder)` wrote a model there if it had none yet (`marker`: the
    file a complete model folder has).

    The folder only ever appears complete: it is written under a temporary name in the same
    parent and renamed into place; a process that loses the race throws its copy away (the
    built-in models are seeded, so every copy is identical).
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / marker).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _save_tiny_pipeline(folder: Path, kind: TinyKind = TinyKind.PIPELINE) -> None:
    import torch
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionLatentUpscalePipeline,
        StableDiffusionPipeline,
    )

    from generation.loading import quiet_progress_bars

    quiet_progress_bars()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        components = _build_components()
        if kind is TinyKind.INPAINT:
            # SD's inpainting UNet: 4 noisy latent + 4 masked-image latent + 1 mask channels.
            components["unet"] = _tiny_unet(in_channels=9)
        elif kind is TinyKind.UPSCALER:
            components = _upscaler_components(components)
    pipe: Any
    if kind is TinyKind.INPAINT:
        pipe = StableDiffusionInpaintPipeline(**components, requires_safety_checker=True)
    elif kind is TinyKind.UPSCALER:
        pipe = StableDiffusionLatentUpscalePipeline(**components)
    else:
        pipe = StableDiffusionPipeline(**components, requires_safety_checker=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    # fp16 variant files too, so the `variant="fp16"` loading path is exercised as for a real
    # model (diffusers casts them to the requested dtype on load).
    pipe.to(dtype=torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True, variant="fp16")
    (folder / "README.md").write_text(
        f"# {TINY_MODEL_ID} ({kind.value})\n\n{TINY_MODEL_NOTE}.\n\n"
        "Built locally by imagine's generation/tiny.py; safe to delete (it is rebuilt on demand).\n"
    )


def _build_components() -> dict[str, object]:
    import transformers
    from diffusers import AutoencoderKL
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
    unet = _tiny_unet(in_channels=4)
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


def _tiny_unet(in_channels: int):  # -> diffusers.UNet2DConditionModel
    """SD v1.x's UNet wiring at a few thousand weights; 9 input channels for inpainting."""
    from diffusers import UNet2DConditionModel

    # Attention only at the coarsest level (16x16 tokens for a 512x512 image): the prompt still
    # conditions the image through cross-attention, but no 4096-token self-attention is paid.
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(4, 8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=4,
    )


def _upscaler_components(base: dict[str, Any]) -> dict[str, Any]:
    """stabilityai/sd-x2-latent-upscaler's wiring, tiny: a k-diffusion UNet on 4 noisy + 4
    low-res latent channels, conditioned on the text's last hidden states and (through
    `timestep_cond`) on 128 noise-level features plus the pooled text embedding."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel

    text_dim = base["text_encoder"].config.hidden_size
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        # K-blocks normalise in groups of 32 channels: 32 is the smallest width.
        block_out_channels=(32, 32, 64, 64),
        time_cond_proj_dim=128 + text_dim,
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=text_dim,
        down_block_types=(
            "KDownBlock2D",
            "KCrossAttnDownBlock2D",
            "KCrossAttnDownBlock2D",
            "KCrossAttnDownBlock2D",
        ),
        in_channels=8,
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,  # the latent plus a variance channel the pipeline drops
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=(
            "KCrossAttnUpBlock2D",
            "KCrossAttnUpBlock2D",
            "KCrossAttnUpBlock2D",
            "KUpBlock2D",
        ),
        layers_per_block=1,
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="sample",
        steps_offset=1,
    )
    return {
        "vae": base["vae"],
        "text_encoder": base["text_encoder"],
        "tokenizer": base["tokenizer"],
        "unet": unet,
        "scheduler": scheduler,
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


#: The tiny captioner's words: whole words, so its (random) captions read as words, not
#: word pieces. No "-" or ":" in them, so a caption never looks like an /imagine flag.
_CAPTION_WORDS = (
    "a an the of in on with and at by near under over dog cat man woman child bird horse "
    "tree house car boat street field sky water beach mountain flower table room city "
    "forest river bridge red blue green yellow white black small large old young sitting "
    "standing walking running sleeping flying looking painting photo picture view close up"
).split()


def _save_tiny_captioner(folder: Path) -> None:
    """A BLIP captioner (`BlipForConditionalGeneration` + `BlipProcessor`) at a few thousand
    random weights: Salesforce/blip-image-captioning-base's wiring (ViT image encoder, BERT
    text decoder reading it by cross-attention, ``[DEC]`` start token, ``[SEP]`` end token)
    with a 32-pixel image encoder and a ~100-word vocabulary written locally (no download).
    Its captions are noise. Saved in fp32 plus an ``fp16`` variant, like the others."""
    import torch
    import transformers
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration

    from generation.loading import quiet_progress_bars

    quiet_progress_bars()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = list(dict.fromkeys(_CAPTION_WORDS))
    vocab = {token: i for i, token in enumerate([*specials, *words, "[DEC]"])}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=40)
    # transformers 5 splits image processors into a torchvision and a PIL backend.
    processor_cls = getattr(transformers, "BlipImageProcessorPil", transformers.BlipImageProcessor)
    image_processor = processor_cls(size={"height": 32, "width": 32})
    tiny = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "projection_dim": 32}
    config = BlipConfig(
        vision_config={**tiny, "image_size": 32, "patch_size": 8},
        text_config={
            **tiny,
            "vocab_size": len(vocab),
            "encoder_hidden_size": 32,
            "max_position_embeddings": 40,
            "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        projection_dim=32,
        image_text_hidden_size=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = BlipForConditionalGeneration(config)
    processor = transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    model.to(torch.float16).save_pretrained(folder, variant="fp16")
    (folder / "README.md").write_text(
        f"# {TINY_MODEL_ID} (captioner)\n\n{TINY_CAPTIONER_NOTE}.\n\n"
        "Built locally by imagine's generation/tiny.py; safe to delete (it is rebuilt on demand).\n"
    )
