"""Queue ETAs: the dispatcher's own admission rule replayed over the policy's order, with step
costs learned online as a function of the batch's load.

Why not "position x mean seconds per image-step": with step-level batching a job starts when a
member of the running batch leaves and frees room, and a step's time is a fixed per-call cost
plus a cost per UNet row, so seconds per image-step depend on the batch size. One mean measured
on a small calibration job made ETAs 2.9x too long for jobs waiting behind a 16-image batch, and
the same mean re-measured on 16-image steps made later ETAs 1.28x too short for jobs run in
smaller batches (`imagine bench`, CPU, README's performance section).

So `CostModel` learns, from what each `advance` reports:

- seconds per denoising step vs the step's *load* (UNet rows x pixel area / native area; a CFG
  image is 2 rows): `LineFit`, an average per distinct load plus a recency-weighted line
  through them for loads not seen yet;
- seconds to admit a job (text encoding, initial noise) vs its images;
- seconds the dispatcher waits for finished members (decode, NaN checks, safety checker) vs
  their load (close to 0 when the decode overlaps the next steps).

`estimate_waits` then simulates the dispatcher from now on: the policy's order (`order()`, the
same hierarchical round robin that `take` follows) and its admission rule (the head joins while
it fits; the batch drains for a head that does not), chunk by chunk between members leaving.
`EtaEstimator` holds the model and an injectable clock, so the time already spent in the step
now running is subtracted, and tests run on a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["CostModel", "EtaEstimator", "LineFit", "Work", "estimate_waits"]

#: Seconds per UNet row at the native size assumed before anything is measured.
DEFAULT_ROW_SECONDS = 0.05


@dataclass(frozen=True)
class Work:
    """One job as the estimator sees it.

    `images`: its images; `load`: UNet rows x relative area of one of its steps; `steps`:
    denoising steps left (all of them for a waiting job); `size`: (width, height), which must
    match the running batch's to join it; `stepwise`: False for jobs that run as one pipeline
    call of their own (img2img), only when the step batch is empty.
    """

    images: int
    load: float
    steps: int
    size: tuple[int, int]
    stepwise: bool = True


class LineFit:
    """``y ~ f(x)`` for x >= 0, learned online from (x, y) samples.

    Each distinct x keeps its own moving average (a plain mean over its first ``1/alpha``
    samples, then an exponential one), so a long run at one batch size refines that point
    without erasing what was measured at the others. An x seen before is answered from its own
    average; another from the weighted least-squares line through the averages (weights: the
    samples behind each point, halved every `half_life` samples of any x since it was last
    updated, so stale points count less); with one point only, proportionally to it; with none,
    ``prior_slope * x``.
    """

    def __init__(self, prior_slope: float, alpha: float = 0.3, half_life: float = 100.0) -> None:
        if not 0 < alpha <= 1 or half_life <= 0 or prior_slope < 0:
            raise ValueError("need 0 < alpha <= 1, half_life > 0 and prior_slope >= 0")
        self._prior = prior_slope
        self._alpha = alpha
        self._half_life = half_life
        #: x -> [mean y, samples, sample counter when last updated]
        self._points: dict[float, list[float]] = {}
        self._samples = 0

    def __len__(self) -> int:
        """Distinct x values measured."""
        return len(self._points)

    def add(self, x: float, y: float) -> None:
        """Record that `x` took `y` (negative or non-finite samples are ignored)."""
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            return
        self._samples += 1
        point = self._points.setdefault(round(x, 4), [y, 0.0, 0.0])
        point[1] += 1
        weight = max(self._alpha, 1.0 / point[1])
        point[0] += weight * (y - point[0])
        point[2] = self._samples

    def __call__(self, x: float) -> float:
        if x <= 0:
            return 0.0
        point = self._points.get(round(x, 4))
        if point is not None:
            return point[0]
        if not self._points:
            return self._prior * x
        if len(self._points) == 1:
            (x0, (y0, _, _)), = self._points.items()
            return y0 * x / x0 if x0 > 0 else y0
        return self._line(x)

    def _line(self, x: float) -> float:
        rows = []
        for px, (py, count, seen) in self._points.items():
            age = self._samples - seen
            rows.append((px, py, min(count, 1.0 / self._alpha) * 0.5 ** (age / self._half_life)))
        total = sum(w for _, _, w in rows)
        mean_x = sum(w * px for px, _, w in rows) / total
        mean_y = sum(w * py for _, py, w in rows) / total
        spread = sum(w * (px - mean_x) ** 2 for px, _, w in rows)
        if spread <= 1e-12:
            return mean_y * x / mean_x if mean_x > 0 else mean_y
        slope = sum(w * (px - mean_x) * (py - mean_y) for px, py, w in rows) / spread
        intercept = mean_y - slope * mean_x
        if slope < 0 or intercept < 0:  # noise: fall back to a line through the origin
            through = sum(w * px * py for px, py, w in rows) / sum(w * px * px for px, _, w in rows)
            return through * x
        return intercept + slope * x


class CostModel:
    """The three costs of the dispatcher's loop (see module doc), learned online."""

    def __init__(self, row_seconds: float = DEFAULT_ROW_SECONDS) -> None:
        self.step = LineFit(row_seconds)
        self.admit = LineFit(0.0)
        #: A decode plus the safety check cost about as much as 2 steps of the same images.
        self.finish = LineFit(2 * row_seconds)

    def pipeline_call(self, work: Work) -> float:
        """A job run as its own pipeline call: its steps, then its decode."""
        return work.steps * self.step(work.load) + self.finish(work.load)


