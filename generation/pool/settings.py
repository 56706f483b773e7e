"""`PoolConfig`: how the bot and the workers of one pool find each other (plain values, so the
`generation` package does not depend on the bot's settings)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ResultsMode(enum.Enum):
    """Where a worker leaves a finished job's images for the bot process that owns it."""

    #: PNG files under `results_dir`, a folder every bot process and worker mounts (NFS, ...).
    FOLDER = "folder"
    #: PNG bytes in the `imagine_pool_results` table, written in the transaction that finishes
    #: the job; nothing to mount, costs database space until the bot has read them.
    DATABASE = "database"


@dataclass(frozen=True)
class PoolConfig:
    """Connection and timing of a worker pool.

    `dsn`: a libpq URL (`postgresql://user:pass@host/db`), the bot's database. `queue`: the
    procrastinate queue name, so several bots can share one database. Heartbeats every
    `heartbeat_seconds`; a worker silent for `stalled_after_seconds` is declared dead and its
    jobs go back to the queue (same seeds). A job re-queued more than `max_attempts` times
    fails and is refunded. `claim_limit` bounds how many waiting jobs one claim looks at.
    """

    dsn: str
    queue: str = "imagine"
    results: ResultsMode = ResultsMode.DATABASE
    results_dir: Path = Path("data/pool-results")
    heartbeat_seconds: float = 2.0
    stalled_after_seconds: float = 10.0
    poll_seconds: float = 1.0
    max_attempts: int = 3
    claim_limit: int = 500
    max_batch_images: int = 8
    max_queue: int = 1000
    max_queued_per_user: int = 3

    def __post_init__(self) -> None:
        if self.stalled_after_seconds <= self.heartbeat_seconds:
            raise ValueError("stalled_after_seconds must be longer than heartbeat_seconds")
