"""Loading: the tiny model's folder, variants, devices, schedulers, safety checker, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from generation import tiny
from generation.engine import DiffusersEngine
from generation.errors import GenerationError, ModelNotFoundError
from generation.loading import ModelSpec, build_scheduler, load_model, resolve_device
from generation.params import SCHEDULERS
from tests.generation.conftest import small_request


def test_tiny_model_is_saved_like_a_real_model(tiny_cache: Path) -> None:
    """The tiny model folder is a diffusers layout with fp32 and fp16-variant weights."""
    folder = tiny.tiny_model_path(tiny_cache)
    assert (folder / "model_index.json").is_file()
    for component in ("unet", "vae"):
        assert (folder / component / "diffusion_pytorch_model.safetensors").is_file()
        assert (folder / component / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (folder / "text_encoder" / "model.fp16.safetensors").is_file()
    assert (folder / "tokenizer").is_dir() and (folder / "safety_checker").is_dir()
    assert "noise" in (folder / "README.md").read_text()


def test_tiny_model_build_race_keeps_one_complete_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another process finishes first, its copy stays and ours is thrown away."""

    def fake_save(folder: Path, kind: tiny.TinyKind) -> None:
        (folder / "model_index.json").write_text('{"ours": true}')
        # Another process renames its finished copy into place meanwhile.
        winner = tiny.tiny_model_path(tmp_path)
        winner.mkdir()
        (winner / "model_index.json").write_text('{"theirs": true}')
        (winner / "unet").mkdir()

    monkeypatch.setattr(tiny, "_save_tiny_pipeline", fake_save)
    folder = tiny.ensure_tiny_model(tmp_path)
    assert "theirs" in (folder / "model_index.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [tiny.TINY_MODEL_VERSION]


def test_tiny_model_loads_through_the_common_path(engine: DiffusersEngine) -> None:
    """The tiny model loads with from_pretrained on CPU in float32, with its checker kept."""
    model = engine.model
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert model.txt2img.unet.dtype == torch.float32
    assert model.safety_checker is not None
    # The pipelines themselves must not run (and black out with) the checker.
    assert model.txt2img.safety_checker is None and model.img2img.safety_checker is None
    # img2img shares the very same weights.
    assert model.img2img.unet is model.txt2img.unet and model.img2img.vae is model.txt2img.vae
    assert model.txt2img.tokenizer.model_max_length == 77


def test_attention_is_sdpa(engine: DiffusersEngine) -> None:
    """Attention runs through torch's scaled_dot_product_attention (AttnProcessor2_0)."""
    processors = engine.model.txt2img.unet.attn_processors
    assert processors
    assert {type(p).__name__ for p in processors.values()} == {"AttnProcessor2_0"}


def test_missing_variant_falls_back_to_default_weights(tiny_cache: Path, tmp_path: Path) -> None:
    """A model without fp16 files still loads when the fp16 variant is asked for."""
    folder = tmp_path / "no-variant"
    shutil.copytree(tiny.tiny_model_path(tiny_cache), folder)
    for fp16 in folder.rglob("*.fp16.safetensors"):
        fp16.unlink()
    model = load_model(ModelSpec(str(folder), variant="fp16", device="cpu"))
    assert model.txt2img.unet.dtype == torch.float32


def test_safety_checker_can_be_turned_off(tiny_cache: Path) -> None:
    """With the checker off no flags are computed and results say so."""
    engine = DiffusersEngine(
        ModelSpec(tiny.TINY_MODEL_ID, device="cpu", safety_checker=False, cache_dir=tiny_cache)
    )
    engine.load()
    assert engine.model.safety_checker is None
    result = engine.generate([small_request().validated()])[0]
    assert result.nsfw == [False, False] and not result.safety_checked


def test_flagged_images_are_returned_unmodified(engine: DiffusersEngine) -> None:
    """A flagged image keeps its pixels (not blacked out); only its flag is set."""
    request = small_request().validated()
    plain = engine.generate([request])[0]
    checker = engine.model.safety_checker
    assert checker is not None
    saved = checker.concept_embeds_weights.data.clone()
    try:
        checker.concept_embeds_weights.data.fill_(-2.0)  # every image now "matches" a concept
        flagged = engine.generate([request])[0]
    finally:
        checker.concept_embeds_weights.data.copy_(saved)
    assert plain.nsfw == [False, False] and plain.safety_checked
    assert flagged.nsfw == [True, True]
    for a, b in zip(plain.images, flagged.images, strict=True):
        assert a.tobytes() == b.tobytes()
        assert a.getextrema() != ((0, 0), (0, 0), (0, 0))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedulers_by_name(engine: DiffusersEngine, name: str) -> None:
    """Each scheduler name builds a fresh scheduler from the model's config."""
    config = engine.model.scheduler_config
    first, second = build_scheduler(name, config), build_scheduler(name, config)
    assert first is not second
    expected = {
        "pndm": "PNDMScheduler",
        "ddim": "DDIMScheduler",
        "euler_a": "EulerAncestralDiscreteScheduler",
        "unipc": "UniPCMultistepScheduler",
        "dpmpp_2m_karras": "DPMSolverMultistepScheduler",
    }[name]
    assert type(first).__name__ == expected
    if name == "dpmpp_2m_karras":
        assert first.config.use_karras_sigmas and first.config.algorithm_type == "dpmsolver++"


def test_device_names() -> None:
    """auto picks an available device; unavailable or unknown devices are clear errors."""
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(GenerationError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GenerationError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_missing_local_folder_says_how_to_get_a_model(tmp_path: Path) -> None:
    """A path that is not there, or not a model, explains what to do."""
    with pytest.raises(ModelNotFoundError, match="hf download"):
        load_model(ModelSpec(str(tmp_path / "nope" / "deeper" / "model"), device="cpu"))
    with pytest.raises(ModelNotFoundError, match=r"no model_index\.json"):
        load_model(ModelSpec(str(tmp_path), device="cpu"))
    with pytest.raises(ModelNotFoundError, match="Unknown built-in model"):
        load_model(ModelSpec("builtin:huge", device="cpu"))
