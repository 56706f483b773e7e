"""Prompt history: every job with its parameters and status transitions.

Parameters live here rather than in PNG metadata or CDN links (Discord strips the one and
expires the other), so buttons and `/show` keep working after a restart. Lists are newest
first with keyset pagination on (created_at, id): stable while new jobs arrive, and the
cursor is short enough for a button's custom_id.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Table, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import JobKind, JobStatus, StoredJob, Tier
from bot.errors import InvalidArgument, InvalidTransition, NotFound
from bot.services._guilds import ensure_guild
from bot.services._session import unit
from bot.services.clock import Clock, utcnow
from generation.params import PARAM_FIELDS, GenerationParams

JOBS: Table = StoredJob.__table__  # type: ignore[assignment]
MAX_PAGE = 100
MAX_ERROR_CHARS = 4000

# Which statuses a job may move to, from which. BLOCKED may follow SUCCEEDED: the safety
# checker's verdict and the server's NSFW policy are applied after the images exist.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),  # re-run after a restart
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.BLOCKED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED}),
}
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.BLOCKED)

#: The export's columns: who and what, the parameters (`GenerationParams`' fields, in order),
#: then the outcome. Rows are built from Core rows of the jobs table (`csv_row`).
CSV_COLUMNS = (
    "job_id",
    "created_at",
    "user_id",
    "channel_id",
    "kind",
    "status",
    *PARAM_FIELDS,
    "seeds",
    "model_id",
    "parent_job_id",
    "image_index",
    "gpu_seconds",
    "nsfw",
    "error",
    "result_url",
)
#: Rows fetched per round trip while exporting. Turning raw rows into Core rows (JSON, times,
#: enums) runs on the event loop, about 2 ms per 250 rows: small batches keep each turn short.
EXPORT_BATCH = 250

# A spreadsheet evaluates a cell starting with one of these as a formula (CSV injection),
# also after leading whitespace (trimmed on import) and in their full-width forms (which
# East Asian spreadsheet locales accept as the ASCII signs).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "|", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class JobRecord:
    """A new job to store, as the bot knows it when queueing.

    `params` are the validated parameters (their seed concrete, so every image's seed is
    stored from the start); `id`: the queue's job id, if known.
    """

    guild_id: int
    channel_id: int
    user_id: int
    params: GenerationParams
    model_id: str
    kind: JobKind = JobKind.TXT2IMG
    parent_job_id: str | None = None
    image_index: int | None = None
    id: str | None = None
    #: The tier the job runs in (`bot.db.models.Tier`), after any fall-back to relax.
    tier: Tier = Tier.FAST


@dataclass(frozen=True)
class ShownAt:
    """The message that shows a job while it waits and runs, and how to edit it.

    `channel_id` is where the message is (a DM channel for presses in a DM); `app_id`,
    `token` and `created_at` are the interaction's, which can edit its original response for
    15 minutes after `created_at`; `message_id` is None until the answer was sent.
    """

    channel_id: int
    message_id: int | None = None
    app_id: int | None = None
    token: str | None = field(default=None, repr=False)
    created_at: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """Position in a newest-first list: the last item shown. `encode()` fits a custom_id."""

    created_at: datetime
    job_id: str

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // _MICROSECOND  # exact, no float rounding
        return f"{micros}.{self.job_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse `encode()`'s output; ValueError if it is not one."""
        micros, sep, job_id = text.partition(".")
        if not sep or not micros.isdigit() or not job_id or len(job_id) > 32:
            raise ValueError(f"not a history cursor: {text!r}")
        seconds, rest = divmod(int(micros), 1_000_000)
        created = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
        return cls(created_at=created, job_id=job_id)


@dataclass(frozen=True)
class JobFilter:
    """Which of a guild's jobs to list or export (all of them by default).

    `user_id` None: every member. `text`: case-insensitive substring of the prompt. `status`:
    one or several. `since` inclusive, `until` exclusive.
    """

    user_id: int | None = None
    text: str | None = None
    status: JobStatus | str | Iterable[JobStatus | str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, guild_id: int) -> list[ColumnElement[bool]]:
        """The WHERE clauses selecting the guild's matching jobs."""
        jobs = JOBS.c
        conditions: list[ColumnElement[bool]] = [jobs.guild_id == guild_id]
        if self.user_id is not None:
            conditions.append(jobs.user_id == self.user_id)
        if self.text:
            # lower(prompt) LIKE lower(:text) on SQLite (Unicode lower(), see db.session),
            # ILIKE on PostgreSQL; % and _ in the text are escaped, not wildcards.
            conditions.append(jobs.prompt.icontains(self.text, autoescape=True))
        if self.status is not None:
            conditions.append(jobs.status.in_(_statuses(self.status)))
        if self.since is not None:
            conditions.append(jobs.created_at >= self.since)
        if self.until is not None:
            conditions.append(jobs.created_at < self.until)
        return conditions


