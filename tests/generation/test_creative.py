"""Upscale, Zoom Out and Pan on the tiny random-weight models (their images are noise: the tests
check sizes, placement, determinism and errors, never what a picture shows)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from generation.canvas import FILL, Direction, fit_within, outpaint_canvas
from generation.engine import DiffusersEngine
from generation.errors import RequestError
from generation.loading import ModelSpec
from generation.params import GenerationParams, Limits
from generation.request import GenerationRequest, Operation
from generation.tiny import TINY_MODEL_ID

BUDGET = 768 * 768


def gradient(width: int, height: int) -> Image.Image:
    """A source whose every pixel differs from its neighbours' (placement errors show)."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 3 % 256, y * 5 % 256, (x + y) % 256) for y in range(height)
                   for x in range(width)])
    return image


@pytest.fixture(scope="module")
def creative(tiny_cache: Path) -> Iterator[DiffusersEngine]:
    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache,
                     inpaint_id=TINY_MODEL_ID, upscaler_id=TINY_MODEL_ID)
    engine = DiffusersEngine(spec)
    engine.load()
    yield engine
    engine.close()


# -- canvases -------------------------------------------------------------------------------


@pytest.mark.parametrize(("zoom", "size", "box"), [
    (2.0, (128, 192), (32, 48, 96, 144)),
    (1.5, (96, 144), (16, 24, 80, 120)),
])
def test_zoom_centres_the_unchanged_source(
    zoom: float, size: tuple[int, int], box: tuple[int, int, int, int]
) -> None:
    source = gradient(64, 96)
    canvas = outpaint_canvas(source, zoom=zoom, max_pixels=BUDGET)
    assert canvas.size == size and canvas.box == box
    assert canvas.image.crop(box).tobytes() == source.tobytes()
    assert canvas.mask.crop(box).getextrema() == (0, 0)
    # Everything outside the source is to be painted, and starts grey.
    assert sorted(canvas.mask.getcolors()) == [(64 * 96, 0), (size[0] * size[1] - 64 * 96, 255)]
    assert canvas.image.getpixel((0, 0)) == FILL


@pytest.mark.parametrize(("direction", "size", "origin"), [
    (Direction.LEFT, (96, 96), (32, 0)),
    (Direction.RIGHT, (96, 96), (0, 0)),
    (Direction.UP, (64, 144), (0, 48)),
    (Direction.DOWN, (64, 144), (0, 0)),
])
def test_pan_puts_the_source_at_the_opposite_edge(
    direction: Direction, size: tuple[int, int], origin: tuple[int, int]
) -> None:
    source = gradient(64, 96)
    canvas = outpaint_canvas(source, pan=direction, max_pixels=BUDGET)
    assert canvas.size == size
    assert canvas.box == (*origin, origin[0] + 64, origin[1] + 96)
    assert canvas.image.crop(canvas.box).tobytes() == source.tobytes()


def test_canvas_over_budget_scales_the_source_down_first() -> None:
    source = gradient(512, 512)
    canvas = outpaint_canvas(source, zoom=2, max_pixels=BUDGET)
    assert canvas.size == (768, 768)  # not 1024x1024
    assert canvas.box == (192, 192, 576, 576)  # the source, shrunk to 384x384, centred
    assert canvas.size[0] * canvas.size[1] <= BUDGET


@pytest.mark.parametrize(
    ("size", "fitted"),
    [((1024, 1024), (768, 768)), ((1536, 768), (1080, 536)), ((512, 512), (512, 512))],
)
def test_fit_within_scales_an_upscale_down_to_the_budget(
    size: tuple[int, int], fitted: tuple[int, int]
) -> None:
    """Vary redraws a source at its own size: an upscale (up to 4x the budget) is scaled
    down first, proportions kept, sides multiples of 8; a source within budget is untouched."""
    source = gradient(*size)
    out = fit_within(source, BUDGET)
    assert out.size == fitted and out.size[0] * out.size[1] <= BUDGET
    assert (out is source) is (size == fitted)


def test_pan_past_four_to_one_is_refused() -> None:
    with pytest.raises(RequestError, match="4:1"):
        outpaint_canvas(gradient(256, 64), pan=Direction.LEFT, max_pixels=BUDGET)


