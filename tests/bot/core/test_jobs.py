"""Orchestration with the real tiny model and a migrated SQLite: gate, charge, refund, store."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.image_store import ImageStore
from bot.core.jobs import (
    ImageFate,
    JobOrchestrator,
    JobPlan,
    OutcomeStatus,
    Requester,
    decide_fates,
)
from bot.db.models import JobKind, JobStatus, NsfwPolicy
from bot.errors import Banned, BlockedWord, ChannelNotAllowed, QuotaExceeded, Restarting
from bot.services import Services
from generation.errors import QueueFullError, RequestError
from generation.service import GenerationService
from tests.bot.conftest import FailingEngine, FlaggingEngine, small, tiny_service
from tests.db.fixtures import FakeClock

ALICE = Requester(guild_id=1, channel_id=10, user_id=100, role_ids=(5,))
BOB = Requester(guild_id=1, channel_id=10, user_id=200)


async def used(services: Services, who: Requester = ALICE) -> int:
    status = await services.quota.status(who.guild_id, who.user_id, who.role_ids)
    return status.used


async def test_success_stores_images_charges_and_records(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """A finished job stores each image, charges its images and records seeds."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2, seed=7)))
    assert await used(services) == 2  # reserved before queueing
    assert sub.queued.id == sub.job_id  # one id in the service, the ledger and the database
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert outcome.seeds == (7, 8)
    assert outcome.fates == (ImageFate.SHOW, ImageFate.SHOW)
    for index in (1, 2):
        stored = await image_store.load(sub.job_id, index)
        assert stored is not None and stored.size == (64, 64)
    assert await used(services) == 2
    job = await services.history.require(sub.job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.seeds == (7, 8)
    assert job.model_id == "builtin:tiny-random"
    assert orchestrator.live(sub.job_id) is None


async def test_progress_events_are_passed_on(orchestrator: JobOrchestrator) -> None:
    """The progress callback sees the queue position, the start and every step."""
    seen: list[str] = []

    async def on_progress(event: object) -> None:
        seen.append(type(event).__name__)

    sub = await orchestrator.submit(ALICE, JobPlan(small(count=1, steps=2)))
    await orchestrator.run(sub, on_progress)
    assert seen[0] == "JobQueued"
    assert "JobStarted" in seen
    assert seen.count("JobStep") >= 1


async def test_failing_progress_callback_does_not_fail_the_job(
    orchestrator: JobOrchestrator,
) -> None:
    """Progress is cosmetic: a callback raising does not change the outcome."""

    async def broken(event: object) -> None:
        raise RuntimeError("edit failed")

    sub = await orchestrator.submit(ALICE, JobPlan(small(count=1)))
    assert (await orchestrator.run(sub, broken)).status is OutcomeStatus.SUCCEEDED


async def test_cancel_queued_job_refunds(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """Cancelling a queued job refunds its reservation and records it cancelled."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=3)))
    assert orchestrator.cancel(sub.job_id)  # no await since submit: still queued
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.CANCELLED
    assert outcome.refunded == 3
    assert await used(services) == 0
    assert (await services.history.require(sub.job_id)).status is JobStatus.CANCELLED


def test_cancel_unknown_job_is_false(orchestrator: JobOrchestrator) -> None:
    """Only live jobs can be cancelled (e.g. not after a restart)."""
    assert not orchestrator.cancel("0" * 32)


@pytest.mark.parametrize("engine_wrapper", [lambda e: FailingEngine(e, ())])
async def test_failure_refunds_everything(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """A job the engine fails is refunded, recorded failed, and nothing is stored."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.FAILED
    assert "out of memory" in (outcome.error or "")
    assert outcome.refunded == 2
    assert await used(services) == 0
    job = await services.history.require(sub.job_id)
    assert job.status is JobStatus.FAILED
    assert await image_store.load(sub.job_id, 1) is None


@pytest.mark.parametrize("engine_wrapper", [lambda e: FlaggingEngine(e, (2,))])
async def test_nsfw_block_withholds_and_refunds_flagged_images(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """Under the default 'block' policy a flagged image is not stored and is refunded."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert outcome.withheld == (2,)
    assert outcome.refunded == 1
    assert await used(services) == 1
    assert await image_store.load(sub.job_id, 1) is not None
    assert await image_store.load(sub.job_id, 2) is None
    job = await services.history.require(sub.job_id)
    assert job.nsfw == (False, True)


@pytest.mark.parametrize("engine_wrapper", [lambda e: FlaggingEngine(e, (1, 2))])
async def test_nsfw_all_blocked_marks_job_blocked(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """When every image is withheld the job is 'blocked' and costs nothing."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.BLOCKED
    assert await used(services) == 0
    assert (await services.history.require(sub.job_id)).status is JobStatus.BLOCKED


@pytest.mark.parametrize("engine_wrapper", [lambda e: FlaggingEngine(e, (1,))])
async def test_nsfw_spoiler_policy_keeps_and_charges(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """Under the 'spoiler' policy a flagged image is posted behind a spoiler and charged."""
    await services.moderation.update_settings(1, actor_id=999, nsfw_policy=NsfwPolicy.SPOILER)
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(sub)
    assert outcome.fates == (ImageFate.SPOILER, ImageFate.SHOW)
    assert outcome.spoiler and outcome.withheld == ()
    assert await used(services) == 2


def test_age_restricted_policy_depends_on_channel() -> None:
    """'age_restricted' shows flagged images only in age-restricted channels."""
    flags = [True, False]
    assert decide_fates(flags, NsfwPolicy.AGE_RESTRICTED, channel_nsfw=True) == (
        ImageFate.SHOW,
        ImageFate.SHOW,
    )
    assert decide_fates(flags, NsfwPolicy.AGE_RESTRICTED, channel_nsfw=False) == (
        ImageFate.WITHHOLD,
        ImageFate.SHOW,
    )
    assert decide_fates(flags, NsfwPolicy.BLOCK, channel_nsfw=True)[0] is ImageFate.WITHHOLD


async def test_banned_member_is_refused_before_anything_happens(
    orchestrator: JobOrchestrator, services: Services, generation: GenerationService
) -> None:
    """A ban stops the request before reserving, queueing or recording."""
    await services.moderation.ban(1, ALICE.user_id, actor_id=999, reason="spam")
    with pytest.raises(Banned):
        await orchestrator.submit(ALICE, JobPlan(small()))
    assert await used(services) == 0
    assert generation.queue_stats().waiting == 0
    assert (await services.history.list(1)).items == []


async def test_blocked_word_is_refused(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """A blocked word in the prompt is refused with nothing reserved."""
    await services.moderation.add_blocked_word(1, "gore", actor_id=999)
    with pytest.raises(BlockedWord):
        await orchestrator.submit(ALICE, JobPlan(small("lots of gore")))
    assert await used(services) == 0


async def test_channel_allow_list_is_enforced(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """With an allow-list, other channels are refused."""
    await services.moderation.set_channel_allowed(1, 11, True, actor_id=999)
    with pytest.raises(ChannelNotAllowed):
        await orchestrator.submit(ALICE, JobPlan(small()))


async def test_threads_follow_their_parent_channel_on_the_allow_list(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """A thread under an allowed channel is allowed; one under another channel is not."""
    await services.moderation.set_channel_allowed(1, 11, True, actor_id=999)
    in_thread = Requester(guild_id=1, channel_id=50, user_id=100, parent_channel_id=11)
    submission = await orchestrator.submit(in_thread, JobPlan(small(count=1)))
    assert (await orchestrator.run(submission)).status is OutcomeStatus.SUCCEEDED
    elsewhere = Requester(guild_id=1, channel_id=51, user_id=100, parent_channel_id=10)
    with pytest.raises(ChannelNotAllowed):
        await orchestrator.submit(elsewhere, JobPlan(small()))


async def test_quota_exceeded_queues_nothing(
    orchestrator: JobOrchestrator, services: Services, generation: GenerationService
) -> None:
    """Asking for more images than remain raises QuotaExceeded and queues nothing."""
    await services.quota.set_rule(1, "member", ALICE.user_id, 3, "day", actor_id=999)
    with pytest.raises(QuotaExceeded):
        await orchestrator.submit(ALICE, JobPlan(small(count=4)))
    assert generation.queue_stats().waiting == 0
    assert (await services.history.list(1)).items == []


async def test_invalid_request_reserves_nothing(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """Out-of-range steps raise RequestError before the quota is touched."""
    with pytest.raises(RequestError, match="steps"):
        await orchestrator.submit(ALICE, JobPlan(small(steps=5000)))
    assert await used(services) == 0


async def test_a_nul_in_the_prompt_is_refused_before_anything_is_stored(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """PostgreSQL text cannot hold NUL: the one validation refuses it (a member's message,
    not a storage failure), so nothing is reserved or recorded, on either database."""
    with pytest.raises(RequestError, match=r"control character \(U\+0000\) at position 4"):
        await orchestrator.submit(ALICE, JobPlan(small("a r\x00ed fox")))
    assert await used(services) == 0
    assert (await services.history.list(1)).items == []


async def test_variation_records_its_parent(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """A variation runs img2img from a stored image and records parent and index."""
    first = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    await orchestrator.run(first)
    source = await orchestrator.source_image(first.job_id, 2, ALICE)
    plan = JobPlan(
        small(count=2, init_image=source, strength=0.6),
        kind=JobKind.VARIATION,
        parent_job_id=first.job_id,
        image_index=2,
    )
    sub = await orchestrator.submit(ALICE, plan)
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    job = await services.history.require(sub.job_id)
    assert (job.kind, job.parent_job_id, job.image_index) == (
        JobKind.VARIATION,
        first.job_id,
        1,
    )
    assert job.params.strength == pytest.approx(0.6)
    assert await used(services) == 4


async def test_missing_image_is_regenerated_from_its_seed(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """A deleted image file is re-made from the stored parameters and seed, free of charge."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2, seed=3)))
    await orchestrator.run(sub)
    original = await image_store.load(sub.job_id, 2)
    await image_store.delete(sub.job_id)
    remade = await orchestrator.source_image(sub.job_id, 2, ALICE)
    assert original is not None and remade.size == original.size
    assert await image_store.load(sub.job_id, 2) is not None
    assert await used(services) == 2


async def _previous_run(
    services: Services, image_store: ImageStore, tiny_cache: Path
) -> JobOrchestrator:
    """An orchestrator whose generator never starts: what it submits stays queued, as when
    the bot stopped (or crashed) with jobs waiting."""
    return JobOrchestrator(services, tiny_service(tiny_cache), image_store)


async def test_recover_queues_jobs_again_in_order_and_charges_once(
    services: Services,
    generation: GenerationService,
    image_store: ImageStore,
    tiny_cache: Path,
    clock: FakeClock,
) -> None:
    """Queued jobs of a previous run are queued again, oldest first, keep their reservation
    (nothing reserved twice) and run from their stored seeds."""
    previous = await _previous_run(services, image_store, tiny_cache)
    first = await previous.submit(ALICE, JobPlan(small(count=2, seed=5)))
    clock.advance(seconds=1)
    second = await previous.submit(BOB, JobPlan(small(count=1, seed=9)))
    assert await used(services) == 2

    orchestrator = JobOrchestrator(services, generation, image_store)
    recovery = await orchestrator.recover(rerun_max_age=3600, now=clock())
    assert [sub.job_id for sub, _ in recovery.resumed] == [first.job_id, second.job_id]
    assert recovery.ended == ()
    outcomes = [await orchestrator.run(sub) for sub, _ in recovery.resumed]
    assert [o.status for o in outcomes] == [OutcomeStatus.SUCCEEDED] * 2
    assert outcomes[0].seeds == (5, 6) and outcomes[1].seeds == (9,)
    assert await used(services) == 2 and await used(services, BOB) == 1
    for sub in (first, second):
        assert (await services.history.require(sub.job_id)).status is JobStatus.SUCCEEDED
        assert not await services.quota.charge(sub.job_id)  # charged exactly once already


async def test_recover_reruns_recent_running_jobs_and_fails_old_ones(
    services: Services,
    generation: GenerationService,
    image_store: ImageStore,
    tiny_cache: Path,
    clock: FakeClock,
) -> None:
    """A job that was running runs again from its seeds if it started recently; an older
    one is failed and refunded, so nothing stays running forever."""
    previous = await _previous_run(services, image_store, tiny_cache)
    old = await previous.submit(ALICE, JobPlan(small(count=2, seed=1)))
    await services.history.mark_running(old.job_id)
    clock.advance(hours=2)
    recent = await previous.submit(BOB, JobPlan(small(count=1, seed=2)))
    await services.history.mark_running(recent.job_id)
    clock.advance(minutes=5)

    orchestrator = JobOrchestrator(services, generation, image_store)
    recovery = await orchestrator.recover(rerun_max_age=3600, now=clock())
    [(resumed, _)] = recovery.resumed
    assert resumed.job_id == recent.job_id
    assert (await services.history.require(recent.job_id)).status is JobStatus.QUEUED
    [ended] = recovery.ended
    assert ended.id == old.job_id and ended.status is JobStatus.FAILED
    assert "restart" in (ended.error or "")
    assert await used(services) == 0  # the old job was refunded
    assert (await orchestrator.run(resumed)).status is OutcomeStatus.SUCCEEDED
    assert await used(services, BOB) == 1


async def test_stop_refuses_new_work_and_keeps_waiting_jobs_queued(
    services: Services, image_store: ImageStore, tiny_cache: Path
) -> None:
    """On shutdown new work is refused before anything is reserved, and a waiting job ends
    SUSPENDED: still queued in the database, still reserved, for the next start."""
    service = tiny_service(tiny_cache)  # not started: the job waits
    orchestrator = JobOrchestrator(services, service, image_store)
    waiting = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    await orchestrator.stop(grace=5)
    with pytest.raises(Restarting, match="restarting"):
        await orchestrator.submit(ALICE, JobPlan(small(count=1)))
    outcome = await orchestrator.run(waiting)
    assert outcome.status is OutcomeStatus.SUSPENDED
    assert (await services.history.require(waiting.job_id)).status is JobStatus.QUEUED
    assert await used(services) == 2
    await service.close()


async def test_remade_image_goes_through_the_gate(
    orchestrator: JobOrchestrator, services: Services, image_store: ImageStore
) -> None:
    """Re-making a lost image is refused for a banned member, with nothing queued or
    recorded; for others it is free but recorded as a `remake` job (GPU work)."""
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2, seed=3)))
    await orchestrator.run(sub)
    await image_store.delete(sub.job_id)
    await services.moderation.ban(1, BOB.user_id, actor_id=1)
    job = await services.history.require(sub.job_id)
    with pytest.raises(Banned):
        await orchestrator.regenerate(job, 2, BOB)
    assert len((await services.history.list(1)).items) == 1
    assert await image_store.load(sub.job_id, 2) is None

    await orchestrator.regenerate(job, 2, ALICE)
    jobs = (await services.history.list(1)).items
    remake = next(j for j in jobs if j.kind is JobKind.REMAKE)
    assert (remake.parent_job_id, remake.image_index, remake.params.count) == (sub.job_id, 1, 1)
    assert remake.status is JobStatus.SUCCEEDED and remake.gpu_seconds is not None
    assert await used(services) == 2  # free: only the grid was charged


async def test_remade_image_is_queued_for_the_member_who_pressed(
    orchestrator: JobOrchestrator,
    generation: GenerationService,
    image_store: ImageStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Re-making a lost image counts against the presser's queue share, not the requester's."""
    bob = Requester(guild_id=1, channel_id=10, user_id=200)
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2, seed=3)))
    await orchestrator.run(sub)
    await image_store.delete(sub.job_id)
    owners: list[str] = []
    submit = generation.submit

    def spy(request, owner="", job_id=None, tier="fast"):  # type: ignore[no-untyped-def]
        owners.append(owner)
        return submit(request, owner, job_id, tier)

    monkeypatch.setattr(generation, "submit", spy)
    await orchestrator.source_image(sub.job_id, 2, bob)
    assert owners == [bob.owner]


async def test_a_failed_running_mark_does_not_fail_the_job(
    orchestrator: JobOrchestrator, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording "running" is bookkeeping: a database hiccup there must not discard the
    images the worker goes on to make."""

    async def locked(job_id: str) -> bool:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(services.history, "mark_running", locked)
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert await used(services) == 2


@pytest.mark.parametrize(
    "failure", [QueueFullError("your queue share is full"), RuntimeError("backend gone")]
)
async def test_a_refused_image_prompt_leaves_no_source_file(
    orchestrator: JobOrchestrator,
    services: Services,
    generation: GenerationService,
    image_store: ImageStore,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    """The source image is written inside the gate's transaction; when that transaction rolls
    back (the backend refuses the job), no job refers to the file, so it is removed too."""
    from PIL import Image

    def refuse(*args: object, **kwargs: object) -> object:
        raise failure

    monkeypatch.setattr(generation, "submit", refuse)
    source = Image.new("RGB", (64, 64), "orange")
    plan = JobPlan(small(count=1, init_image=source, strength=0.5), kind=JobKind.IMAGE_PROMPT,
                   source_image=source)
    with pytest.raises(type(failure)):
        await orchestrator.submit(ALICE, plan)
    assert (await image_store.usage()).jobs == 0
    assert await used(services) == 0
