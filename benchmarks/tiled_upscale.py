"""Upscale (Creative) in one pass against overlapping tiles: seconds and peak GPU memory.

Runs `DiffusersEngine.generate` on an Operation.UPSCALE_CREATIVE request (img2img at strength
0.35 on the 2x image, as `bot.core.tools` builds it) twice per setting: `model.upscale_tile`
above the output's side (one pass) and at `--tile` (tiles, `generation.tiling`). The model is
random-weight (`builtin:sd15-random` on CUDA, `builtin:sd15-small-random`, channels / 8, for a
CPU smoke run): timings are real, the images are noise.

    python benchmarks/tiled_upscale.py --size 768 --out tiled.json      # on a CUDA machine
    python benchmarks/tiled_upscale.py --device cpu --size 512 --steps 6 --repeats 1

Prints one JSON object: per setting the tiles, median seconds, and (CUDA) peak GiB allocated.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_throughput import emit, timed
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.params import GenerationParams
from generation.request import GenerationRequest, Operation, variation_steps
from generation.tiling import plan_tiles

STRENGTH = 0.35  # bot.core.tools.UPSCALE_CREATIVE_STRENGTH


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", help="default: sd15-random on CUDA, sd15-small-random else")
    parser.add_argument("--size", type=int, default=768, help="source side; output is twice")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--tile", type=int, default=768)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = args.model or ("builtin:sd15-random" if cuda else "builtin:sd15-small-random")
    base = ModelSpec(model, device=args.device, safety_checker=False,
                     upscale_tile=args.tile, upscale_overlap=args.overlap)
    engine = DiffusersEngine(base)
    engine.load()
    params = GenerationParams("a lighthouse on a cliff at dusk", seed=0, count=1,
                              steps=args.steps, width=args.size, height=args.size)
    source = engine.generate([GenerationRequest(params).validated()])[0].images[0]
    double = replace(params, seed=1, strength=STRENGTH, width=2 * args.size,
                     height=2 * args.size, steps=variation_steps(args.steps, STRENGTH))
    request = GenerationRequest(double, init_image=source,
                                operation=Operation.UPSCALE_CREATIVE).validated()
    report: dict[str, Any] = {"model": model, "device": args.device, "source": args.size,
                              "output": 2 * args.size, "steps": double.steps,
                              "strength": STRENGTH, "overlap": args.overlap, "runs": {}}
    for name, tile in (("one_pass", 4 * args.size), ("tiled", args.tile)):
        engine.spec = replace(base, upscale_tile=tile)
        tiles = len(plan_tiles(2 * args.size, 2 * args.size, tile, args.overlap, 8))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        median, [result] = timed(lambda: engine.generate([request]), args.repeats, cuda)
        report["runs"][name] = {
            "tile": tile,
            "tiles": tiles,
            "median_s": round(median, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "failures": len(result.failures),
        }
        print(name, report["runs"][name], file=sys.stderr, flush=True)
    engine.close()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
