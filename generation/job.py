"""`QueuedJob`: the caller's handle on one submitted request (await its result, follow its events).

The name says which "job": this is the queue's job, alive from submission to its final event.
The bot's stored job (its database row, `bot.db.models.StoredJob`) and its read-only view
(`bot.services.history.JobView`) outlive it.

A job is a record of events fed by whoever runs it (the in-process `GenerationService`, or later
a client of remote GPU workers) through `publish`; it holds no thread, engine or pipeline. Every
method must be called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

from generation.errors import GenerationError, JobCancelledError
from generation.events import (
    FINAL_EVENTS,
    GenerationResult,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobFinished,
    JobQueued,
    JobStarted,
    JobState,
)
from generation.request import GenerationRequest


class QueuedJob:
    """One request on its way through the queue and the worker.

    `request` is the validated request (its seed is concrete). Events are kept, so every
    `events()` iterator, however late it starts, sees the whole sequence from `JobQueued`.
    """

    def __init__(
        self,
        request: GenerationRequest,
        owner: str,
        canceller: Callable[[QueuedJob], bool],
        job_id: str | None = None,
        tier: str = "fast",
    ) -> None:
        self.id: str = job_id or uuid.uuid4().hex
        self.request = request
        self.owner = owner
        #: Priority tier (`generation.queue_policy.TIERS`): fast jobs start before relax jobs.
        self.tier = tier
        self._canceller = canceller
        self._state = JobState.QUEUED
        self._history: list[JobEvent] = []
        self._changed = asyncio.Event()
        self._error: GenerationError | None = None
        self._result: GenerationResult | None = None
        #: Set by `cancel()` on a running job; the worker reads it between steps.
        self.cancel_requested = False

    def __repr__(self) -> str:
        return f"<QueuedJob {self.id[:8]} owner={self.owner!r} {self._state.value}>"

    @property
    def state(self) -> JobState:
        return self._state

    def done(self) -> bool:
        return self._state.is_final

    @property
    def history(self) -> tuple[JobEvent, ...]:
        """The events published so far, oldest first."""
        return tuple(self._history)

    @property
    def position(self) -> int | None:
        """Last published queue position (1 = next), or None once the job has started."""
        queued = self._last_queued()
        return queued.position if queued is not None else None

    @property
    def queue_note(self) -> str | None:
        """The `note` of the last `JobQueued` while the job waits (see `JobQueued`)."""
        queued = self._last_queued()
        return queued.note if queued is not None else None

    def _last_queued(self) -> JobQueued | None:
        """The newest `JobQueued` while the job still waits, else None."""
        if self._state is not JobState.QUEUED:
            return None
        for event in reversed(self._history):
            if isinstance(event, JobQueued):
                return event
        return None

    def cancel(self) -> bool:
        """Ask for cancellation; True if the job will end with `JobCancelled`.

        A queued job is cancelled at once. A running one stops being worked on at its next
        step (when it shares a pipeline call with other jobs, the call goes on for them and this
        job's images are discarded). False when the job has already ended.
        """
        if self.done():
            return False
        return self._canceller(self)

    async def result(self) -> GenerationResult:
        """Wait for the result; raises `JobCancelledError` or another `GenerationError`."""
        while not self.done():
            await self._wait_for_change()
        if self._result is not None:
            return self._result
        assert self._error is not None
        raise self._error

    async def events(self) -> AsyncIterator[JobEvent]:
        """All events from the first, in order; ends after the final one."""
        index = 0
        while True:
            while index < len(self._history):
                event = self._history[index]
                index += 1
                yield event
                if isinstance(event, FINAL_EVENTS):
                    return
            await self._wait_for_change()

    async def _wait_for_change(self) -> None:
        changed = self._changed
        await changed.wait()

    # -- publisher side (the service that runs the job) ------------------------------------

    def publish(self, event: JobEvent) -> None:
        """Record `event` and wake the listeners; the state follows the event."""
        if self.done():
            return
        if isinstance(event, JobStarted):
            self._state = JobState.RUNNING
        elif isinstance(event, JobFinished):
            self._state, self._result = JobState.FINISHED, event.result
        elif isinstance(event, JobFailed):
            self._state = JobState.FAILED
            self._error = self._error or GenerationError(event.error)
        elif isinstance(event, JobCancelled):
            self._state = JobState.CANCELLED
            self._error = JobCancelledError(f"Job {self.id} was {event.reason}.")
        self._history.append(event)
        # Swap in a fresh Event so waiters wake once and later waits block again.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def fail(self, error: GenerationError) -> None:
        """Publish `JobFailed` keeping the exception type for `result()` to raise."""
        if self.done():
            return
        self._error = error
        self.publish(JobFailed(str(error)))
