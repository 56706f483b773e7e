"""`DiffusersEngine`: runs requests through a loaded Stable Diffusion pipeline, on one thread.

The engine wraps diffusers' pipelines; it does not re-implement them. One call of `generate`
is one pipeline call, for one request or for several compatible requests from different members
(same `batch_key`): their prompts become one list, and each image gets its own
`torch.Generator` seeded ``seed + i``, which the pipeline uses for that image's initial noise
(and for the ancestral scheduler's noise), so an image does not depend on what it was batched
with beyond floating-point noise from the different batch shape (see tests).

The pipeline returns latents and the engine decodes them itself, to check each image for a
silent numerical failure (fp16 overflow in the UNet or VAE gives NaN or infinite values, shown
as black images): latents that are not finite fail their image; a decode that overflows while
the latents were fine is retried once with the VAE in float32 (diffusers' own remedy, the
`force_upcast` path of its SDXL pipelines); an image still not finite, or uniformly black,
fails (`generation.decoding`, shared with the step-level batch). Failed images are reported
in `GenerationResult.failures` and logged with their parameters, never returned as results.

Not thread-safe: the service calls it from its single worker thread only.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image as PILImage

from generation.continuous import StepBatch, StepOutcome, supports
from generation.decoding import (  # noqa: F401  (re-exported: the reasons are part of the API)
    BLACK_REASON,
    NAN_REASON,
    decode_checked,
    log_failures,
)
from generation.describe import Captioner
from generation.errors import JobCancelledError, OutOfMemoryError, RequestError
from generation.events import GenerationResult
from generation.fastpath import FastPath, compile_cache_dir
from generation.interfaces import ProgressCallback, StopCheck
from generation.loading import (
    LoadedModel,
    ModelSpec,
    build_scheduler,
    load_captioner,
    load_inpainter,
    load_model,
    load_upscaler,
    main_modules,
)
from generation.params import SIZE_MULTIPLE, GenerationParams
from generation.png_info import attach_parameters
from generation.progress import Stages
from generation.request import GenerationRequest, Operation
from generation.residency import GIB, Residency, module_bytes
from generation.text import cut_text, graphemes
from generation.tiling import blend_tiles, plan_tiles
from generation.tiny import TINY_CAPTIONER_NOTE

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)


#: The optional model each operation needs, by the name the logs and members see.
_OPTIONAL: dict[Operation, str] = {
    Operation.OUTPAINT: "inpainting model",
    Operation.UPSCALE: "upscaler",
}


class _Stopped(Exception):
    """Raised from a legacy step callback to stop a pipeline that has no interrupt flag."""


class DiffusersEngine:
    """Holds one pipeline (txt2img and img2img sharing weights) and runs requests on it.

    Two ways to run: `generate` (one pipeline call per batch of requests) and `advance` (the
    step-level batch of `generation.continuous`, which the service prefers for txt2img).
    `fast` picks the GPU speed-ups (default: `FastPath.for_device`, all on for CUDA only;
    a `FastPath` with `cuda_only` applies on CUDA only). `stages` shows loading, warm-up and
    bucket compiling as they happen (default: nothing shown; see `generation.progress`).
    The optional inpainting and upscaling pipelines (`ModelSpec.inpaint_id`/`upscaler_id`) are
    loaded on their first request, next to the main one and sharing what it can; which of them
    stay on the device is `generation.residency`'s call, under `ModelSpec.memory_budget_gb`.
    The /describe captioner (`ModelSpec.captioner_id`, a BLIP model sharing nothing with it)
    loads on the first /describe too; it is not under the memory budget yet (about 1 GB).
    """

    def __init__(
        self, spec: ModelSpec, fast: FastPath | None = None, stages: Stages | None = None
    ) -> None:
        self.spec = spec
        self._fast = fast
        self._stages = stages or Stages()
        self._model: LoadedModel | None = None
        self._batch: StepBatch | None = None
        self._residency: Residency | None = None
        self._captioner: Captioner | None = None

    def loading_note(self, operation: Operation) -> str | None:
        """A sentence for the member when `operation`'s optional model loads first (so the
        job's first step waits for it), else None."""
        name = _OPTIONAL.get(operation)
        if name is None or not self.supports(operation):
            return None
        if self._residency is not None and self._residency.loaded(name):
            return None
        return f"Loading the {name} on first use (this takes a moment)."

    @property
    def residency(self) -> Residency:
        """The optional models and the memory budget (after `load`)."""
        if self._residency is None:
            raise RuntimeError("engine not loaded: call load() first")
        return self._residency

    def supports(self, operation: Operation) -> bool:
        """Whether `operation` can run here: its model is configured (not yet loaded, maybe)."""
        if operation is Operation.OUTPAINT:
            return self.spec.inpaint_id is not None
        if operation is Operation.UPSCALE:
            return self.spec.upscaler_id is not None
        if operation is Operation.DESCRIBE:
            return self.spec.captioner_id is not None
        return True

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    @property
    def model(self) -> LoadedModel:
        if self._model is None:
            raise RuntimeError("engine not loaded: call load() first")
        return self._model

    @property
    def fast(self) -> FastPath:
        """The fast-path switches in use (known once loaded, when the device is)."""
        if self._fast is None:
            return FastPath.for_device(self.model.device)
        return self._fast.on_device(self.model.device)

    def load(self) -> None:
        if self._model is None:
            model = load_model(self.spec, self._stages)
            self._model = model
            fast = self.fast
            if fast.parts:
                # Where compiled graphs are kept between starts, said once, with the stage.
                cache = {}
                if fast.compile:
                    cache["cache_dir"] = str(compile_cache_dir(fast.cache_dir))
                with self._stages.stage("apply fast path", parts=",".join(fast.parts), **cache):
                    fast.apply(model)
            budget = self.spec.memory_budget_gb
            self._residency = Residency(
                model.device,
                None if budget is None else int(budget * GIB),
                module_bytes(main_modules(model)),
            )

    def close(self) -> None:
        device = self._model.device if self._model is not None else None
        if self._batch is not None:
            self._batch.close()
        if self._residency is not None:
            self._residency.clear()
        self._model = self._residency = self._captioner = None
        self._batch = None
        gc.collect()
        if device is not None and device.type == "cuda":
            torch.cuda.empty_cache()

    def warmup(self, width: int = 512, height: int = 512) -> GenerationResult:
        """One small generation (2 steps, 1 image) so the first job does not pay one-off costs;
        reported as the stage "warm-up"."""
        params = GenerationParams("warm-up", seed=0, steps=2, count=1, width=width, height=height)
        with self._stages.stage("warm-up", size=f"{width}x{height}"):
            return self.generate([GenerationRequest(params)])[0]

    def warm_buckets(self, width: int, height: int) -> int:
        """Run the UNet once at every batch bucket (compiles each; cached on disk by inductor).

        Returns the number of buckets warmed (0 when compile is off). Reported as the stage
        "compile buckets", one step per bucket (87-122 s each on a first start on an H200;
        much less when inductor's cache has the graphs).
        """
        fast = self.fast
        if not fast.compile or not fast.buckets:
            return 0
        model = self.model
        unet = model.txt2img.unet
        latent = (height // 8, width // 8)
        text = model.txt2img.text_encoder.config.hidden_size
        with self._stages.stage(
            "compile buckets", total=len(fast.buckets), size=f"{width}x{height}"
        ) as step:
            for rows in fast.buckets:
                with torch.inference_mode():
                    sample = torch.zeros(
                        rows,
                        unet.config.in_channels,
                        *latent,
                        device=model.device,
                        dtype=model.dtype,
                    )
                    hidden = torch.zeros(rows, 77, text, device=model.device, dtype=model.dtype)
                    timesteps = torch.full((rows,), 999.0, device=model.device)
                    unet(sample, timesteps, encoder_hidden_states=hidden, return_dict=False)
                step(f"{rows} rows", rows=rows)
        return len(fast.buckets)

    def supports_steps(self, request: GenerationRequest) -> bool:
        """Whether `request` can run in the step-level batch (False before `load`)."""
        model = self._model
        return model is not None and supports(model, request)

    def advance(
        self,
        joins: Sequence[tuple[str, GenerationRequest]],
        leaves: Sequence[str],
    ) -> StepOutcome:
        """One step of the step-level batch: see `generation.continuous.StepBatch.advance`."""
        if self._batch is None:
            fast = self.fast
            self._batch = StepBatch(
                self.model, self._prompt_warnings, fast.bucket, fast.overlap_decode
            )
        return self._batch.advance(joins, leaves)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        on_step: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[GenerationResult]:
        """One pipeline call for `requests` (validated, equal `batch_key`); see `Engine`."""
        if not requests:
            return []
        first = requests[0]
        if any(r.batch_key != first.batch_key for r in requests):
            raise RequestError("requests with different sizes/steps/settings cannot share a call")
        model = self.model
        if first.operation is Operation.DESCRIBE:
            return self._describe(requests)
        warnings = [self._prompt_warnings(r) for r in requests]
        started = time.perf_counter()
        try:
            images, failures, interrupted = self._run_pipeline(
                model, requests, on_step, should_stop
            )
            if interrupted:
                raise JobCancelledError("The job was cancelled while it ran.")
            flags = model.nsfw_flags(images)
        except _OOM_ERRORS as exc:
            raise self._out_of_memory(requests, exc) from exc
        except RuntimeError as exc:  # MPS and some CUDA paths raise a plain RuntimeError
            if "out of memory" not in str(exc).lower():
                raise
            raise self._out_of_memory(requests, exc) from exc
        seconds = time.perf_counter() - started
        if failures:
            self._log_failures(requests, failures)
        return self._split(requests, images, flags, warnings, seconds, failures)

    # -- steps of generate -----------------------------------------------------------------

    def _run_pipeline(
        self,
        model: LoadedModel,
        requests: Sequence[GenerationRequest],
        on_step: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> tuple[list[Image], dict[int, str], bool]:
        """Run the pipeline and decode; returns the images, the index of each unusable one
        and why (0-based, see `generation.decoding`), and whether it was interrupted (then
        nothing is decoded)."""
        first = requests[0]
        operation = first.operation
        prompts: list[str] = []
        negatives: list[str] = []
        generators: list[torch.Generator] = []
        init_images: list[Image] = []
        masks: list[Image] = []
        for request in requests:
            params = request.params
            init = request.init_image
            if init is not None:
                # An upscale gets its source as it is (the upscaler doubles it), the rest the
                # source at the output size.
                init = _even(init) if operation is Operation.UPSCALE else _fit(init, params)
            for seed in request.seeds:
                prompts.append(params.prompt)
                negatives.append(params.negative_prompt)
                generators.append(torch.Generator(model.generator_device).manual_seed(seed))
                if init is not None:
                    init_images.append(init)
                if request.mask_image is not None:
                    masks.append(request.mask_image.convert("L"))
        if operation is Operation.UPSCALE:
            images, failures = self._upscale(
                prompts, init_images, generators, first, on_step, should_stop
            )
            return images, failures, False
        if operation is Operation.OUTPAINT:
            pipe = self._inpaint_pipeline()
        else:
            pipe = model.img2img if first.is_variation else model.txt2img
        kwargs: dict[str, Any] = {"prompt": prompts, "negative_prompt": negatives}
        if operation is Operation.OUTPAINT:
            kwargs.update(
                image=init_images,
                mask_image=masks,
                width=first.params.width,
                height=first.params.height,
                strength=1.0,
            )
        elif first.is_variation:
            kwargs.update(strength=first.params.strength)
            if operation is Operation.UPSCALE_CREATIVE and self._tiled(first.params):
                seeds = [seed for request in requests for seed in request.seeds]
                return self._tiles(pipe, kwargs, seeds, init_images, first, on_step, should_stop)
            kwargs.update(image=init_images)
        else:
            kwargs.update(width=first.params.width, height=first.params.height)
        images, failures, interrupted = self._call(
            pipe, kwargs, generators, first, on_step, should_stop
        )
        if operation is Operation.OUTPAINT and not interrupted:
            # The kept area is the source itself, not its VAE round trip: paste it back.
            images = [
                PILImage.composite(image, canvas, mask)
                for image, canvas, mask in zip(images, init_images, masks, strict=True)
            ]
        return images, failures, interrupted

    def _call(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        generators: list[torch.Generator],
        first: GenerationRequest,
        on_step: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> tuple[list[Image], dict[int, str], bool]:
        """One call of `pipe` with `kwargs` (prompts, images...) and the request's settings,
        decoded and checked: (images, failures, interrupted)."""
        # A fresh scheduler per call: schedulers hold per-run state.
        pipe.scheduler = build_scheduler(first.params.scheduler, self.model.scheduler_config)
        interrupted = False

        def step_end(pipeline: Any, index: int, timestep: Any, tensors: dict) -> dict:
            nonlocal interrupted
            if should_stop is not None and should_stop():
                pipeline._interrupt = True  # diffusers skips the remaining steps
                interrupted = True
            if on_step is not None:
                on_step(index + 1, pipeline.num_timesteps)
            return tensors

        output = pipe(
            **kwargs,
            num_inference_steps=first.params.steps,
            guidance_scale=first.params.guidance,
            generator=generators,
            num_images_per_prompt=1,
            output_type="latent",
            callback_on_step_end=step_end,
        )
        if interrupted:
            return [], {}, True
        images, failures = self._decode(pipe, output.images)
        return images, failures, False

    def _tiled(self, params: GenerationParams) -> bool:
        """Whether a creative upscale to `params`' size runs in tiles (past one pass)."""
        return params.width * params.height > self.spec.upscale_tile**2

    def _tiles(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        seeds: list[int],
        images: list[Image],
        first: GenerationRequest,
        on_step: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> tuple[list[Image], dict[int, str], bool]:
        """img2img on overlapping tiles of `images` (one call per tile position, every image
        of the batch in it, each with its own seed), blended (`generation.tiling`). An image
        fails when any of its tiles does."""
        params = first.params
        overlap = self.spec.upscale_overlap
        boxes = plan_tiles(
            params.width, params.height, self.spec.upscale_tile, overlap, SIZE_MULTIPLE
        )
        log.info(
            "creative upscale to %dx%d in %d tiles of up to %d px (overlap %d)",
            params.width, params.height, len(boxes), self.spec.upscale_tile, overlap,
        )
        pieces: list[list[tuple[tuple[int, int, int, int], Image]]] = [[] for _ in images]
        failures: dict[int, str] = {}
        for number, box in enumerate(boxes):
            generators = [
                torch.Generator(self.model.generator_device).manual_seed(seed) for seed in seeds
            ]

            def tile_step(step: int, total: int, number: int = number) -> None:
                if on_step is not None:
                    on_step(number * total + step, total * len(boxes))

            crops = [image.crop(box) for image in images]
            done, failed, interrupted = self._call(
                pipe, {**kwargs, "image": crops}, generators, first, tile_step, should_stop
            )
            if interrupted:
                return [], {}, True
            for index, reason in failed.items():
                failures.setdefault(index, reason)
            for index, tile in enumerate(done):
                pieces[index].append((box, tile))
        size = (params.width, params.height)
        return [blend_tiles(size, tiles, overlap) for tiles in pieces], failures, False

    def _inpaint_pipeline(self) -> Any:
        if not self.supports(Operation.OUTPAINT):
            raise RequestError("Zoom Out and Pan need an inpainting model (model.inpaint_id).")
        name = _OPTIONAL[Operation.OUTPAINT]
        return self.residency.use(name, lambda: load_inpainter(self.model, self.spec))

    def _upscale_pipeline(self) -> Any:
        if not self.supports(Operation.UPSCALE):
            raise RequestError("Upscale (Subtle) needs an upscaler model (model.upscaler_id).")
        name = _OPTIONAL[Operation.UPSCALE]
        return self.residency.use(name, lambda: load_upscaler(self.model, self.spec))

    def _describe(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Prompt suggestions for each request's image (`generation.describe`), from its
        seed; the captioner is loaded on the first /describe."""
        if self._captioner is None:
            if not self.supports(Operation.DESCRIBE):
                raise RequestError("/describe needs a captioner model (model.captioner_id).")
            self._captioner = load_captioner(self.spec, self.model.device, self.model.dtype)
        results = []
        for request in requests:
            assert request.init_image is not None  # checked by `GenerationRequest.validated`
            started = time.perf_counter()
            try:
                captions = self._captioner.describe(request.init_image, request.seeds[0])
            except _OOM_ERRORS as exc:
                raise self._out_of_memory([request], exc) from exc
            results.append(
                GenerationResult(
                    images=[],
                    seeds=request.seeds,
                    nsfw=[],
                    request=request,
                    model_id=self._captioner.model_id,
                    gpu_seconds=time.perf_counter() - started,
                    # Said wherever its captions are shown: the tiny captioner's are noise.
                    warnings=[TINY_CAPTIONER_NOTE] if self._captioner.is_test_model else [],
                    safety_checked=False,
                    captions=captions,
                )
            )
        return results

    def _upscale(
        self,
        prompts: list[str],
        images: list[Image],
        generators: list[torch.Generator],
        first: GenerationRequest,
        on_step: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> tuple[list[Image], dict[int, str]]:
        """The latent x2 upscaler; its latents are decoded and checked like every other kind's
        (`generation.decoding`). Its pipeline has only the legacy per-step callback and no
        interrupt flag, so a stop request ends the call by raising from that callback."""
        from diffusers import EulerDiscreteScheduler

        pipe = self._upscale_pipeline()
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)

        def step(index: int, timestep: Any, latents: Any) -> None:
            if should_stop is not None and should_stop():
                raise _Stopped
            if on_step is not None:
                on_step(index + 1, first.params.steps)

        try:
            output = pipe(
                prompt=prompts,
                image=images,
                num_inference_steps=first.params.steps,
                guidance_scale=first.params.guidance,
                generator=generators,
                output_type="latent",
                callback=step,
            )
        except _Stopped:
            raise JobCancelledError("The job was cancelled while it ran.") from None
        decoded, failures = self._decode(pipe, output.images)
        return [_exact(image, first) for image in decoded], failures

    def _decode(self, pipe: Any, latents: torch.Tensor) -> tuple[list[Image], dict[int, str]]:
        """Latents to images with `pipe`'s own VAE (the inpainting model has its own), with
        the index of each unusable image and why (0-based)."""
        return decode_checked(pipe.vae, pipe.image_processor, latents)

    def _log_failures(
        self, requests: Sequence[GenerationRequest], failures: dict[int, str]
    ) -> None:
        log_failures(
            requests,
            failures,
            model_id=self.model_id,
            dtype=self.model.dtype,
            vae_float32=self.spec.vae_float32,
        )

    def _prompt_warnings(self, request: GenerationRequest) -> list[str]:
        """A warning per prompt that the text encoder will truncate (CLIP reads 77 tokens)."""
        tokenizer = self.model.txt2img.tokenizer
        limit = int(tokenizer.model_max_length)
        warnings = []
        params = request.params
        texts = (("prompt", params.prompt), ("negative prompt", params.negative_prompt))
        for label, text in texts:
            if not text:
                continue
            room = limit - 2  # start and end tokens
            if _token_count(tokenizer, text) > room:
                dropped = cut_text(_beyond(tokenizer, text, room).strip(), 80)
                warnings.append(
                    f"The {label} is longer than the model's {limit} tokens and was cut; "
                    f"ignored: “{dropped}”"
                )
        return warnings

    def _split(
        self,
        requests: Sequence[GenerationRequest],
        images: list[Image],
        flags: list[bool] | None,
        warnings: list[list[str]],
        seconds: float,
        failures: dict[int, str],
    ) -> list[GenerationResult]:
        total = sum(r.params.count for r in requests)
        results = []
        start = 0
        for request, request_warnings in zip(requests, warnings, strict=True):
            count = request.params.count
            end = start + count
            results.append(
                GenerationResult(
                    images=images[start:end],
                    seeds=request.seeds,
                    nsfw=list(flags[start:end]) if flags is not None else [False] * count,
                    warnings=request_warnings,
                    request=request,
                    model_id=self.model_id,
                    gpu_seconds=seconds * count / total,
                    safety_checked=flags is not None,
                    failures={i - start: why for i, why in failures.items() if start <= i < end},
                )
            )
            attach_parameters(results[-1])
            start = end
        return results

    def _out_of_memory(
        self, requests: Sequence[GenerationRequest], exc: BaseException
    ) -> OutOfMemoryError:
        images = sum(r.params.count for r in requests)
        first = requests[0].params
        log.warning(
            "out of memory for %d image(s) at %dx%d: %s", images, first.width, first.height, exc
        )
        gc.collect()
        if self._model is not None and self._model.device.type == "cuda":
            torch.cuda.empty_cache()
        return OutOfMemoryError(
            f"The GPU ran out of memory making {images} image(s) at {first.width}x{first.height}; "
            "try fewer images or a smaller size."
        )


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False).input_ids)


def _beyond(tokenizer: Any, text: str, room: int) -> str:
    """The member's own text past the first `room` tokens, cut between whole characters.

    Decoding the dropped token ids would show "�" where a token boundary falls inside a
    multi-byte character (byte-level BPE), and CLIP's lower-cased spelling; instead find the
    longest prefix of whole graphemes that fits in `room` tokens (binary search: the count
    grows with the prefix) and return the rest of the original text.
    """
    clusters = graphemes(text)
    low, high = 0, len(clusters)  # invariant: clusters[:low] fits, clusters[:high+1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if _token_count(tokenizer, "".join(clusters[:middle])) <= room:
            low = middle
        else:
            high = middle - 1
    return "".join(clusters[low:])


def _fit(image: Image, params: GenerationParams) -> Image:
    """The img2img source as RGB at the parameters' size."""
    image = image.convert("RGB")
    if image.size != (params.width, params.height):
        image = image.resize((params.width, params.height), PILImage.Resampling.LANCZOS)
    return image


def _even(image: Image) -> Image:
    """An upscaler input as RGB with sides that are multiples of 64: the latent upscaler's
    UNet halves its (doubled) latent three times."""
    image = image.convert("RGB")
    width, height = (max(64, round(side / 64) * 64) for side in image.size)
    if (width, height) != image.size:
        image = image.resize((width, height), PILImage.Resampling.LANCZOS)
    return image


def _exact(image: Image, request: GenerationRequest) -> Image:
    """An upscaler output at exactly the size asked for (2x the source)."""
    size = (request.params.width, request.params.height)
    if image.size != size:
        image = image.resize(size, PILImage.Resampling.LANCZOS)
    return image
