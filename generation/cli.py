"""`imagine generate`: make a grid of images from a prompt on the command line.

Runs the same `GenerationService` the Discord bot uses (one worker thread, the same queue and
engine), so what works here works in the bot. Defaults come from the configuration (model and
generation sections, passed in as duck-typed settings objects); flags override them.

Exit codes: 0 done, 1 the model or the generation failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from generation.errors import GenerationError, RequestError
from generation.flags import ImagineOptions, merge_options, parse_prompt
from generation.grid import EXTENSIONS, FORMATS, encode, encode_grid, normalize_format
from generation.params import SCHEDULERS, GenerationParams, Limits
from generation.preflight import (
    check_device,
    check_model_available,
    hub_offline,
    unwritable_folder,
)
from generation.queue_policy import DEFAULT_TIER
from generation.request import GenerationRequest, parse_aspect
from generation.tiny import TINY_MODEL_ID, TINY_MODEL_NOTE

_SUFFIX_FORMATS = {".png": "png", ".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `imagine generate`'s arguments to `parser` (defaults None: config decides)."""
    parser.add_argument(
        "prompt", nargs="+", metavar="PROMPT", help="what to draw (words are joined with spaces)"
    )
    parser.add_argument(
        "--model",
        "-m",
        metavar="ID",
        help=f"Hub id or local diffusers folder (default: model.id from the config); "
        f"{TINY_MODEL_ID} is a random-weight test model whose images are noise",
    )
    parser.add_argument(
        "--n", type=int, metavar="N", help="number of images, 1-4 (default: generation.count, 4)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the first image; image i uses S+i (default: random, printed)",
    )
    parser.add_argument(
        "--steps", type=int, metavar="K", help="denoising steps (default: generation.steps, 25)"
    )
    parser.add_argument(
        "--guidance",
        "--cfg",
        type=float,
        metavar="G",
        help="guidance scale (default: generation.guidance, 7.5)",
    )
    parser.add_argument(
        "--ar", metavar="W:H", help="aspect ratio such as 16:9 (sizes near 512x512, x64)"
    )
    parser.add_argument("--width", type=int, metavar="PX", help="image width, a multiple of 8")
    parser.add_argument("--height", type=int, metavar="PX", help="image height, a multiple of 8")
    parser.add_argument(
        "--negative", "--no", metavar="TEXT", help="negative prompt: what to keep out"
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        help="sampler (default: generation.scheduler, dpmpp_2m_karras = DPM++ 2M Karras)",
    )
    parser.add_argument(
        "--device", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps (default: model.device)"
    )
    parser.add_argument(
        "--out",
        "-o",
        default=None,
        metavar="PATH",
        help="grid file to write (the suffix picks the format), or a folder to write into "
        "(an existing one, or any path ending in /), named from the prompt and seed "
        "(default: the current folder); a device such as /dev/null is written as given",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files (default: never; a folder gets a new name instead)",
    )
    parser.add_argument(
        "--singles",
        action="store_true",
        help="also write each image as <grid name>_1.png, _2, ...",
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="png, webp or jpeg (default: from --out's suffix)"
    )
    parser.add_argument(
        "--no-safety-checker",
        action="store_true",
        help="do not run the NSFW safety checker",
    )


@dataclass(frozen=True)
class _Plan:
    model_id: str
    variant: str | None
    device: str
    safety_checker: bool
    cache_dir: Any
    #: The `[generation]` settings (read for the fast-path switches).
    settings: Any
    request: GenerationRequest
    limits: Limits
    out: Path
    fmt: str
    singles: bool
    overwrite: bool
    #: `--fast`/`--relax` typed in the prompt (alone on the command line it changes nothing:
    #: there is no other job to go before).
    tier: str = DEFAULT_TIER

    def paths(self) -> list[Path]:
        """The grid file, then the single images' files when `singles` is set."""
        paths = [self.out]
        if self.singles:
            ext = EXTENSIONS[self.fmt]
            paths += [
                self.out.with_name(f"{self.out.stem}_{i}.{ext}")
                for i in range(1, self.request.params.count + 1)
            ]
        return paths


def run_generate(args: argparse.Namespace, model_settings: Any, generation_settings: Any) -> int:
    """Run `imagine generate` with parsed `args`; returns the process exit code."""
    from rich.console import Console

    # soft_wrap: messages holding a command stay on one line, copyable.
    err = Console(stderr=True, soft_wrap=True)
    try:
        plan = _plan(args, model_settings, generation_settings)
        _check_writable(plan)
    except (RequestError, ValueError) as exc:
        err.print(f"[red]imagine generate:[/] {escape(str(exc))}", highlight=False)
        return 2
    # Known before any work: printed now, so a failure later never loses them.
    print(f"seeds: {', '.join(map(str, plan.request.seeds))}", flush=True)
    # What is sure to fail fails now, before torch and diffusers take seconds to import.
    problem = check_device(plan.device) or check_model_available(
        plan.model_id, plan.variant, plan.cache_dir
    )
    if problem is not None:
        err.print(f"[red]imagine generate:[/] {escape(problem)}", highlight=False)
        return 1
    try:
        return asyncio.run(_generate(plan, err))
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