def test_canvas_needs_exactly_one_of_zoom_and_pan() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        outpaint_canvas(gradient(64, 64), zoom=2, pan=Direction.UP, max_pixels=BUDGET)


# -- requests -------------------------------------------------------------------------------


def upscale(source: Image.Image, operation: Operation, **changes: object) -> GenerationRequest:
    """An upscale of `source`; only the creative one (img2img) has a strength."""
    fields: dict[str, object] = {
        "prompt": "a lighthouse", "seed": 7, "count": 1, "steps": 3, "guidance": 1.0,
        "width": 2 * source.width, "height": 2 * source.height,
        "strength": 0.35 if operation is Operation.UPSCALE_CREATIVE else None,
    }
    fields.update(changes)
    params = GenerationParams(**fields)  # type: ignore[arg-type]
    return GenerationRequest(params, init_image=source, operation=operation)


def reseeded(request: GenerationRequest, seed: int) -> GenerationRequest:
    return replace(request, params=replace(request.params, seed=seed))


def outpaint(source: Image.Image, seed: int = 3, **where: object) -> GenerationRequest:
    canvas = outpaint_canvas(source, max_pixels=BUDGET, **where)  # type: ignore[arg-type]
    params = GenerationParams("a lighthouse", seed=seed, count=2, steps=3,
                              width=canvas.size[0], height=canvas.size[1])
    return GenerationRequest(params, init_image=canvas.image, mask_image=canvas.mask,
                             operation=Operation.OUTPAINT)


def test_upscale_output_must_be_twice_the_source() -> None:
    with pytest.raises(RequestError, match="must be 128x128"):
        upscale(gradient(64, 64), Operation.UPSCALE, width=64, height=64).validated()


def test_upscale_has_its_own_pixel_budget() -> None:
    big = gradient(8, 8).resize((768, 768))
    upscale(big, Operation.UPSCALE).validated(Limits())  # 1536x1536: within 4x the budget
    with pytest.raises(RequestError, match="for an upscale"):
        upscale(big, Operation.UPSCALE).validated(Limits(max_upscale_pixels=1024 * 1024))


def test_outpaint_needs_its_mask() -> None:
    request = outpaint(gradient(64, 64), zoom=2)
    with pytest.raises(RequestError, match="mask"):
        replace(request, mask_image=None).validated()
    with pytest.raises(RequestError, match="source image"):
        replace(request, init_image=None).validated()


# -- the engine -----------------------------------------------------------------------------


@pytest.mark.parametrize("operation", [Operation.UPSCALE, Operation.UPSCALE_CREATIVE])
def test_upscales_double_the_size_deterministically(
    creative: DiffusersEngine, operation: Operation
) -> None:
    source = gradient(64, 96)
    request = upscale(source, operation).validated()
    [first] = creative.generate([request])
    [again] = creative.generate([request])
    [other] = creative.generate([reseeded(request, 8)])
    assert [image.size for image in first.images] == [(128, 192)]
    assert first.images[0].tobytes() == again.images[0].tobytes()
    assert first.images[0].tobytes() != other.images[0].tobytes()


def test_upscale_reports_progress_per_step(creative: DiffusersEngine) -> None:
    steps: list[tuple[int, int]] = []
    creative.generate([upscale(gradient(64, 64), Operation.UPSCALE).validated()],
                      on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("where", [{"zoom": 2.0}, {"zoom": 1.5}, {"pan": Direction.UP}])
def test_outpaint_paints_around_the_kept_source(
    creative: DiffusersEngine, where: dict[str, object]
) -> None:
    source = gradient(64, 64)
    canvas = outpaint_canvas(source, max_pixels=BUDGET, **where)  # type: ignore[arg-type]
    request = outpaint(source, **where).validated()
    [result] = creative.generate([request])
    [again] = creative.generate([request])
    assert [image.size for image in result.images] == [canvas.size] * 2
    for image, repeat in zip(result.images, again.images, strict=True):
        assert image.crop(canvas.box).tobytes() == source.tobytes()  # kept exactly
        assert image.tobytes() == repeat.tobytes()  # same seed, same images
        # The new area was painted by the model (noise), not left grey.
        assert image.getpixel((0, 0)) != FILL or image.getpixel((1, 0)) != FILL
    assert result.images[0].tobytes() != result.images[1].tobytes()  # seeds differ


def test_tools_without_their_model_say_what_to_configure(tiny_spec: ModelSpec) -> None:
    engine = DiffusersEngine(tiny_spec)  # no inpaint_id / upscaler_id
    assert not engine.supports(Operation.OUTPAINT) and not engine.supports(Operation.UPSCALE)
    assert engine.supports(Operation.UPSCALE_CREATIVE)
    engine.load()
    try:
        with pytest.raises(RequestError, match="inpaint_id"):
            engine.generate([outpaint(gradient(64, 64), zoom=2).validated()])
        with pytest.raises(RequestError, match="upscaler_id"):
            engine.generate([upscale(gradient(64, 64), Operation.UPSCALE).validated()])
    finally:
        engine.close()


def test_not_an_inpainting_model_is_refused(tiny_cache: Path) -> None:
    from generation.errors import GenerationError

    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache,
                     inpaint_id=str(tiny_cache / "tiny-random-v1"))
    engine = DiffusersEngine(spec)
    engine.load()
    try:
        with pytest.raises(GenerationError, match="not an inpainting model"):
            engine.generate([outpaint(gradient(64, 64), zoom=2).validated()])
    finally:
        engine.close()


