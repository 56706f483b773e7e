"""`imagine bench`: the bot's backend under simulated members, against the seed article's path.

In one run, on one model:

1. **backend**: U members spread over S servers each send R requests of N images, one after the
   other (a member sends the next when their grid is back), all at once at the start, through
   `generation.factory.build_service` (the service, fair queue, step-level batch and grid
   encoding the bot uses). Measured: images/s, submit-to-encoded-grid latency (p50/p95, first
   grid), actual wait / first ETA shown (new and returning members), event-loop lag while
   generating (p50/p99/max, garbage collection included), peak GPU memory.
2. **seed path**: the seed article's code, `StableDiffusionPipeline` with PNDM 50 steps, fp16
   weights under `torch.autocast` on CUDA (fp32 on CPU), one call per request (a list of N
   prompts), run sequentially; images/s and peak GPU memory.

The ratio backend/seed is printed; when the backend runs other steps or another scheduler than
the seed path, the work per image differs and the report says so. `--json PATH` writes every
figure. Random-weight built-in models (`builtin:tiny-random`, `builtin:sd15-small-random`,
`builtin:sd15-random`) make noise images; their timings are real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from generation.errors import RequestError
from generation.events import JobStarted
from generation.params import SCHEDULERS, GenerationParams, Limits
from generation.request import GenerationRequest

log = logging.getLogger(__name__)

PROMPTS = (
    "dog sitting in a field of autumn leaves",
    "a lighthouse on a cliff at dusk, oil painting",
    "a bowl of ramen, studio photo",
    "an astronaut riding a horse",
)


@dataclass(frozen=True)
class BenchConfig:
    model: str = "builtin:sd15-small-random"
    device: str = "auto"
    members: int = 8
    servers: int = 2
    requests: int = 1
    images: int = 4
    steps: int = 25
    scheduler: str = "dpmpp_2m_karras"
    size: int = 512
    seed_steps: int = 50
    #: Requests the seed path runs (default: as many as the backend); its images/s is per image.
    seed_requests: int | None = None
    max_batch_images: int = 16
    continuous: bool = True
    freeze_gc: bool = True
    safety_checker: bool = True
    cache_dir: str | None = None
    #: Decode finished jobs on a decoder thread while the batch steps on (None: the device's
    #: default, `generation.fastpath`).
    overlap_decode: bool | None = None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _peak_memory(device: str) -> dict[str, float | None]:
    import torch

    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.max_memory_allocated() / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    return {"peak_gpu_gib": gpu, "peak_rss_gib": rss}


async def _loop_lag(samples: list[float], stop: asyncio.Event, period: float = 0.005) -> None:
    """How late the event loop wakes a `period` sleep, again and again, until `stop`."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(period)
        samples.append(max(0.0, time.perf_counter() - before - period))


