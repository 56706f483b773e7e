"""Composing a job's images into one grid, and encoding images to bytes.

Pure PIL, CPU-bound: call these off the event loop and off the GPU worker thread (the bot
runs them through its one thread helper, `bot.core.threads.Threads`). PNG is written at
compression level 1 and never with ``optimize=True``: on a 1024x1024 grid that is about 70 ms
instead of 120-250 ms.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

from PIL import Image

from generation.png_info import PARAMETERS_KEY, png_info

ImageFormat = Literal["png", "webp", "jpeg"]
FORMATS: tuple[str, ...] = ("png", "webp", "jpeg")
#: File name extension (no dot) for each format.
EXTENSIONS: dict[str, str] = {"png": "png", "webp": "webp", "jpeg": "jpg"}

_PIL_FORMATS = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows): 2x2 for four images, one row otherwise."""
    if count < 1:
        raise ValueError("a grid needs at least one image")
    return (2, 2) if count == 4 else (count, 1)


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """One image holding `images` side by side (2x2 for four, 1xN otherwise), no gaps.

    All images must have the same size (they come from one job). A single image is returned
    as a copy.
    """
    if not images:
        raise ValueError("a grid needs at least one image")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError("grid images must all have the same size")
    columns, rows = grid_shape(len(images))
    grid = Image.new("RGB", (columns * width, rows * height))
    for image in images:  # the first image's parameters, as AUTOMATIC1111's grids carry
        if PARAMETERS_KEY in image.info:
            grid.info[PARAMETERS_KEY] = image.info[PARAMETERS_KEY]
            break
    for index, image in enumerate(images):
        column, row = index % columns, index // columns
        grid.paste(image.convert("RGB"), (column * width, row * height))
    return grid


def encode_image(image: Image.Image, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode as PNG (fast level 1), WebP or JPEG (`quality` 1-100 for the lossy two).

    A PNG carries the image's generation parameters (`generation.png_info`), if it has any.
    """
    fmt = normalize_format(fmt)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1, pnginfo=png_info(image))
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_to_fit(image: Image.Image, limit_bytes: int) -> tuple[bytes, str]:
    """The best encoding of `image` no larger than `limit_bytes`, and its file extension.

    Tries PNG (lossless) first, then WebP at falling quality, then JPEG, then the same at
    smaller sizes (each step 3/4 of the previous). Discord's upload limit (10 MiB for most
    servers in 2025, 25 MiB or more for boosted ones) is the usual `limit_bytes`. Raises
    `ValueError` if even a thumbnail does not fit.
    """
    if limit_bytes <= 0:
        raise ValueError("limit_bytes must be positive")
    data = encode_image(image, "png")
    if len(data) <= limit_bytes:
        return data, EXTENSIONS["png"]
    current = image
    while True:
        for fmt, quality in (("webp", 90), ("webp", 75), ("jpeg", 85), ("webp", 60), ("jpeg", 60)):
            data = encode_image(current, fmt, quality)
            if len(data) <= limit_bytes:
                return data, EXTENSIONS[fmt]
        width, height = current.size
        if min(width, height) <= 64:
            raise ValueError(f"cannot encode the image in {limit_bytes} bytes")
        size = (max(1, width * 3 // 4), max(1, height * 3 // 4))
        current = image.resize(size, Image.Resampling.LANCZOS)


def normalize_format(fmt: str) -> str:
    """'PNG', 'jpg', '.jpeg' -> 'png', 'jpeg', 'jpeg'; ValueError for anything else."""
    name = fmt.strip().lower().removeprefix(".")
    name = {"jpg": "jpeg"}.get(name, name)
    if name not in _PIL_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; use one of: {', '.join(FORMATS)}")
    return name


def encode(
    image: Image.Image, fmt: str = "png", limit_bytes: int | None = None
) -> tuple[bytes, str]:
    """`image` as `fmt`, or (with `limit_bytes`) as the best encoding that fits; and its
    file extension (no dot). Blocking, CPU-bound: run it off the event loop."""
    if limit_bytes is not None:
        return encode_to_fit(image, limit_bytes)
    name = normalize_format(fmt)
    return encode_image(image, name), EXTENSIONS[name]


def encode_grid(
    images: Sequence[Image.Image], fmt: str = "png", limit_bytes: int | None = None
) -> tuple[bytes, str]:
    """The grid of `images` (`make_grid`) encoded like `encode` does it."""
    return encode(make_grid(images), fmt, limit_bytes)
