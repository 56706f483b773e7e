"""Delivery helpers that need no Discord connection: the edit throttle and token ageing."""

from __future__ import annotations

import datetime as dt

from bot.presentation.delivery import OutgoingMessage, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_lets_one_action_through_per_interval() -> None:
    """Progress edits: none right after the message was sent, then one per 2 seconds."""
    clock = FakeClock()
    throttle = Throttle(2.0, clock)
    assert not throttle.ready()
    clock.now += 1.9
    assert not throttle.ready()
    clock.now += 0.1
    assert throttle.ready()
    assert not throttle.ready()
    clock.now += 5
    assert throttle.ready()


def test_allowed_mentions_only_the_requester() -> None:
    """Messages with member text may ping the requester and nobody else."""
    mentions = OutgoingMessage("@everyone hi", mention=42).allowed_mentions.to_dict()
    assert mentions["parse"] == []
    assert mentions["users"] == [42]
    assert mentions.get("roles", []) == []
    nobody = OutgoingMessage("@here", mention=None).allowed_mentions.to_dict()
    assert nobody["parse"] == [] and nobody.get("users", []) == []


def test_token_usable_until_a_minute_before_expiry() -> None:
    """The original response is edited only while its token has more than 60 s left."""
    from bot.presentation.delivery import Deliverer

    created = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    now = created

    class Stub:
        created_at = created

    deliverer = Deliverer(clock=lambda: now)
    stub = Stub()
    assert deliverer.token_usable(stub)  # type: ignore[arg-type]
    now = created + dt.timedelta(minutes=13, seconds=59)
    assert deliverer.token_usable(stub)  # type: ignore[arg-type]
    now = created + dt.timedelta(minutes=14)
    assert not deliverer.token_usable(stub)  # type: ignore[arg-type]
