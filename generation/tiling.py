"""Overlapping tiles for Upscale (Creative) past one pass's size, and their seamless blend.

Creative upscale is img2img at twice the size. When that size is more than one pass may hold
(`ModelSpec.upscale_tile`, the side of the largest square pass), the engine runs img2img on
overlapping tiles of the enlarged image, each with the same prompt and seed, and blends them:
`plan_tiles` lays the tiles out (pure arithmetic), `blend_tiles` puts the results together with
a linear feather across each overlap, so no seam shows where two tiles meet.

The planner keeps every tile the same size (one batched pipeline call per tile position) and
inside the image: the last tile of a row or column is moved in to end at the image's edge
rather than padded, so the model never sees made-up border pixels. Libraries checked first:
``tiler`` (numpy tiling with tapering windows) pads the last tile or makes it smaller,
``image-slicer`` and ``patchify`` cut without a feathered merge, ``pytorch-toolbelt``'s
ImageSlicer pads too; none is in the project's dependencies, and this layout is a few lines.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["Box", "blend_tiles", "feather", "plan_tiles", "spans"]

#: (left, top, right, bottom) in pixels, right and bottom exclusive (PIL's crop box).
Box = tuple[int, int, int, int]


def spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Start and end of each tile along one side of `size` pixels.

    Every tile is ``min(tile, size)`` long; neighbours overlap by at least `overlap`; starts are
    multiples of `align` except the last, which ends at `size` (aligned too when `size` and
    `tile` are). Raises ValueError unless ``size >= 1``, ``tile >= 1``, ``0 <= overlap`` and
    ``tile - overlap >= align`` (each tile must advance).
    """
    if size < 1 or tile < 1 or align < 1 or overlap < 0:
        raise ValueError(f"bad tiling: size={size} tile={tile} overlap={overlap} align={align}")
    if tile - overlap < align:
        raise ValueError(f"tile {tile} minus overlap {overlap} must be at least {align}")
    if size <= tile:
        return [(0, size)]
    room = size - tile  # the last tile starts here
    count = math.ceil(room / (tile - overlap)) + 1
    while True:
        aligned = {i * room // (count - 1) // align * align for i in range(count - 1)}
        starts = sorted(aligned | {room})  # alignment may round two starts to one
        if all(b - a <= tile - overlap for a, b in itertools.pairwise(starts)):
            return [(start, start + tile) for start in starts]
        count += 1  # alignment pushed a gap past the stride: one more tile


def plan_tiles(width: int, height: int, tile: int, overlap: int, align: int = 1) -> list[Box]:
    """The boxes of a `width` x `height` image cut into tiles of at most `tile` x `tile`,
    overlapping by at least `overlap` pixels, in rows (top to bottom, left to right); together
    they cover every pixel. One box when the image fits in one tile. See `spans`."""
    return [
        (left, top, right, bottom)
        for top, bottom in spans(height, tile, overlap, align)
        for left, right in spans(width, tile, overlap, align)
    ]


def feather(box: Box, width: int, height: int, overlap: int) -> np.ndarray:
    """The blend weight of each pixel of `box` (float32, shape (h, w)): 1 inside, ramping down
    linearly over `overlap` pixels towards each side that has a neighbour (a side inside the
    image), never to 0, so every covered pixel has a positive total weight."""
    left, top, right, bottom = box

    def ramp(length: int, start_inner: bool, end_inner: bool) -> np.ndarray:
        weight = np.ones(length, dtype=np.float32)
        if overlap <= 0:
            return weight
        rising = (np.arange(length, dtype=np.float32) + 0.5) / overlap
        if start_inner:
            weight = np.minimum(weight, rising)
        if end_inner:
            weight = np.minimum(weight, rising[::-1])
        return weight

    columns = ramp(right - left, left > 0, right < width)
    rows = ramp(bottom - top, top > 0, bottom < height)
    return np.outer(rows, columns)


def blend_tiles(
    size: tuple[int, int], tiles: Sequence[tuple[Box, Image.Image]], overlap: int
) -> Image.Image:
    """One RGB image of `size` from `tiles` (their boxes, from `plan_tiles`, must cover it),
    each weighted by its `feather`: a weighted mean where tiles overlap."""
    width, height = size
    total = np.zeros((height, width, 3), dtype=np.float32)
    weights = np.zeros((height, width, 1), dtype=np.float32)
    for box, image in tiles:
        left, top, right, bottom = box
        if image.size != (right - left, bottom - top):
            raise ValueError(f"tile of {image.size} does not fit its box {box}")
        weight = feather(box, width, height, overlap)[..., None]
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        total[top:bottom, left:right] += pixels * weight
        weights[top:bottom, left:right] += weight
    if not np.all(weights > 0):
        raise ValueError("the tiles do not cover the whole image")
    blended = np.clip(np.rint(total / weights), 0, 255).astype(np.uint8)
    return Image.fromarray(blended, "RGB")
