"""`PoolBackend`: the bot's side of the worker pool, a `GenerationBackend` like the local
`GenerationService`.

- `enlist` defers the job as a procrastinate task through the bot's own database connection,
  inside the transaction that reserves its quota and writes its history row
  (`generation.pool.enlist`), under `queueing_lock = job id` so a job id is never queued twice:
  the task exists exactly when the job is charged for. `submit`, called next in that
  transaction, validates and returns a `QueuedJob` and only starts following the task. A job
  submitted without `enlist` (a restarted bot re-queueing its stored jobs) re-attaches to its
  task, or is deferred in the background when it has none; a failed defer fails the job (the
  caller refunds it).
- Progress: workers NOTIFY on `imagine_pool_events`; one LISTEN connection per bot process
  turns them into `JobStarted` / `JobStep` events of the jobs this process owns.
- A poll every `poll_seconds` reads the state of this process's jobs (a missed notification,
  a worker that died), the queue depth, the live workers and queue positions, and re-queues the
  jobs of dead workers (so recovery needs no worker to be up).
- A job that reached `succeeded` is read back (PNGs from the database or the shared folder,
  decoded off the loop), published as `JobFinished` and its stored result deleted.
- `cancel` aborts through procrastinate (`cancel_job_by_id(abort=True)`): a waiting job ends
  cancelled at once, a running one at the worker's next step. A job whose cancel was asked
  always ends `JobCancelled`, even if its worker finished first, so it is refunded, not charged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool
from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import ProcrastinateException

from generation.errors import GenerationError, RequestError
from generation.events import (
    JobCancelled,
    JobFinished,
    JobQueued,
    JobStarted,
    JobState,
    JobStep,
    QueueStats,
    WorkerInfo,
)
from generation.job import QueuedJob
from generation.params import Limits
from generation.pool import queries
from generation.pool.enlist import IDENTITY_SQL, TransactionDeferrer, database_identity
from generation.pool.janitor import requeue_stalled
from generation.pool.schema import ensure_schema
from generation.pool.settings import PoolConfig
from generation.pool.wire import (
    EVENTS_CHANNEL,
    TASK_NAME,
    ResultMeta,
    parse_payload,
    png_image,
    task_args,
)
from generation.queue_policy import DEFAULT_TIER, TIERS, check_room
from generation.request import GenerationRequest, Operation
from generation.service import ServiceClosedError
from generation.tiny import TINY_MODEL_ID, TINY_MODEL_NOTE

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["PoolBackend", "PoolStatus", "WorkerInfo"]

log = logging.getLogger(__name__)

#: What a waiting member is told while no worker is connected.
NO_WORKER_NOTE = (
    "No GPU worker is running right now: your job keeps its place and starts when one "
    "comes back."
)

#: Why a job cannot be enlisted when the pool's database is not the bot's.
OTHER_DATABASE = (
    "The worker pool's database (pool.dsn) is not the bot's database (database.url): a job "
    "must be queued in the same transaction as its quota reservation, so the pool has to "
    "live in the bot's PostgreSQL database. Leave pool.dsn unset, or point both at one "
    "database."
)


@dataclass(frozen=True)
class PoolStatus:
    """The whole pool as last polled: jobs waiting and running (all bot processes) and the
    workers that sent a heartbeat recently."""

    waiting: int = 0
    running: int = 0
    workers: tuple[WorkerInfo, ...] = ()
    polled: bool = False


class _Tracked:
    """What this process knows about one of its jobs beyond the `QueuedJob` itself."""

    def __init__(self, job: QueuedJob) -> None:
        self.job = job
        self.pid: int | None = None
        self.deferred = asyncio.get_running_loop().create_future()
        self.settling = False


class PoolBackend:
    """Jobs go to the workers of the pool described by `config`; see the module docstring.

    `model_id` is what the workers run (the bot records it with each job). Start with
    `start()` (connects, creates the schema if needed), stop with `close()`.
    """

    def __init__(
        self,
        config: PoolConfig,
        model_id: str,
        *,
        limits: Limits | None = None,
    ) -> None:
        self._config = config
        self._model_id = model_id
        self._limits = limits or Limits()
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._app: App | None = None
        self._deferrer: TransactionDeferrer | None = None
        #: (database, server start) the pool reaches; the bot's connections must match it.
        self._database: tuple[str, str] | None = None
        #: Jobs `enlist` deferred whose `submit` has not come yet: bot job id -> task id.
        self._enlisted: dict[str, int] = {}
        self._live: dict[str, _Tracked] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        # Defers one at a time, in submission order: the fair order breaks ties between
        # newcomers by procrastinate's job id, so ids must follow the order members asked in.
        self._defer_lock = asyncio.Lock()
        self._status = PoolStatus()
        #: This process's jobs that the last poll counted as waiting.
        self._counted: set[str] = set()
        self._accepting = True
        self._closed = False
        self._poke = asyncio.Event()

    # -- information -----------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def model_note(self) -> str | None:
        return TINY_MODEL_NOTE if self._model_id == TINY_MODEL_ID else None

    @property
    def limits(self) -> Limits:
        return self._limits

    def supports(self, operation: Operation) -> bool:
        """Only `Operation.GENERATE` (txt2img and img2img): the pool's wire format carries
        no mask, upscale or captioning work, so those tools (and /describe) are not offered
        with a pool."""
        return operation is Operation.GENERATE

    @property
    def status(self) -> PoolStatus:
        """The pool as of the last poll (every `poll_seconds`)."""
        return self._status

    @property
    def waiting_for_gpu(self) -> bool:
        """True when no worker has sent a heartbeat recently: jobs wait until one starts."""
        return self._status.polled and not self._status.workers

    @property
    def queue_note(self) -> str | None:
        """The `JobQueued.note` waiting jobs get now (None while workers are up)."""
        return NO_WORKER_NOTE if self.waiting_for_gpu else None

    def workers(self) -> tuple[WorkerInfo, ...]:
        """The workers that sent a heartbeat recently, as of the last poll."""
        return self._status.workers

    def queue_length(self) -> int:
        """Jobs waiting in the whole pool: the last poll's count, corrected by what this
        process knows since (its jobs that started or ended, its jobs not yet seen)."""
        queued = {
            job_id for job_id, t in self._live.items() if t.job.state is JobState.QUEUED
        }
        gone = len(self._counted - queued)
        new = len(queued - self._counted)
        return max(0, self._status.waiting - gone + new)

    def queue_stats(self) -> QueueStats:
        """Jobs waiting and running in the whole pool (as of the last poll); images are
        counted for this process's jobs only (other processes' rows are not read)."""
        mine = [t.job for t in self._live.values()]
        return QueueStats(
            waiting=self.queue_length(),
            running=max(self._status.running, len(self.running())),
            waiting_images=sum(
                j.request.params.count for j in mine if j.state is JobState.QUEUED
            ),
            running_images=sum(
                j.request.params.count for j in mine if j.state is JobState.RUNNING
            ),
        )

    def pending_for(self, owner: str) -> int:
        return sum(
            1
            for t in self._live.values()
            if t.job.owner == owner and t.job.state is JobState.QUEUED
        )

    def running(self) -> list[QueuedJob]:
        """This process's jobs that a worker is running."""
        return [t.job for t in self._live.values() if t.job.state is JobState.RUNNING]

    def job(self, job_id: str) -> QueuedJob | None:
        tracked = self._live.get(job_id)
        return tracked.job if tracked else None

    def estimate_wait(self, position: int) -> float:
        """Rough seconds until the job at `position` starts: jobs ahead spread over workers,
        at the service's default speed assumption (4 images x 27 steps x 0.1 s per job)."""
        workers = max(1, len(self._status.workers))
        return max(0, position - 1) / workers * 4 * 27 * 0.1

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema if absent, start listening and polling.

        Raises `GenerationError` when the database cannot be reached.
        """
        if self._pool is not None:
            return
        if self._closed:
            raise ServiceClosedError("The image generator has been shut down.")
        try:
            pool = psycopg_pool.AsyncConnectionPool(
                self._config.dsn, min_size=1, max_size=8, open=False,
                kwargs={"autocommit": True},
            )
            await pool.open(wait=True, timeout=10)
            async with pool.connection() as conn:
                await ensure_schema(conn)
                row = await (await conn.execute(IDENTITY_SQL)).fetchone()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise GenerationError(f"cannot reach the worker pool's database: {exc}") from exc
        self._pool = pool
        self._database = (str(row[0]), str(row[1])) if row else None
        self._app = App(connector=PsycopgConnector())
        await self._app.open_async(pool)
        self._deferrer = TransactionDeferrer(self._app, TASK_NAME, self._config.queue)
        listening = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._listen(listening), name="pool-listen"),
            asyncio.create_task(self._poll_forever(), name="pool-poll"),
        ]
        await asyncio.wait_for(listening.wait(), 10)
        await self._poll()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs, cancel this process's waiting ones, let its running ones finish
        on their workers (within `grace` seconds, default 60, then abort them); stays
        connected, so their results are still read, until `close`. Safe to call twice."""
        if not self._accepting:
            return
        self._accepting = False
        for tracked in list(self._live.values()):
            if tracked.job.state is JobState.QUEUED:
                # Ended here at once (as the in-process queue does); the abort reaches the
                # database in the background and the poll still deletes what it left.
                tracked.job.cancel()
                tracked.job.publish(JobCancelled("cancelled because the bot is shutting down"))
        await self._wait_until_settled(60.0 if grace is None else grace)
        for tracked in list(self._live.values()):
            tracked.job.cancel()
        await self._wait_until_settled(5.0)
        for tracked in list(self._live.values()):
            tracked.job.publish(JobCancelled("cancelled because the bot is shutting down"))
        self._live.clear()

    async def close(self, grace: float | None = None) -> None:
        """`stop` (with `grace`), then disconnect. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.stop(grace)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._app is not None:
            await self._app.close_async()
        if self._pool is not None:
            await self._pool.close()

    async def _wait_until_settled(self, seconds: float) -> None:
        """Let the poll settle this process's jobs for up to `seconds`."""
        if not self._live or self._pool is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._live:
                    self._poke.set()
                    await asyncio.sleep(0.05)

    # -- jobs ------------------------------------------------------------------------------

    async def enlist(
        self,
        connection: AsyncConnection,
        request: GenerationRequest,
        owner: str,
        job_id: str,
        tier: str = DEFAULT_TIER,
    ) -> None:
        """Defer the job's procrastinate task through `connection`, inside the caller's open
        transaction (see `GenerationBackend.enlist`); `submit` must follow before the commit.

        Raises `GenerationError` when the bot's database is not the pool's, or the task
        cannot be deferred (the caller rolls back: nothing is queued or charged).
        """
        if self._deferrer is None or not self._accepting:
            raise ServiceClosedError(
                "The image generator is shutting down and takes no new requests."
            )
        if await database_identity(connection) != self._database:
            raise GenerationError(OTHER_DATABASE)
        if tier not in TIERS:
            raise RequestError(f"Unknown tier {tier!r}; choose one of: {', '.join(TIERS)}.")
        args = task_args(job_id, owner, request.validated(self._limits), tier)
        try:
            pid = await self._deferrer.defer(connection, job_id, args)
        except ProcrastinateException as exc:
            log.exception("deferring job %s failed", job_id)
            raise GenerationError(f"The job could not be queued: {type(exc).__name__}") from exc
        self._enlisted[job_id] = pid

    def submit(
        self,
        request: GenerationRequest,
        owner: str = "",
        job_id: str | None = None,
        tier: str = DEFAULT_TIER,
    ) -> QueuedJob:
        """Validate and queue in `tier` (relax jobs are claimed after every waiting fast
        job, see `queries.CLAIM_ORDER`); raises `RequestError` or `QueueFullError`.

        After `enlist` (same job id) this only starts following the task enlist deferred;
        otherwise the task is found again by job id (a restart) or deferred in the
        background. The first event is `JobQueued` with the position known now (the pool's
        waiting jobs plus one); later positions follow the fair order as polled.
        """
        enlisted = self._enlisted.pop(job_id, None) if job_id is not None else None
        if job_id is not None and job_id in self._live:
            raise RequestError(f"job id {job_id} is already in use")
        if not self._accepting or self._pool is None:
            raise ServiceClosedError(
                "The image generator is shutting down and takes no new requests."
            )
        if tier not in TIERS:
            raise RequestError(f"Unknown tier {tier!r}; choose one of: {', '.join(TIERS)}.")
        config = self._config
        check_room(
            self.queue_length(), config.max_queue, self.pending_for(owner),
            config.max_queued_per_user,
        )
        job = QueuedJob(request.validated(self._limits), owner, self._cancel, job_id, tier)
        tracked = _Tracked(job)
        self._live[job.id] = tracked
        position = self.queue_length()
        job.publish(JobQueued(position, self.estimate_wait(position), self.queue_note))
        if enlisted is not None:
            tracked.pid = enlisted
            tracked.deferred.set_result(enlisted)
        else:
            self._spawn(self._defer(tracked))
        return job

    async def _defer(self, tracked: _Tracked) -> None:
        """For a job submitted without `enlist`: re-attach to its task when its id is already
        in the pool (a bot that restarted submits its unfinished jobs again: they keep their
        place, and a result made while the bot was away is delivered, not made twice), or
        defer it (a stored job that never had a task, e.g. queued under the local backend)."""
        job = tracked.job
        assert self._app is not None and self._pool is not None
        try:
            async with self._defer_lock:
                async with self._pool.connection() as conn:
                    row = await (
                        await conn.execute(
                            queries.FIND_JOB,
                            {"job_id": job.id, "queue": self._config.queue, "task": TASK_NAME},
                        )
                    ).fetchone()
                if row is not None:
                    tracked.pid = int(row[0])
                    log.info("job %s re-attached to pool job %d", job.id, tracked.pid)
                else:
                    deferrer = self._app.configure_task(
                        TASK_NAME, queue=self._config.queue, queueing_lock=job.id
                    )
                    tracked.pid = await deferrer.defer_async(
                        **task_args(job.id, job.owner, job.request, job.tier)
                    )
            tracked.deferred.set_result(tracked.pid)
        except Exception as exc:
            log.exception("deferring job %s failed", job.id)
            tracked.deferred.set_result(None)
            self._live.pop(job.id, None)
            job.fail(GenerationError(f"The job could not be queued: {type(exc).__name__}"))

    def _cancel(self, job: QueuedJob) -> bool:
        tracked = self._live.get(job.id)
        if tracked is None or job.done():
            return False
        job.cancel_requested = True
        self._spawn(self._abort(tracked))
        return True

    async def _abort(self, tracked: _Tracked) -> None:
        pid = await tracked.deferred
        if pid is None or self._app is None:
            return
        try:
            if not await self._app.job_manager.cancel_job_by_id_async(pid, abort=True):
                await self._drop_if_absent(tracked, pid)
        except Exception:
            log.exception("aborting job %s failed", tracked.job.id)
        self._poke.set()

    async def _drop_if_absent(self, tracked: _Tracked, pid: int) -> None:
        """End a cancelled job whose task is not in the database: the transaction that
        enlisted it rolled back (the caller cancels the handle after the rollback), so no
        poll would ever see it end."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute("SELECT 1 FROM procrastinate_jobs WHERE id = %s", (pid,))
            ).fetchone()
        if row is None and self._live.get(tracked.job.id) is tracked and not tracked.settling:
            tracked.settling = True
            self._live.pop(tracked.job.id, None)
            tracked.job.publish(JobCancelled())

    # -- following jobs --------------------------------------------------------------------

    async def _listen(self, listening: asyncio.Event) -> None:
        """LISTEN for progress; reconnects after a lost connection (the poll covers gaps)."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._config.dsn, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    listening.set()
                    async for notify in conn.notifies():
                        self._on_notify(notify.payload)
            except psycopg.Error:
                log.warning("lost the pool's event connection; reconnecting", exc_info=True)
                await asyncio.sleep(self._config.poll_seconds)

    def _on_notify(self, payload: str) -> None:
        data = parse_payload(payload)
        if data is None:
            return
        kind = data.get("kind")
        for job_id in data["jobs"]:
            tracked = self._live.get(job_id)
            if tracked is None or tracked.job.done():
                continue
            job = tracked.job
            if kind == "started" and job.state is JobState.QUEUED:
                job.publish(JobStarted(batch_images=int(data.get("batch", 0))))
            elif kind == "step" and not job.cancel_requested:
                if job.state is JobState.QUEUED:
                    job.publish(JobStarted())
                job.publish(JobStep(int(data["step"]), int(data["total"])))
            elif kind == "final":
                self._poke.set()

    async def _poll_forever(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that races with the event, and close() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.poll_seconds):
                    await self._poke.wait()
            self._poke.clear()
            try:
                await self._poll()
            except (psycopg.Error, psycopg_pool.PoolTimeout):
                log.warning("polling the worker pool failed", exc_info=True)
            except Exception:
                log.exception("polling the worker pool failed")

    async def _poll(self) -> None:
        """Re-queue dead workers' jobs, then read the queue, the workers and this process's
        jobs in one snapshot (REPEATABLE READ), so the counts and job states agree."""
        assert self._pool is not None
        config = self._config
        live = dict(self._live)
        async with self._pool.connection() as conn:
            await requeue_stalled(conn, config)
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                counts = await (
                    await conn.execute(queries.COUNTS, {"queue": config.queue})
                ).fetchone()
                workers = await (
                    await conn.execute(
                        queries.WORKERS,
                        {"queue": config.queue, "seconds": config.stalled_after_seconds},
                    )
                ).fetchall()
                states = await (
                    await conn.execute(
                        queries.JOB_STATES, {"job_ids": list(live), "queue": config.queue}
                    )
                ).fetchall()
                waiting = [live[job_id] for job_id, status, _ in states if status == "todo"]
                order = (
                    await (await conn.execute(queries.CLAIM_ORDER, self._order_params())).fetchall()
                    if waiting
                    else []
                )
        self._status = PoolStatus(
            waiting=int(counts[0]) if counts else 0,
            running=int(counts[1]) if counts else 0,
            workers=tuple(
                WorkerInfo(
                    worker_id=row[0], host=row[1], device=row[3], gpu=row[4],
                    model_id=row[5], silent_seconds=float(row[6]), running=int(row[7]),
                )
                for row in workers
            ),
            polled=True,
        )
        self._counted = {t.job.id for t in waiting}
        self._publish_positions(order, waiting)
        for job_id, status, meta in states:
            tracked = live[job_id]
            if status == "doing" and tracked.job.state is JobState.QUEUED:
                tracked.job.publish(JobStarted())
            elif status in ("succeeded", "failed", "cancelled", "aborted"):
                if not tracked.settling:
                    tracked.settling = True
                    self._spawn(self._settle(tracked, status, meta))

    def _order_params(self) -> dict[str, Any]:
        return {"queue": self._config.queue, "task": TASK_NAME, "limit": self._config.claim_limit}

    def _publish_positions(self, order: list[Any], waiting: list[_Tracked]) -> None:
        """`JobQueued` for this process's waiting jobs whose place in the fair order (or
        whose note) changed."""
        position_of = {pid: index for index, (pid, _) in enumerate(order, start=1)}
        note = self.queue_note
        for tracked in waiting:
            position = position_of.get(tracked.pid)
            job = tracked.job
            if position is None or job.state is not JobState.QUEUED:
                continue
            if job.position != position or job.queue_note != note:
                job.publish(JobQueued(position, self.estimate_wait(position), note))

    async def _settle(self, tracked: _Tracked, status: str, meta: Any) -> None:
        """Publish the final event of a job that ended in the database, exactly once."""
        job = tracked.job
        try:
            if job.cancel_requested or status in ("cancelled", "aborted"):
                job.publish(JobCancelled())
            elif status == "failed":
                error = (meta or {}).get("error") or "The GPU worker failed this job."
                job.fail(GenerationError(error))
            else:
                job.publish(JobFinished(await self._read_result(job)))
        except Exception as exc:
            log.exception("reading the result of job %s failed", job.id)
            job.fail(GenerationError(f"The result could not be read: {type(exc).__name__}"))
        finally:
            self._live.pop(job.id, None)
            await self._forget(job.id)

    async def _read_result(self, job: QueuedJob):  # -> GenerationResult
        assert self._pool is not None
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(queries.READ_RESULT, {"job_id": job.id})
            ).fetchone()
        if row is None:
            raise GenerationError("The worker finished the job but left no result.")
        meta, blobs = row
        if isinstance(meta, str):
            meta = json.loads(meta)
        folder = meta.pop("folder", None)
        if folder is not None:
            path = self._config.results_dir / folder
            blobs = await asyncio.to_thread(
                lambda: [p.read_bytes() for p in sorted(path.glob("*.png"), key=_index)]
            )
        images = await asyncio.to_thread(lambda: [png_image(data) for data in blobs or []])
        result = ResultMeta(**meta).result(images, job.request)
        if len(images) != len(result.seeds):
            raise GenerationError("The worker's result is incomplete.")
        return result

    async def _forget(self, job_id: str) -> None:
        """Delete a delivered job's stored result (and its folder)."""
        if self._pool is None:
            return
        try:
            async with self._pool.connection() as conn:
                row = await (
                    await conn.execute(
                        "DELETE FROM imagine_pool_results WHERE job_id = %(job_id)s "
                        "RETURNING meta->>'folder'",
                        {"job_id": job_id},
                    )
                ).fetchone()
            if row and row[0]:
                await asyncio.to_thread(shutil.rmtree, self._config.results_dir / row[0], True)
        except psycopg.Error:
            log.warning("could not delete the stored result of job %s", job_id, exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _index(path: Any) -> int:
    return int(path.stem)
