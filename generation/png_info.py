"""Generation parameters inside PNG files, in the ``parameters`` text chunk that AUTOMATIC1111's
web UI writes and other Stable Diffusion tools (ComfyUI, InvokeAI, civitai, PNG Info tabs) read::

    a red fox in the snow
    Negative prompt: blurry
    Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234, Size: 512x512, Model: ...

The text travels with the image as ``image.info["parameters"]`` (set by `attach_parameters`
when a result is made), and `encode_image` / the image store write it into every PNG. A grid
carries the parameters of its first image, as AUTOMATIC1111's grids do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image
    from PIL.PngImagePlugin import PngInfo

    from generation.events import GenerationResult
    from generation.params import GenerationParams

__all__ = ["PARAMETERS_KEY", "SAMPLER_NAMES", "attach_parameters", "parameters_text", "png_info"]

PARAMETERS_KEY = "parameters"

#: Our scheduler names as AUTOMATIC1111 spells its samplers.
SAMPLER_NAMES = {
    "pndm": "PLMS",
    "ddim": "DDIM",
    "euler_a": "Euler a",
    "unipc": "UniPC",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
}


def parameters_text(params: GenerationParams, seed: int, model_id: str) -> str:
    """The ``parameters`` text for one image of `params` made with `seed` by `model_id`."""
    lines = [_one_line(params.prompt)]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {_one_line(params.negative_prompt)}")
    fields = [
        ("Steps", str(params.steps)),
        ("Sampler", SAMPLER_NAMES.get(params.scheduler, params.scheduler)),
        ("CFG scale", f"{params.guidance:g}"),
        ("Seed", str(seed)),
        ("Size", f"{params.width}x{params.height}"),
        ("Model", model_id),
    ]
    if params.strength is not None:  # image-to-image (a variation)
        fields.append(("Denoising strength", f"{params.strength:g}"))
    lines.append(", ".join(f"{key}: {value}" for key, value in fields))
    return "\n".join(lines)


def attach_parameters(result: GenerationResult) -> None:
    """Set ``info["parameters"]`` on each of `result`'s images (its own seed each)."""
    for image, seed in zip(result.images, result.seeds, strict=True):
        image.info[PARAMETERS_KEY] = parameters_text(result.request.params, seed, result.model_id)


def png_info(image: Image) -> PngInfo | None:
    """A `PngInfo` holding `image`'s parameters text (None when it has none), for ``save``."""
    text = image.info.get(PARAMETERS_KEY)
    if not isinstance(text, str):
        return None
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    # iTXt: UTF-8 (prompts are not Latin-1); A1111 readers accept it.
    info.add_itxt(PARAMETERS_KEY, text)
    return info


def _one_line(text: str) -> str:
    """Newlines inside a prompt would be read as the next field's line."""
    return " ".join(text.split())