def _plan(args: argparse.Namespace, model: Any, gen: Any) -> _Plan:
    limits = Limits.with_defaults(gen)
    # Flags typed in the prompt ("dog --ar 16:9") are read by the bot's parser; an option
    # given on the command line wins over the same flag typed in the prompt.
    parsed = parse_prompt(" ".join(args.prompt))
    explicit = ImagineOptions(
        negative_prompt=args.negative,
        aspect=args.ar,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        count=args.n,
    )
    options = merge_options(explicit, parsed.options)
    width, height = args.width, args.height
    if options.aspect is not None:
        if width is not None or height is not None:
            raise RequestError("Give either --ar or --width/--height, not both.")
        width, height = parse_aspect(options.aspect, limits)
    params = GenerationParams.with_defaults(
        gen,
        prompt=parsed.prompt,
        width=width,
        height=height,
        scheduler=args.scheduler,
        **options.given_params(),
    )
    request = GenerationRequest(params).validated(limits)
    overwrite = bool(getattr(args, "overwrite", False))
    out, fmt = _output(args.out, args.format, request, overwrite)
    return _Plan(
        model_id=args.model or model.id,
        variant=model.variant,
        device=args.device or model.device,
        safety_checker=bool(model.safety_checker) and not args.no_safety_checker,
        cache_dir=model.cache_dir,
        settings=gen,
        request=request,
        limits=limits,
        out=out,
        fmt=fmt,
        singles=args.singles,
        overwrite=overwrite,
        tier=options.tier or DEFAULT_TIER,
    )


def _output(
    given: str | None, fmt: str | None, request: GenerationRequest, overwrite: bool
) -> tuple[Path, str]:
    """The grid file to write and its format.

    A folder (`given` an existing folder or a path ending in a separator, created if missing;
    or no `given`: the current folder) gets a file named from the prompt and seed, with
    ``-2``, ``-3`` ... added rather than replacing an earlier file. For a file name,
    `--format` wins, else the suffix, else PNG.
    """
    out = Path(given if given is not None else ".")
    if given is not None and _is_device(out):
        # /dev/null (to discard), a FIFO or a terminal: written as given, never renamed.
        suffix = _SUFFIX_FORMATS.get(out.suffix.lower(), "png")
        return out, normalize_format(fmt) if fmt else suffix
    # pathlib drops a trailing separator, which names a folder (created if missing).
    if given is None or out.is_dir() or given.endswith(("/", os.sep)):
        name = normalize_format(fmt) if fmt else "png"
        return _free_name(out, request, EXTENSIONS[name], overwrite), name
    from_suffix = _SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is not None:
        name = normalize_format(fmt)
        if from_suffix is not None and from_suffix != name:
            raise RequestError(f"--format {fmt} does not match --out {out} (a {from_suffix} name).")
        return (out if from_suffix else out.with_name(f"{out.name}.{EXTENSIONS[name]}")), name
    if from_suffix is None:
        if out.suffix:
            raise RequestError(
                f"Cannot tell the image format from {out.name!r}; use .png, .webp or .jpg, "
                "or give --format."
            )
        return out.with_name(f"{out.name}.png"), "png"
    return out, from_suffix


def _free_name(folder: Path, request: GenerationRequest, ext: str, overwrite: bool) -> Path:
    """``<folder>/<prompt words>-<seed>.<ext>``, numbered past files that already exist."""
    words = re.sub(r"[^\w]+", "-", request.params.prompt.lower()).strip("-")[:60].rstrip("-")
    stem = f"{words or 'image'}-{request.params.seed}"
    candidate = folder / f"{stem}.{ext}"
    number = 2
    while not overwrite and _taken(candidate, request.params.count):
        candidate = folder / f"{stem}-{number}.{ext}"
        number += 1
    return candidate


def _taken(grid: Path, count: int) -> bool:
    singles = (grid.with_name(f"{grid.stem}_{i}{grid.suffix}") for i in range(1, count + 1))
    return grid.exists() or any(path.exists() for path in singles)


def _is_device(path: Path) -> bool:
    """An existing path that is neither a folder nor a regular file (/dev/null, a FIFO)."""
    return path.exists() and not path.is_dir() and not path.is_file()


