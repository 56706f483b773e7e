"""The fake's clock and Discord snowflakes.

The fake keeps its own clock (real time plus an offset that only moves forward) so a test can make
interaction tokens old without waiting 15 minutes. discord.py reads times from snowflakes using the
*real* clock, so the two are kept apart on purpose: see README.md "Time".
"""

from __future__ import annotations

import datetime as dt
import itertools
import time

DISCORD_EPOCH_MS = 1420070400000


class Clock:
    """Real wall-clock time plus a forward-only offset controlled by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Fake-clock epoch seconds."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds


def iso(ts: float | None) -> str | None:
    """Epoch seconds as the ISO 8601 string Discord uses (``+00:00`` offset)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def snowflake_time(snowflake: int) -> float:
    """Epoch seconds encoded in a snowflake."""
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000.0


class Snowflakes:
    """Generates unique snowflakes; ``next()`` ids also increase strictly (for message ordering)."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._last = 0

    def at(self, ts: float) -> int:
        """A unique snowflake whose time is ``ts`` (epoch seconds); may be backdated."""
        ms = int(ts * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)

    def next(self, ts: float) -> int:
        """A unique snowflake for ``ts``, greater than every earlier ``next()`` result."""
        value = max(self.at(ts), self._last + 1)
        self._last = value
        return value

    def next_in_shard(self, ts: float, shard_id: int, shard_count: int) -> int:
        """Like ``next``, but a guild id on shard ``shard_id`` of ``shard_count`` (the shard is
        ``(id >> 22) % shard_count``, so a later millisecond is taken until it matches)."""
        value = self.next(ts)
        while (value >> 22) % shard_count != shard_id:
            value += 1 << 22
        self._last = value
        return value