async def bench_backend(config: BenchConfig) -> dict[str, Any]:
    """Run the members' requests through the real service; figures as a dict."""
    import torch

    from generation.factory import build_service
    from generation.loading import resolve_device

    service = build_service(
        config.model,
        device=config.device,
        safety_checker=config.safety_checker,
        cache_dir=config.cache_dir,
        max_queued_per_user=max(1, config.requests),
        max_queue=max(100, config.members * config.requests),
        max_batch_images=config.max_batch_images,
        max_steps=max(100, config.steps),
        warmup_size=(config.size, config.size),
        continuous=config.continuous,
        freeze_gc=config.freeze_gc,
        overlap_decode=config.overlap_decode,
    )
    load_started = time.perf_counter()
    await service.start()
    load_seconds = time.perf_counter() - load_started
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    records: list[dict[str, Any]] = []
    lag: list[float] = []
    stop = asyncio.Event()

    async def member(index: int) -> None:
        owner = f"server{index % config.servers}:member{index}"
        for r in range(config.requests):
            params = GenerationParams(
                PROMPTS[(index + r) % len(PROMPTS)],
                seed=1000 * index + r,
                steps=config.steps,
                scheduler=config.scheduler,
                count=config.images,
                width=config.size,
                height=config.size,
            )
            request = GenerationRequest(params)
            submitted = time.perf_counter()
            job = service.submit(request, owner=owner)
            first = job.history[0]
            eta = getattr(first, "eta_seconds", None)
            position = getattr(first, "position", None)
            started = None
            async for event in job.events():
                if isinstance(event, JobStarted) and started is None:
                    started = time.perf_counter()
            result = await job.result()
            # Off the loop and off the GPU thread, as the bot encodes its grids.
            await encoder.run(_encode_grid, result.images)
            done = time.perf_counter()
            records.append(
                {
                    "owner": owner,
                    "request": r,
                    "submitted": submitted,
                    "position": position,
                    "eta": eta,
                    "wait": (started or done) - submitted,
                    "latency": done - submitted,
                    "done": done,
                    "images": len(result.images),
                }
            )

    encoder = _Encoder()
    monitor = asyncio.create_task(_loop_lag(lag, stop))
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        await asyncio.gather(*(member(i) for i in range(config.members)))
    finally:
        stop.set()
        await monitor
        encoder.close()
        elapsed = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        memory = _peak_memory(str(resolve_device(config.device)))
        await service.close()
    images = sum(r["images"] for r in records)
    latencies = [r["latency"] for r in records]
    ratios_new = [r["wait"] / r["eta"] for r in records if r["request"] == 0 and r["eta"]]
    ratios_back = [r["wait"] / r["eta"] for r in records if r["request"] > 0 and r["eta"]]
    return {
        "images": images,
        "seconds": elapsed,
        "images_per_s": images / elapsed if elapsed > 0 else None,
        "cpu_seconds": cpu_seconds,
        "images_per_cpu_s": images / cpu_seconds if cpu_seconds > 0 else None,
        "load_and_warmup_s": load_seconds,
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "first_grid_s": min(r["done"] for r in records) - started if records else None,
        "eta_ratio_new_p50": _percentile(ratios_new, 0.5),
        "eta_ratio_new_max": max(ratios_new, default=None),
        "eta_ratio_new_min": min(ratios_new, default=None),
        "eta_ratio_returning_p50": _percentile(ratios_back, 0.5),
        "eta_ratio_returning_max": max(ratios_back, default=None),
        "eta_ratio_returning_min": min(ratios_back, default=None),
        "eta_jobs_with_nonzero_eta": len(ratios_new) + len(ratios_back),
        # Every job: its first ETA shown and its actual wait, to judge the spread.
        "eta_records": [
            {key: r[key] for key in ("owner", "request", "position", "eta", "wait")}
            for r in sorted(records, key=lambda r: r["submitted"])
        ],
        "loop_lag_p50_ms": 1000 * (_percentile(lag, 0.5) or 0.0),
        "loop_lag_p99_ms": 1000 * (_percentile(lag, 0.99) or 0.0),
        "loop_lag_max_ms": 1000 * max(lag, default=0.0),
        **memory,
    }


