"""Request validation and aspect ratios."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from generation.errors import RequestError
from generation.params import MAX_SEED, Limits
from generation.request import MIN_VARIATION_DENOISE, parse_aspect, variation_steps
from tests.requests import make_request


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "   "}, "The prompt is empty"),
        ({"width": 500}, "width must be a multiple of 8, got 500"),
        ({"height": 36}, "height must be at least 64 pixels, got 36"),
        ({"width": 1024, "height": 1024}, "1024x1024 is 1,048,576 pixels, over the limit"),
        ({"width": 1024, "height": 128}, "too elongated"),
        ({"steps": 500}, "steps must be between 1 and 100, got 500"),
        ({"steps": 0}, "steps must be between 1 and 100, got 0"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"guidance": 31.0}, "guidance must be between 1 and 30, got 31"),
        ({"guidance": -1.0}, "guidance must be between 1 and 30, got -1"),
        ({"guidance": math.nan}, "guidance must be a finite number"),
        ({"guidance": math.inf}, "guidance must be a finite number"),
        ({"scheduler": "k_lms"}, "Unknown scheduler 'k_lms'; choose one of: pndm, ddim"),
        ({"count": 0}, "count must be between 1 and 4 images, got 0"),
        ({"count": 5}, "count must be between 1 and 4 images, got 5"),
        ({"seed": -1}, "seed must be between 0 and 4294967295, got -1"),
        ({"seed": 2**32}, "seed must be between 0 and 4294967295"),
    ],
)
def test_bad_input_has_its_message(overrides: dict, message: str) -> None:
    """Each invalid field is refused with a message that names it and the allowed range."""
    fields = {"prompt": "a cat", **overrides}
    with pytest.raises(RequestError) as info:
        make_request(**fields).validated(Limits())
    assert message in str(info.value)


def test_limits_come_from_configuration() -> None:
    """Configured limits replace the defaults in validation and in the messages."""
    limits = Limits(max_steps=30, max_pixels=512 * 512, max_guidance=12.0)
    with pytest.raises(RequestError, match="steps must be between 1 and 30, got 40"):
        make_request("a cat", steps=40).validated(limits)
    with pytest.raises(RequestError, match="over the limit of 262,144"):
        make_request("a cat", width=576, height=512).validated(limits)


def test_variation_strength_is_checked() -> None:
    """A variation needs a strength in (0, 1] that leaves at least one denoising step."""
    from PIL import Image

    image = Image.new("RGB", (64, 64))
    with pytest.raises(RequestError, match=r"strength must be between 0 and 1, got 1\.5"):
        make_request("a cat", init_image=image, strength=1.5).validated()
    with pytest.raises(RequestError, match="runs no denoising step"):
        make_request("a cat", init_image=image, strength=0.1, steps=5).validated()


def test_missing_seed_is_drawn_and_kept() -> None:
    """Validation fills a random 32-bit seed; image i then uses seed + i."""
    request = make_request("  a cat  ", count=3).validated()
    seed = request.params.seed
    assert seed is not None and 0 <= seed <= MAX_SEED
    assert request.seeds == [(seed + i) % (MAX_SEED + 1) for i in range(3)]
    assert request.params.prompt == "a cat"
    assert request.validated() == request


def test_given_seed_is_kept() -> None:
    """An explicit seed passes through unchanged."""
    assert make_request("a cat", seed=7, count=2).validated().seeds == [7, 8]


def test_image_seeds_wrap_to_stay_typeable() -> None:
    """Past the largest seed, image seeds wrap to 0, so each can be given back as a seed."""
    request = make_request("a cat", seed=MAX_SEED - 1, count=4).validated()
    assert request.seeds == [MAX_SEED - 1, MAX_SEED, 0, 1]


@pytest.mark.parametrize(
    ("ratio", "size"),
    [
        ("1:1", (512, 512)),
        ("3:2", (576, 384)),
        ("2:3", (384, 576)),
        ("4:3", (576, 448)),
        ("3:4", (448, 576)),
        ("16:9", (704, 384)),
        ("9:16", (384, 704)),
        ("2:1", (768, 384)),
        ("4:1", (1024, 256)),
        ("16x9", (704, 384)),
        (" 1.91 : 1 ", (704, 384)),
    ],
)
def test_aspect_ratio_maps_near_native_size(ratio: str, size: tuple[int, int]) -> None:
    """Common and custom ratios give multiples of 64 near 512x512 pixels."""
    width, height = parse_aspect(ratio)
    assert (width, height) == size
    assert width % 64 == 0 and height % 64 == 0
    assert 0.8 <= width * height / (512 * 512) <= 1.2
    make_request("a cat", width=width, height=height).validated()


def test_aspect_ratio_respects_pixel_limit() -> None:
    """With a tighter pixel budget the size shrinks to fit it."""
    width, height = parse_aspect("1:1", Limits(max_pixels=448 * 448))
    assert (width, height) == (448, 448)


@pytest.mark.parametrize(
    ("ratio", "message"),
    [
        ("wide", "must look like W:H"),
        ("16:", "must look like W:H"),
        ("-1:2", "must look like W:H"),
        ("0:1", "zero side"),
        ("5:1", "too extreme"),
        ("1:10", "too extreme"),
    ],
)
def test_bad_aspect_ratio_has_its_message(ratio: str, message: str) -> None:
    """Malformed or extreme ratios are refused with a clear message."""
    with pytest.raises(RequestError, match=message):
        parse_aspect(ratio)


def test_batch_key_groups_compatible_requests() -> None:
    """Prompt and seed do not matter for batching; size, steps and scheduler do."""
    a = make_request("a cat", seed=1)
    assert a.batch_key == make_request("a dog", seed=99, count=1).batch_key
    assert a.batch_key != make_request("a cat", steps=30).batch_key
    assert a.batch_key != make_request("a cat", scheduler="ddim").batch_key
    assert a.batch_key != make_request("a cat", width=576).batch_key


# -- parameters that would silently do nothing (issue 9, item 6) ----------------------------


@pytest.mark.parametrize("guidance", [0.0, 0.5, 0.999])
def test_guidance_below_one_is_refused_with_the_reason(guidance: float) -> None:
    """diffusers turns CFG off at guidance <= 1: every value in [0, 1] gives one image."""
    with pytest.raises(RequestError, match="same effect as 1"):
        make_request("a cat", guidance=guidance).validated()


@pytest.mark.parametrize("guidance", [1, 1.0])
def test_negative_prompt_without_guidance_is_refused(guidance: float) -> None:
    with pytest.raises(RequestError, match="negative prompt"):
        make_request("a cat", negative_prompt="text", guidance=guidance).validated()


def test_guidance_one_without_negative_is_no_guidance() -> None:
    request = make_request("a cat", guidance=1.0).validated()
    assert request.params.guidance == 1.0
    make_request("a cat", negative_prompt="text", guidance=1.5).validated()


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 6, 7, 25, 100])
@pytest.mark.parametrize("strength", [0.1, 0.6, 1.0])
def test_variation_steps_always_denoise_enough(steps: int, strength: float) -> None:
    """A variation of any job runs at least MIN_VARIATION_DENOISE denoising steps and passes
    validation, within max_steps; long jobs keep their steps."""
    limits = Limits(max_steps=100)
    raised = variation_steps(steps, strength, limits)
    assert raised >= steps and raised <= max(steps, limits.max_steps)
    assert int(raised * strength) >= MIN_VARIATION_DENOISE
    if int(steps * strength) >= MIN_VARIATION_DENOISE:
        assert raised == steps
    image = Image.new("RGB", (64, 64))
    make_request(
        "a cat", init_image=image, steps=raised, strength=strength, width=64, height=64
    ).validated(limits)


def test_variation_steps_stay_within_the_servers_limit() -> None:
    assert variation_steps(1, 0.6, Limits(max_steps=5)) == 5  # 3 denoising steps: the most
