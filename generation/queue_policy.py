"""Which waiting job runs next, and which others may share its batch.

Kept apart from the service so the scheduling rule can change (or be tested) without touching
threads or the event loop. The policy only sees queued jobs' `owner` and `request`; it never
blocks and is used from one thread (the event loop's).

`FairQueuePolicy` (the default) is hierarchical round robin, as deficit-round-robin packet
schedulers do it:

1. servers take turns (a server may be given a `share` of several consecutive jobs per turn,
   for bots that serve several communities);
2. within a server, its members take turns;
3. each member's jobs run in the order they were submitted.

A server or member that becomes active joins at the *back* of the current rotation, and a member
who queues another job gets it after their earlier ones. So a newcomer never overtakes anyone's
next job in its own server (there are no "never served first" ranks that a stream of first-time
members could use to starve a returning one); in the hierarchy, a member's next job can only
move back when another server gets its fair turn, which happens at most once per server per
round. Tests check these properties over random arrival sequences.

The owner string is ``"server:member"`` (the bot's format, see `bot.core.jobs.Requester`); an
owner without a colon is its own server.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping
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

    def take(self, job: J) -> None:
        """Take `job` (the first of `order()`, or a later job of an owner with no earlier one)."""
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


def server_of(owner: str) -> str:
    """The server part of a ``"server:member"`` owner (the whole owner when it has no colon)."""
    return owner.split(":", 1)[0]


@dataclass(frozen=True)
class _Entry:
    seq: int
    job: Queueable


#: Priority tiers, first served first: `fast` jobs (counted against a GPU-time quota by the
#: caller) start before any `relax` job; `relax` jobs run when no fast job is waiting (with
#: step-level batching: when the running batch has room). Like Midjourney's fast/relax modes.
TIERS: tuple[str, ...] = ("fast", "relax")
DEFAULT_TIER = "fast"


def tier_of(job: Queueable) -> str:
    """The job's tier (`tier` attribute; jobs without one are `fast`)."""
    tier = getattr(job, "tier", DEFAULT_TIER)
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; the tiers are {', '.join(TIERS)}")
    return tier


class _Rotation:
    """One tier's hierarchical round robin: servers, then members, then FIFO per member."""

    def __init__(self, share: Callable[[str], int], server_key: Callable[[str], str]) -> None:
        self._share = share
        self._server_key = server_key
        self.members: dict[str, deque[_Entry]] = {}
        # Server rotation (front = whose turn it is) -> that server's member rotation.
        self._servers: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._front_used = 0  # jobs the front server has started in its current turn

    def push(self, entry: _Entry) -> None:
        owner = entry.job.owner
        queue = self.members.get(owner)
        if queue is None:
            queue = self.members[owner] = deque()
            # A newly active member (and server) joins at the back of the rotation.
            server = self._server_key(owner)
            self._servers.setdefault(server, OrderedDict())[owner] = None
        queue.append(entry)

    def remove(self, job: Queueable) -> bool:
        queue = self.members.get(job.owner)
        if not queue:
            return False
        for entry in queue:
            if entry.job is job:
                queue.remove(entry)
                if not queue:
                    self._drop_member(job.owner)
                return True
        return False

    def order(self) -> list[Queueable]:
        """Simulate the rotation from now on, as if nothing else arrived."""
        servers = deque(self._servers)
        members = {server: deque(rot) for server, rot in self._servers.items()}
        taken = dict.fromkeys(self.members, 0)
        used = self._front_used
        result = []
        while servers:
            server = servers[0]
            rotation = members[server]
            owner = rotation.popleft()
            queue = self.members[owner]
            result.append(queue[taken[owner]].job)
            taken[owner] += 1
            if taken[owner] < len(queue):
                rotation.append(owner)
            used += 1
            if not rotation:
                servers.popleft()
                used = 0
            elif used >= self._share(server):
                servers.rotate(-1)
                used = 0
        return result

    def take(self, job: Queueable) -> None:
        queue = self.members.get(job.owner)
        if not queue or queue[0].job is not job:
            raise ValueError("a job is taken only when every earlier job of its owner is")
        queue.popleft()
        server = self._server_key(job.owner)
        rotation = self._servers[server]
        del rotation[job.owner]
        if queue:
            rotation[job.owner] = None
        else:
            del self.members[job.owner]
        front = next(iter(self._servers))
        if server == front:
            self._front_used += 1
            if not rotation:
                del self._servers[server]
                self._front_used = 0
            elif self._front_used >= self._share(server):
                self._servers.move_to_end(server)
                self._front_used = 0
        elif not rotation:
            del self._servers[server]
        else:
            self._servers.move_to_end(server)

    def _drop_member(self, owner: str) -> None:
        del self.members[owner]
        server = self._server_key(owner)
        rotation = self._servers[server]
        del rotation[owner]
        if not rotation:
            was_front = next(iter(self._servers)) == server
            del self._servers[server]
            if was_front:
                self._front_used = 0


class FairQueuePolicy:
    """Tiers, then hierarchical round robin (servers, members, FIFO), with limits and batching.

    - `max_queue` waiting jobs in all, `max_queued_per_user` per owner (running jobs not counted).
    - `server_shares`: jobs a server may start per turn (default 1 each; an admin-set share
      lets a big community get more turns than a small one without starving it).
    - A job's `tier` (`TIERS`, default `fast`): every waiting fast job comes before every relax
      job; within a tier the round robin above.
    - `max_batch_images`: `next_batch` returns the next job plus later compatible jobs (same
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
        server_shares: Mapping[str, int] | None = None,
        server_key: Callable[[str], str] = server_of,
    ) -> None:
        if max_queue < 1 or max_queued_per_user < 1 or max_batch_images < 1:
            raise ValueError("queue limits must be at least 1")
        shares = dict(server_shares or {})
        if any(share < 1 for share in shares.values()):
            raise ValueError("server shares must be at least 1")
        self.max_queue = max_queue
        self.max_queued_per_user = max_queued_per_user
        self.max_batch_images = max_batch_images
        self.batching = batching
        self._shares = shares
        self._tiers = {tier: _Rotation(self.share, server_key) for tier in TIERS}
        self._seq = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def share(self, server: str) -> int:
        return self._shares.get(server, 1)

    def pending_for(self, owner: str) -> int:
        return sum(len(r.members.get(owner, ())) for r in self._tiers.values())

    def push(self, job: Queueable) -> None:
        rotation = self._tiers[tier_of(job)]
        check_room(self._size, self.max_queue, self.pending_for(job.owner),
                   self.max_queued_per_user)
        rotation.push(_Entry(self._seq, job))
        self._seq += 1
        self._size += 1

    def remove(self, job: Queueable) -> bool:
        removed = self._tiers[tier_of(job)].remove(job)
        if removed:
            self._size -= 1
        return removed

    def order(self) -> list:
        """Fast jobs, then relax jobs, each tier in its round-robin order."""
        return [job for tier in TIERS for job in self._tiers[tier].order()]

    def take(self, job: Queueable) -> None:
        """Take `job` out of the queue as started; it must be the first waiting job of its owner
        in its tier.

        The owner goes to the back of its server's rotation; the server ends its turn when it
        has used its share (or, when it was not its turn, because it was just served).
        """
        self._tiers[tier_of(job)].take(job)
        self._size -= 1

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
            self.take(job)
        return batch
