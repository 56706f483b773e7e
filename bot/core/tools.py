"""The creative tools under a single image, as data: what each makes and from what.

Each tool is a `JobKind`; a job of that kind is made from one image of its parent job (the
"source"), so a stored job says how to make it again (reroll, a lost file after a restart) from
its parent's image. `tool_request` is the one place a tool becomes a `GenerationRequest`; the
Discord side only shows the buttons (`bot.presentation.buttons.ToolButton`).

Strengths (img2img: how much of the denoising is redone, so how far the result may move):

- Vary (Subtle) 0.35: about the last third of the steps, from a mildly noised source; edges,
  texture and small details change, composition, colours and poses stay.
- Vary (Strong) 0.7: from a heavily noised source only the coarse layout and colour masses
  survive, so the subject and idea stay while the composition may change. (V1-V4 under a grid
  use it too.)
- Upscale (Creative) 0.35 at twice the size: enough for the model to draw finer detail into the
  enlarged image without redrawing its content.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from bot.db.models import JobKind
from bot.services.history import JobView
from generation.canvas import Direction, fit_within, outpaint_canvas
from generation.params import NO_GUIDANCE, Limits
from generation.request import GenerationRequest, Operation, variation_steps

__all__ = [
    "TOOLS",
    "UPSCALE_STEPS",
    "VARY_STRONG",
    "VARY_SUBTLE",
    "Tool",
    "tool_request",
]

VARY_SUBTLE = 0.35
VARY_STRONG = 0.7
UPSCALE_CREATIVE_STRENGTH = 0.35
#: The latent upscaler's steps; its model card uses 20 with guidance 0 (no prompt needed): the
#: pipeline turns guidance off at 1 or below, so it runs at `NO_GUIDANCE` (the lowest accepted).
UPSCALE_STEPS = 20


@dataclass(frozen=True)
class Tool:
    """One tool: its kind, the operation it runs (which says which model it needs) and how
    many images it makes (None: the configured grid size)."""

    kind: JobKind
    operation: Operation
    images: int | None = None
    strength: float | None = None
    zoom: float | None = None
    pan: Direction | None = None

    @property
    def makes_single_image(self) -> bool:
        return self.images == 1


TOOLS: dict[JobKind, Tool] = {
    tool.kind: tool
    for tool in (
        Tool(JobKind.UPSCALE, Operation.UPSCALE, images=1),
        Tool(
            JobKind.UPSCALE_CREATIVE,
            Operation.UPSCALE_CREATIVE,
            images=1,
            strength=UPSCALE_CREATIVE_STRENGTH,
        ),
        Tool(JobKind.VARY_SUBTLE, Operation.GENERATE, strength=VARY_SUBTLE),
        Tool(JobKind.VARY_STRONG, Operation.GENERATE, strength=VARY_STRONG),
        Tool(JobKind.ZOOM_2X, Operation.OUTPAINT, zoom=2.0),
        Tool(JobKind.ZOOM_1_5X, Operation.OUTPAINT, zoom=1.5),
        Tool(JobKind.PAN_LEFT, Operation.OUTPAINT, pan=Direction.LEFT),
        Tool(JobKind.PAN_RIGHT, Operation.OUTPAINT, pan=Direction.RIGHT),
        Tool(JobKind.PAN_UP, Operation.OUTPAINT, pan=Direction.UP),
        Tool(JobKind.PAN_DOWN, Operation.OUTPAINT, pan=Direction.DOWN),
    )
}


def tool_request(
    tool: Tool,
    job: JobView,
    source: Image.Image,
    limits: Limits,
    *,
    count: int,
    **changes: Any,
) -> GenerationRequest:
    """The request that makes `tool`'s images from `source` (an image of `job`), with `job`'s
    parameters (prompt, steps, guidance, scheduler) and a new seed.

    `count` is the grid size for tools that make a grid (ignored for single-image tools);
    `changes` (e.g. `seed`) override the resulting parameters. Raises `RequestError`
    (generation) when the canvas cannot be built (a pan past 4:1).
    """
    params = job.params
    if tool.strength is not None and not tool.operation.upscales:
        # Vary on an upscale (which may hold 4x `max_pixels`): redrawn within the budget,
        # as Zoom and Pan scale their canvas down.
        source = fit_within(source, limits.max_pixels)
    fields: dict[str, Any] = {
        "seed": None,
        "strength": None,
        "count": tool.images or count,
        "width": source.width,
        "height": source.height,
    }
    init_image, mask_image = source, None
    if tool.strength is not None:
        # img2img runs steps x strength steps: enough to denoise a few for few-step jobs.
        fields.update(
            strength=tool.strength, steps=variation_steps(params.steps, tool.strength, limits)
        )
    if tool.operation.upscales:
        fields.update(width=2 * source.width, height=2 * source.height)
    if tool.operation is Operation.UPSCALE:
        # Without guidance a negative prompt has no effect (and is refused): none is passed.
        fields.update(steps=UPSCALE_STEPS, guidance=NO_GUIDANCE, negative_prompt="")
    if tool.operation is Operation.OUTPAINT:
        canvas = outpaint_canvas(source, zoom=tool.zoom, pan=tool.pan, max_pixels=limits.max_pixels)
        init_image, mask_image = canvas.image, canvas.mask
        fields.update(width=canvas.size[0], height=canvas.size[1])
    fields.update(changes)
    return GenerationRequest(
        replace(params, **fields),
        init_image=init_image,
        operation=tool.operation,
        mask_image=mask_image,
    )
