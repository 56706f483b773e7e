"""Step-level (continuous) batching: one denoising loop over jobs that join and leave.

`StepBatch` runs Stable Diffusion's txt2img loop itself with the loaded pipeline's components,
the way diffusers' `StableDiffusionPipeline.__call__` does (diffusers 0.3x-0.4x,
``pipeline_stable_diffusion.py``: `encode_prompt`, `prepare_latents`, `scale_model_input`,
classifier-free guidance, `scheduler.step`, `vae.decode`, `image_processor.postprocess`), but
over a batch whose members are different jobs:

- a job joins between two steps and leaves as soon as its own steps are done (its images are
  decoded then), so a job arriving while a long batch runs starts at the next step;
- each member keeps its own scheduler instance (schedulers hold per-run state: step index,
  multistep history), its own per-image `torch.Generator`s (seeded ``seed + i``, used for the
  initial noise and for ancestral schedulers' noise, as the pipeline does with a generator list),
  prompt and negative prompt embeddings, guidance scale, step count and scheduler kind;
- every step is one UNet call over all members' rows with a per-row timestep.

The UNet treats batch rows independently, so a member's images do not depend on who it was
batched with beyond float rounding from the batch shape (about 1e-6 relative); a test checks
them against plain `StableDiffusionPipeline` on CPU in float32 for every scheduler.

Sizes must match within a batch (the UNet input is one tensor). img2img variations and models
whose UNet needs a guidance embedding (LCM) are not run here; the service sends those through
the pipeline call instead (`supports`).

An out-of-memory error in the UNet or the VAE splits the members in halves and retries; a single
job that still does not fit fails alone. Everything here runs on the worker thread, except, with
`overlap_decode`, the finished members' decode (VAE, NaN/black checks, safety checker): it is
handed to one decoder thread so the next denoising steps of the others do not wait for it (torch
releases the GIL in its kernels; on CUDA the decode runs on its own stream, after an event
recorded on the denoising stream, with `record_stream` on the latents it reads). Its results come
back in the outcome of a later `advance`, which blocks for them only when no member is left to
step.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from generation.decoding import decode_checked, decoder_dtype, log_failures
from generation.errors import GenerationError, OutOfMemoryError
from generation.events import GenerationResult
from generation.loading import LoadedModel, build_scheduler
from generation.png_info import attach_parameters
from generation.request import GenerationRequest, Operation

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    {getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError}
)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OOM error, or the plain RuntimeError that MPS and some CUDA paths raise."""
    if isinstance(exc, _OOM_ERRORS):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class Member:
    """One job inside the running batch (worker-thread state)."""

    key: str
    request: GenerationRequest
    scheduler: Any
    timesteps: list[torch.Tensor]
    latents: torch.Tensor  # (count, C, h, w)
    #: Text embeddings for the UNet rows of this member: negatives then prompts when `cfg`.
    embeds: torch.Tensor
    generators: list[torch.Generator]
    cfg: bool
    step_kwargs: dict[str, Any]
    warnings: list[str]
    index: int = 0
    seconds: float = 0.0
    failed: GenerationError | None = field(default=None, repr=False)

    @property
    def total(self) -> int:
        """Denoising steps this member runs (PNDM's 50 steps are 51 timesteps, as in diffusers)."""
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.index >= self.total

    @property
    def rows(self) -> int:
        return self.latents.shape[0] * (2 if self.cfg else 1)


@dataclass(frozen=True)
class StepOutcome:
    """What one `StepBatch.advance` did, for the service to publish.

    `progress`: key -> (step, total) for members that ran a step. `finished`: key -> result.
    `failed`: key -> error (only that job failed; the others go on). `seconds`: worker time,
    of which `admit_seconds` admitting the joins and `finish_seconds` decoding (or handing to
    the decoder thread) the members whose steps ended; `images`: images in the batch;
    `rows`: UNet rows the step ran (padding included; 0 when no step ran); `left_rows`: UNet
    rows of the members whose steps ended; `pixels`: width x height of the batch's images.
    The ETA's cost model (`generation.eta`) learns from these.
    """

    progress: dict[str, tuple[int, int]]
    finished: dict[str, GenerationResult]
    failed: dict[str, GenerationError]
    seconds: float
    images: int
    admit_seconds: float = 0.0
    finish_seconds: float = 0.0
    rows: int = 0
    left_rows: int = 0
    pixels: int = 0


def supports(model: LoadedModel, request: GenerationRequest) -> bool:
    """Whether `request` can run in a step batch on `model` (txt2img on a plain SD v1.x UNet;
    anything that starts from an image, upscales and outpaints included, runs its pipeline)."""
    unet_config = model.txt2img.unet.config
    return (
        request.init_image is None
        and request.operation is Operation.GENERATE
        and getattr(unet_config, "time_cond_proj_dim", None) is None
    )


