"""Step-level batching: a job's images do not depend on who it was batched with.

The reference is plain diffusers: the same request run alone through `StableDiffusionPipeline`
(float32 on CPU, the tiny random-weight model, whose images are noise; equality of noise is
exactly what shows that seeds, prompts and schedules stayed with their job).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from generation.continuous import StepBatch
from generation.engine import DiffusersEngine
from generation.fastpath import FastPath
from generation.loading import ModelSpec, build_scheduler
from generation.params import SCHEDULERS, GenerationParams
from generation.request import GenerationRequest


def request(prompt: str, **fields: object) -> GenerationRequest:
    base: dict[str, object] = {"width": 64, "height": 64, "steps": 4, "count": 2, "seed": 11}
    params = GenerationParams(prompt, **{**base, **fields})  # type: ignore[arg-type]
    return GenerationRequest(params).validated()


def alone(engine: DiffusersEngine, req: GenerationRequest) -> list[np.ndarray]:
    """`req` through the plain pipeline, one call, as the seed article does it."""
    from diffusers import StableDiffusionPipeline

    model = engine.model
    pipe = StableDiffusionPipeline(**model.txt2img.components)
    pipe.scheduler = build_scheduler(req.params.scheduler, model.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(
        prompt=[req.params.prompt] * req.params.count,
        negative_prompt=[req.params.negative_prompt] * req.params.count,
        num_inference_steps=req.params.steps,
        guidance_scale=req.params.guidance,
        width=req.params.width,
        height=req.params.height,
        generator=[torch.Generator("cpu").manual_seed(s) for s in req.seeds],
    )
    return [np.asarray(image, dtype=np.int16) for image in output.images]


def mixed(
    engine: DiffusersEngine, target: GenerationRequest, overlap: bool = False
) -> list[np.ndarray]:
    """`target` joining a running batch of other jobs (other schedulers, steps, guidance,
    prompts), with more jobs joining after it and some leaving before it ends."""
    batch = StepBatch(engine.model, lambda r: [], overlap_decode=overlap)
    others = [
        request("a lighthouse at dusk", scheduler="euler_a", steps=6, seed=3, count=1),
        request("a red fox", scheduler="ddim", steps=2, guidance=1.0, seed=5, count=3),
        request("the sea", scheduler="pndm", steps=3, guidance=12.0, seed=99, negative_prompt="x"),
    ]
    result = batch.advance([("o1", others[0])], [])
    batch.advance([("t", target), ("o2", others[1])], [])
    batch.advance([("o3", others[2])], [])
    images = None
    for _ in range(200):
        result = batch.advance([], [])
        if "t" in result.finished:
            images = result.finished["t"].images
            break
    assert images is not None, "the target never finished"
    assert not result.failed
    batch.close()
    return [np.asarray(image, dtype=np.int16) for image in images]


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_mixed_batch_matches_the_plain_pipeline(engine: DiffusersEngine, scheduler: str) -> None:
    """At most 1/255 per pixel from the same request alone, for every scheduler offered."""
    target = request(
        "a castle on a hill", scheduler=scheduler, guidance=6.0, negative_prompt="blurry"
    )
    got = mixed(engine, target)
    want = alone(engine, target)
    assert len(got) == len(want) == target.params.count
    for image, reference in zip(got, want, strict=True):
        assert np.abs(image - reference).max() <= 1
    # The comparison can fail: another seed gives clearly different noise.
    other = alone(engine, request("a castle on a hill", scheduler=scheduler, seed=12))
    assert np.abs(got[0] - other[0]).max() > 10


@pytest.mark.parametrize("scheduler", ["dpmpp_2m_karras", "euler_a"])
def test_decode_overlap_keeps_every_image(engine: DiffusersEngine, scheduler: str) -> None:
    """Decoding on the decoder thread while the others step on: the same images as the
    plain pipeline (an ancestral scheduler included: its generators stay with the job)."""
    target = request("a castle on a hill", scheduler=scheduler, guidance=6.0, seed=21)
    got = mixed(engine, target, overlap=True)
    want = alone(engine, target)
    for image, reference in zip(got, want, strict=True):
        assert np.abs(image - reference).max() <= 1


class RecordingDecodes(StepBatch):
    """Records which thread decoded whom; `explode` makes a decode raise."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.threads: dict[str, str] = {}
        self.explode: set[str] = set()

    def _finish(self, members, failed):  # type: ignore[no-untyped-def]
        for member in members:
            self.threads[member.key] = threading.current_thread().name
            if member.key in self.explode:
                raise RuntimeError("decoder bug (simulated)")
        return super()._finish(members, failed)


def test_decode_overlap_hands_off_and_delivers_later(engine: DiffusersEngine) -> None:
    """A job whose steps are done leaves the batch at once (its images come from the decoder
    thread in a later outcome); the others step on meanwhile; a job cancelled while decoding
    gets no result; with nobody left to step, `advance` waits for the decode."""
    batch = RecordingDecodes(engine.model, lambda r: [], overlap_decode=True)
    try:
        short = request("short", steps=1, count=1)
        gone = request("gone", steps=1, count=1, seed=5)
        long = request("long", steps=3, count=1)
        first = batch.advance([("short", short), ("gone", gone), ("long", long)], [])
        assert first.progress["short"] == (1, 1) and first.left_rows == 4
        assert batch.keys() == ["long"]
        finished: dict[str, object] = dict(first.finished)
        outcome = batch.advance([], ["gone"])
        finished.update(outcome.finished)
        assert outcome.progress == {"long": (2, 3)}
        while len(batch):
            outcome = batch.advance([], [])
            finished.update(outcome.finished)
        assert set(finished) == {"short", "long"}
        assert {batch.threads[k] for k in finished} == {"imagine-decode_0"}
    finally:
        batch.close()


