"""Building requests in tests: `make_request("a fox", steps=3)` instead of the two-level
`GenerationRequest(GenerationParams("a fox", steps=3))`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from generation.params import GenerationParams
from generation.request import GenerationRequest

if TYPE_CHECKING:
    from PIL.Image import Image

#: The strength test variations use when none is given.
TEST_STRENGTH = 0.6


def make_request(
    prompt: str = "a red fox", init_image: Image | None = None, **params: Any
) -> GenerationRequest:
    """A request for `prompt` with `params`; a variation of `init_image` when given."""
    if init_image is not None:
        params.setdefault("strength", TEST_STRENGTH)
    return GenerationRequest(GenerationParams(prompt, **params), init_image=init_image)