class StepBatch:
    """The members being denoised together, all of one size. Worker thread only.

    `pad_to` (optional) maps a UNet row count to the row count to run (batch buckets for
    compiled UNets: padding rows are copies of row 0 whose outputs are dropped).
    `overlap_decode` decodes finished members on a decoder thread (see module doc); call
    `close` to end that thread.
    """

    def __init__(
        self,
        model: LoadedModel,
        warn: Callable[[GenerationRequest], list[str]],
        pad_to: Callable[[int], int] | None = None,
        overlap_decode: bool = False,
    ) -> None:
        self._model = model
        self._warn = warn
        self._pad_to = pad_to
        self._members: dict[str, Member] = {}
        self._decoder: ThreadPoolExecutor | None = None
        self._stream: Any = None
        if overlap_decode:
            self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-decode")
            if model.device.type == "cuda":
                self._stream = torch.cuda.Stream(device=model.device)
        #: Hand-offs in flight: (their keys, the decode's future), oldest first.
        self._decoding: list[tuple[list[str], Future[_Decoded]]] = []
        #: Keys that left while their images were being decoded: their results are dropped.
        self._gone: set[str] = set()
        pipe = model.txt2img
        self._pipe = pipe
        self._vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)

    # -- state ----------------------------------------------------------------------------

    @property
    def images(self) -> int:
        return sum(m.request.params.count for m in self._members.values())

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the members, or None when empty."""
        for member in self._members.values():
            return member.request.params.width, member.request.params.height
        return None

    def __len__(self) -> int:
        """Members still stepping or being decoded."""
        return len(self._members) + sum(len(keys) for keys, _ in self._decoding)

    def keys(self) -> list[str]:
        return list(self._members)

    def close(self) -> None:
        """Wait for the decodes in flight and end the decoder thread (results are dropped)."""
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoding.clear()

    # -- one call from the service ------------------------------------------------------

    def advance(
        self, joins: Sequence[tuple[str, GenerationRequest]], leaves: Sequence[str]
    ) -> StepOutcome:
        """Drop `leaves`, add `joins`, run one denoising step, decode the members now done
        (or hand them to the decoder thread and collect the decodes that are ready)."""
        started = time.perf_counter()
        failed: dict[str, GenerationError] = {}
        decoding = {key for keys, _ in self._decoding for key in keys}
        for key in leaves:
            if self._members.pop(key, None) is None and key in decoding:
                self._gone.add(key)
        for key, request in joins:
            if self.size is not None and self.size != (request.params.width, request.params.height):
                failed[key] = GenerationError("internal: a job of another size joined the batch")
                continue
            try:
                self._members[key] = self._admit(key, request)
            except Exception as exc:  # only this job fails; the batch goes on
                if is_out_of_memory(exc):
                    failed[key] = _oom_error(request, exc)
                    self._free()
                else:
                    log.exception("job %s could not join the step batch", key)
                    failed[key] = GenerationError(
                        f"Generation failed: {type(exc).__name__}: {exc}"
                    )
        admitted = time.perf_counter()
        images = self.images
        pixels = self._pixels()
        progress: dict[str, tuple[int, int]] = {}
        running = [m for m in self._members.values() if not m.done]
        rows = 0
        if running:
            rows = sum(m.rows for m in running)
            rows = self._pad_to(rows) if self._pad_to is not None else rows
            step_started = time.perf_counter()
            self._step(running)
            share = (time.perf_counter() - step_started) / max(1, images)
            for member in running:
                if member.failed is not None:
                    failed[member.key] = member.failed
                    self._members.pop(member.key, None)
                    continue
                member.seconds += share * member.request.params.count
                progress[member.key] = (member.index, member.total)
        done = [m for m in self._members.values() if m.done]
        for member in done:
            del self._members[member.key]
        finishing = time.perf_counter()
        if self._decoder is None:
            finished = self._finish(done, failed)
        else:
            if done:
                self._hand_off(done)
            finished = self._collect(failed, block=not running)
        ended = time.perf_counter()
        return StepOutcome(
            progress,
            finished,
            failed,
            ended - started,
            images,
            admit_seconds=admitted - started,
            finish_seconds=ended - finishing,
            rows=rows,
            left_rows=sum(m.rows for m in done),
            pixels=pixels,
        )

    def _pixels(self) -> int:
        size = self.size
        return size[0] * size[1] if size is not None else 0

    # -- decoding off the step loop -------------------------------------------------------

    def _hand_off(self, members: list[Member]) -> None:
        """Queue `members`' decode on the decoder thread, after the steps that made their
        latents (an event on the denoising stream; `record_stream` keeps the latents' memory
        from being reused before the decode stream is done with it)."""
        event = None
        if self._stream is not None:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self._model.device))
            for member in members:
                member.latents.record_stream(self._stream)
        assert self._decoder is not None
        future = self._decoder.submit(self._finish_off_loop, members, event)
        self._decoding.append(([m.key for m in members], future))

    def _finish_off_loop(self, members: list[Member], event: Any) -> _Decoded:
        """Decoder thread: `_finish` on the decode stream (CUDA) once `event` has passed."""
        failed: dict[str, GenerationError] = {}
        with torch.inference_mode():
            if self._stream is None:
                return self._finish(members, failed), failed
            with torch.cuda.stream(self._stream):
                self._stream.wait_event(event)
                finished = self._finish(members, failed)
            self._stream.synchronize()
            return finished, failed

    def _collect(
        self, failed: dict[str, GenerationError], block: bool
    ) -> dict[str, GenerationResult]:
        """The results of the hand-offs that are done (waiting for one first when `block`);
        an exception of a decode is raised here, as the decode in `advance` would raise it."""
        if block and self._decoding and not any(f.done() for _, f in self._decoding):
            wait([f for _, f in self._decoding], return_when=FIRST_COMPLETED)
        finished: dict[str, GenerationResult] = {}
        done = [(keys, future) for keys, future in self._decoding if future.done()]
        self._decoding = [item for item in self._decoding if not item[1].done()]
        for _, future in done:
            results, errors = future.result()
            finished.update(results)
            failed.update(errors)
        for key in list(self._gone):
            if key in finished or key in failed:
                finished.pop(key, None)
                failed.pop(key, None)
                self._gone.discard(key)
        return finished

    # -- joining ------------------------------------------------------------------------

    @torch.inference_mode()
    def _admit(self, key: str, request: GenerationRequest) -> Member:
        started = time.perf_counter()
        model, pipe = self._model, self._pipe
        device = model.device
        params = request.params
        count = params.count
        cfg = params.guidance > 1.0  # as `StableDiffusionPipeline.do_classifier_free_guidance`
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            [params.prompt] * count,
            device,
            1,
            cfg,
            [request.params.negative_prompt] * count,
        )
        embeds = torch.cat([negative_embeds, prompt_embeds]) if cfg else prompt_embeds
        scheduler = build_scheduler(request.params.scheduler, model.scheduler_config)
        scheduler.set_timesteps(request.params.steps, device=device)
        generators = [torch.Generator(model.generator_device).manual_seed(s) for s in request.seeds]
        shape = (
            1,
            pipe.unet.config.in_channels,
            request.params.height // self._vae_scale,
            request.params.width // self._vae_scale,
        )
        # One draw per image from its own generator: what `randn_tensor` does with a list.
        noise = [
            torch.randn(shape, generator=g, device=g.device, dtype=prompt_embeds.dtype)
            for g in generators
        ]
        latents = torch.cat(noise).to(device) * scheduler.init_noise_sigma
        params = set(inspect.signature(scheduler.step).parameters)
        step_kwargs: dict[str, Any] = {}
        if "eta" in params:
            step_kwargs["eta"] = 0.0
        if "generator" in params:
            step_kwargs["generator"] = generators
        return Member(
            key=key,
            request=request,
            scheduler=scheduler,
            timesteps=list(scheduler.timesteps),
            latents=latents,
            embeds=embeds,
            generators=generators,
            cfg=cfg,
            step_kwargs=step_kwargs,
            warnings=self._warn(request),
            seconds=time.perf_counter() - started,
        )

    # -- one step -----------------------------------------------------------------------

    @torch.inference_mode()
    def _step(self, members: list[Member]) -> None:
        """One UNet call over `members` (halves on OOM), then each member's scheduler step."""
        try:
            predictions = self._unet(members)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            for part in self._halves_after_oom(members, exc, "step"):
                self._step(part)
            return
        for member, noise_pred in zip(members, predictions, strict=True):
            t = member.timesteps[member.index]
            if member.cfg:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + member.request.params.guidance * (text - uncond)
            member.latents = member.scheduler.step(
                noise_pred, t, member.latents, **member.step_kwargs, return_dict=False
            )[0]
            member.index += 1

    def _unet(self, members: list[Member]) -> list[torch.Tensor]:
        inputs, embeds, times = [], [], []
        for member in members:
            t = member.timesteps[member.index]
            copies = 2 if member.cfg else 1
            latents = torch.cat([member.latents] * copies)
            inputs.append(member.scheduler.scale_model_input(latents, t))
            embeds.append(member.embeds)
            # The UNet embeds `timesteps.float()`: float32 keeps integer and fractional t exact.
            times.append(t.to(torch.float32).expand(latents.shape[0]))
        sample = torch.cat(inputs)
        hidden = torch.cat(embeds)
        timesteps = torch.cat(times).to(sample.device)
        rows = sample.shape[0]
        padded = self._pad_to(rows) if self._pad_to is not None else rows
        if padded > rows:
            extra = padded - rows
            sample = torch.cat([sample, sample[:1].expand(extra, *sample.shape[1:])])
            hidden = torch.cat([hidden, hidden[:1].expand(extra, *hidden.shape[1:])])
            timesteps = torch.cat([timesteps, timesteps[:1].expand(extra)])
        output = self._pipe.unet(sample, timesteps, encoder_hidden_states=hidden, return_dict=False)
        output = output[0][:rows]
        return list(output.split([m.rows for m in members]))

    # -- leaving ------------------------------------------------------------------------

    def _finish(
        self, members: list[Member], failed: dict[str, GenerationError]
    ) -> dict[str, GenerationResult]:
        if not members:
            return {}
        finished: dict[str, GenerationResult] = {}
        started = time.perf_counter()
        decoded = self._decode(members)
        total = sum(m.request.params.count for m in members)
        share = (time.perf_counter() - started) / total
        for member in members:
            if member.key not in decoded:
                failed[member.key] = member.failed or GenerationError("decoding failed")
                continue
            images, failures = decoded[member.key]
            request = member.request
            if failures:
                log_failures(
                    [request],
                    failures,
                    model_id=self._model.model_id,
                    dtype=self._model.dtype,
                    vae_float32=decoder_dtype(self._pipe.vae) == torch.float32,
                )
            check_started = time.perf_counter()
            flags = self._model.nsfw_flags(images)
            checked = time.perf_counter() - check_started
            seconds = member.seconds + share * request.params.count + checked
            finished[member.key] = GenerationResult(
                images=images,
                seeds=request.seeds,
                nsfw=list(flags) if flags is not None else [False] * request.params.count,
                warnings=member.warnings,
                request=request,
                model_id=self._model.model_id,
                gpu_seconds=seconds,
                safety_checked=flags is not None,
                failures=failures,
            )
            attach_parameters(finished[member.key])
        return finished

    @torch.inference_mode()
    def _decode(
        self, members: list[Member]
    ) -> dict[str, tuple[list[Image], dict[int, str]]]:
        """Each member's PIL images and its unusable ones (0-based index -> why), checked as
        the pipeline path checks them (`generation.decoding`); members that do not fit even
        alone are left out."""
        pipe = self._pipe
        try:
            latents = torch.cat([m.latents for m in members])
            images, failures = decode_checked(
                pipe.vae, pipe.image_processor, latents, do_denormalize=[True] * len(latents)
            )
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            decoded: dict[str, tuple[list[Image], dict[int, str]]] = {}
            for part in self._halves_after_oom(members, exc, "decode"):
                decoded.update(self._decode(part))
            return decoded
        result: dict[str, tuple[list[Image], dict[int, str]]] = {}
        start = 0
        for member in members:
            end = start + member.request.params.count
            mine = {i - start: why for i, why in failures.items() if start <= i < end}
            result[member.key] = (list(images[start:end]), mine)
            start = end
        return result

    def _halves_after_oom(
        self, members: list[Member], exc: BaseException, what: str
    ) -> list[list[Member]]:
        """After running out of memory on `members`: the two halves to retry, or none when a
        single member did not fit (it is marked failed; the others go on)."""
        self._free()
        if len(members) == 1:
            members[0].failed = _oom_error(members[0].request, exc)
            return []
        log.warning("out of memory in a %s of %d jobs; splitting", what, len(members))
        half = len(members) // 2
        return [members[:half], members[half:]]

    def _free(self) -> None:
        if self._model.device.type == "cuda":
            torch.cuda.empty_cache()


#: What a decode on the decoder thread gives back: results and failures by key.
_Decoded = tuple[dict[str, GenerationResult], dict[str, GenerationError]]


def _oom_error(request: GenerationRequest, exc: BaseException) -> OutOfMemoryError:
    log.warning("out of memory for one job of %d image(s): %s", request.params.count, exc)
    return OutOfMemoryError(
        f"The GPU ran out of memory making {request.params.count} image(s) at "
        f"{request.params.width}x{request.params.height}; try fewer images or a smaller size."
    )
