"""The engine on the tiny model: seeds, batching, variations, warnings, progress, failures."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import DiffusersEngine
from generation.errors import JobCancelledError, OutOfMemoryError, RequestError
from generation.text import graphemes
from tests.generation.conftest import small_request


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_same_seed_same_images_different_seed_differs(engine: DiffusersEngine) -> None:
    """A request re-run with its seed gives the same pixels; another seed does not."""
    request = small_request(seed=7).validated()
    first = engine.generate([request])[0]
    again = engine.generate([request])[0]
    other = engine.generate([small_request(seed=8).validated()])[0]
    assert first.seeds == [7, 8] and len(first.images) == 2
    assert first.images[0].size == (64, 64)
    for a, b in zip(first.images, again.images, strict=True):
        assert a.tobytes() == b.tobytes()
    assert first.images[0].tobytes() != other.images[0].tobytes()
    assert first.images[0].tobytes() != first.images[1].tobytes()
    assert first.gpu_seconds > 0 and first.model_id == "builtin:tiny-random"


def test_each_image_reproduces_alone(engine: DiffusersEngine) -> None:
    """Image i of a request is the same as a 1-image request with seed + i."""
    pair = engine.generate([small_request(seed=20, count=2).validated()])[0]
    second = engine.generate([small_request(seed=21, count=1).validated()])[0]
    assert np.abs(pixels(pair.images[1]) - pixels(second.images[0])).max() <= 2


@pytest.mark.parametrize("scheduler", ["dpmpp_2m_karras", "euler_a"])
def test_batched_requests_match_running_alone(engine: DiffusersEngine, scheduler: str) -> None:
    """Requests sharing a pipeline call get the images they would get alone.

    Different batch shapes may round floats differently, so pixels may differ by a level or two
    (out of 255); swapped seeds or prompts would differ by far more.
    """
    a = small_request("a red fox", seed=3, count=2, scheduler=scheduler).validated()
    b = small_request(
        "a blue whale", seed=40, count=1, negative_prompt="blurry", scheduler=scheduler
    ).validated()
    together = engine.generate([a, b])
    alone = [engine.generate([a])[0], engine.generate([b])[0]]
    assert [r.seeds for r in together] == [[3, 4], [40]]
    for batched, single in zip(together, alone, strict=True):
        for x, y in zip(batched.images, single.images, strict=True):
            assert np.abs(pixels(x) - pixels(y)).max() <= 2
    assert together[0].images[0].tobytes() != together[1].images[0].tobytes()


def test_incompatible_requests_cannot_share_a_call(engine: DiffusersEngine) -> None:
    """Requests with different steps or sizes are refused as one call."""
    with pytest.raises(RequestError):
        engine.generate([small_request().validated(), small_request(steps=4).validated()])


def test_variation_runs_img2img_on_the_shared_weights(engine: DiffusersEngine) -> None:
    """A request with an init image runs img2img at the request size, reproducibly."""
    source = engine.generate([small_request(seed=5, count=1).validated()])[0].images[0]
    request = small_request(
        seed=9, count=2, init_image=source.resize((100, 80)), strength=0.7, steps=4
    ).validated()
    steps: list[tuple[int, int]] = []
    first = engine.generate([request], on_step=lambda s, t: steps.append((s, t)))[0]
    again = engine.generate([request])[0]
    assert [im.size for im in first.images] == [(64, 64), (64, 64)]
    assert first.images[0].tobytes() == again.images[0].tobytes()
    assert first.images[0].tobytes() != source.tobytes()
    assert steps == [(1, 2), (2, 2)]  # int(4 * 0.7) = 2 denoising steps


def test_long_prompt_is_truncated_with_a_warning(engine: DiffusersEngine) -> None:
    """A prompt past CLIP's 77 tokens runs, with a warning naming what was dropped."""
    prompt = "castle " * 14 + "ZEBRA"  # the tiny model's tokenizer: one token per letter
    result = engine.generate([small_request(prompt, count=1).validated()])[0]
    assert len(result.warnings) == 1
    assert "77 tokens" in result.warnings[0] and "ZEBRA" in result.warnings[0]  # as typed
    short = engine.generate([small_request("a castle", count=1).validated()])[0]
    assert short.warnings == []