def estimate_waits(
    running: Sequence[Work],
    waiting: Sequence[Work],
    cost: CostModel,
    *,
    max_images: int,
    stepwise: bool = True,
    one_job: bool = False,
    elapsed: float = 0.0,
    admitting: float = 0.0,
) -> list[float]:
    """Seconds from now until each of `waiting` (in the policy's order) starts, then one more:
    until the batch is empty after all of them started (the wait of a job queued last).

    `running`: the step batch's members (their steps left include the step now running, which
    began `elapsed` seconds ago and also admits jobs for `admitting` seconds). With `stepwise`
    (step-level batching) the head of the queue joins at an advance boundary when the batch
    has room (same size, at most `max_images` images; one job at a time with `one_job`); else
    every job runs after the ones before it.
    """
    clock = -elapsed if running else 0.0
    batch = [[w.steps, w.load, w.images, w.size] for w in running if w.steps > 0]
    waits: list[float] = []

    def run_steps(count: int, admitted: float) -> None:
        """`count` steps of the current batch (the first also admits), then its leavers."""
        nonlocal clock
        load = sum(member[1] for member in batch)
        clock += admitted + count * cost.step(load)
        for member in batch:
            member[0] -= count
        leaving = sum(member[1] for member in batch if member[0] <= 0)
        if leaving:
            clock += cost.finish(leaving)
        batch[:] = [member for member in batch if member[0] > 0]

    if batch and stepwise:  # the advance in flight ends before anyone can join
        run_steps(1, admitting)
    queue = list(waiting)
    index = 0
    while index < len(queue):
        admitted = 0.0
        if stepwise:
            while index < len(queue):
                work = queue[index]
                if not work.stepwise or work.steps <= 0:
                    break
                if batch:
                    images = sum(member[2] for member in batch)
                    if one_job or images + work.images > max_images or batch[0][3] != work.size:
                        break
                waits.append(max(0.0, clock))
                batch.append([work.steps, work.load, work.images, work.size])
                admitted += cost.admit(work.images)
                index += 1
            if batch:
                run_steps(min(member[0] for member in batch), admitted)
                continue
        work = queue[index]  # a pipeline call of its own, once the batch is empty
        while batch:
            run_steps(min(member[0] for member in batch), 0.0)
        waits.append(max(0.0, clock))
        clock += cost.pipeline_call(work)
        index += 1
    while batch:
        run_steps(min(member[0] for member in batch), 0.0)
    waits.append(max(0.0, clock))
    return waits


class EtaEstimator:
    """The cost model, fed by the dispatcher, and the clock of the step now running.

    Call `advance_started` before each `advance` and `advance_done` after it, with what it
    reported; `waits` answers with `estimate_waits`. `clock` (seconds, monotonic) is injectable
    for tests; the default is `time.perf_counter`.
    """

    def __init__(
        self, cost: CostModel | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.cost = cost or CostModel()
        self._clock = clock
        self._started: float | None = None
        self._joining = 0

    def advance_started(self, joined_images: int = 0) -> None:
        """An advance that admits `joined_images` images begins now."""
        self._started = self._clock()
        self._joining = joined_images

    def advance_done(
        self,
        *,
        load: float,
        joined_images: int,
        admit_seconds: float,
        finished_load: float,
        finish_seconds: float,
    ) -> None:
        """Learn from one advance: its wall time on this clock (event-loop hand-offs included)
        less the admission and finishing seconds the engine measured is the step's time."""
        if self._started is None:
            return
        wall = self._clock() - self._started
        self._started = None
        if joined_images:
            self.cost.admit.add(joined_images, admit_seconds)
        if finished_load > 0:
            self.cost.finish.add(finished_load, finish_seconds)
        if load > 0:
            self.cost.step.add(load, max(0.0, wall - admit_seconds - finish_seconds))

    def pipeline_done(self, work: Work, seconds: float) -> None:
        """Learn from a job (or a share of a call) run by the pipeline: `seconds` for its steps
        and decode, split as the current model splits them."""
        self._started = None
        steps = work.steps * self.cost.step(work.load)
        finish = self.cost.finish(work.load)
        if work.steps > 0 and steps + finish > 0 and seconds > 0:
            self.cost.step.add(work.load, seconds * steps / (steps + finish) / work.steps)

    def waits(
        self,
        running: Sequence[Work],
        waiting: Sequence[Work],
        *,
        max_images: int,
        stepwise: bool = True,
        one_job: bool = False,
    ) -> list[float]:
        elapsed = self._clock() - self._started if self._started is not None else 0.0
        admitting = self.cost.admit(self._joining) if self._started is not None else 0.0
        return estimate_waits(
            running,
            waiting,
            self.cost,
            max_images=max_images,
            stepwise=stepwise,
            one_job=one_job,
            elapsed=elapsed,
            admitting=admitting,
        )
