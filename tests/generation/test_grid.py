"""Grids and image encoding."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from generation.grid import encode_image, encode_to_fit, grid_shape, make_grid


def noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    return Image.effect_noise((width, height), 64 + seed).convert("RGB")


@pytest.mark.parametrize(
    ("count", "size"), [(1, (64, 48)), (2, (128, 48)), (3, (192, 48)), (4, (128, 96))]
)
def test_grid_size(count: int, size: tuple[int, int]) -> None:
    """Four images make a 2x2 grid, fewer make one row."""
    images = [noise(seed=i) for i in range(count)]
    grid = make_grid(images)
    assert grid.size == size
    # The last image sits in the bottom-right cell.
    cell = grid.crop((size[0] - 64, size[1] - 48, size[0], size[1]))
    assert cell.tobytes() == images[-1].tobytes()


def test_grid_refuses_mixed_sizes_and_empty() -> None:
    """Images of different sizes, or none, are a programming error."""
    with pytest.raises(ValueError, match="same size"):
        make_grid([noise(), noise(32, 32)])
    with pytest.raises(ValueError):
        make_grid([])
    assert grid_shape(4) == (2, 2)


@pytest.mark.parametrize(("fmt", "pil_name"), [("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG")])
def test_encode_image_formats(fmt: str, pil_name: str) -> None:
    """Each format encodes to bytes PIL reads back at the same size."""
    data = encode_image(noise(), fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_name and decoded.size == (64, 48)


def test_png_is_lossless() -> None:
    """PNG keeps every pixel."""
    image = noise()
    assert Image.open(io.BytesIO(encode_image(image, "png"))).tobytes() == image.tobytes()


def test_encode_to_fit_prefers_png_when_it_fits() -> None:
    """Under a generous limit the PNG is returned as is."""
    data, ext = encode_to_fit(noise(), 10_000_000)
    assert ext == "png" and data.startswith(b"\x89PNG")


def test_encode_to_fit_stays_under_a_small_limit() -> None:
    """Under a tight limit a lossy (and if needed smaller) encoding fits."""
    image = noise(512, 512)
    png_size = len(encode_image(image, "png"))
    limit = png_size // 20
    data, ext = encode_to_fit(image, limit)
    assert len(data) <= limit
    assert ext in ("webp", "jpg")
    Image.open(io.BytesIO(data)).verify()


def test_encode_to_fit_impossible_limit() -> None:
    """A limit no encoding can meet is an error, not an oversized file."""
    with pytest.raises(ValueError, match="cannot encode"):
        encode_to_fit(noise(256, 256), 50)


def test_png_parameters_text_and_grid_carry_them() -> None:
    """The A1111 `parameters` text, per image seed; a grid and an encoded PNG keep the first
    image's; WebP/JPEG simply have none."""
    from generation.events import GenerationResult
    from generation.params import GenerationParams
    from generation.png_info import attach_parameters
    from generation.request import GenerationRequest

    params = GenerationParams(
        "a fox\nin snow", negative_prompt="blur", seed=5, count=2, steps=20, guidance=7.5,
        scheduler="euler_a", width=64, height=64,
    )
    request = GenerationRequest(params)
    images = [Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64))]
    result = GenerationResult(images, [5, 6], [False, False], [], request, "org/model", 1.0)
    attach_parameters(result)
    assert images[1].info["parameters"] == (
        "a fox in snow\nNegative prompt: blur\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 6, Size: 64x64, Model: org/model"
    )
    grid = make_grid(images)
    with Image.open(io.BytesIO(encode_image(grid, "png"))) as decoded:
        assert decoded.info["parameters"] == images[0].info["parameters"]
    data, ext = encode_to_fit(images[1], 10_000_000)
    with Image.open(io.BytesIO(data)) as decoded:
        assert ext == "png" and "Seed: 6," in decoded.info["parameters"]
