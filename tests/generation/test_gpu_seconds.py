"""GPU seconds per job, as the tiers charge them: each step's time is shared among the jobs in
the step batch in proportion to their images (and so is a shared decode); per-job work
(encoding its prompt, its safety check) is its own. Checked on the tiny random-weight model
with a clock that ticks one second per reading, so the shares are exact."""

from __future__ import annotations

import types

import pytest

import generation.continuous as continuous
from generation.continuous import StepBatch
from generation.engine import DiffusersEngine
from generation.params import GenerationParams
from generation.request import GenerationRequest


class TickingClock:
    """`perf_counter` that moves one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def request(count: int) -> GenerationRequest:
    params = GenerationParams("a fox", width=64, height=64, steps=3, count=count, seed=1)
    return GenerationRequest(params).validated()


def test_step_time_is_shared_in_proportion_to_images(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs of 1, 2 and 3 images in one batch: their charges rise by the same amount
    per image (the shared steps and decode split by images, the rest equal per job), and
    together they are charged no more than the batch's measured time."""
    clock = TickingClock()
    monkeypatch.setattr(continuous, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    batch = StepBatch(engine.model, lambda r: [])
    joins = [(f"job{count}", request(count)) for count in (1, 2, 3)]
    finished, total = {}, 0.0
    for _ in range(20):
        outcome = batch.advance(joins, [])
        joins = []
        total += outcome.seconds
        finished.update(outcome.finished)
        if len(finished) == 3:
            break
    charged = [finished[f"job{count}"].gpu_seconds for count in (1, 2, 3)]
    per_image = charged[1] - charged[0]
    assert per_image > 0
    assert charged[2] - charged[1] == pytest.approx(per_image)
    # At least the 3 steps' share: each 1 s shared by the batch's 6 images (the shared decode
    # adds its own share, by images too).
    assert per_image >= 3 / 6 - 1e-9
    assert sum(charged) <= total
