"""What travels through PostgreSQL: requests as task arguments, progress as NOTIFY payloads,
results as PNG bytes. JSON only, so any worker version that reads the fields can run a job."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from PIL import Image

from generation.events import GenerationResult
from generation.params import GenerationParams
from generation.request import GenerationRequest

#: The PostgreSQL NOTIFY channel progress events travel on (payloads stay far below 8000 bytes).
EVENTS_CHANNEL = "imagine_pool_events"
#: The procrastinate task name of one generation job.
TASK_NAME = "imagine.generate"



def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def task_args(
    job_id: str, owner: str, request: GenerationRequest, tier: str = "fast"
) -> dict[str, Any]:
    """The procrastinate task arguments of a validated request (its seed is concrete), in
    its priority `tier` (`fast` or `relax`).

    A variation's source image travels as base64 PNG (a few hundred kB at 512x512).
    """
    values: dict[str, Any] = {"params": asdict(request.params)}
    if request.init_image is not None:
        values["init_image"] = base64.b64encode(png_bytes(request.init_image)).decode("ascii")
    return {"job_id": job_id, "owner": owner, "tier": tier, "request": values}


def request_from_args(args: dict[str, Any]) -> GenerationRequest:
    """The request stored by `task_args` (raises KeyError/TypeError on a malformed row)."""
    values = args["request"]
    known = {f.name for f in fields(GenerationParams)}
    params = GenerationParams(**{k: v for k, v in values["params"].items() if k in known})
    init_image = None
    if values.get("init_image"):
        init_image = png_image(base64.b64decode(values["init_image"])).convert("RGB")
    return GenerationRequest(params, init_image=init_image)


@dataclass(frozen=True)
class ResultMeta:
    """A finished job's result without its images (stored as JSON next to them)."""

    seeds: list[int]
    nsfw: list[bool]
    warnings: list[str]
    model_id: str
    gpu_seconds: float
    safety_checked: bool

    @classmethod
    def of(cls, result: GenerationResult) -> ResultMeta:
        return cls(
            seeds=list(result.seeds),
            nsfw=list(result.nsfw),
            warnings=list(result.warnings),
            model_id=result.model_id,
            gpu_seconds=result.gpu_seconds,
            safety_checked=result.safety_checked,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def result(self, images: list[Image.Image], request: GenerationRequest) -> GenerationResult:
        return GenerationResult(
            images=images,
            seeds=list(self.seeds),
            nsfw=list(self.nsfw),
            warnings=list(self.warnings),
            request=request,
            model_id=self.model_id,
            gpu_seconds=self.gpu_seconds,
            safety_checked=self.safety_checked,
        )


def progress_payload(job_ids: list[str], kind: str, **values: int) -> str:
    """A NOTIFY payload: `kind` is "started" (with `batch`) or "step" (with `step`, `total`)."""
    return json.dumps({"jobs": job_ids, "kind": kind, **values}, separators=(",", ":"))


def parse_payload(payload: str) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("jobs"), list) else None
