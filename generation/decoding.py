"""Latents to images, checked for silent numerical failure; shared by both ways of running.

fp16 overflow in the UNet or the VAE gives NaN or infinite values, which show as black images.
`decode_checked` fails an image whose latents are not finite; a decode that overflows while the
latents were fine is retried once with the VAE in float32 (diffusers' own remedy, the
`force_upcast` path of its SDXL pipelines); an image still not finite, or uniformly black,
fails. Used by the pipeline path (`generation.engine`) and the step-level batch
(`generation.continuous`), so neither hands back a black image as a result.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from generation.loading import vae_decoder_modules

if TYPE_CHECKING:
    from PIL.Image import Image

    from generation.request import GenerationRequest

__all__ = ["BLACK_LEVEL", "BLACK_REASON", "NAN_REASON", "decode_checked", "log_failures"]

log = logging.getLogger(__name__)

#: An image whose every channel value is at most this (of 255) is "uniformly black": what a
#: NaN decode turns into, never a real picture (even a night scene has noise above this).
BLACK_LEVEL = 2
NAN_REASON = (
    "the model computed invalid numbers (NaN/overflow, common with float16 and some "
    "fine-tuned models), so there is no image"
)
BLACK_REASON = "the model produced a uniformly black image"


def decode_checked(
    vae: Any,
    processor: Any,
    latents: torch.Tensor,
    do_denormalize: list[bool] | None = None,
) -> tuple[list[Image], dict[int, str]]:
    """Decode `latents` (batch, 4, h, w) to PIL images with `vae` and the pipeline's image
    `processor`; returns the images and, for each unusable one (0-based), why. Out-of-memory
    errors propagate (the callers split or fail the batch)."""
    failures: dict[int, str] = {}
    latents_ok = _finite_per_image(latents)
    pixels = _vae_decode(vae, latents)
    pixels_ok = _finite_per_image(pixels)
    overflowed = [i for i in range(len(pixels)) if latents_ok[i] and not pixels_ok[i]]
    if overflowed and decoder_dtype(vae) != torch.float32:
        log.warning(
            "the VAE decode overflowed in %s for %d image(s); retrying in float32 "
            "(set model.vae_float32 = true to always decode in float32)",
            str(decoder_dtype(vae)).removeprefix("torch."),
            len(overflowed),
        )
        retried = _vae_decode_float32(vae, latents[overflowed])
        pixels = pixels.clone()
        pixels[overflowed] = retried.to(pixels.dtype)
        pixels_ok = _finite_per_image(pixels)
    for i, ok in enumerate(pixels_ok):
        if not ok:
            failures[i] = NAN_REASON
    pixels = torch.nan_to_num(pixels.float(), nan=-1.0, posinf=-1.0, neginf=-1.0)
    images = processor.postprocess(pixels, output_type="pil", do_denormalize=do_denormalize)
    for i, image in enumerate(images):
        if i not in failures and max(high for _, high in image.getextrema()) <= BLACK_LEVEL:
            failures[i] = BLACK_REASON
    return list(images), failures


def log_failures(
    requests: Sequence[GenerationRequest],
    failures: dict[int, str],
    *,
    model_id: str,
    dtype: torch.dtype,
    vae_float32: bool,
) -> None:
    """One warning per unusable image (indexes over the requests' images, in order), with
    what an operator needs to reproduce it."""
    seeds = [(r, seed) for r in requests for seed in r.seeds]
    for index, reason in sorted(failures.items()):
        request, seed = seeds[index]
        log.warning(
            "unusable image: %s; model=%s dtype=%s vae_float32=%s seed=%d steps=%d "
            "guidance=%g size=%dx%d scheduler=%s variation=%s prompt=%r negative=%r",
            reason,
            model_id,
            str(dtype).removeprefix("torch."),
            vae_float32,
            seed,
            request.params.steps,
            request.params.guidance,
            request.params.width,
            request.params.height,
            request.params.scheduler,
            request.is_variation,
            request.params.prompt,
            request.params.negative_prompt,
        )


def decoder_dtype(vae: Any) -> torch.dtype:
    """The dtype the VAE decoder runs in."""
    return next(vae.decoder.parameters()).dtype


def _finite_per_image(tensor: torch.Tensor) -> list[bool]:
    """For each image of a batch (first dimension): are all its values finite?"""
    return [bool(ok) for ok in torch.isfinite(tensor).flatten(1).all(dim=1).cpu()]


def _vae_decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Decode as the SD pipeline does (``latents / scaling_factor``), in the decoder's dtype;
    returns pixels in [-1, 1] (or NaN/inf when it overflowed)."""
    with torch.inference_mode():
        scaled = latents.to(decoder_dtype(vae)) / vae.config.scaling_factor
        return vae.decode(scaled, return_dict=False)[0]


def _vae_decode_float32(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Decode once with the decoding modules in float32, then put them back (the SDXL
    pipelines' `upcast_vae` step, limited to the images that overflowed)."""
    modules = vae_decoder_modules(vae)
    dtype = decoder_dtype(vae)
    try:
        for module in modules:
            module.to(torch.float32)
        return _vae_decode(vae, latents.float())
    finally:
        for module in modules:
            module.to(dtype)
