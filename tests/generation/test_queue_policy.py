"""The fair round-robin queue policy: order, limits and batching."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from generation.errors import QueueFullError
from generation.queue_policy import FairQueuePolicy
from generation.request import GenerationRequest
from tests.requests import make_request


@dataclass(eq=False)
class Item:
    name: str
    owner: str
    request: GenerationRequest = field(default_factory=lambda: make_request("x", count=1))


def names(items: list) -> list[str]:
    return [item.name for item in items]


def drain(policy: FairQueuePolicy) -> list[list[str]]:
    batches = []
    while batch := policy.next_batch():
        batches.append(names(batch))
    return batches


def test_owners_take_turns_and_each_owner_is_fifo() -> None:
    """One member's burst does not make the others wait for all of it."""
    policy = FairQueuePolicy(max_queued_per_user=5, max_batch_images=1)
    for item in [
        Item("a1", "A"),
        Item("a2", "A"),
        Item("a3", "A"),
        Item("b1", "B"),
        Item("c1", "C"),
        Item("b2", "B"),
    ]:
        policy.push(item)
    assert names(policy.order()) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert drain(policy) == [["a1"], ["b1"], ["c1"], ["a2"], ["b2"], ["a3"]]
    assert len(policy) == 0


def test_newcomer_goes_before_recently_served_owner() -> None:
    """Someone arriving after A was served starts before A's next job."""
    policy = FairQueuePolicy(max_batch_images=1)
    policy.push(Item("a1", "A"))
    policy.push(Item("a2", "A"))
    assert names(policy.next_batch()) == ["a1"]
    policy.push(Item("b1", "B"))
    assert names(policy.order()) == ["b1", "a2"]


def test_remove_takes_a_job_out() -> None:
    """A removed (cancelled) job is skipped and counted out."""
    policy = FairQueuePolicy()
    a1, a2 = Item("a1", "A"), Item("a2", "A")
    policy.push(a1)
    policy.push(a2)
    assert policy.remove(a1)
    assert not policy.remove(a1)
    assert names(policy.order()) == ["a2"]
    assert policy.pending_for("A") == 1 and len(policy) == 1


def test_queue_limits_have_clear_messages() -> None:
    """Whole-queue and per-member limits refuse with a message naming the limit."""
    policy = FairQueuePolicy(max_queue=3, max_queued_per_user=2)
    policy.push(Item("a1", "A"))
    policy.push(Item("a2", "A"))
    with pytest.raises(QueueFullError, match=r"You already have 2 jobs waiting .*limit is 2"):
        policy.push(Item("a3", "A"))
    policy.push(Item("b1", "B"))
    with pytest.raises(QueueFullError, match=r"The queue is full \(3 jobs waiting\)"):
        policy.push(Item("c1", "C"))
    assert policy.pending_for("A") == 2 and policy.pending_for("C") == 0


def test_compatible_jobs_share_a_batch_up_to_the_image_limit() -> None:
    """Jobs with the same batch key join the next job's call while their images fit."""
    four = make_request("x", count=4)
    policy = FairQueuePolicy(max_batch_images=8)
    for name, owner in [("a1", "A"), ("b1", "B"), ("c1", "C")]:
        policy.push(Item(name, owner, four))
    assert drain(policy) == [["a1", "b1"], ["c1"]]


def test_batching_keeps_each_owners_order() -> None:
    """A compatible job is not taken ahead of an earlier, incompatible job of its owner."""
    small = make_request("x", count=1)
    other = make_request("x", count=1, steps=50)
    policy = FairQueuePolicy(max_batch_images=8)
    policy.push(Item("a1", "A", small))
    policy.push(Item("b1", "B", other))
    policy.push(Item("b2", "B", small))
    policy.push(Item("c1", "C", small))
    assert drain(policy) == [["a1", "c1"], ["b1"], ["b2"]]


def test_batching_off_runs_one_job_per_call() -> None:
    """With batching disabled every batch is a single job."""
    policy = FairQueuePolicy(batching=False)
    policy.push(Item("a1", "A"))
    policy.push(Item("b1", "B"))
    assert drain(policy) == [["a1"], ["b1"]]
