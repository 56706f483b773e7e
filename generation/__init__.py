"""Image generation: Stable Diffusion v1.x in-process with diffusers, behind an asyncio service.

No Discord here (and no import of `bot`): the bot, the CLI and a future remote worker pool all
use this package through `generation.service.GenerationService` (or the
`generation.interfaces.GenerationBackend` protocol it implements).

Modules, from the member's request inwards:

- `params`: `GenerationParams` (the parameters, once), `Limits`, `SCHEDULERS` (validation);
  `request`: `GenerationRequest` (parameters + source image), `parse_aspect`.
- `interfaces`: `GenerationBackend`, what the bot depends on; `Engine`, the worker-side seam,
  and `StepEngine`, an engine that can also run a step-level batch.
- `service`: `GenerationService` (queue + one worker thread), the in-process backend;
  `job`: `QueuedJob`, the caller's handle on a queued job; `events`: its events,
  `GenerationResult` and `QueueStats`; `queue_policy`: tiers and hierarchical fair round robin
  (servers, members, jobs), batching; `eta`: the queue's ETAs (the dispatcher replayed with
  step costs learned per batch load); `factory.build_service`.
- `engine`: `DiffusersEngine`, runs pipeline calls and the step-level batch of `continuous`
  (jobs join and leave between denoising steps); `fastpath`: the GPU speed-up switches;
  `loading`: model, device, dtype, schedulers; `tiny`: the `builtin:tiny-random` test model and
  `random_models`: SD1.5-shaped random-weight models for timings (their images are noise).
- `grid`: grids and PNG/WebP/JPEG encoding (pure functions: callers run them in their own
  threads); `png_info`: the AUTOMATIC1111 `parameters` text every PNG carries;
  `preflight`: torch-free checks (device, model in cache) and the model-problem message;
  `cli`: `imagine generate`; `bench`: `imagine bench`.

Importing this package is cheap: torch and diffusers are only imported by `engine`/`loading`/
`continuous`/`fastpath`/`bench` (when it runs).
"""