def drain(batch: StepBatch, joins: list[tuple[str, GenerationRequest]]) -> None:
    batch.advance(joins, [])
    while len(batch):
        batch.advance([], [])


def test_decode_overlap_raises_a_decode_error_from_an_advance(
    engine: DiffusersEngine,
) -> None:
    """As without the overlap, an unexpected decode error reaches the service (which fails the
    batch's jobs); the batch stays usable."""
    batch = RecordingDecodes(engine.model, lambda r: [], overlap_decode=True)
    batch.explode = {"bad"}
    try:
        with pytest.raises(RuntimeError, match="decoder bug"):
            drain(batch, [("bad", request("bad", steps=1, count=1))])
        assert len(batch) == 0
        assert len(run_alone(batch, request("ok", steps=1, count=1), key="ok")) == 1
    finally:
        batch.close()


def test_leaving_and_progress_are_per_job(engine: DiffusersEngine) -> None:
    """A cancelled member leaves at once; the others report their own step counts."""
    batch = StepBatch(engine.model, lambda r: [])
    long = request("long", steps=5, count=1)
    short = request("short", steps=2, count=1, scheduler="ddim")
    first = batch.advance([("long", long), ("short", short)], [])
    assert first.progress["long"][1] == 5 and first.progress["short"] == (1, 2)
    second = batch.advance([], [])
    assert "short" in second.finished and "long" not in second.finished
    third = batch.advance([], ["long"])
    assert third.progress == {} and len(batch) == 0


class TightMemory(StepBatch):
    """A step batch whose UNet "runs out of memory" above `limit` rows, like a small GPU."""

    limit = 2

    def _unet(self, members):  # type: ignore[no-untyped-def]
        if sum(m.rows for m in members) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super()._unet(members)


def test_out_of_memory_splits_the_step_and_loses_no_job(engine: DiffusersEngine) -> None:
    """Three 1-image jobs that do not fit together finish anyway, with the same images; a job
    too big even alone fails on its own."""
    jobs = {f"j{i}": request(f"prompt {i}", count=1, seed=i, steps=2) for i in range(3)}
    too_big = request("big", count=2, seed=9, steps=2)
    tight = TightMemory(engine.model, lambda r: [])
    roomy = StepBatch(engine.model, lambda r: [])
    results, reference = {}, {}
    for batch, store, extra in ((tight, results, [("big", too_big)]), (roomy, reference, [])):
        outcome = batch.advance([*jobs.items(), *extra], [])
        failed = dict(outcome.failed)
        while len(batch):
            outcome = batch.advance([], [])
            store.update(outcome.finished)
            failed.update(outcome.failed)
        if extra:
            assert set(failed) == {"big"} and "out of memory" in str(failed["big"])
    assert set(results) == set(jobs)
    for key in jobs:
        got = np.asarray(results[key].images[0], dtype=np.int16)
        want = np.asarray(reference[key].images[0], dtype=np.int16)
        assert np.abs(got - want).max() <= 1


def run_alone(batch: StepBatch, req: GenerationRequest, key: str = "x") -> list[np.ndarray]:
    outcome = batch.advance([(key, req)], [])
    while key not in outcome.finished:
        outcome = batch.advance([], [])
    return [np.asarray(image, dtype=np.int16) for image in outcome.finished[key].images]


def test_fast_path_is_on_for_cuda_only() -> None:
    assert FastPath.for_device("cpu") == FastPath()
    cuda = FastPath.for_device("cuda")
    assert cuda.channels_last and cuda.fuse_qkv and cuda.compile and cuda.buckets
    assert cuda.overlap_decode
    assert cuda.bucket(3) == 4 and cuda.bucket(2) == 2 and cuda.bucket(1000) == 1000
    assert FastPath().bucket(3) == 3


def test_padding_to_a_bucket_changes_no_image(engine: DiffusersEngine) -> None:
    """Rows added to reach a compiled batch shape are dropped and do not leak into others."""
    req = request("a boat", count=1, steps=3)
    plain = run_alone(StepBatch(engine.model, lambda r: []), req)
    padded = run_alone(StepBatch(engine.model, lambda r: [], FastPath(buckets=(8,)).bucket), req)
    assert np.abs(plain[0] - padded[0]).max() <= 1


def test_channels_last_and_fused_qkv_keep_the_images(
    engine: DiffusersEngine, tiny_spec: ModelSpec
) -> None:
    """The fast path's layout and fused projections are speed-ups only (same images)."""
    fast = DiffusersEngine(tiny_spec, FastPath(channels_last=True, fuse_qkv=True))
    fast.load()
    try:
        req = request("a boat", count=1, steps=3, scheduler="euler_a")
        want = run_alone(StepBatch(engine.model, lambda r: []), req)
        got = run_alone(StepBatch(fast.model, lambda r: []), req)
        assert np.abs(want[0] - got[0]).max() <= 1
    finally:
        fast.close()


@pytest.mark.skipif(
    not os.environ.get("IMAGINE_SLOW_TESTS"), reason="compiles with inductor (minutes on CPU)"
)
def test_compiled_buckets_on_cpu(tiny_spec: ModelSpec) -> None:
    """torch.compile per bucket works on CPU too (slow: set IMAGINE_SLOW_TESTS=1)."""
    compiled = DiffusersEngine(tiny_spec, FastPath(compile=True, buckets=(4,)))
    compiled.load()
    try:
        assert compiled.warm_buckets(64, 64) == 1
        images = run_alone(
            StepBatch(compiled.model, lambda r: [], compiled.fast.bucket),
            request("a boat", count=1, steps=2),
        )
        assert images[0].shape == (64, 64, 3)
    finally:
        compiled.close()
