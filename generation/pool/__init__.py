"""A pool of GPU worker processes behind PostgreSQL, as a second `GenerationBackend`.

- `PoolBackend` (bot side): defers each job as a procrastinate task row in the bot's own
  transaction (`enlist`, through `generation.pool.enlist`), follows it through PostgreSQL
  LISTEN/NOTIFY (with a status poll as a safety net), and reads its images back.
- `PoolWorker` (`imagine worker`, one per GPU): registers with procrastinate's worker table,
  sends heartbeats, claims fair batches of compatible jobs with one query, runs them through
  the same `Engine` as the in-process service, and re-queues the jobs of dead workers.

Nothing here imports the bot or Discord; the schema (procrastinate's plus two small tables) is
created by `generation.pool.schema.ensure_schema` (also run by migration 0006).
"""

from generation.pool.backend import PoolBackend, PoolStatus, WorkerInfo
from generation.pool.settings import PoolConfig, ResultsMode
from generation.pool.worker import PoolWorker

__all__ = ["PoolBackend", "PoolConfig", "PoolStatus", "PoolWorker", "ResultsMode", "WorkerInfo"]