EVERY_JOB = JobFilter()


@dataclass(frozen=True)
class JobView:
    """A stored job in full, read back: its parameters, relations, status and result."""

    id: str
    guild_id: int
    channel_id: int
    user_id: int
    params: GenerationParams
    seeds: tuple[int, ...] | None
    model_id: str
    kind: JobKind
    parent_job_id: str | None
    image_index: int | None
    status: JobStatus
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    gpu_seconds: float | None
    result_channel_id: int | None
    result_message_id: int | None
    nsfw: tuple[bool, ...] | None
    shown_at: ShownAt | None = None
    channel_nsfw: bool = False
    #: None while unfinished; False once final with its final message not posted yet.
    delivered: bool | None = None
    tier: Tier = Tier.FAST
    #: Fast GPU seconds charged (None: never charged; 0: refunded).
    fast_seconds: float | None = None
    #: A /describe job's prompt suggestions as shown, once it succeeded.
    suggestions: tuple[str, ...] | None = None

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)

    @property
    def result_url(self) -> str | None:
        """Link to the message holding the result, if one was posted."""
        return result_url(self.guild_id, self.result_channel_id, self.result_message_id)


@dataclass(frozen=True)
class Page:
    """Items newest first; pass `next_cursor` as `before` for the next page (None: last)."""

    items: list[JobView] = field(default_factory=list)
    next_cursor: Cursor | None = None


@dataclass(frozen=True)
class JobStats:
    """Totals over succeeded jobs."""

    jobs: int
    images: int
    gpu_seconds: float


