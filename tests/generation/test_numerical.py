"""Silent numerical failures (issue 9, item 1): NaN latents, an overflowing VAE, black images.

The tiny random pipeline runs for real; forward hooks (`tests.generation.numerical`) make its
UNet or VAE decoder produce what float16 overflow produces. Its images are noise otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch

from generation.engine import BLACK_REASON, NAN_REASON, DiffusersEngine
from generation.errors import NumericalError
from generation.loading import ModelSpec, decode_in_float32, vae_decoder_modules
from generation.service import GenerationService
from tests.generation.conftest import make_service, small_request
from tests.generation.numerical import black, inf, nan, poisoned


@pytest.fixture
def fp16_decoder(engine: DiffusersEngine) -> Iterator[torch.nn.Module]:
    """The engine's VAE decoder in float16, as on a GPU (CPU float16 convolutions work)."""
    vae = engine.model.txt2img.vae
    for module in vae_decoder_modules(vae):
        module.to(torch.float16)
    try:
        yield vae.decoder
    finally:
        for module in vae_decoder_modules(vae):
            module.to(torch.float32)


@pytest.mark.parametrize("guidance", [1.0, 7.5])  # without and with classifier-free guidance
def test_nan_from_the_unet_fails_only_the_affected_image(
    engine: DiffusersEngine, guidance: float, caplog: pytest.LogCaptureFixture
) -> None:
    request = small_request(count=3, seed=5, guidance=guidance).validated()
    clean = engine.generate([request])[0]
    with caplog.at_level(logging.WARNING), poisoned(
        engine.model.txt2img.unet, {1}, nan, count=3
    ):
        result = engine.generate([request])[0]
    assert result.failures == {1: NAN_REASON}
    assert not result.all_failed
    # The other images are untouched.
    assert result.images[0].tobytes() == clean.images[0].tobytes()
    assert result.images[2].tobytes() == clean.images[2].tobytes()
    [record] = [r for r in caplog.records if "unusable image" in r.getMessage()]
    message = record.getMessage()
    for part in ("seed=6", "steps=3", f"guidance={guidance:g}", "size=64x64", "prompt='a red fox'"):
        assert part in message


def test_every_image_nan_fails_the_whole_result(engine: DiffusersEngine) -> None:
    with poisoned(engine.model.txt2img.unet, None, inf):
        result = engine.generate([small_request(count=2).validated()])[0]
    assert result.all_failed and set(result.failures) == {0, 1}


def test_variation_latents_are_checked_too(engine: DiffusersEngine) -> None:
    source = engine.generate([small_request(count=1).validated()])[0].images[0]
    request = small_request(count=2, steps=5, init_image=source, strength=0.6).validated()
    with poisoned(engine.model.img2img.unet, {0}, nan, count=2):
        result = engine.generate([request])[0]
    assert result.failures == {0: NAN_REASON}


def test_fp16_decode_overflow_is_retried_in_float32(
    engine: DiffusersEngine, fp16_decoder: torch.nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the decode overflowed (finite latents): one retry with the decoder in float32
    gives the image, and the decoder is back in float16 afterwards."""
    request = small_request(count=2, seed=9).validated()
    in_fp16 = lambda tensor: tensor.dtype == torch.float16  # noqa: E731
    with caplog.at_level(logging.WARNING), poisoned(fp16_decoder, {0}, inf, when=in_fp16):
        result = engine.generate([request])[0]
    assert result.failures == {}
    assert next(fp16_decoder.parameters()).dtype == torch.float16
    assert any("retrying in float32" in r.getMessage() for r in caplog.records)


def test_decode_overflow_in_float32_too_fails_the_image(
    engine: DiffusersEngine, fp16_decoder: torch.nn.Module
) -> None:
    with poisoned(fp16_decoder, None, nan):  # in float16 and in float32 alike
        result = engine.generate([small_request(count=2).validated()])[0]
    assert result.failures == {0: NAN_REASON, 1: NAN_REASON}
    assert next(fp16_decoder.parameters()).dtype == torch.float16


def test_uniformly_black_image_fails(engine: DiffusersEngine) -> None:
    with poisoned(engine.model.txt2img.vae.decoder, {0}, black):
        result = engine.generate([small_request(count=2).validated()])[0]
    assert result.failures == {0: BLACK_REASON}


def test_vae_float32_setting_keeps_the_decoder_in_float32(engine: DiffusersEngine) -> None:
    """`model.vae_float32`: the decoding half in float32, the encoder (variations) untouched."""
    vae = engine.model.txt2img.vae
    try:
        vae.to(torch.float16)
        decode_in_float32(vae)
        assert all(p.dtype == torch.float32 for m in vae_decoder_modules(vae)
                   for p in m.parameters())
        assert next(vae.encoder.parameters()).dtype == torch.float16
        result = engine.generate([small_request(count=1).validated()])[0]
        assert result.failures == {}
    finally:
        vae.to(torch.float32)


async def test_service_fails_a_job_with_no_usable_image(tiny_spec: ModelSpec) -> None:
    """A job whose every image failed ends as JobFailed with the reason, not as a result."""
    service: GenerationService = make_service(tiny_spec, max_batch_images=1)
    await service.start()
    try:
        engine = service._engine  # the hook needs the loaded model
        assert isinstance(engine, DiffusersEngine)
        with poisoned(engine.model.txt2img.unet, None, nan):
            job = service.submit(small_request(count=2).validated(), owner="a")
            with pytest.raises(NumericalError, match="invalid numbers"):
                await job.result()
        ok = await service.submit(small_request(count=1).validated(), owner="a").result()
        assert ok.failures == {}
    finally:
        await service.close()
