"""History service: job records, transitions, filters, keyset pagination, CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from bot.db.models import JobKind, JobStatus
from bot.errors import InvalidTransition, NotFound
from bot.services import Services
from bot.services.history import Cursor, HistoryService, JobFilter, JobRecord, render_csv
from generation.params import PARAM_FIELDS, GenerationParams
from tests.db.fixtures import FakeClock

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver

GUILD = 2**63 - 1
OTHER_GUILD = 7
CHANNEL = 2**62 + 3
ALICE = 2**63 - 10
BOB = 2**63 - 11


def _record(
    prompt: str = "a dog in autumn leaves", user_id: int = ALICE, **kw: object
) -> JobRecord:
    params = {name: kw.pop(name) for name in list(kw) if name in PARAM_FIELDS}
    values: dict[str, object] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "user_id": user_id,
        "params": GenerationParams(prompt, **params),  # type: ignore[arg-type]
        "model_id": "builtin:tiny-random",
    }
    values.update(kw)
    return JobRecord(**values)  # type: ignore[arg-type]


async def _export(history: HistoryService, guild_id: int = GUILD) -> list[dict[str, str]]:
    """The guild's export parsed back with the csv module."""
    rows = [row async for batch in history.export_batches(guild_id) for row in batch]
    export = render_csv(rows)
    text = export.data.decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def test_create_and_get_a_job_in_full(services: Services, clock: FakeClock) -> None:
    """Every parameter given at creation comes back from get()."""
    job_id = await services.history.create_job(
        _record(
            negative_prompt="blurry",
            steps=30,
            guidance=6.5,
            width=640,
            height=384,
            count=2,
            scheduler="euler_a",
            seed=2**63 - 7,
            id="f" * 32,
        )
    )
    assert job_id == "f" * 32
    job = await services.history.get(job_id)
    assert job is not None
    assert (job.guild_id, job.channel_id, job.user_id) == (GUILD, CHANNEL, ALICE)
    params = job.params
    assert (params.prompt, params.negative_prompt) == ("a dog in autumn leaves", "blurry")
    assert (params.steps, params.guidance, params.width, params.height) == (30, 6.5, 640, 384)
    assert (params.count, params.scheduler, params.seed) == (2, "euler_a", 2**63 - 7)
    assert job.model_id == "builtin:tiny-random"
    assert (job.kind, job.status, job.created_at) == (JobKind.TXT2IMG, JobStatus.QUEUED, clock.now)
    assert job.created_at.tzinfo is UTC
    assert job.started_at is None and job.result_url is None


async def test_generated_ids_are_uuid_hex(services: Services) -> None:
    """Without an id, a 32-character hex id is made (fits a button's custom_id)."""
    job_id = await services.history.create_job(_record())
    assert len(job_id) == 32 and int(job_id, 16) >= 0


async def test_variation_keeps_parent_and_image_index(services: Services) -> None:
    """A variation records the parent job and which of its images it came from."""
    parent = await services.history.create_job(_record())
    child = await services.history.create_job(
        _record(kind=JobKind.VARIATION, parent_job_id=parent, image_index=2, strength=0.6)
    )
    job = await services.history.require(child)
    assert (job.kind, job.parent_job_id, job.image_index, job.params.strength) == (
        JobKind.VARIATION,
        parent,
        2,
        0.6,
    )