# -- Upscale (Creative) in tiles ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiling(tiny_cache: Path) -> Iterator[DiffusersEngine]:
    """The tiny model with one pass of at most 96x96 pixels: a 2x upscale of 64x64 runs in
    four overlapping 96x96 tiles (2 columns x 2 rows, 64 pixels shared)."""
    engine = DiffusersEngine(ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache,
                                       upscale_tile=96, upscale_overlap=32))
    engine.load()
    yield engine
    engine.close()


def test_creative_upscale_past_one_pass_runs_in_tiles(tiling: DiffusersEngine) -> None:
    source = gradient(64, 64)
    request = upscale(source, Operation.UPSCALE_CREATIVE, count=2).validated()
    steps: list[tuple[int, int]] = []
    [result] = tiling.generate([request], on_step=lambda i, n: steps.append((i, n)))
    assert [image.size for image in result.images] == [(128, 128)] * 2
    assert not result.failures
    # 4 tiles, each the same img2img steps: progress counts them all, in order, once.
    total = steps[-1][1]
    assert total % 4 == 0 and steps == [(i, total) for i in range(1, total + 1)]
    assert result.images[0].tobytes() != result.images[1].tobytes()  # each image its seed


def test_a_nan_tile_fails_its_image(tiling: DiffusersEngine) -> None:
    from generation.decoding import NAN_REASON
    from tests.generation.numerical import nan, poisoned

    request = upscale(gradient(64, 64), Operation.UPSCALE_CREATIVE, count=2).validated()
    calls = iter(range(100))
    # Poison image 1 in the third tile's UNet call only.
    with poisoned(tiling.model.img2img.unet, {1}, nan, count=2,
                  when=lambda tensor: next(calls) == 2):
        [result] = tiling.generate([request])
    assert result.failures == {1: NAN_REASON}


# -- Upscale (Subtle) goes through the checked decode ------------------------------------------


def test_upscale_subtle_nan_fails_the_image(creative: DiffusersEngine) -> None:
    from generation.decoding import NAN_REASON
    from tests.generation.numerical import nan, poisoned

    request = upscale(gradient(64, 64), Operation.UPSCALE).validated()
    clean = creative.generate([request])[0]
    assert not clean.failures
    upscaler = creative.residency.use("upscaler", lambda: pytest.fail("loaded already"))
    with poisoned(upscaler.unet, None, nan):
        [result] = creative.generate([request])
    assert result.all_failed and result.failures == {0: NAN_REASON}


def test_upscale_subtle_decode_overflow_is_retried_in_float32(creative: DiffusersEngine) -> None:
    from generation.loading import vae_decoder_modules
    from tests.generation.numerical import inf, poisoned

    request = upscale(gradient(64, 64), Operation.UPSCALE).validated()
    vae = creative.model.txt2img.vae  # the upscaler decodes with the main model's VAE
    for module in vae_decoder_modules(vae):
        module.to(torch.float16)
    try:
        with poisoned(vae.decoder, None, inf, when=lambda t: t.dtype == torch.float16):
            [result] = creative.generate([request])
    finally:
        for module in vae_decoder_modules(vae):
            module.to(torch.float32)
    assert not result.failures and result.images[0].size == (128, 128)
