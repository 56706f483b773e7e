"""`PoolWorker`: one GPU worker process of the pool (`imagine worker --device cuda:N`).

Loop: claim a fair batch of compatible jobs (`queries.CLAIM_ORDER`), run it as one pipeline call
on the engine's thread, publish progress with NOTIFY, and finish each job in one transaction
with its result (and, in `database` results mode, its PNGs). Beside it, a heartbeat task keeps
the worker's procrastinate row fresh and re-queues the jobs of dead workers, and a listener
wakes the loop when procrastinate announces a new job.

Aborts: the bot asks with procrastinate's `cancel_job(abort=True)`; the worker polls the
`abort_requested` flags of its batch while it runs, stops the pipeline call when every job of
the batch is aborted, and finishes an aborted job as `aborted` without a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from generation.errors import GenerationError, JobCancelledError, OutOfMemoryError
from generation.events import GenerationResult
from generation.interfaces import Engine
from generation.params import Limits
from generation.pool import queries
from generation.pool.janitor import requeue_stalled
from generation.pool.schema import ensure_schema
from generation.pool.settings import PoolConfig, ResultsMode
from generation.pool.wire import (
    EVENTS_CHANNEL,
    TASK_NAME,
    ResultMeta,
    png_bytes,
    progress_payload,
    request_from_args,
)
from generation.request import GenerationRequest

log = logging.getLogger(__name__)

#: How often the abort flags of a running batch are read.
_ABORT_POLL_SECONDS = 0.25


@dataclass
class _Claimed:
    pid: int
    job_id: str
    owner: str
    request: GenerationRequest
    aborted: bool = field(default=False)


class PoolWorker:
    """Serves the pool's queue with one engine until `stop()` (or SIGTERM in `imagine worker`).

    `device` and `gpu` are only described to the bot's `/info`; the engine is already built for
    its device. `limits` re-validate every request (a row is data from another process).
    """

    def __init__(
        self,
        engine: Engine,
        config: PoolConfig,
        *,
        device: str = "cpu",
        gpu: str = "",
        limits: Limits | None = None,
        warmup: bool = False,
    ) -> None:
        self._engine = engine
        self._config = config
        self._device = device
        self._gpu_name = gpu or device
        self._limits = limits or Limits()
        self._warmup = warmup
        self._gpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagine-pool-gpu")
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._worker_id: int | None = None
        self._notifications: set[asyncio.Task[None]] = set()
        self.batches = 0

    @property
    def worker_id(self) -> int | None:
        return self._worker_id

    def stop(self) -> None:
        """Finish the running batch, then leave (safe from a signal handler on the loop)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Load the model, register, and serve until `stop()`; unregisters on the way out."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._gpu, self._engine.load)
        if self._warmup:
            await loop.run_in_executor(self._gpu, self._engine.warmup, 512, 512)
            # The fast path's batch buckets, compiled now rather than under the first jobs.
            warm = getattr(self._engine, "warm_buckets", None)
            if warm is not None:
                await loop.run_in_executor(self._gpu, warm, 512, 512)
        dsn = self._config.dsn
        async with (
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as beat_conn,
            await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listen_conn,
        ):
            await self.register(conn)
            tasks = [
                asyncio.create_task(self._heartbeat(beat_conn), name="pool-heartbeat"),
                asyncio.create_task(self._listen(listen_conn), name="pool-listen"),
            ]
            try:
                await self._serve(conn)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                        await task
                with contextlib.suppress(psycopg.Error):
                    await conn.execute(queries.UNREGISTER_WORKER, {"worker": self._worker_id})
        await loop.run_in_executor(self._gpu, self._engine.close)
        self._gpu.shutdown(wait=False)

    async def register(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """Create the schema if needed, register with procrastinate and describe this worker."""
        await ensure_schema(conn)
        row = await (await conn.execute(queries.REGISTER_WORKER)).fetchone()
        assert row is not None
        self._worker_id = int(row[0])
        await conn.execute(
            queries.DESCRIBE_WORKER,
            {
                "worker": self._worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "device": self._device,
                "gpu": self._gpu_name,
                "model": self._engine.model_id,
                "queue": self._config.queue,
            },
        )
        log.info(
            "worker %d serving queue %r on %s (%s)",
            self._worker_id, self._config.queue, self._device, self._engine.model_id,
        )
        return self._worker_id

    # -- background tasks --------------------------------------------------------------------

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            await conn.execute(queries.HEARTBEAT, {"worker": self._worker_id})
            try:
                if await requeue_stalled(conn, self._config):
                    self._wake.set()
            except psycopg.Error:
                log.exception("re-queueing stalled jobs failed")
            await asyncio.sleep(self._config.heartbeat_seconds)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        channel = f"procrastinate_queue_v1#{self._config.queue}"
        await conn.execute(f'LISTEN "{channel}"')
        async for _ in conn.notifies():
            self._wake.set()

    # -- the claim loop ------------------------------------------------------------------------

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            batch = await self.claim(conn)
            if batch:
                await self._run_batch(conn, batch)
                continue
            with contextlib.suppress(TimeoutError):  # not wait_for: see PoolBackend
                async with asyncio.timeout(self._config.poll_seconds):
                    await self._wake.wait()

    async def claim(self, conn: psycopg.AsyncConnection[Any]) -> list[_Claimed]:
        """Take the next fair batch of compatible jobs (marked `doing` for this worker; [] when
        nothing waits). Unreadable rows are failed on the way, with the reason."""
        config = self._config
        params = {"queue": config.queue, "task": TASK_NAME, "limit": config.claim_limit}
        async with conn.transaction():
            await conn.execute(queries.CLAIM_LOCK, params)
            rows = await (await conn.execute(queries.CLAIM_ORDER, params)).fetchall()
            chosen, broken = self._choose(rows)
            for pid, job_id, message in broken:
                await self._save(conn, pid, job_id, "failed", {"error": message}, None)
                await conn.execute(
                    "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %(w)s "
                    "WHERE id = %(id)s", {"w": self._worker_id, "id": pid},
                )
                await conn.execute(queries.FINISH_JOB, {"id": pid, "status": "failed"})
            if not chosen:
                return []
            await conn.execute(
                queries.MARK_DOING,
                {"ids": [job.pid for job in chosen], "worker": self._worker_id},
            )
            keys = sorted(
                {f"o:{job.owner}" for job in chosen}
                | {f"g:{job.owner.split(':', 1)[0]}" for job in chosen}
            )
            await conn.execute(queries.TAKE_TURN, {"keys": keys})
        return chosen

    def _choose(
        self, rows: Sequence[tuple[int, dict[str, Any]]]
    ) -> tuple[list[_Claimed], list[tuple[int, str, str]]]:
        """The first job in fair order plus later compatible ones while their images fit,
        taking a member's job only if all their earlier waiting jobs are taken too."""
        chosen: list[_Claimed] = []
        broken: list[tuple[int, str, str]] = []
        key: Hashable = None
        images = 0
        skipped: set[str] = set()
        for pid, args in rows:
            job_id, owner = str(args.get("job_id", pid)), str(args.get("owner", ""))
            try:
                request = request_from_args(args).validated(self._limits)
            except (GenerationError, KeyError, TypeError, ValueError) as exc:
                broken.append((pid, job_id, f"The job could not be read by the worker: {exc}"))
                continue
            if not chosen:
                chosen.append(_Claimed(pid, job_id, owner, request))
                key, images = request.batch_key, request.params.count
                continue
            if images >= self._config.max_batch_images:
                break
            if owner in skipped:
                continue
            if (
                request.batch_key == key
                and images + request.params.count <= self._config.max_batch_images
            ):
                chosen.append(_Claimed(pid, job_id, owner, request))
                images += request.params.count
            else:
                skipped.add(owner)
        return chosen, broken

    # -- running a batch -----------------------------------------------------------------------

    async def _run_batch(self, conn: psycopg.AsyncConnection[Any], batch: list[_Claimed]) -> None:
        self.batches += 1
        images = sum(job.request.params.count for job in batch)
        await self._notify(conn, [job.job_id for job in batch], "started", batch=images)
        log.info("batch of %d job(s), %d image(s)", len(batch), images)
        async with await psycopg.AsyncConnection.connect(
            self._config.dsn, autocommit=True
        ) as side:
            watcher = asyncio.create_task(self._watch_aborts(side, batch))
            try:
                outcomes = await self._generate(side, batch)
            finally:
                await asyncio.gather(*self._notifications, return_exceptions=True)
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await watcher
        for job, outcome in zip(batch, outcomes, strict=True):
            await self._finish(conn, job, outcome)

    async def _generate(
        self, side: psycopg.AsyncConnection[Any], batch: list[_Claimed]
    ) -> list[GenerationResult | GenerationError | None]:
        """One pipeline call for the batch; per job its result, its error, or None if aborted.
        Out of memory on a shared call retries its jobs one by one, like the local service."""
        live = [job for job in batch if not job.aborted]
        outcomes: dict[int, GenerationResult | GenerationError | None] = {
            job.pid: None for job in batch
        }
        if not live:
            return [None for _ in batch]
        loop = asyncio.get_running_loop()
        ids = [job.job_id for job in live]
        last_sent = [0.0]

        def send_step(step: int, total: int) -> None:  # on the loop
            now = time.monotonic()
            if step == total or now - last_sent[0] >= 0.2:
                last_sent[0] = now
                task = loop.create_task(self._notify(side, ids, "step", step=step, total=total))
                self._notifications.add(task)
                task.add_done_callback(self._notifications.discard)

        def on_step(step: int, total: int) -> None:  # engine thread
            loop.call_soon_threadsafe(send_step, step, total)

        def should_stop() -> bool:  # engine thread
            return all(job.aborted for job in live)

        call = functools.partial(
            self._engine.generate, [job.request for job in live], on_step, should_stop
        )
        try:
            results = await loop.run_in_executor(self._gpu, call)
        except OutOfMemoryError as exc:
            if len(live) == 1:
                outcomes[live[0].pid] = exc
            else:
                log.warning("out of memory for a shared call; retrying its jobs one by one")
                for job in live:
                    [outcomes[job.pid]] = await self._generate(side, [job])
        except JobCancelledError:
            pass  # every job aborted
        except GenerationError as exc:
            outcomes.update({job.pid: exc for job in live})
        except Exception as exc:
            log.exception("generation failed")
            error = GenerationError(f"Generation failed: {type(exc).__name__}: {exc}")
            outcomes.update({job.pid: error for job in live})
        else:
            outcomes.update({job.pid: result for job, result in zip(live, results, strict=True)})
        return [outcomes[job.pid] for job in batch]

    async def _watch_aborts(
        self, conn: psycopg.AsyncConnection[Any], batch: list[_Claimed]
    ) -> None:
        ids = [job.pid for job in batch]
        while True:
            rows = await (await conn.execute(queries.ABORT_REQUESTED, {"ids": ids})).fetchall()
            aborted = {row[0] for row in rows}
            for job in batch:
                job.aborted = job.aborted or job.pid in aborted
            await asyncio.sleep(_ABORT_POLL_SECONDS)

    async def _finish(
        self,
        conn: psycopg.AsyncConnection[Any],
        job: _Claimed,
        outcome: GenerationResult | GenerationError | None,
    ) -> None:
        """Record the outcome and end the procrastinate job, in one transaction, if the job is
        still ours (a janitor that took us for dead may have re-queued it: then it runs again
        elsewhere and this outcome is dropped, so the member gets exactly one result)."""
        folder: Path | None = None
        pngs: list[bytes] | None = None
        if isinstance(outcome, GenerationResult):
            pngs = await asyncio.to_thread(lambda: [png_bytes(i) for i in outcome.images])
            if self._config.results is ResultsMode.FOLDER:
                folder = await asyncio.to_thread(self._write_folder, job, pngs)
                pngs = None
        async with conn.transaction():
            row = await (
                await conn.execute(queries.OWN_JOB, {"id": job.pid, "worker": self._worker_id})
            ).fetchone()
            if row is None:
                log.warning("job %s is no longer ours; dropping its outcome", job.job_id)
                if folder is not None:
                    await asyncio.to_thread(shutil.rmtree, folder, True)
                return
            abort_requested = bool(row[0])
            if outcome is None or abort_requested:
                await conn.execute(queries.FINISH_JOB, {"id": job.pid, "status": "aborted"})
            elif isinstance(outcome, GenerationError):
                meta = {"error": str(outcome), "error_type": type(outcome).__name__}
                await self._save(conn, job.pid, job.job_id, "failed", meta, None)
                await conn.execute(queries.FINISH_JOB, {"id": job.pid, "status": "failed"})
            else:
                meta = ResultMeta.of(outcome).to_json()
                if folder is not None:
                    meta["folder"] = folder.name
                await self._save(conn, job.pid, job.job_id, "succeeded", meta, pngs)
                await conn.execute(queries.FINISH_JOB, {"id": job.pid, "status": "succeeded"})
        await self._notify(conn, [job.job_id], "final")

    def _write_folder(self, job: _Claimed, pngs: list[bytes]) -> Path:
        """PNGs under results_dir/<job id>.<worker>.<pid-attempt>/, written before the commit
        that points at them (a crashed attempt leaves a folder nobody points at)."""
        folder = self._config.results_dir / f"{job.job_id}.w{self._worker_id}.{time.time_ns()}"
        tmp = folder.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(pngs, start=1):
            (tmp / f"{index}.png").write_bytes(data)
        tmp.rename(folder)
        return folder

    @staticmethod
    async def _save(
        conn: psycopg.AsyncConnection[Any],
        pid: int,
        job_id: str,
        status: str,
        meta: dict[str, Any],
        images: list[bytes] | None,
    ) -> None:
        await conn.execute(
            queries.SAVE_RESULT,
            {"job_id": job_id, "id": pid, "status": status, "meta": json.dumps(meta),
             "images": images},
        )

    @staticmethod
    async def _notify(
        conn: psycopg.AsyncConnection[Any], job_ids: list[str], kind: str, **values: int
    ) -> None:
        try:
            await conn.execute(
                "SELECT pg_notify(%s, %s)",
                (EVENTS_CHANNEL, progress_payload(job_ids, kind, **values)),
            )
        except psycopg.Error:
            log.warning("progress notification failed", exc_info=True)
