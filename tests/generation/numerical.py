"""Making the tiny model fail numerically the way fp16 overflow does, with forward hooks.

The real pipeline runs; a hook on the UNet (or the VAE decoder) replaces chosen images'
output with NaN, infinity or black, as an overflowing float16 layer would. Nothing is mocked:
the engine's checks see exactly what a broken GPU run would give them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

Poison = Callable[[torch.Tensor], torch.Tensor]


def nan(tensor: torch.Tensor) -> torch.Tensor:
    return torch.full_like(tensor, float("nan"))


def inf(tensor: torch.Tensor) -> torch.Tensor:
    return torch.full_like(tensor, float("inf"))


def black(tensor: torch.Tensor) -> torch.Tensor:
    return torch.full_like(tensor, -1.0)  # the VAE's output range is [-1, 1]


@contextlib.contextmanager
def poisoned(
    module: torch.nn.Module,
    images: set[int] | None,
    poison: Poison = nan,
    *,
    count: int | None = None,
    when: Callable[[torch.Tensor], bool] = lambda tensor: True,
) -> Iterator[None]:
    """While active, `module`'s output rows for `images` (0-based, all when None) are poisoned.

    A UNet under classifier-free guidance sees each image twice (unconditional rows first):
    give `count` (images per call) and both rows of an image are poisoned. `when` decides
    from the output tensor whether this call overflows (e.g. only in float16).
    """

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        tensor = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        if not when(tensor):
            return output
        tensor = tensor.clone()
        for row in range(tensor.shape[0]):
            image = row % count if count else row
            if images is None or image in images:
                tensor[row] = poison(tensor[row])
        if isinstance(output, tuple):
            return (tensor, *output[1:])
        if hasattr(output, "sample"):
            output.sample = tensor
            return output
        return tensor

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
