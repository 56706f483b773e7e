"""/describe's captioner on the tiny random-weight BLIP (its captions are noise: the tests check
how many, how distinct, how long, how deterministic, and how it loads, never the wording)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from generation.describe import CANDIDATES, MAX_SUGGESTION_CHARS, clean_caption
from generation.engine import DiffusersEngine
from generation.errors import ModelNotFoundError, RequestError
from generation.loading import ModelSpec, load_captioner
from generation.params import GenerationParams
from generation.request import GenerationRequest, Operation
from generation.service import GenerationService
from generation.tiny import TINY_CAPTIONER_NOTE, TINY_MODEL_ID, TinyKind, ensure_tiny_model

#: Suggestions /describe shows: the captioner must offer at least these.
SUGGESTIONS = 4


def picture(colour: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    image = Image.new("RGB", (96, 64), colour)
    image.paste((20, 20, 220), (10, 10, 50, 40))
    return image


def describe(seed: int = 7, image: Image.Image | None = None) -> GenerationRequest:
    return GenerationRequest(
        GenerationParams("", seed=seed, count=1),
        init_image=image or picture(),
        operation=Operation.DESCRIBE,
    ).validated()


@pytest.fixture(scope="module")
def describer(tiny_cache: Path) -> Iterator[DiffusersEngine]:
    """The engine with its captioner only (the SD pipeline is not needed to describe)."""
    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache, captioner_id=TINY_MODEL_ID)
    engine = DiffusersEngine(spec)
    engine._model = loaded_on_cpu()  # type: ignore[assignment]
    yield engine
    engine.close()


def test_tiny_captioner_gives_four_distinct_suggestions_deterministically(
    describer: DiffusersEngine,
) -> None:
    """The noise captions still come as the real ones would: at least four distinct, clean,
    short texts, the same for the same image and seed."""
    (result,) = describer.generate([describe()])
    captions = result.captions
    assert SUGGESTIONS <= len(captions) <= CANDIDATES
    assert len({" ".join(text.casefold().split()) for text in captions}) == len(captions)
    for text in captions:
        assert text and text == text.strip() and "\n" not in text
        assert len(text) <= MAX_SUGGESTION_CHARS
    assert result.images == [] and result.seeds == [7]
    assert result.warnings == [TINY_CAPTIONER_NOTE]  # its captions are noise, and it says so
    (again,) = describer.generate([describe()])
    assert again.captions == captions
    # The best beam leads whatever the seed (beam search is deterministic); samples follow it.
    (other,) = describer.generate([describe(seed=8)])
    assert other.captions[0] == captions[0] and other.captions != captions


async def test_service_runs_describe_jobs_on_its_worker(tiny_cache: Path) -> None:
    """A describe job goes through the queue like any job (a seed drawn at submission) and
    finishes with its captions; it is kept out of the speed estimate."""
    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache, captioner_id=TINY_MODEL_ID)
    service = GenerationService(DiffusersEngine(spec), warmup=False, freeze_gc=False)
    await service.start()
    try:
        assert service.supports(Operation.DESCRIBE)
        request = GenerationRequest(
            GenerationParams("", count=1), init_image=picture(), operation=Operation.DESCRIBE
        )
        job = service.submit(request, owner="1:2")
        result = await job.result()
        assert len(result.captions) >= SUGGESTIONS and result.seeds == job.request.seeds
        # No denoising steps and no load: the ETA learns nothing from a caption.
        work = service._work(job.request)
        assert (work.steps, work.load) == (0, 0.0)
    finally:
        await service.close()


def test_describe_needs_a_configured_captioner(tiny_spec: ModelSpec) -> None:
    engine = DiffusersEngine(tiny_spec)  # no captioner_id
    assert not engine.supports(Operation.DESCRIBE)
    engine.load()
    try:
        with pytest.raises(RequestError, match="captioner_id"):
            engine.generate([describe()])
    finally:
        engine.close()


def test_describe_requests_are_one_job_from_an_image() -> None:
    with pytest.raises(RequestError, match="source image"):
        GenerationRequest(GenerationParams(""), operation=Operation.DESCRIBE).validated()
    with pytest.raises(RequestError, match="count must be 1"):
        GenerationRequest(
            GenerationParams("", count=2), init_image=picture(), operation=Operation.DESCRIBE
        ).validated()


def test_tiny_captioner_is_a_saved_blip_folder_loaded_like_a_real_one(
    tiny_cache: Path, tmp_path: Path
) -> None:
    """The built-in captioner is a transformers model folder (config, tokenizer, processor,
    fp32 and fp16 weights); the same folder named by its path loads through the same code."""
    folder = ensure_tiny_model(tiny_cache, TinyKind.CAPTIONER)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BlipForConditionalGeneration"]
    for name in ("model.safetensors", "model.fp16.safetensors", "tokenizer.json",
                 "processor_config.json"):
        assert (folder / name).is_file(), name
    copy = tmp_path / "my-blip"
    shutil.copytree(folder, copy)
    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache, captioner_id=str(copy))
    captioner = load_captioner(spec, torch.device("cpu"), torch.float32)
    assert captioner.model_id == str(copy) and captioner.threads is None  # not the built-in
    # One thread, as the built-in gets (see `Captioner.threads`), to keep the test quick.
    builtin = load_captioner(
        replace(spec, captioner_id=TINY_MODEL_ID), torch.device("cpu"), torch.float32
    )
    captions = replace(captioner, threads=1).describe(picture(), 7)
    assert captions == builtin.describe(picture(), 7)  # the same weights, loaded the same way


def test_missing_captioner_gives_the_one_line_model_error(
    tiny_spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline and not cached, or a folder that is no transformers model: the same one-line
    message as the other models, with the command that fetches it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blip = "Salesforce/blip-image-captioning-base"
    engine = DiffusersEngine(replace(tiny_spec, captioner_id=blip, cache_dir=tmp_path))
    engine._model = loaded_on_cpu()  # type: ignore[assignment]
    with pytest.raises(ModelNotFoundError) as offline:
        engine.generate([describe()])
    message = str(offline.value)
    assert "Salesforce/blip-image-captioning-base" in message and "HF_HUB_OFFLINE" in message
    assert "hf download Salesforce/blip-image-captioning-base" in message
    assert "\n" not in message
    (tmp_path / "empty").mkdir()
    engine = DiffusersEngine(replace(tiny_spec, captioner_id=str(tmp_path / "empty")))
    engine._model = loaded_on_cpu()  # type: ignore[assignment]
    with pytest.raises(ModelNotFoundError, match=r"no config\.json, so not a transformers model"):
        engine.generate([describe()])


def loaded_on_cpu() -> object:
    """What loading the captioner reads of the loaded main model: its device and dtype (so
    these tests need not load the SD pipeline)."""

    class Loaded:
        device = torch.device("cpu")
        dtype = torch.float32

    return Loaded()


def test_clean_caption_makes_one_short_line() -> None:
    assert clean_caption("  a dog\n sitting\tin leaves ") == "a dog sitting in leaves"
    long = clean_caption("word " * 100)
    assert len(long) <= MAX_SUGGESTION_CHARS and long.endswith("…")
