"""/describe jobs in the orchestrator: free or charged, moderated suggestions, refunds,
restarts. The captions are forced (as `FlaggingEngine` forces NSFW verdicts) so that the
moderation of known texts is checked; the real captioner runs in tests/generation and e2e."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from bot.core.image_store import SOURCE, ImageStore
from bot.core.jobs import JobOrchestrator, JobPlan, OutcomeStatus, Requester, describe_request
from bot.db.models import JobKind, JobStatus
from bot.services import Services
from generation.errors import GenerationError
from generation.events import GenerationResult
from generation.params import GenerationParams
from generation.request import Operation
from generation.service import GenerationService
from tests.bot.conftest import tiny_service
from tests.generation.engines import PassThroughEngine

ALICE = Requester(guild_id=1, channel_id=10, user_id=100)
CAPTIONS = ["a red fox in snow", "a nude figure", "a fox at dusk", "an owl", "a cat", "a boat"]


class CaptionEngine(PassThroughEngine):
    """The tiny engine whose captioner answers `captions` (None: fails) to describe jobs."""

    captions: Sequence[str] | None = CAPTIONS

    def supports(self, operation):  # type: ignore[no-untyped-def]
        return True

    def generate(self, requests, on_step=None, should_stop=None):  # type: ignore[no-untyped-def]
        if requests[0].operation is not Operation.DESCRIBE:
            return self.inner.generate(requests, on_step, should_stop)
        if self.captions is None:
            raise GenerationError("The captioner failed.")
        captions = list(self.captions)
        return [
            GenerationResult([], r.seeds, [], [], r, "captioner", 0.01, captions=captions)
            for r in requests
        ]


@pytest.fixture
async def captioning(tiny_cache: Path) -> AsyncIterator[GenerationService]:
    service = tiny_service(tiny_cache, CaptionEngine)
    await service.start()
    yield service
    await service.close()


def plan(seed: int | None = None) -> JobPlan:
    image = Image.new("RGB", (80, 48), (10, 200, 90))
    params = GenerationParams("", width=64, height=64, steps=2, seed=seed)
    return JobPlan(describe_request(params, image), kind=JobKind.DESCRIBE, source_image=image)


async def used(services: Services) -> int:
    return (await services.quota.status(ALICE.guild_id, ALICE.user_id, ())).used


async def test_free_describe_offers_four_moderated_suggestions(
    services: Services, captioning: GenerationService, image_store: ImageStore
) -> None:
    """A blocked word is never offered: the next caption takes its place; nothing is
    reserved or charged, the job is recorded with its suggestions and its image."""
    await services.moderation.add_blocked_word(1, "nude", actor_id=999)
    orchestrator = JobOrchestrator(services, captioning, image_store)
    sub = await orchestrator.submit(ALICE, plan())
    assert await used(services) == 0
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert outcome.suggestions == ("a red fox in snow", "a fox at dusk", "an owl", "a cat")
    job = await services.history.require(sub.job_id)
    assert (job.kind, job.status) == (JobKind.DESCRIBE, JobStatus.SUCCEEDED)
    assert job.suggestions == outcome.suggestions and job.params.prompt == ""
    assert await image_store.load(sub.job_id, SOURCE) is not None
    assert await used(services) == 0


async def test_charged_describe_counts_one_image_and_refunds_what_it_cannot_offer(
    services: Services, captioning: GenerationService, image_store: ImageStore
) -> None:
    orchestrator = JobOrchestrator(services, captioning, image_store, charge_describe=True)
    outcome = await orchestrator.run(await orchestrator.submit(ALICE, plan()))
    assert outcome.status is OutcomeStatus.SUCCEEDED and await used(services) == 1
    # Every caption blocked: nothing to offer, the image given back.
    for word in ("fox", "owl", "cat", "boat", "nude"):
        await services.moderation.add_blocked_word(1, word, actor_id=999)
    sub = await orchestrator.submit(ALICE, plan())
    assert await used(services) == 2
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.BLOCKED and outcome.suggestions == ()
    assert outcome.refunded == 1 and await used(services) == 1
    job = await services.history.require(sub.job_id)
    assert job.status is JobStatus.BLOCKED and job.suggestions == ()


async def test_failed_describe_is_refunded(
    services: Services, tiny_cache: Path, image_store: ImageStore
) -> None:
    service = tiny_service(tiny_cache, lambda inner: replace_captions(inner, None))
    await service.start()
    try:
        orchestrator = JobOrchestrator(services, service, image_store, charge_describe=True)
        outcome = await orchestrator.run(await orchestrator.submit(ALICE, plan()))
    finally:
        await service.close()
    assert outcome.status is OutcomeStatus.FAILED and outcome.refunded == 1
    assert await used(services) == 0


def replace_captions(inner, captions):  # type: ignore[no-untyped-def]
    engine = CaptionEngine(inner)
    engine.captions = captions
    return engine


async def test_describe_waiting_at_a_restart_runs_again_from_its_stored_image(
    services: Services, captioning: GenerationService, image_store: ImageStore,
    tiny_cache: Path,
) -> None:
    previous = JobOrchestrator(services, tiny_service(tiny_cache), image_store)  # never started
    waiting = await previous.submit(ALICE, plan(seed=42))
    orchestrator = JobOrchestrator(services, captioning, image_store)
    recovery = await orchestrator.recover(rerun_max_age=3600)
    ((sub, job),) = recovery.resumed
    assert sub.job_id == waiting.job_id and job.kind is JobKind.DESCRIBE
    assert sub.request.operation is Operation.DESCRIBE and sub.request.seeds == [42]
    assert sub.request.init_image is not None and sub.request.init_image.size == (80, 48)
    outcome = await orchestrator.run(sub)
    assert outcome.status is OutcomeStatus.SUCCEEDED and len(outcome.suggestions) == 4


async def test_a_describe_job_has_no_image_to_remake(
    services: Services, captioning: GenerationService, image_store: ImageStore
) -> None:
    orchestrator = JobOrchestrator(services, captioning, image_store)
    sub = await orchestrator.submit(ALICE, plan())
    await orchestrator.run(sub)
    job = await services.history.require(sub.job_id)
    with pytest.raises(GenerationError, match="not images"):
        await orchestrator.regenerate(job, 1, ALICE)


@pytest.mark.parametrize("charge_describe", [False, True])
async def test_which_kinds_are_charged(
    services: Services, image_store: ImageStore, tiny_cache: Path, charge_describe: bool
) -> None:
    """What a failed job's message says was refunded follows this: re-makes are never charged,
    /describe only when the admin charges it, every other kind always."""
    orchestrator = JobOrchestrator(
        services, tiny_service(tiny_cache), image_store, charge_describe=charge_describe
    )
    assert orchestrator.charges(JobKind.DESCRIBE) is charge_describe
    assert not orchestrator.charges(JobKind.REMAKE)
    assert all(
        orchestrator.charges(kind)
        for kind in JobKind
        if kind not in (JobKind.DESCRIBE, JobKind.REMAKE)
    )