class _Encoder:
    """One encoding thread (grids are PNG-encoded one at a time, like the bot's helper)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-encode")

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _encode_grid(images: list[Any]) -> bytes:
    from generation.grid import encode_image, make_grid

    return encode_image(make_grid(images), "png")


def bench_seed_path(config: BenchConfig) -> dict[str, Any]:
    """The seed article's path on the same model: one pipeline call per request."""
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.loading import (
        ModelSpec,
        build_scheduler,
        dtype_keyword,
        model_source,
        resolve_device,
    )

    device = resolve_device(config.device)
    spec = ModelSpec(config.model, device=str(device), cache_dir=_path(config.cache_dir))
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    source = model_source(spec)
    kwargs: dict[str, Any] = {dtype_keyword(): dtype}
    try:
        pipe = StableDiffusionPipeline.from_pretrained(source, variant="fp16", **kwargs)
    except (OSError, ValueError):  # a model without fp16 files
        pipe = StableDiffusionPipeline.from_pretrained(source, **kwargs)
    if not config.safety_checker:
        pipe.safety_checker = None
    pipe.scheduler = build_scheduler("pndm", dict(pipe.scheduler.config))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    requests = config.seed_requests or config.members * config.requests

    def call(index: int) -> None:
        prompt = PROMPTS[index % len(PROMPTS)]
        generator = torch.Generator(device).manual_seed(index)
        kwargs = {
            "prompt": [prompt] * config.images,
            "num_inference_steps": config.seed_steps,
            "height": config.size,
            "width": config.size,
            "generator": generator,
        }
        if cuda:
            with torch.autocast("cuda"):
                pipe(**kwargs)
        else:
            pipe(**kwargs)

    call(0)  # warm-up, not timed (first calls pay one-off set-up costs)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    latencies = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for index in range(requests):
        before = time.perf_counter()
        call(index + 1)
        if cuda:
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - before)
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    images = requests * config.images
    result = {
        "images": images,
        "seconds": elapsed,
        "images_per_s": images / elapsed,
        "cpu_seconds": cpu_seconds,
        "images_per_cpu_s": images / cpu_seconds if cpu_seconds > 0 else None,
        "call_p50_s": statistics.median(latencies),
        **_peak_memory(str(device)),
    }
    return result


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def run(config: BenchConfig, seed_path: bool = True) -> dict[str, Any]:
    """Both measurements and the ratio, as one dict (what `--json` writes)."""
    import torch

    report: dict[str, Any] = {
        "config": asdict(config),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_threads": torch.get_num_threads(),
        },
        "note": "random-weight built-in models make noise images; their timings are real",
    }
    report["backend"] = asyncio.run(bench_backend(config))
    if seed_path:
        report["seed_path"] = bench_seed_path(config)
        ours = report["backend"]["images_per_s"]
        theirs = report["seed_path"]["images_per_s"]
        report["ratio_images_per_s"] = ours / theirs if ours and theirs else None
        # On a shared CPU, wall time depends on the neighbours; CPU time much less.
        ours = report["backend"]["images_per_cpu_s"]
        theirs = report["seed_path"]["images_per_cpu_s"]
        report["ratio_images_per_cpu_s"] = ours / theirs if ours and theirs else None
        report["same_work"] = config.scheduler == "pndm" and config.steps == config.seed_steps
    return report


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BenchConfig()
    parser.add_argument(
        "--model",
        "-m",
        default=None,
        help="builtin:tiny-random, builtin:sd15-small-random (1/8-channel SD1.5, for CPUs), "
        "builtin:sd15-random (SD1.5-sized) or a real model id/folder "
        f"(default: model.id of the configuration file, else {defaults.model})",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:N, mps (default: model.device of the configuration file)",
    )
    parser.add_argument("--members", "-U", type=int, default=defaults.members)
    parser.add_argument("--servers", "-S", type=int, default=defaults.servers)
    parser.add_argument("--requests", "-R", type=int, default=defaults.requests)
    parser.add_argument("--images", "-N", type=int, default=defaults.images)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        help=f"default: generation.scheduler of the configuration file, else {defaults.scheduler}",
    )
    parser.add_argument("--size", type=int, default=defaults.size, help="square side in pixels")
    parser.add_argument("--seed-steps", type=int, default=defaults.seed_steps)
    parser.add_argument(
        "--seed-requests", type=int, default=None, help="requests for the seed path (default all)"
    )
    parser.add_argument("--no-seed-path", action="store_true", help="measure the backend only")
    parser.add_argument("--max-batch-images", type=int, default=defaults.max_batch_images)
    parser.add_argument(
        "--request-batching",
        action="store_true",
        help="one pipeline call per batch of requests instead of step-level batching",
    )
    parser.add_argument("--no-gc-freeze", action="store_true", help="do not call gc.freeze()")
    parser.add_argument(
        "--overlap-decode",
        choices=("auto", "on", "off"),
        default="auto",
        help="decode finished jobs on a decoder thread while the batch steps on "
        "(auto: on for CUDA, off for CPU)",
    )
    parser.add_argument("--no-safety-checker", action="store_true")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where built-in models are saved (default: model.cache_dir)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write figures")


def _configured(section: Any, name: str) -> Any:
    """`section.name`, or None without a configuration file (`section` None): then the bench
    keeps its own defaults (a random-weight model, not the bot's default Hub model)."""
    return getattr(section, name) if section is not None else None


