"""Which waiting job runs next, and which others may share its pipeline call.

Kept apart from the service so the scheduling rule can change (or be tested) without touching
threads or the event loop. The policy only sees queued jobs' `owner` and `request`; it never
blocks and is used from one thread (the event loop's).

`FairQueuePolicy` (the default) is round-robin across owners: each owner's jobs run in the order
they were submitted, and owners take turns, the one served least recently going first. One member
queueing many jobs therefore cannot make everyone else wait for all of them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from generation.errors import QueueFullError
from generation.request import GenerationRequest


class Queueable(Protocol):
    """What a policy needs to know about a job."""

    @property
    def owner(self) -> str: ...

    @property
    def request(self) -> GenerationRequest: ...


J = TypeVar("J", bound=Queueable)


class QueuePolicy(Protocol[J]):
    """The queue of waiting jobs. `push` may refuse with `QueueFullError`."""

    def push(self, job: J) -> None: ...

    def remove(self, job: J) -> bool: ...

    def next_batch(self) -> list[J]:
        """Take the next job and any compatible jobs to run in the same call ([] if empty)."""
        ...

    def order(self) -> list[J]:
        """Waiting jobs in the order they would start if nothing else arrived."""
        ...

    def pending_for(self, owner: str) -> int: ...

    def __len__(self) -> int: ...


def check_room(waiting: int, max_queue: int, owner_waiting: int, max_per_owner: int) -> None:
    """Raise `QueueFullError` (with the member's message) when the queue (`waiting` of
    `max_queue` jobs) or the owner's share (`owner_waiting` of `max_per_owner`) is full.
    Shared by every backend, so members read the same refusal whatever runs their jobs."""
    if waiting >= max_queue:
        raise QueueFullError(
            f"The queue is full ({max_queue} jobs waiting); try again in a few minutes."
        )
    if owner_waiting >= max_per_owner:
        noun = "job" if max_per_owner == 1 else "jobs"
        raise QueueFullError(
            f"You already have {owner_waiting} {noun} waiting (the limit is "
            f"{max_per_owner}); wait for one to start before adding more."
        )


#: How many owners' last turns are remembered.
_MEMORY = 10_000


@dataclass(frozen=True)
class _Entry:
    seq: int
    job: Queueable


class FairQueuePolicy:
    """Fair round-robin across owners, FIFO per owner, with limits and request batching.

    - `max_queue` waiting jobs in all, `max_queued_per_user` per owner (running jobs not counted).
    - `max_batch_images`: a batch is the next job plus later compatible jobs (same
      `request.batch_key`) while their images fit; a job is only taken into a batch if every
      earlier waiting job of its owner is taken too, so each owner's jobs still start in order.
      `max_batch_images=1` (or `batching=False`) runs one job per call.
    """

    def __init__(
        self,
        max_queue: int = 100,
        max_queued_per_user: int = 3,
        max_batch_images: int = 8,
        *,
        batching: bool = True,
    ) -> None:
        if max_queue < 1 or max_queued_per_user < 1 or max_batch_images < 1:
            raise ValueError("queue limits must be at least 1")
        self.max_queue = max_queue
        self.max_queued_per_user = max_queued_per_user
        self.max_batch_images = max_batch_images
        self.batching = batching
        self._queues: dict[str, deque[_Entry]] = {}
        # Owner -> tick of their last turn (oldest first; the oldest are forgotten past
        # _MEMORY owners, which only moves them to the front, like a newcomer).
        self._last_served: dict[str, int] = {}
        self._tick = 0
        self._seqs = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def pending_for(self, owner: str) -> int:
        queue = self._queues.get(owner)
        return len(queue) if queue else 0

    def push(self, job: Queueable) -> None:
        check_room(self._size, self.max_queue, self.pending_for(job.owner),
                   self.max_queued_per_user)
        queue = self._queues.setdefault(job.owner, deque())
        queue.append(_Entry(next(self._seqs), job))
        self._size += 1

    def remove(self, job: Queueable) -> bool:
        queue = self._queues.get(job.owner)
        if not queue:
            return False
        for entry in queue:
            if entry.job is job:
                queue.remove(entry)
                self._size -= 1
                if not queue:
                    del self._queues[job.owner]
                return True
        return False

    def order(self) -> list:
        """Simulate the rotation: owners take turns, least recently served first."""
        heap: list[tuple[int, int, str, int]] = [
            (self._last_served.get(owner, -1), queue[0].seq, owner, 0)
            for owner, queue in self._queues.items()
        ]
        heapq.heapify(heap)
        tick = itertools.count(self._tick)
        result = []
        while heap:
            _, _, owner, index = heapq.heappop(heap)
            queue = self._queues[owner]
            result.append(queue[index].job)
            if index + 1 < len(queue):
                heapq.heappush(heap, (next(tick), queue[index + 1].seq, owner, index + 1))
        return result

    def next_batch(self) -> list:
        order = self.order()
        if not order:
            return []
        first = order[0]
        batch = [first]
        images = first.request.params.count
        if self.batching:
            key: Hashable = first.request.batch_key
            skipped_owners: set[str] = set()
            for job in order[1:]:
                if images >= self.max_batch_images:
                    break
                if job.owner in skipped_owners:
                    continue
                fits = images + job.request.params.count <= self.max_batch_images
                if fits and job.request.batch_key == key:
                    batch.append(job)
                    images += job.request.params.count
                else:
                    skipped_owners.add(job.owner)  # keep this owner's jobs in order
        for job in batch:
            self._take(job)
        return batch

    def _take(self, job: Queueable) -> None:
        queue = self._queues[job.owner]
        entry = queue.popleft()
        assert entry.job is job, "batches take each owner's jobs in order"
        self._size -= 1
        if not queue:
            del self._queues[job.owner]
        self._last_served.pop(job.owner, None)
        self._last_served[job.owner] = self._tick
        self._tick += 1
        if len(self._last_served) > _MEMORY:
            oldest = next(iter(self._last_served))
            del self._last_served[oldest]
