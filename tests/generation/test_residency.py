"""The memory budget for optional models (`generation.residency`): sized fake modules for the
bookkeeping, then the tiny random-weight models (images are noise) through the engine."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from generation.canvas import outpaint_canvas
from generation.engine import DiffusersEngine
from generation.loading import ModelSpec
from generation.params import GenerationParams
from generation.request import GenerationRequest, Operation
from generation.residency import GIB, Loaded, Residency, module_bytes
from generation.tiny import TINY_MODEL_ID
from tests.generation.test_creative import gradient, upscale


class Sized(torch.nn.Module):
    """A module of `size` bytes (float32 parameters) that records where it is asked to move
    (and stays put: the CPU is the only device here)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(size // 4))
        self.moves: list[str] = []

    def to(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        self.moves.append(str(torch.device(args[0])))
        return self


def loader(size: int, loads: list[str], name: str):  # type: ignore[no-untyped-def]
    def load() -> Loaded:
        loads.append(name)
        module = Sized(size)
        return Loaded(value=module, modules=[module])

    return load


def test_sizes_are_measured_from_parameters_and_buffers_once() -> None:
    linear = torch.nn.Linear(10, 4)  # 40 weights + 4 biases, float32
    assert module_bytes([linear]) == 44 * 4
    half = torch.nn.Linear(10, 4).half()
    half.register_buffer("scale", torch.ones(3, dtype=torch.float16))
    assert module_bytes([half]) == (44 + 3) * 2
    assert module_bytes([linear, linear]) == 44 * 4  # a shared module counts once


def test_without_a_budget_everything_stays() -> None:
    loads: list[str] = []
    residency = Residency(torch.device("cpu"), None, base_bytes=10**9)
    for name in ("a", "b", "c"):
        residency.use(name, loader(4000, loads, name))
    assert residency.on_device() == ["a", "b", "c"]
    assert residency.resident_bytes() == 10**9 + 3 * 4000


def test_least_recently_used_is_moved_off_and_back_on_next_use() -> None:
    loads: list[str] = []
    device, offload = torch.device("cpu"), torch.device("meta")
    # Room for the main model (1000 bytes) and two of the three 400-byte optional models.
    residency = Residency(device, 1000 + 800, base_bytes=1000, offload=offload)
    a = residency.use("a", loader(400, loads, "a"))
    b = residency.use("b", loader(400, loads, "b"))
    assert residency.use("a", loader(400, loads, "a")) is a  # a is now the most recent
    residency.use("c", loader(400, loads, "c"))
    assert residency.on_device() == ["a", "c"]  # b, least recently used, made room
    assert b.moves == ["cpu", "meta"] and a.moves == ["cpu"]
    assert residency.resident_bytes() == 1800
    # b comes back on its next use without loading again; a (now the oldest) makes room.
    assert residency.use("b", loader(400, loads, "b")) is b
    assert b.moves == ["cpu", "meta", "cpu"] and a.moves == ["cpu", "meta"]
    assert residency.on_device() == ["c", "b"]
    assert loads == ["a", "b", "c"]  # each loaded once


def test_a_model_over_the_budget_is_placed_anyway_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    residency = Residency(torch.device("cpu"), 1500, base_bytes=1000, offload=torch.device("meta"))
    residency.use("small", loader(400, [], "small"))
    with caplog.at_level(logging.WARNING):
        residency.use("big", loader(800, [], "big"))
    assert residency.on_device() == ["big"]  # the other moved off; the main model never is
    assert "does not fit" in caplog.text


# -- the engine ------------------------------------------------------------------------------


def outpaint_request() -> GenerationRequest:
    canvas = outpaint_canvas(gradient(64, 64), zoom=2.0, max_pixels=768 * 768)
    params = GenerationParams("a lighthouse", seed=3, count=1, steps=3, width=128, height=128)
    return GenerationRequest(params, init_image=canvas.image, mask_image=canvas.mask,
                             operation=Operation.OUTPAINT).validated()


def test_a_tight_budget_moves_the_other_optional_model_off(tiny_cache: Path) -> None:
    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache,
                     inpaint_id=TINY_MODEL_ID, upscaler_id=TINY_MODEL_ID)
    measure = DiffusersEngine(spec)
    measure.load()
    base = measure.residency.base_bytes
    measure.generate([outpaint_request()])
    measure.generate([upscale(gradient(64, 64), Operation.UPSCALE).validated()])
    inpaint, upscaler = (measure.residency.size(n) for n in ("inpainting model", "upscaler"))
    assert measure.residency.on_device() == ["inpainting model", "upscaler"]
    measure.close()

    # Room for the main model and the larger optional one, never both optional ones.
    budget = base + max(inpaint, upscaler) + min(inpaint, upscaler) // 2
    tight = DiffusersEngine(replace(spec, memory_budget_gb=budget / GIB))
    tight.load()
    try:
        assert tight.loading_note(Operation.OUTPAINT) == (
            "Loading the inpainting model on first use (this takes a moment)."
        )
        [first] = tight.generate([outpaint_request()])
        assert tight.loading_note(Operation.OUTPAINT) is None
        [upscaled] = tight.generate([upscale(gradient(64, 64), Operation.UPSCALE).validated()])
        assert tight.residency.on_device() == ["upscaler"]
        assert upscaled.images[0].size == (128, 128)
        # The next use moves the inpainting model back and makes the same image.
        [again] = tight.generate([outpaint_request()])
        assert tight.residency.on_device() == ["inpainting model"]
        assert again.images[0].tobytes() == first.images[0].tobytes()
        assert tight.residency.resident_bytes() <= budget
    finally:
        tight.close()


async def test_the_first_use_tells_the_member_the_model_is_loading(tiny_cache: Path) -> None:
    from generation.events import JobStarted
    from generation.queue_policy import FairQueuePolicy
    from generation.service import GenerationService

    spec = ModelSpec(TINY_MODEL_ID, device="cpu", cache_dir=tiny_cache, inpaint_id=TINY_MODEL_ID)
    service = GenerationService(DiffusersEngine(spec), FairQueuePolicy(), warmup=False)
    await service.start()
    try:
        notes = []
        for _ in range(2):
            job = service.submit(outpaint_request())
            events = [event async for event in job.events()]
            notes += [e.note for e in events if isinstance(e, JobStarted)]
            assert (await job.result()).images[0].size == (128, 128)
    finally:
        await service.close()
    assert notes == ["Loading the inpainting model on first use (this takes a moment).", None]