async def test_transitions_record_times_and_results(services: Services, clock: FakeClock) -> None:
    """queued -> running -> succeeded stores start/finish times, seeds, NSFW flags, GPU time."""
    history = services.history
    job_id = await history.create_job(_record())
    started = clock.advance(seconds=5)
    assert await history.mark_running(job_id)
    finished = clock.advance(seconds=12)
    assert await history.mark_succeeded(job_id, [11, 12, 13, 14], [False, True, False, False], 3.5)
    await history.set_result_message(job_id, CHANNEL, 2**63 - 99)

    job = await history.require(job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert (job.started_at, job.finished_at) == (started, finished)
    assert job.seeds == (11, 12, 13, 14) and job.nsfw == (False, True, False, False)
    assert job.gpu_seconds == 3.5
    assert job.result_url == f"https://discord.com/channels/{GUILD}/{CHANNEL}/{2**63 - 99}"


async def test_failed_cancelled_and_blocked(services: Services) -> None:
    """Jobs can fail with an error, be cancelled while queued, or be blocked after success."""
    history = services.history
    failed = await history.create_job(_record())
    await history.mark_running(failed)
    await history.mark_failed(failed, "CUDA out of memory")
    cancelled = await history.create_job(_record())
    await history.mark_cancelled(cancelled)
    blocked = await history.create_job(_record())
    await history.mark_succeeded(blocked, [1], [True], 1.0)
    await history.mark_blocked(blocked, "nsfw", nsfw=[True])

    assert (await history.require(failed)).error == "CUDA out of memory"
    assert (await history.require(cancelled)).status is JobStatus.CANCELLED
    job = await history.require(blocked)
    assert (job.status, job.error, job.nsfw) == (JobStatus.BLOCKED, "nsfw", (True,))
    assert job.finished_at is not None


async def test_invalid_transitions_are_refused(services: Services) -> None:
    """A finished job cannot run again; repeating the current status is a no-op."""
    history = services.history
    job_id = await history.create_job(_record())
    await history.mark_running(job_id)
    assert not await history.mark_running(job_id)
    await history.mark_failed(job_id, "boom")
    with pytest.raises(InvalidTransition):
        await history.mark_running(job_id)
    with pytest.raises(InvalidTransition):
        await history.mark_succeeded(job_id, [1], [False], 1.0)
    assert (await history.require(job_id)).status is JobStatus.FAILED


async def test_unknown_jobs(services: Services) -> None:
    """Unknown ids: get() is None, require() and transitions raise NotFound."""
    history = services.history
    assert await history.get("0" * 32) is None
    with pytest.raises(NotFound):
        await history.require("0" * 32)
    with pytest.raises(NotFound):
        await history.mark_running("0" * 32)
    with pytest.raises(NotFound):
        await history.set_result_message("0" * 32, 1, 2)


async def test_get_is_scoped_to_a_guild(services: Services) -> None:
    """With guild_id, a job from another server is not visible."""
    job_id = await services.history.create_job(_record())
    assert await services.history.get(job_id, guild_id=GUILD) is not None
    assert await services.history.get(job_id, guild_id=OTHER_GUILD) is None
    with pytest.raises(NotFound):
        await services.history.require(job_id, guild_id=OTHER_GUILD)


async def test_list_filters(services: Services, clock: FakeClock) -> None:
    """Text (case-insensitive, Unicode), member, status and date range filters combine."""
    history = services.history
    day1 = clock.set(datetime(2026, 3, 1, 12, tzinfo=UTC))
    a = await history.create_job(_record("A Red ÉCLAIR on a plate"))
    clock.set(datetime(2026, 3, 2, 12, tzinfo=UTC))
    b = await history.create_job(_record("red fox", user_id=BOB))
    clock.set(datetime(2026, 3, 3, 12, tzinfo=UTC))
    c = await history.create_job(_record("blue 100% cotton_shirt"))
    await history.mark_failed(c, "x")
    await history.create_job(_record("red car", guild_id=OTHER_GUILD))

    async def ids(**filters: object) -> list[str]:
        page = await history.list(GUILD, JobFilter(**filters))  # type: ignore[arg-type]
        return [job.id for job in page.items]

    assert await ids() == [c, b, a]
    assert await ids(text="RED") == [b, a]
    assert await ids(text="éclair") == [a]
    assert await ids(text="100%") == [c]
    assert await ids(text="100_") == []  # _ is not a wildcard
    assert await ids(user_id=BOB) == [b]
    assert await ids(status="failed") == [c]
    assert await ids(status=[JobStatus.QUEUED, JobStatus.FAILED], user_id=ALICE) == [c, a]
    assert await ids(since=datetime(2026, 3, 2, tzinfo=UTC)) == [c, b]
    assert await ids(until=datetime(2026, 3, 2, 12, tzinfo=UTC)) == [a]
    assert await ids(since=day1, until=datetime(2026, 3, 3, tzinfo=UTC), text="fox") == [b]


async def test_keyset_pagination_covers_everything_once(
    services: Services, clock: FakeClock
) -> None:
    """Pages of 10 list 25 jobs newest first, each once, even with equal timestamps."""
    history = services.history
    created = []
    for i in range(25):
        if i % 3 == 0:
            clock.advance(seconds=1)  # groups of jobs share a created_at
        created.append((clock.now, await history.create_job(_record(f"job {i}"))))
    expected = [job_id for _, job_id in sorted(created, reverse=True)]

    seen: list[str] = []
    cursor: Cursor | None = None
    pages = 0
    while True:
        page = await history.list(GUILD, limit=10, before=cursor)
        seen.extend(job.id for job in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = Cursor.decode(page.next_cursor.encode())
    assert seen == expected
    assert pages == 3


def test_cursor_round_trips_through_text() -> None:
    """A cursor survives encode/decode (as it must inside a button's custom_id)."""
    cursor = Cursor(datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), "ab" * 16)
    text = cursor.encode()
    assert len(text) <= 60
    assert Cursor.decode(text) == cursor
    with pytest.raises(ValueError):
        Cursor.decode("not-a-cursor")


HOSTILE = [
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTAB=1",
    "\r=CR",
    'say "hello", world',
    "line one\nline two, =not a formula",
    "plain prompt",
]


async def test_csv_export_neutralises_hostile_prompts(services: Services, clock: FakeClock) -> None:
    """The export parses back with the csv module; formula-like cells get a leading quote."""
    history = services.history
    for prompt in HOSTILE:
        clock.advance(seconds=1)
        job_id = await history.create_job(_record(prompt, negative_prompt="=HYPERLINK(x)"))
    await history.mark_failed(job_id, "-1 error")
    await history.create_job(_record("=other guild", guild_id=OTHER_GUILD))

    rows = await _export(history)

    assert len(rows) == len(HOSTILE)
    prompts = [row["prompt"] for row in reversed(rows)]
    for original, exported in zip(HOSTILE, prompts, strict=True):
        if original[0] in "=+-@\t\r":
            assert exported == "'" + original
        else:
            assert exported == original
    assert all(row["negative_prompt"] == "'=HYPERLINK(x)" for row in rows)
    assert rows[0]["error"] == "'-1 error"
    assert rows[0]["user_id"] == str(ALICE)
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))


