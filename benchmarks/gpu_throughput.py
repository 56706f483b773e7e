"""GPU throughput: the seed article's path against imagine's engine and service, in one run.

Stable Diffusion v1.5-sized components with RANDOM weights (no weights can be downloaded here):
timing does not depend on weight values, so the figures are real, but the images are noise.
The components are saved with `save_pretrained(variant="fp16")` and loaded back through the
project's own loading code, as a real model would be.

    python benchmarks/gpu_throughput.py --out results.json          # on a CUDA machine
    python benchmarks/gpu_throughput.py --tiny --device cpu          # smoke run of the script

Measured, each after a warm-up call, as the median of --repeats calls:
  1. baseline: the seed article's code path (fp16 weights + torch.autocast, PNDM 50 steps), batch 1
     and its grid of 3 (a list of 3 prompts);
  2. engine: imagine's pipeline path (pure fp16, no autocast, SDPA), PNDM 50 at batch 1 (same
     work as the baseline), then the product default DPM++ 2M Karras 25 steps for a 4-image job;
  3. service: 8 members each submitting one 4-image /imagine job at once, through the fair
     queue, with cross-member batching off (max_batch_images=4: one job per call) and on (8, 16).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generation.engine import DiffusersEngine
from generation.factory import build_service
from generation.loading import ModelSpec
from generation.params import GenerationParams
from generation.random_models import save_sd15_random
from generation.request import GenerationRequest

PROMPT = "dog sitting in a field of autumn leaves"


def build_sd15_random(folder: Path, tiny: bool, device: str) -> None:
    """Save SD1.5-shaped (or 1/8-channel) random-weight components as an fp16-variant folder."""
    init_device = device if torch.cuda.is_available() else "cpu"
    save_sd15_random(folder, 8 if tiny else 1, init_device)


def timed(fn: Callable[[], Any], repeats: int, sync: bool) -> tuple[float, Any]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def image_stats(images: list[Any]) -> dict[str, Any]:
    import numpy as np

    arrays = [np.asarray(im, dtype=np.float32) for im in images]
    return {
        "n": len(arrays),
        "all_black": sum(bool(a.max() == 0) for a in arrays),
        "mean_std": float(np.mean([a.std() for a in arrays])),
    }


def run_baseline(folder: Path, device: str, steps: int, repeats: int, size: int) -> dict[str, Any]:
    """The seed article: fp16 weights, `with autocast("cuda")`, default PNDM, 50 steps."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        folder, variant="fp16", torch_dtype=torch.float16 if device != "cpu" else torch.float32
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    sync = device.startswith("cuda")
    results: dict[str, Any] = {}

    def call(prompts: list[str]) -> Any:
        with torch.autocast(device.split(":")[0]):
            return pipe(prompts, num_inference_steps=steps, height=size, width=size).images

    for batch in (1, 3):
        seconds, images = timed(lambda b=batch: call([PROMPT] * b), repeats, sync)
        results[f"batch{batch}"] = {
            "s_per_call": seconds,
            "img_per_s": batch / seconds,
            "images": image_stats(images),
        }
    pipe.to("cpu")  # free the GPU for the next stage
    if sync:
        torch.cuda.empty_cache()
    return results


def run_engine(
    folder: Path, device: str, steps_pndm: int, steps: int, repeats: int, size: int
) -> dict:
    engine = DiffusersEngine(ModelSpec(model_id=str(folder), variant="fp16", device=device))
    engine.load()
    sync = device.startswith("cuda")
    results: dict[str, Any] = {}
    cases = {
        "pndm_batch1": GenerationParams(
            PROMPT,
            seed=1,
            steps=steps_pndm,
            count=1,
            scheduler="pndm",
            width=size,
            height=size,
        ),
        "dpmpp_batch4": GenerationParams(
            PROMPT,
            seed=1,
            steps=steps,
            count=4,
            scheduler="dpmpp_2m_karras",
            width=size,
            height=size,
        ),
    }
    for name, params in cases.items():
        request = GenerationRequest(params)
        seconds, out = timed(lambda r=request: engine.generate([r]), repeats, sync)
        results[name] = {
            "s_per_call": seconds,
            "img_per_s": params.count / seconds,
            "images": image_stats(out[0].images),
            "nsfw_flags": out[0].nsfw,
        }
    if sync:
        results["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    engine.close()
    return results


async def run_service(folder: Path, device: str, steps: int, batch_images: int, size: int) -> dict:
    service = build_service(
        str(folder),
        variant="fp16",
        device=device,
        max_batch_images=batch_images,
        max_queue=100,
        max_queued_per_user=4,
        warmup=True,
        warmup_size=(size, size),
    )
    await service.start()
    try:

        async def burst() -> float:
            t0 = time.perf_counter()
            jobs = [
                service.submit(
                    GenerationRequest(
                        GenerationParams(
                            f"{PROMPT} {i}", steps=steps, count=4, width=size, height=size
                        )
                    ),
                    owner=f"guild:{i}",
                )
                for i in range(8)
            ]
            await asyncio.gather(*(job.result() for job in jobs))
            return time.perf_counter() - t0

        await burst()  # warm-up at this batch shape
        seconds = statistics.median([await burst() for _ in range(2)])
    finally:
        await service.close()
    return {"s_per_burst": seconds, "img_per_s": 32 / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="1/8-width components (smoke run)")
    parser.add_argument("--pndm-steps", type=int, default=50)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="image width and height")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "components": "SD1.5-sized random weights" if not args.tiny else "1/8-width random",
        "note": "random weights: images are noise; timings are real",
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sd15-random"
        t0 = time.perf_counter()
        build_sd15_random(folder, args.tiny, args.device)
        report["build_s"] = time.perf_counter() - t0
        print(json.dumps(report), flush=True)
        report["baseline"] = run_baseline(
            folder, args.device, args.pndm_steps, args.repeats, args.size
        )
        print(json.dumps(report["baseline"]), flush=True)
        report["engine"] = run_engine(
            folder, args.device, args.pndm_steps, args.steps, args.repeats, args.size
        )
        print(json.dumps(report["engine"]), flush=True)
        report["service"] = {}
        for batch_images in (4, 8, 16):
            report["service"][f"max_batch_images={batch_images}"] = asyncio.run(
                run_service(folder, args.device, args.steps, batch_images, args.size)
            )
            print(json.dumps(report["service"]), flush=True)

    base = report["baseline"]["batch1"]["s_per_call"]
    ours = report["engine"]["pndm_batch1"]["s_per_call"]
    report["speedup_same_work_batch1"] = base / ours
    unbatched = report["service"]["max_batch_images=4"]["img_per_s"]
    report["batching_gain"] = {k: v["img_per_s"] / unbatched for k, v in report["service"].items()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
