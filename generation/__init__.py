"""Image generation: Stable Diffusion v1.x in-process with diffusers, behind an asyncio service.

No Discord here (and no import of `bot`): the bot, the CLI and a future remote worker pool all
use this package through `generation.service.GenerationService` (or the
`generation.interfaces.GenerationBackend` protocol it implements).

Modules, from the member's request inwards:

- `params`: `GenerationParams` (the parameters, once), `Limits`, `SCHEDULERS` (validation);
  `request`: `GenerationRequest` (parameters + source image), `parse_aspect`.
- `interfaces`: `GenerationBackend`, what the bot depends on; `Engine`, the worker-side seam.
- `service`: `GenerationService` (queue + one worker thread), the in-process backend;
  `job`: `QueuedJob`, the caller's handle on a queued job; `events`: its events,
  `GenerationResult` and `QueueStats`; `queue_policy`: fair round-robin and batching;
  `factory.build_service`.
- `engine`: `DiffusersEngine`, runs pipeline calls; `loading`: model, device, dtype, schedulers;
  `tiny`: the `builtin:tiny-random` test model (random weights, its images are noise).
- `grid`: grids and PNG/WebP/JPEG encoding (pure functions: callers run them in their own
  threads); `png_info`: the AUTOMATIC1111 `parameters` text every PNG carries;
  `preflight`: torch-free checks (device, model in cache) and the model-problem message;
  `cli`: `imagine generate`.

Importing this package is cheap: torch and diffusers are only imported by `engine`/`loading`.
"""
