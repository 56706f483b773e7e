"""Timings of the creative tools (vary, upscale, zoom out, pan) on SD v1.5-sized RANDOM weights.

No weights can be downloaded here, so the main model is `gpu_throughput.build_sd15_random`'s
SD v1.5-shaped random pipeline, the inpainting model the same with a 9-channel UNet, and the
upscaler a k-diffusion UNet in the shape of stabilityai/sd-x2-latent-upscaler's (k-blocks,
CLIP-L conditioning, widths 128-256: APPROXIMATE, its exact config could not be read offline, so
the upscaler's figure is indicative only). Timing does not
depend on weight values, so the figures are real; the images are noise.

    python benchmarks/creative_tools.py --out creative.json      # on a CUDA machine
    python benchmarks/creative_tools.py --tiny --device cpu       # smoke run of the script

Each tool runs through `DiffusersEngine.generate` exactly as the bot's jobs do (same requests
as `bot.core.tools.tool_request` builds), after one warm-up call that also loads the tool's
model lazily; the load time of that first call is reported separately. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_throughput import build_sd15_random, emit
from generation.canvas import Direction, outpaint_canvas
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec, dtype_keyword
from generation.params import NO_GUIDANCE, GenerationParams
from generation.request import GenerationRequest, Operation
from generation.tiling import plan_tiles

PROMPT = "a lighthouse on a cliff at dusk"


def _load_main(folder: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    kwargs = {dtype_keyword(): torch.float16}
    return StableDiffusionPipeline.from_pretrained(folder, variant="fp16", **kwargs)


def build_inpaint(main: Path, folder: Path, tiny: bool) -> None:
    """The main pipeline's folder with a 9-channel UNet of the same shape (an inpainting model)."""
    from diffusers import (
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )

    pipe = _load_main(main)
    config = dict(pipe.unet.config)
    config["in_channels"] = 9
    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_config(config)
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(0.5)
    inpaint = StableDiffusionInpaintPipeline(**{**pipe.components, "unet": unet.half()})
    inpaint.save_pretrained(folder, safe_serialization=True, variant="fp16")


def build_upscaler(main: Path, folder: Path, tiny: bool) -> None:
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        UNet2DConditionModel,
    )

    pipe = _load_main(main)
    hidden = pipe.text_encoder.config.hidden_size
    scale = 4 if tiny else 1
    torch.manual_seed(2)
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=64 // scale,
        norm_num_groups=None,
        # diffusers' k-blocks need pairs of equal widths (as in its own upscaler tests).
        block_out_channels=tuple(c // scale for c in (128, 128, 256, 256)),
        time_cond_proj_dim=128 + hidden,
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=hidden,
        down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
        in_channels=8,
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",),
        layers_per_block=2,
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(0.5)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="sample", steps_offset=1,
    )
    upscaler = StableDiffusionLatentUpscalePipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        unet=unet.half(), scheduler=scheduler,
    )
    upscaler.save_pretrained(folder, safe_serialization=True, variant="fp16")


def requests(source: Any, size: int, steps: int) -> dict[str, GenerationRequest]:
    """One request per tool, as `bot.core.tools.tool_request` builds them."""
    budget = int(size * size * 2.25)  # the default 768x768 budget for 512x512 images
    base = GenerationParams(PROMPT, seed=1, steps=steps, count=4, width=size, height=size)
    # As `tool_request` does: img2img keeps at least one denoising step (steps x strength).
    img2img = replace(base, steps=max(steps, 3))
    double = {"width": 2 * size, "height": 2 * size, "count": 1}
    out = {
        "vary_strong_x4": GenerationRequest(replace(img2img, strength=0.7), init_image=source),
        "vary_subtle_x4": GenerationRequest(replace(img2img, strength=0.35), init_image=source),
        "upscale_subtle_x1": GenerationRequest(
            replace(base, steps=20, guidance=NO_GUIDANCE, negative_prompt="", **double),
            init_image=source,
            operation=Operation.UPSCALE,
        ),
        "upscale_creative_x1": GenerationRequest(
            replace(img2img, strength=0.35, **double),
            init_image=source,
            operation=Operation.UPSCALE_CREATIVE,
        ),
    }
    for name, where in (("zoom_2x_x4", {"zoom": 2.0}), ("zoom_1.5x_x4", {"zoom": 1.5}),
                        ("pan_left_x4", {"pan": Direction.LEFT})):
        canvas = outpaint_canvas(source, max_pixels=budget, **where)  # type: ignore[arg-type]
        out[name] = GenerationRequest(
            replace(base, width=canvas.size[0], height=canvas.size[1]),
            init_image=canvas.image,
            mask_image=canvas.mask,
            operation=Operation.OUTPAINT,
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small random weights (smoke run)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upscale-tile", type=int, default=768,
                        help="model.upscale_tile: Upscale (Creative) tiles past this side squared")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sync = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        main_dir, inpaint_dir, upscaler_dir = root / "main", root / "inpaint", root / "upscaler"
        build_sd15_random(main_dir, args.tiny, args.device)
        build_inpaint(main_dir, inpaint_dir, args.tiny)
        build_upscaler(main_dir, upscaler_dir, args.tiny)
        spec = ModelSpec(str(main_dir), device=args.device, safety_checker=False,
                         inpaint_id=str(inpaint_dir), upscaler_id=str(upscaler_dir),
                         upscale_tile=args.upscale_tile)
        print("models built", file=sys.stderr, flush=True)
        engine = DiffusersEngine(spec)
        engine.load()
        source_params = GenerationParams(
            PROMPT, seed=0, count=1, steps=args.steps, width=args.size, height=args.size
        )
        source = engine.generate([GenerationRequest(source_params).validated()])[0].images[0]
        results: dict[str, Any] = {"device": args.device, "tiny": args.tiny,
                                   "size": args.size, "steps": args.steps,
                                   "upscale_tile": args.upscale_tile, "tools": {}}
        for name, request in requests(source, args.size, args.steps).items():
            request = request.validated()
            if sync:
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            engine.generate([request])  # warm-up; loads the tool's model on first use
            first = time.perf_counter() - started
            times = []
            for _ in range(args.repeats):
                if sync:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                [result] = engine.generate([request])
                if sync:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            results["tools"][name] = {
                "output": list(result.images[0].size),
                "images": len(result.images),
                "first_call_s": round(first, 3),
                "median_s": round(statistics.median(times), 3),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if sync else None,
            }
            if request.operation is Operation.UPSCALE_CREATIVE:
                side = spec.upscale_tile
                results["tools"][name]["tiles"] = len(plan_tiles(
                    request.params.width, request.params.height, side, spec.upscale_overlap, 8
                )) if request.params.width * request.params.height > side * side else 1
            print(name, results["tools"][name], file=sys.stderr, flush=True)
        engine.close()
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
