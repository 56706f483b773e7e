"""Time for the services: injected, so tests can move across day and week boundaries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The default clock: now, aware, in UTC."""
    return datetime.now(UTC)