def test_progress_reports_every_step_in_order(engine: DiffusersEngine) -> None:
    """on_step is called once per denoising step with (step, total)."""
    steps: list[tuple[int, int]] = []
    engine.generate([small_request(steps=5).validated()], on_step=lambda s, t: steps.append((s, t)))
    assert steps == [(i, 5) for i in range(1, 6)]


def test_stop_check_interrupts_the_call(engine: DiffusersEngine) -> None:
    """When should_stop turns true the call ends early as cancelled."""
    steps: list[int] = []
    with pytest.raises(JobCancelledError):
        engine.generate(
            [small_request(steps=6).validated()],
            on_step=lambda s, t: steps.append(s),
            should_stop=lambda: len(steps) >= 2,
        )
    assert len(steps) < 6


@pytest.fixture
def unet_out_of_memory_once(engine: DiffusersEngine) -> Iterator[None]:
    """Make the UNet raise torch.OutOfMemoryError on its next call only."""
    unet = engine.model.txt2img.unet
    real_forward = unet.forward

    def failing_forward(*args: object, **kwargs: object) -> object:
        unet.forward = real_forward
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    unet.forward = failing_forward
    yield
    unet.forward = real_forward


def test_out_of_memory_fails_the_call_not_the_engine(
    engine: DiffusersEngine, unet_out_of_memory_once: None
) -> None:
    """An OOM becomes OutOfMemoryError with advice, and the next call works."""
    with pytest.raises(OutOfMemoryError, match="ran out of memory making 2 image"):
        engine.generate([small_request().validated()])
    assert len(engine.generate([small_request().validated()])[0].images) == 2


@pytest.mark.parametrize("tail", ["é" * 80, "猫" * 40, "👩‍👩‍👧" * 20, "🇫🇷" * 30])
def test_cut_prompt_note_shows_whole_characters(engine: DiffusersEngine, tail: str) -> None:
    """The note quoting the cut-off text never shows "�": the byte-level tokenizer splits
    multi-byte characters across tokens, so the quote is taken from the member's own text and
    cut between whole characters (emoji ZWJ sequences and flags included)."""
    prompt = "a red fox " * 7 + tail
    result = engine.generate([small_request(prompt, count=1).validated()])[0]
    [warning] = result.warnings
    quoted = warning.split("ignored: “", 1)[1].rstrip("”")
    assert "\ufffd" not in warning
    body = quoted.rstrip("…")
    assert body and body in prompt
    # Whole characters only: every grapheme quoted is one of the prompt's graphemes.
    assert set(graphemes(body)) <= set(graphemes(prompt))


def test_guidance_at_or_below_one_ignores_guidance_and_negative(engine: DiffusersEngine) -> None:
    """Why `GenerationRequest.validated` refuses guidance < 1 and a negative prompt at
    guidance <= 1: diffusers skips classifier-free guidance there, so the images are the same
    (requests built past validation on purpose, to show the pipeline's behaviour)."""
    from dataclasses import replace

    base = small_request(count=1, guidance=1.0).validated()

    def changed(**fields: object) -> object:
        return replace(base, params=replace(base.params, **fields))

    images = [
        engine.generate([request])[0].images[0].tobytes()
        for request in (
            base,
            changed(guidance=0.0),
            changed(guidance=0.5),
            changed(negative_prompt="blurry, text"),
        )
    ]
    assert len(set(images)) == 1
    guided = engine.generate([changed(guidance=3.0, negative_prompt="blurry")])[0]
    assert guided.images[0].tobytes() != images[0]