class HistoryService:
    """Record jobs and their transitions; list, show and export them per guild."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock = utcnow) -> None:
        self._sessions = sessions
        self._now = clock

    async def create_job(self, record: JobRecord, *, session: AsyncSession | None = None) -> str:
        """Store a queued job; returns its id (`record.id`, or a new uuid hex).

        `session`: the caller's open transaction (`Services.transaction`), committed by it.
        """
        job_id = record.id or uuid.uuid4().hex
        if len(job_id) > 32:
            raise InvalidArgument(f"Job ids have at most 32 characters, got {job_id!r}.")
        now = self._now()
        params = record.params
        job = StoredJob(
            id=job_id,
            guild_id=record.guild_id,
            channel_id=record.channel_id,
            user_id=record.user_id,
            params=params,
            seeds=params.seeds if params.seed is not None else None,
            model_id=record.model_id,
            kind=record.kind,
            parent_job_id=record.parent_job_id,
            image_index=record.image_index,
            tier=Tier(record.tier),
            status=JobStatus.QUEUED,
            created_at=now,
        )
        async with unit(self._sessions, session) as session:
            await ensure_guild(session, record.guild_id, now)
            session.add(job)
            await session.flush()
        return job_id

    async def mark_running(self, job_id: str) -> bool:
        """queued -> running. Returns False if it already was running."""
        return await self._transition(job_id, JobStatus.RUNNING, started_at=self._now())

    async def mark_succeeded(
        self,
        job_id: str,
        seeds: Sequence[int],
        nsfw: Sequence[bool],
        gpu_seconds: float | None,
        suggestions: Sequence[str] | None = None,
    ) -> bool:
        """-> succeeded, with the concrete seeds, per-image NSFW flags and GPU time (and a
        /describe job's `suggestions`, as shown)."""
        values: dict[str, Any] = {}
        if suggestions is not None:
            values["suggestions"] = [str(text) for text in suggestions]
        return await self._transition(
            job_id,
            JobStatus.SUCCEEDED,
            finished_at=self._now(),
            delivered=False,
            seeds=[int(s) for s in seeds],
            nsfw=[bool(f) for f in nsfw],
            gpu_seconds=gpu_seconds,
            **values,
        )

    async def mark_failed(self, job_id: str, error: str) -> bool:
        """-> failed, with the error text (shortened to MAX_ERROR_CHARS)."""
        return await self._transition(
            job_id,
            JobStatus.FAILED,
            finished_at=self._now(),
            error=error[:MAX_ERROR_CHARS],
            delivered=False,
        )

    async def mark_cancelled(self, job_id: str) -> bool:
        """-> cancelled (by the member, or on shutdown)."""
        return await self._transition(
            job_id, JobStatus.CANCELLED, finished_at=self._now(), delivered=False
        )

    async def mark_blocked(
        self, job_id: str, reason: str | None = None, nsfw: Sequence[bool] | None = None
    ) -> bool:
        """-> blocked: the result was withheld (e.g. NSFW under the 'block' policy)."""
        values: dict[str, Any] = {"finished_at": self._now(), "error": reason, "delivered": False}
        if nsfw is not None:
            values["nsfw"] = [bool(f) for f in nsfw]
        return await self._transition(job_id, JobStatus.BLOCKED, **values)

    async def mark_queued_again(self, job_id: str) -> bool:
        """running -> queued: a job that was running when the bot stopped runs again."""
        return await self._transition(job_id, JobStatus.QUEUED, started_at=None)

    async def set_shown_at(
        self,
        job_id: str,
        shown: ShownAt | None,
        *,
        channel_nsfw: bool = False,
        session: AsyncSession | None = None,
    ) -> None:
        """Remember the message (and interaction) that shows the job, for restarts, and
        whether its channel is age-restricted (the NSFW policy of a resumed job needs it).
        `session`: the caller's open transaction, committed by it."""
        values: dict[str, Any] = {"channel_nsfw": channel_nsfw}
        if shown is not None:
            values.update(
                message_channel_id=shown.channel_id,
                message_id=shown.message_id,
                interaction_app_id=shown.app_id,
                interaction_token=shown.token,
                interaction_created_at=shown.created_at,
            )
        await self._update(job_id, session=session, **values)

    async def set_message_id(self, job_id: str, message_id: int) -> None:
        """The id of the message that shows the job, once Discord answered with it."""
        await self._update(job_id, message_id=message_id)

    async def mark_delivered(
        self, job_id: str, channel_id: int | None = None, message_id: int | None = None
    ) -> None:
        """The job's final message was posted (at `channel_id`/`message_id` for a result):
        nothing is left to tell its member, and its interaction token is forgotten."""
        values: dict[str, Any] = {"delivered": True, "interaction_token": None}
        if channel_id is not None and message_id is not None:
            values.update(result_channel_id=channel_id, result_message_id=message_id)
        await self._update(job_id, **values)

    async def unfinished(self) -> list[JobView]:
        """Jobs a previous run left queued or running, running ones first, then oldest first."""
        running_first = (StoredJob.status == JobStatus.RUNNING).desc()
        query = (
            select(StoredJob)
            .where(StoredJob.status.in_(UNFINISHED))
            .order_by(running_first, StoredJob.created_at, StoredJob.id)
        )
        async with self._sessions() as session:
            return [_view(row) for row in (await session.scalars(query)).all()]

    async def undelivered(
        self, *, guild_id: int | None = None, user_id: int | None = None
    ) -> list[JobView]:
        """Ended jobs whose final message was never posted (oldest first), optionally of
        one member of one guild."""
        query = (
            select(StoredJob)
            .where(StoredJob.status.in_(FINAL), StoredJob.delivered.is_(False))
            .order_by(StoredJob.created_at, StoredJob.id)
        )
        if guild_id is not None:
            query = query.where(StoredJob.guild_id == guild_id)
        if user_id is not None:
            query = query.where(StoredJob.user_id == user_id)
        async with self._sessions() as session:
            return [_view(row) for row in (await session.scalars(query)).all()]

    async def _update(
        self, job_id: str, *, session: AsyncSession | None = None, **values: Any
    ) -> None:
        async with unit(self._sessions, session) as session:
            result = await session.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFound(f"There is no job `{job_id}`.")

    async def set_result_message(self, job_id: str, channel_id: int, message_id: int) -> None:
        """Remember where the result was posted (for links and `/show`)."""
        async with self._sessions() as session:
            result = await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id)
                .values(result_channel_id=channel_id, result_message_id=message_id)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFound(f"There is no job `{job_id}`.")
            await session.commit()

    async def get(self, job_id: str, *, guild_id: int | None = None) -> JobView | None:
        """One job in full; None if missing or (with `guild_id`) from another guild."""
        async with self._sessions() as session:
            job = await session.get(StoredJob, job_id)
        if job is None or (guild_id is not None and job.guild_id != guild_id):
            return None
        return _view(job)

    async def require(self, job_id: str, *, guild_id: int | None = None) -> JobView:
        """Like `get`, but raises NotFound (with a message for the member)."""
        view = await self.get(job_id, guild_id=guild_id)
        if view is None:
            raise NotFound(f"There is no job `{job_id}` on this server.")
        return view

    async def list(
        self,
        guild_id: int,
        where: JobFilter = EVERY_JOB,
        *,
        limit: int = 10,
        before: Cursor | None = None,
    ) -> Page:
        """A page of a guild's jobs matching `where`, newest first.

        `before`: the previous page's `next_cursor`.
        """
        limit = max(1, min(limit, MAX_PAGE))
        query = (
            select(StoredJob)
            .where(*where.where(guild_id))
            .order_by(StoredJob.created_at.desc(), StoredJob.id.desc())
        )
        if before is not None:
            query = query.where(
                or_(
                    StoredJob.created_at < before.created_at,
                    and_(StoredJob.created_at == before.created_at, StoredJob.id < before.job_id),
                )
            )
        query = query.limit(limit + 1)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
        items = [_view(row) for row in rows[:limit]]
        next_cursor = items[-1].cursor if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    async def export_batches(
        self, guild_id: int, where: JobFilter = EVERY_JOB
    ) -> AsyncIterator[Sequence[RowMapping]]:
        """The guild's jobs matching `where`, newest first, as batches of Core rows of the
        jobs table (`EXPORT_BATCH` rows each), for `CsvWriter` on a helper thread.

        Core rows, not ORM objects, fetched a batch at a time: the event loop only turns raw
        rows into values (a couple of milliseconds a batch) and never holds the whole export,
        so neither a long batch nor the garbage collector walking 50,000 live rows stalls it.
        Use it with `contextlib.aclosing` when stopping early.
        """
        query = (
            select(JOBS)
            .where(*where.where(guild_id))
            .order_by(JOBS.c.created_at.desc(), JOBS.c.id.desc())
            .execution_options(yield_per=EXPORT_BATCH)
        )
        async with self._sessions() as session:
            result = await session.stream(query)
            async for batch in result.mappings().partitions():
                yield batch

    async def stats(self, guild_id: int, user_id: int | None = None) -> JobStats:
        """Succeeded jobs, their images and GPU seconds, for a guild or one member."""
        query = select(
            func.count(),
            func.coalesce(func.sum(StoredJob.count), 0),
            func.coalesce(func.sum(StoredJob.gpu_seconds), 0.0),
        ).where(StoredJob.guild_id == guild_id, StoredJob.status == JobStatus.SUCCEEDED)
        if user_id is not None:
            query = query.where(StoredJob.user_id == user_id)
        async with self._sessions() as session:
            jobs, images, seconds = (await session.execute(query)).one()
        return JobStats(jobs=int(jobs), images=int(images), gpu_seconds=float(seconds))

    async def _transition(self, job_id: str, target: JobStatus, **values: Any) -> bool:
        """Move a job to `target` with one conditional UPDATE (no read-then-write race)."""
        allowed = sorted(TRANSITIONS[target])
        async with self._sessions() as session:
            result = await session.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(allowed))
                .values(status=target, **values)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                await session.commit()
                return True
            await session.rollback()
            current = await session.scalar(select(StoredJob.status).where(StoredJob.id == job_id))
        if current is None:
            raise NotFound(f"There is no job `{job_id}`.")
        if current is target:
            return False
        raise InvalidTransition(job_id, current.value, target.value)