def config_from_args(
    args: argparse.Namespace, model: Any = None, gen: Any = None
) -> BenchConfig:
    """The run `args` describe, with the model id, device, scheduler and cache folder of the
    configuration file in use (`model`: its `[model]` section, `gen`: its `[generation]`;
    None without a file) where no flag gives them.

    Raises ValueError naming a figure the run could not use (checked before any model loads,
    with the limits the benchmarked service gets)."""
    defaults = BenchConfig()
    counts = ("members", "servers", "requests", "images", "steps", "size", "seed_steps",
              "seed_requests", "max_batch_images")
    for name in counts:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.servers > args.members:
        raise ValueError(
            f"--servers ({args.servers}) is more than --members ({args.members}): every "
            "server needs at least one member"
        )
    scheduler = args.scheduler or _configured(gen, "scheduler") or defaults.scheduler
    cache_dir = args.cache_dir or _configured(model, "cache_dir")
    sample = GenerationParams(
        "bench",
        steps=args.steps,
        scheduler=scheduler,
        count=args.images,
        width=args.size,
        height=args.size,
    )
    try:
        GenerationRequest(sample).validated(Limits(max_steps=max(100, args.steps)))
    except RequestError as exc:
        raise ValueError(f"{exc} (--images, --size and --steps make each request)") from None
    return BenchConfig(
        model=args.model or _configured(model, "id") or defaults.model,
        device=args.device or _configured(model, "device") or defaults.device,
        members=args.members,
        servers=args.servers,
        requests=args.requests,
        images=args.images,
        steps=args.steps,
        scheduler=scheduler,
        size=args.size,
        seed_steps=args.seed_steps,
        seed_requests=args.seed_requests,
        max_batch_images=args.max_batch_images,
        continuous=not args.request_batching,
        freeze_gc=not args.no_gc_freeze,
        overlap_decode={"on": True, "off": False}.get(args.overlap_decode),
        safety_checker=not args.no_safety_checker,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def run_bench(args: argparse.Namespace, model: Any = None, gen: Any = None) -> int:
    """`imagine bench`: print the figures (rich table), optionally write them as JSON.
    `model`/`gen`: the configuration's `[model]`/`[generation]` (see `config_from_args`)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    try:
        config = config_from_args(args, model, gen)
    except ValueError as exc:
        console.print(f"[red]imagine bench: {exc}[/red]")
        return 2
    report = run(config, seed_path=not args.no_seed_path)
    backend = report["backend"]
    machine = report["machine"]
    where = machine["cuda_device"] or f"CPU ({machine['cpu_threads']} threads)"
    table = Table(title=f"imagine bench: {config.model} on {where}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    mode = "step-level" if config.continuous else "per-request"
    rows = [
        (
            f"backend ({mode}, {config.scheduler} {config.steps} steps, {config.members} members "
            f"in {config.servers} servers x {config.requests} x {config.images} images)",
            "",
        ),
        ("  images/s", _fmt(backend["images_per_s"], "", 3)),
        ("  images per CPU-second (all threads)", _fmt(backend["images_per_cpu_s"], "", 3)),
        ("  latency p50 / p95 (submit to grid)", _fmt(backend["latency_p50_s"], " s") + " / "
         + _fmt(backend["latency_p95_s"], " s")),
        ("  first grid", _fmt(backend["first_grid_s"], " s")),
        ("  wait / first ETA, new members p50 (min-max)", _fmt(backend["eta_ratio_new_p50"])
         + f" ({_fmt(backend['eta_ratio_new_min'])}-{_fmt(backend['eta_ratio_new_max'])})"),
        ("  wait / first ETA, returning p50 (min-max)",
         _fmt(backend["eta_ratio_returning_p50"])
         + f" ({_fmt(backend['eta_ratio_returning_min'])}"
         + f"-{_fmt(backend['eta_ratio_returning_max'])})"),
        ("  event-loop lag p50 / p99 / max", _fmt(backend["loop_lag_p50_ms"], " ms", 1) + " / "
         + _fmt(backend["loop_lag_p99_ms"], " ms", 1) + " / "
         + _fmt(backend["loop_lag_max_ms"], " ms", 1)),
        ("  peak GPU memory", _fmt(backend["peak_gpu_gib"], " GiB")),
    ]
    if "seed_path" in report:
        seed = report["seed_path"]
        rows += [
            (f"seed path (PNDM {config.seed_steps}, one call per request)", ""),
            ("  images/s", _fmt(seed["images_per_s"], "", 3)),
            ("  images per CPU-second (all threads)", _fmt(seed["images_per_cpu_s"], "", 3)),
            ("  peak GPU memory", _fmt(seed["peak_gpu_gib"], " GiB")),
            ("backend / seed path, images/s", _fmt(report["ratio_images_per_s"], "x")),
            ("backend / seed path, images per CPU-s", _fmt(report["ratio_images_per_cpu_s"], "x")),
        ]
        if not report["same_work"]:
            rows.append(("  (different work per image: steps or scheduler differ)", ""))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    console.print(f"[dim]{report['note']}[/dim]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        console.print(f"figures written to {args.json}")
    return 0
