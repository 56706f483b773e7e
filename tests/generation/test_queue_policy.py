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


def test_returning_member_is_not_overtaken_by_newcomers() -> None:
    """The old fault: a member served before, told "position 1", was overtaken by every
    first-time member who came later. Now newcomers join at the back of the rotation."""
    policy = FairQueuePolicy(max_batch_images=1)
    policy.push(Item("a1", "g:A"))
    policy.push(Item("a2", "g:A"))
    assert names(policy.next_batch()) == ["a1"]
    for i in range(20):
        policy.push(Item(f"n{i}", f"g:N{i}"))
    assert names(policy.order())[0] == "a2"
    assert names(policy.next_batch()) == ["a2"]


def test_servers_take_turns_then_members() -> None:
    """A server with many active members gets one turn per round, like a server with one."""
    policy = FairQueuePolicy(max_batch_images=1)
    for member in "ABCD":
        policy.push(Item(f"x{member}", f"big:{member}"))
    policy.push(Item("s1", "small:Z"))
    policy.push(Item("s2", "small:Z"))
    assert names(policy.order()) == ["xA", "s1", "xB", "s2", "xC", "xD"]
    assert drain(policy) == [["xA"], ["s1"], ["xB"], ["s2"], ["xC"], ["xD"]]


def test_server_share_gives_consecutive_turns() -> None:
    """An admin-set share of 2 lets a server start two jobs per round."""
    policy = FairQueuePolicy(max_batch_images=1, server_shares={"big": 2})
    for member in "ABCD":
        policy.push(Item(f"x{member}", f"big:{member}"))
    policy.push(Item("s1", "small:Z"))
    policy.push(Item("s2", "small:Z"))
    assert names(policy.order()) == ["xA", "xB", "s1", "xC", "xD", "s2"]
    assert drain(policy) == [["xA"], ["xB"], ["s1"], ["xC"], ["xD"], ["s2"]]


def test_take_refuses_a_job_out_of_its_owners_order() -> None:
    """Taking a member's second job before the first would reorder their jobs."""
    policy = FairQueuePolicy()
    a1, a2 = Item("a1", "A"), Item("a2", "A")
    policy.push(a1)
    policy.push(a2)
    with pytest.raises(ValueError):
        policy.take(a2)


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


@dataclass(eq=False)
class TieredItem(Item):
    tier: str = "fast"


def test_fast_jobs_go_before_relax_jobs() -> None:
    """A relax job waits while any fast job waits, even one submitted later."""
    policy = FairQueuePolicy(max_batch_images=1)
    policy.push(TieredItem("r1", "g:A", tier="relax"))
    policy.push(TieredItem("f1", "g:B"))
    policy.push(TieredItem("r2", "g:C", tier="relax"))
    policy.push(TieredItem("f2", "h:D"))
    assert names(policy.order()) == ["f1", "f2", "r1", "r2"]
    assert drain(policy) == [["f1"], ["f2"], ["r1"], ["r2"]]


def test_the_per_member_limit_counts_both_tiers() -> None:
    policy = FairQueuePolicy(max_queued_per_user=2)
    policy.push(TieredItem("f1", "A"))
    policy.push(TieredItem("r1", "A", tier="relax"))
    with pytest.raises(QueueFullError, match="You already have 2 jobs waiting"):
        policy.push(TieredItem("r2", "A", tier="relax"))
    assert policy.pending_for("A") == 2


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tier"):
        FairQueuePolicy().push(TieredItem("x", "A", tier="turbo"))