async def test_unfinished_and_undelivered_jobs_for_a_restart(
    services: Services, clock: FakeClock
) -> None:
    """At start-up: unfinished jobs come running first, then oldest first; ended jobs whose
    final message was never posted are found until they are marked delivered."""
    history = services.history
    queued = await history.create_job(_record())
    clock.advance(seconds=1)
    running = await history.create_job(_record())
    await history.mark_running(running)
    clock.advance(seconds=1)
    later = await history.create_job(_record())
    done = await history.create_job(_record())
    await history.mark_succeeded(done, [1], [False], 1.0)

    assert [job.id for job in await history.unfinished()] == [running, queued, later]
    assert [job.id for job in await history.undelivered()] == [done]
    assert await history.mark_queued_again(running)
    assert (await history.require(running)).started_at is None
    await history.mark_delivered(done, 7, 8)
    assert await history.undelivered() == []
    assert (await history.require(done)).result_message_id == 8


async def test_stats_count_succeeded_images(services: Services) -> None:
    """Stats sum images and GPU seconds of succeeded jobs, per guild or member."""
    history = services.history
    one = await history.create_job(_record(count=4))
    await history.mark_succeeded(one, [1, 2, 3, 4], [False] * 4, 2.0)
    two = await history.create_job(_record(count=2, user_id=BOB))
    await history.mark_succeeded(two, [5, 6], [False] * 2, 1.5)
    await history.create_job(_record(count=4))  # still queued: not counted

    everyone = await history.stats(GUILD)
    assert (everyone.jobs, everyone.images, everyone.gpu_seconds) == (2, 6, 3.5)
    bob = await history.stats(GUILD, BOB)
    assert (bob.jobs, bob.images) == (1, 2)


HIDDEN_FORMULAS = [
    " =1+1",
    "   @SUM(A1:A2)",
    "\u3000=1+1",  # ideographic space
    "\n=cmd|' /C calc'!A0",
    "|cmd",
    "\uff1d1+1",  # full-width equals sign
    "\uff0bcmd",  # full-width plus sign
]


async def test_csv_export_neutralises_formulas_behind_whitespace_or_wide_signs(
    services: Services, clock: FakeClock
) -> None:
    """Cells whose formula sign follows leading whitespace, or is full-width, get the quote."""
    history = services.history
    for prompt in HIDDEN_FORMULAS:
        clock.advance(seconds=1)
        await history.create_job(_record(prompt))

    rows = await _export(history)

    assert [row["prompt"] for row in reversed(rows)] == ["'" + p for p in HIDDEN_FORMULAS]


def test_cursor_round_trips_after_2038() -> None:
    """Cursor text keeps the exact microsecond for any date (no float rounding)."""
    cursor = Cursor(datetime(2040, 10, 11, 9, 55, 1, 988775, tzinfo=UTC), "ab" * 16)
    assert Cursor.decode(cursor.encode()) == cursor
