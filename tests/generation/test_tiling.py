"""The tile planner and blend of Upscale (Creative) past one pass's size (`generation.tiling`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from generation.tiling import blend_tiles, feather, plan_tiles, spans


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """(width, height, tile, overlap, align) that the planner accepts."""
    align = draw(st.sampled_from([1, 2, 8]))
    tile = draw(st.integers(min_value=max(align, 4), max_value=200))
    overlap = draw(st.integers(min_value=0, max_value=tile - align))
    width = draw(st.integers(min_value=1, max_value=600))
    height = draw(st.integers(min_value=1, max_value=600))
    return width, height, tile, overlap, align


@settings(deadline=None)
@given(layouts())
def test_tiles_cover_every_pixel_within_bounds(layout: tuple[int, int, int, int, int]) -> None:
    width, height, tile, overlap, align = layout
    boxes = plan_tiles(width, height, tile, overlap, align)
    covered = np.zeros((height, width), dtype=bool)
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        # Every tile has the same size: one batched call per tile position.
        assert (right - left, bottom - top) == (min(tile, width), min(tile, height))
        covered[top:bottom, left:right] = True
    assert covered.all()
    assert len(set(boxes)) == len(boxes)


@settings(deadline=None)
@given(layouts())
def test_neighbours_overlap_enough_and_starts_are_aligned(
    layout: tuple[int, int, int, int, int],
) -> None:
    size, _, tile, overlap, align = layout
    parts = spans(size, tile, overlap, align)
    assert parts[0][0] == 0 and parts[-1][1] == size
    for (start, end), (next_start, _) in itertools.pairwise(parts):
        assert end - next_start >= overlap  # the feather has room
        assert next_start > start  # each tile advances
    for start, _ in parts[:-1]:
        assert start % align == 0


def test_one_tile_when_the_image_fits() -> None:
    assert plan_tiles(512, 384, 768, 128) == [(0, 0, 512, 384)]


def test_a_2x_upscale_of_512_in_768_tiles() -> None:
    # 1024 = two 768 tiles overlapping by 512 (at least the 128 asked for); rows then columns.
    assert plan_tiles(1024, 1024, 768, 128, 8) == [
        (0, 0, 768, 768), (256, 0, 1024, 768), (0, 256, 768, 1024), (256, 256, 1024, 1024),
    ]
    assert spans(2000, 768, 128, 8) == [(0, 768), (616, 1384), (1232, 2000)]


@pytest.mark.parametrize(("size", "tile", "overlap", "align"), [
    (0, 64, 8, 1), (64, 0, 0, 1), (64, 64, -1, 1), (64, 64, 64, 1), (64, 64, 60, 8),
])
def test_impossible_layouts_are_refused(size: int, tile: int, overlap: int, align: int) -> None:
    with pytest.raises(ValueError, match="tile"):
        spans(size, tile, overlap, align)


def test_feather_ramps_only_towards_neighbours() -> None:
    weight = feather((0, 0, 8, 4), width=16, height=4, overlap=4)
    assert weight.shape == (4, 8)
    # Left edge is the image's: full weight; right edge has a neighbour: a linear ramp.
    assert weight[0].tolist() == [1, 1, 1, 1, 0.875, 0.625, 0.375, 0.125]
    assert (weight[:, 0] == 1).all()  # top and bottom are the image's edges
    assert weight.min() > 0


def gradient(width: int, height: int) -> Image.Image:
    pixels = np.fromfunction(
        lambda y, x, c: (x * 3 + y * 5 + c * 40) % 256, (height, width, 3), dtype=np.int64
    )
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def test_blending_the_crops_of_one_image_gives_it_back() -> None:
    image = gradient(200, 136)
    boxes = plan_tiles(200, 136, 64, 16, 8)
    assert len(boxes) > 4
    blended = blend_tiles(image.size, [(box, image.crop(box)) for box in boxes], 16)
    assert blended.tobytes() == image.tobytes()


def test_blend_has_no_seam_between_different_tiles() -> None:
    # Two flat tiles of different brightness: across the overlap the blend moves in small
    # steps from one to the other, with no jump at a tile's edge.
    boxes = plan_tiles(96, 32, 64, 32)
    assert boxes == [(0, 0, 64, 32), (32, 0, 96, 32)]
    tiles = [(boxes[0], Image.new("RGB", (64, 32), (0, 0, 0))),
             (boxes[1], Image.new("RGB", (64, 32), (200, 200, 200)))]
    row = np.asarray(blend_tiles((96, 32), tiles, 32))[16, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 200
    assert (np.diff(row) >= 0).all() and np.diff(row).max() <= 200 / 32 * 2 + 1


def test_tiles_must_cover_the_image() -> None:
    with pytest.raises(ValueError, match="cover"):
        blend_tiles((64, 64), [((0, 0, 32, 64), Image.new("RGB", (32, 64)))], 8)