def _check_writable(plan: _Plan) -> None:
    """Refuse, before any work, an output that exists (without --overwrite) or cannot be
    written; the folder is created if missing. A device is written as given (nothing is
    replaced), alone: not with --singles, and not standard output (the messages go there)."""
    if _is_device(plan.out):
        if plan.singles:
            raise RequestError(f"--singles needs a file or folder --out, not {plan.out}.")
        if _is_stdout(plan.out):
            raise RequestError(
                f"--out {plan.out} is standard output, where imagine prints the seeds and "
                "what it wrote; choose a file."
            )
        if not os.access(plan.out, os.W_OK):
            raise RequestError(f"Cannot write to {plan.out}: permission denied.")
        return
    for path in plan.paths():
        if path.exists() and not plan.overwrite:
            raise RequestError(f"{path} already exists; add --overwrite or choose another --out.")
        if path.is_dir():
            raise RequestError(f"{path} is a folder; give a file name or an existing folder.")
    folder = plan.out.parent
    reason = unwritable_folder(folder)
    if reason is not None:
        raise RequestError(f"Cannot write to {folder}: {reason}; choose another --out.")
    for path in plan.paths():
        if path.exists() and not os.access(path, os.W_OK):
            raise RequestError(f"Cannot overwrite {path}: permission denied.")


def _is_stdout(path: Path) -> bool:
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # no stdout (closed, or not a real file)
        return False


async def _generate(plan: _Plan, err: Any) -> int:
    from generation.factory import build_service
    from generation.fastpath import FastPath
    from generation.progress import startup_stages

    params = plan.request.params
    # One job: where the fast path compiles (CUDA), only its own batch shape is compiled (a
    # bucket of its UNet rows, 2 per image with guidance), shown as it happens, and cached on
    # disk by inductor for the next run.
    rows = params.count * (2 if params.guidance > 1 else 1)
    service = build_service(
        plan.model_id,
        variant=plan.variant,
        device=plan.device,
        safety_checker=plan.safety_checker,
        cache_dir=plan.cache_dir,
        min_steps=plan.limits.min_steps,
        max_steps=plan.limits.max_steps,
        max_guidance=plan.limits.max_guidance,
        max_pixels=plan.limits.max_pixels,
        warmup=False,  # one job: warming up would only add time
        warmup_size=(params.width, params.height),
        warm_buckets=True,
        fast_path=FastPath.configured(plan.settings, fast_buckets=(rows,)),
        stages=startup_stages(console=err),
    )
    try:
        if plan.model_id == TINY_MODEL_ID:
            err.print(f"[yellow]note:[/] {TINY_MODEL_NOTE}.", highlight=False)
        if not err.is_terminal:  # on a terminal, the stages' display says it
            local = hub_offline() or plan.model_id == TINY_MODEL_ID
            fetch = "" if local else ", downloading if needed"
            err.print(f"loading {escape(plan.model_id)}{fetch} ...", highlight=False)
        await service.start()
        job = service.submit(plan.request, owner="cli", tier=plan.tier)
        result = await _follow(job, err)
        return await _write(plan, result, err)
    except RequestError as exc:
        err.print(f"[red]imagine generate:[/] {escape(str(exc))}", highlight=False)
        return 2
    except GenerationError as exc:
        err.print(f"[red]imagine generate:[/] {escape(str(exc))}", highlight=False)
        return 1
    finally:
        # grace=0: after Ctrl-C a running job stops at its next step instead of finishing.
        await service.close(grace=0)


async def _follow(job: Any, err: Any) -> Any:
    """Show a progress bar for the job's steps; return its result."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from generation.events import JobStarted, JobStep

    params = job.request.params
    label = f"{params.count} image(s) {params.width}x{params.height}"
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(f"{label}: queued", total=params.steps)
        async for event in job.events():
            if isinstance(event, JobStarted):
                progress.update(task, description=f"{label}: steps")
            elif isinstance(event, JobStep):
                progress.update(task, completed=event.step, total=event.total)
    return await job.result()


async def _write(plan: _Plan, result: Any, err: Any) -> int:
    grid, _ = await asyncio.to_thread(encode_grid, result.images, plan.fmt)
    files = [grid]
    if plan.singles:
        for image in result.images:
            data, _ = await asyncio.to_thread(encode, image, plan.fmt)
            files.append(data)
    written = plan.paths()
    for path, data in zip(written, files, strict=True):
        path.write_bytes(data)
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for index, reason in sorted(result.failures.items()):
        err.print(
            f"[yellow]warning:[/] image {index + 1} (seed {result.seeds[index]}) failed: "
            f"{escape(reason)}; it is black in the output",
            highlight=False,
        )
    if not result.safety_checked:
        err.print("note: the safety checker did not run (disabled or absent)")
    flagged = [i + 1 for i, flag in enumerate(result.nsfw) if flag]
    if flagged:
        err.print(
            f"[yellow]warning:[/] the safety checker flagged image(s) "
            f"{', '.join(map(str, flagged))} as possibly NSFW",
            highlight=False,
        )
    print(f"model: {result.model_id}")
    for path in written:
        print(f"wrote {path}")
    print(f"{result.gpu_seconds:.2f} s on the worker")
    return 0