def _statuses(
    status: JobStatus | str | Iterable[JobStatus | str],
) -> list[JobStatus]:
    if isinstance(status, str):
        return [JobStatus(status)]
    return [JobStatus(s) for s in status]


def _view(job: StoredJob) -> JobView:
    return JobView(
        id=job.id,
        guild_id=job.guild_id,
        channel_id=job.channel_id,
        user_id=job.user_id,
        params=job.params,
        seeds=tuple(job.seeds) if job.seeds is not None else None,
        model_id=job.model_id,
        kind=job.kind,
        parent_job_id=job.parent_job_id,
        image_index=job.image_index,
        status=job.status,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        gpu_seconds=job.gpu_seconds,
        result_channel_id=job.result_channel_id,
        result_message_id=job.result_message_id,
        nsfw=tuple(job.nsfw) if job.nsfw is not None else None,
        shown_at=_shown_at(job),
        channel_nsfw=bool(job.channel_nsfw),
        delivered=job.delivered,
        tier=job.tier,
        fast_seconds=job.fast_seconds,
        suggestions=tuple(job.suggestions) if job.suggestions is not None else None,
    )


def _shown_at(job: StoredJob) -> ShownAt | None:
    if job.message_channel_id is None:
        return None
    return ShownAt(
        channel_id=job.message_channel_id,
        message_id=job.message_id,
        app_id=job.interaction_app_id,
        token=job.interaction_token,
        created_at=job.interaction_created_at,
    )


