"""Start-up stages (loading, moving to the device, warm-up, compiling batch buckets), shown as
they happen to whoever started the process.

Loading a model takes seconds to minutes and compiling the fast path's buckets minutes on the
first start (`generation.fastpath`): without a display the operator sees a silent process. The
engine reports each stage through a `Stages` object it is given:

- `RichStages`: a rich progress display on a terminal, one line per stage with a spinner, the
  elapsed time and, for counted stages (one step per bucket), a bar with ``done/total``.
- `LogStages`: for a service manager or CI (stderr is not a terminal), one structured log
  record per stage (``stage=... seconds=...``) and per counted step, through `logging`, so the
  bot's key=value or JSON formatter writes it.
- `Stages` itself shows nothing (tests, library use).

`startup_stages(stream)` picks the first two by `stream.isatty()`.

Download progress is not drawn here: huggingface_hub draws its own bars (on a terminal only, by
its own TTY check). A stage that may download is opened with ``own_output=True``, and the rich
display steps aside for it (no live display while huggingface_hub's bars draw), so the two never
overwrite each other. diffusers' and transformers' loading loops offer no progress hook (only
tqdm bars of their own, turned off in `generation.loading`), so those stages show a spinner and
elapsed time rather than a guessed fraction.

Thread-safe: stages run on the GPU worker thread while the event loop goes on; rich's progress
display and `logging` both lock.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = ["LogStages", "RichStages", "StageStep", "Stages", "Step", "startup_stages"]

log = logging.getLogger(__name__)

#: Marks one step of a counted stage as done: ``step("8 rows", rows=8)``.
StageStep = Callable[..., None]


@dataclass(frozen=True)
class Step:
    """Step `index` (1-based) of stage `name` (`total` steps, None: not counted) is done,
    `seconds` after the previous one; `detail` says what it was, `fields` for logs."""

    name: str
    index: int
    total: int | None
    detail: str
    seconds: float
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def counted(self) -> str:
        return f"{self.index}/{self.total}" if self.total else str(self.index)


class Stages:
    """Reports start-up stages; this base class shows nothing (see the module doc)."""

    @contextmanager
    def stage(
        self, name: str, total: int | None = None, *, own_output: bool = False, **fields: Any
    ) -> Iterator[StageStep]:
        """Run the body as stage `name`; yields `step(detail="", **fields)` for counted stages.

        `total`: the number of steps (None: not counted); `own_output`: the body may draw
        progress of its own on stderr (downloads); `fields`: structured context for logs.
        A body that raises ends the stage as failed and the exception goes on.
        """
        started = time.perf_counter()
        last = [started]
        done = [0]
        lock = threading.Lock()

        def step(detail: str = "", **step_fields: Any) -> None:
            with lock:
                now = time.perf_counter()
                done[0] += 1
                seconds, last[0] = now - last[0], now
                index = done[0]
            self._step(Step(name, index, total, detail, seconds, step_fields))

        self._begin(name, total, own_output, fields)
        try:
            yield step
        except BaseException:
            self._end(name, time.perf_counter() - started, False, fields)
            raise
        self._end(name, time.perf_counter() - started, True, fields)

    def _begin(
        self, name: str, total: int | None, own_output: bool, fields: dict[str, Any]
    ) -> None:
        """A stage starts (hook for subclasses)."""

    def _step(self, step: Step) -> None:
        """A step of a counted stage is done (hook for subclasses)."""

    def _end(self, name: str, seconds: float, ok: bool, fields: dict[str, Any]) -> None:
        """A stage ends, `ok` or failed, after `seconds` (hook for subclasses)."""


class LogStages(Stages):
    """One structured log record per stage end and per counted step (INFO; failures WARNING).

    The message says it all in words (``"compile buckets 2/6 (4 rows) done in 98.1 s"``: the
    command line's log format shows messages only); the fields say it again for machines:
    ``stage``, ``seconds``, plus ``step=i/n`` and ``detail`` for steps, and whatever the
    engine passed (``model``, ``device``, ``rows`` ...). Failures say only that the stage
    failed: the error itself is reported once, by whoever handles it.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def _step(self, step: Step) -> None:
        extra = {
            "stage": step.name,
            "step": step.counted,
            "seconds": round(step.seconds, 2),
            **step.fields,
        }
        if step.detail:
            extra["detail"] = step.detail
        about = f" ({step.detail})" if step.detail else ""
        message = f"{step.name} {step.counted}{about} done in {step.seconds:.1f} s"
        self._log.info(message, extra=extra)

    def _end(self, name: str, seconds: float, ok: bool, fields: dict[str, Any]) -> None:
        extra = {"stage": name, "seconds": round(seconds, 2), **fields}
        if ok:
            self._log.info(f"{name} done in {seconds:.1f} s", extra=extra)
        else:
            self._log.warning(f"{name} failed after {seconds:.1f} s", extra=extra)


class RichStages(Stages):
    """A rich progress display on `console` (a terminal): one line per stage, left on screen.

    Each stage gets a display of its own, started when it begins and stopped when it ends, so
    nothing else (log lines, huggingface_hub's bars) is ever drawn while a live display holds
    the terminal between stages; a stage with ``own_output`` gets a plain line instead.
    """

    def __init__(self, console: Any) -> None:
        self._console = console
        self._progress: Any = None
        self._task: Any = None

    def _begin(
        self, name: str, total: int | None, own_output: bool, fields: dict[str, Any]
    ) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        label = _label(name, fields)
        if own_output:
            self._console.print(f"{label} ...", highlight=False, markup=False)
            return
        columns: list[Any] = [
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}", markup=False),
        ]
        if total:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        self._progress = Progress(*columns, console=self._console, transient=False)
        self._task = self._progress.add_task(label, total=total)
        self._progress.start()

    def _step(self, step: Step) -> None:
        if self._progress is not None:
            label = step.name
            if step.detail:
                label += f": {step.detail} ({step.seconds:.1f} s)"
            self._progress.update(self._task, completed=step.index, description=label)

    def _end(self, name: str, seconds: float, ok: bool, fields: dict[str, Any]) -> None:
        progress, self._progress = self._progress, None
        if progress is None:
            if not ok:
                text = f"{_label(name, fields)}: failed"
                self._console.print(text, highlight=False, markup=False)
            return
        task = progress.tasks[0]
        if ok:
            total = task.total or 1
            progress.update(self._task, total=total, completed=total)
        else:
            progress.update(self._task, description=f"{task.description}: failed")
        progress.stop()


def _label(name: str, fields: dict[str, Any]) -> str:
    """``"load components (model=X)"``: the stage and what it works on."""
    shown = ", ".join(f"{key}={value}" for key, value in fields.items())
    return f"{name} ({shown})" if shown else name


def startup_stages(stream: TextIO | None = None, *, console: Any = None) -> Stages:
    """`RichStages` when `stream` (default: stderr) is a terminal, else `LogStages`.

    `console`: a rich console to draw on (its `is_terminal` decides instead of `stream`).
    """
    if console is not None:
        return RichStages(console) if console.is_terminal else LogStages()
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from rich.console import Console

        return RichStages(Console(file=stream, soft_wrap=True))
    return LogStages()
