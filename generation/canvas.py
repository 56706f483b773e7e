"""Canvases for Zoom Out and Pan: the source placed on a larger canvas, the new area masked.

Pure PIL, no model: the canvas and mask go into an `Operation.OUTPAINT` request, and the
inpainting model paints the white part of the mask. What Midjourney's tools do, in sizes:

- Zoom Out ``f`` (2 or 1.5): a canvas ``f`` times the source's sides, the source centred;
- Pan left/right/up/down: 50% more canvas on that side, the source at the opposite edge.

The canvas must stay within the pixel budget (`Limits.max_pixels`): when it would not, the source
is scaled down first (the whole picture keeps its proportions), so a repeated zoom never grows
past the budget. Sides are multiples of `SIZE_MULTIPLE` (the VAE's factor), rounded down.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from PIL import Image

from generation.errors import RequestError
from generation.params import MAX_ASPECT, MIN_SIDE, SIZE_MULTIPLE

__all__ = ["FILL", "Canvas", "Direction", "fit_within", "outpaint_canvas"]

#: Grey for the area to be painted: the inpainting pipeline masks it out anyway, and a neutral
#: value keeps the VAE's encoding of the seam calm.
FILL = (127, 127, 127)
#: How much canvas a pan adds on its side, as a fraction of the source's side.
PAN_EXTENT = 0.5


class Direction(enum.StrEnum):
    """Where a pan adds canvas (the source ends up at the opposite edge)."""

    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Canvas:
    """An outpainting input: `image` (RGB) and `mask` (L, 255 = paint, 0 = keep), same size.

    `box` is (left, top, right, bottom) of the placed source on the canvas, in pixels.
    """

    image: Image.Image
    mask: Image.Image
    box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def outpaint_canvas(
    source: Image.Image,
    *,
    zoom: float | None = None,
    pan: Direction | None = None,
    max_pixels: int,
) -> Canvas:
    """The canvas for Zoom Out `zoom` (> 1) or a pan towards `pan` (exactly one of them).

    Raises `RequestError` when the result would be more elongated than 4:1 (keep panning the
    other way) or smaller than `MIN_SIDE` on a side.
    """
    if (zoom is None) == (pan is None):
        raise ValueError("give exactly one of zoom and pan")
    width, height = source.size
    if zoom is not None:
        if not zoom > 1:
            raise ValueError(f"zoom out must enlarge the canvas, got {zoom}")
        canvas_w, canvas_h = width * zoom, height * zoom
    elif pan in (Direction.LEFT, Direction.RIGHT):
        canvas_w, canvas_h = width * (1 + PAN_EXTENT), float(height)
    else:
        canvas_w, canvas_h = float(width), height * (1 + PAN_EXTENT)
    # Scale the whole picture down when the canvas would be over budget.
    scale = min(1.0, math.sqrt(max_pixels / (canvas_w * canvas_h)))
    out_w = _round_down(canvas_w * scale)
    out_h = _round_down(canvas_h * scale)
    if max(out_w, out_h) > MAX_ASPECT * min(out_w, out_h):
        raise RequestError(
            f"Panning this way would make a {out_w}x{out_h} image, more elongated than 4:1; "
            "pan the other way or zoom out instead."
        )
    if min(out_w, out_h) < MIN_SIDE:
        raise RequestError(f"The canvas would be {out_w}x{out_h}, under {MIN_SIDE} pixels a side.")
    src_w = min(out_w, max(1, round(width * scale)))
    src_h = min(out_h, max(1, round(height * scale)))
    placed = source.convert("RGB")
    if (src_w, src_h) != placed.size:
        placed = placed.resize((src_w, src_h), Image.Resampling.LANCZOS)
    left, top = _origin(out_w, out_h, src_w, src_h, zoom, pan)
    box = (left, top, left + src_w, top + src_h)
    image = Image.new("RGB", (out_w, out_h), FILL)
    image.paste(placed, box[:2])
    mask = Image.new("L", (out_w, out_h), 255)
    mask.paste(0, box)
    return Canvas(image=image, mask=mask, box=box)


def fit_within(source: Image.Image, max_pixels: int) -> Image.Image:
    """`source` scaled down, proportions kept and sides rounded down to multiples of
    `SIZE_MULTIPLE`, to hold at most `max_pixels`; `source` itself when it already does.

    For tools that redraw a source at its own size (Vary) when the source is an upscale,
    which may hold up to 4x the budget.
    """
    width, height = source.size
    if width * height <= max_pixels:
        return source
    scale = math.sqrt(max_pixels / (width * height))
    size = (_round_down(width * scale), _round_down(height * scale))
    return source.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def _round_down(value: float) -> int:
    return max(SIZE_MULTIPLE, int(value) // SIZE_MULTIPLE * SIZE_MULTIPLE)


def _origin(
    out_w: int, out_h: int, src_w: int, src_h: int, zoom: float | None, pan: Direction | None
) -> tuple[int, int]:
    """Top-left corner of the source: centred for a zoom, the far edge for a pan."""
    centre = ((out_w - src_w) // 2, (out_h - src_h) // 2)
    if zoom is not None:
        return centre
    if pan is Direction.LEFT:
        return out_w - src_w, centre[1]
    if pan is Direction.RIGHT:
        return 0, centre[1]
    if pan is Direction.UP:
        return centre[0], out_h - src_h
    return centre[0], 0