def result_url(guild_id: int, channel_id: int | None, message_id: int | None) -> str | None:
    """Link to a posted result message; None when nothing was posted."""
    if channel_id is None or message_id is None:
        return None
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


@dataclass(frozen=True)
class CsvExport:
    """An export file: `data` (UTF-8 CSV with a byte-order mark, gzipped when `compressed`)."""

    data: bytes
    rows: int
    compressed: bool


class CsvWriter:
    """Builds an export file batch by batch: `write` each batch of rows, then `finish`.

    Blocking and CPU-bound (seconds for 50,000 rows): the bot calls both in its thread helper.
    The csv module quotes commas, quotes and newlines; cells a spreadsheet would run as a
    formula get a leading apostrophe. The file starts with a byte-order mark, so spreadsheet
    programs read the prompts as UTF-8. Each batch is encoded on its own: one encode of the
    whole text would hold the GIL, and so the event loop, for as long as it takes.
    """

    def __init__(self) -> None:
        self._out = io.StringIO()
        self._writer = csv.writer(self._out, quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow(CSV_COLUMNS)
        self._chunks = [codecs.BOM_UTF8]
        self._rows = 0

    def write(self, rows: Sequence[RowMapping]) -> None:
        """Add Core rows of the jobs table (from `HistoryService.export_batches`)."""
        self._writer.writerows([_cell(value) for value in csv_row(row)] for row in rows)
        self._rows += len(rows)
        self._flush()

    def finish(self, compress_over: int | None = None) -> CsvExport:
        """The file; gzipped when it is bigger than `compress_over` bytes."""
        self._flush()
        data = b"".join(self._chunks)
        compressed = compress_over is not None and len(data) > compress_over
        if compressed:
            # zlib releases the GIL while it compresses; level 6 is zlib's own default balance.
            data = gzip.compress(data, compresslevel=6)
        return CsvExport(data=data, rows=self._rows, compressed=compressed)

    def _flush(self) -> None:
        self._chunks.append(self._out.getvalue().encode("utf-8"))
        self._out.seek(0)
        self._out.truncate()


def render_csv(rows: Sequence[RowMapping], compress_over: int | None = None) -> CsvExport:
    """All of `rows` as one export file (`CsvWriter` in one go); blocking, like it."""
    writer = CsvWriter()
    writer.write(rows)
    return writer.finish(compress_over)


def csv_row(row: RowMapping) -> list[object]:
    """One Core row of the jobs table as the values of `CSV_COLUMNS`."""
    return [
        row["id"],
        row["created_at"].isoformat(),
        row["user_id"],
        row["channel_id"],
        row["kind"],
        row["status"],
        *(row[name] for name in PARAM_FIELDS),
        " ".join(str(s) for s in row["seeds"] or ()),
        row["model_id"],
        row["parent_job_id"],
        row["image_index"],
        row["gpu_seconds"],
        " ".join("1" if flag else "0" for flag in row["nsfw"] or ()),
        row["error"],
        result_url(row["guild_id"], row["result_channel_id"], row["result_message_id"]),
    ]


def _cell(value: object) -> str:
    """A CSV cell as text, with formula triggers neutralised by a leading apostrophe."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_TRIGGERS) or text.lstrip().startswith(FORMULA_TRIGGERS):
        return "'" + text
    return text
