"""The orchestrator and the tiers, with the real tiny model: a fast job is charged the GPU
seconds the backend measured, only on success; a member out of fast time is queued in relax
with a note, never refused."""

from __future__ import annotations

import pytest

from bot.core.jobs import JobOrchestrator, JobPlan, OutcomeStatus, Requester
from bot.db.models import Tier
from bot.services import Services, TierPolicy, build_services
from tests.bot.conftest import FailingEngine, FlaggingEngine, small

# The storage of tiers runs on every driver in tests/services/test_tiers.py; this is the flow.
pytestmark = pytest.mark.sqlite_only

ALICE = Requester(guild_id=1, channel_id=10, user_id=100)
#: Smaller than any job's measured GPU time: one fast job uses it all.
ALLOWANCE = 0.001


@pytest.fixture
def services(sessions, clock) -> Services:  # type: ignore[no-untyped-def]
    return build_services(
        sessions, default_limit=20, clock=clock, tiers=TierPolicy(fast_seconds=ALLOWANCE)
    )


async def fast_used(services: Services) -> float:
    return (await services.tiers.status(ALICE.guild_id, ALICE.user_id, ())).used


async def test_fast_job_is_charged_its_measured_seconds_then_relax_follows(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    assert (sub.tier, sub.tier_note, sub.queued.tier) == ("fast", None, "fast")
    outcome = await orchestrator.run(sub)
    job = await services.history.require(sub.job_id)
    assert outcome.status is OutcomeStatus.SUCCEEDED
    assert job.gpu_seconds is not None and job.gpu_seconds > ALLOWANCE
    assert outcome.fast_seconds == job.fast_seconds == job.gpu_seconds
    assert await fast_used(services) == job.gpu_seconds

    relax = await orchestrator.submit(ALICE, JobPlan(small(count=1), tier="fast"))
    assert (relax.tier, relax.queued.tier) == ("relax", "relax")
    assert relax.tier_note is not None and "fast GPU time today" in relax.tier_note
    outcome = await orchestrator.run(relax)
    assert outcome.status is OutcomeStatus.SUCCEEDED and outcome.fast_seconds == 0.0
    stored = await services.history.require(relax.job_id)
    assert (stored.tier, stored.fast_seconds) == (Tier.RELAX, None)
    assert await fast_used(services) == job.gpu_seconds  # relax cost no fast time
    # Relax jobs still use the image quota.
    assert (await services.quota.status(1, 100, ())).used == 3


async def test_asking_for_relax_costs_no_fast_time(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=1), tier="relax"))
    assert (sub.tier, sub.tier_note) == ("relax", None)
    assert (await orchestrator.run(sub)).fast_seconds == 0.0
    assert await fast_used(services) == 0.0


@pytest.mark.parametrize("engine_wrapper", [lambda e: FailingEngine(e, ())])
async def test_a_failed_fast_job_is_not_charged(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=1)))
    assert (await orchestrator.run(sub)).status is OutcomeStatus.FAILED
    assert (await services.history.require(sub.job_id)).fast_seconds is None
    assert await fast_used(services) == 0.0


async def test_a_cancelled_fast_job_is_not_charged(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    sub = await orchestrator.submit(ALICE, JobPlan(small(count=1)))
    assert orchestrator.cancel(sub.job_id)
    assert (await orchestrator.run(sub)).status is OutcomeStatus.CANCELLED
    assert await fast_used(services) == 0.0


@pytest.mark.parametrize("engine_wrapper", [lambda e: FlaggingEngine(e, (1,))])
async def test_a_blocked_or_undelivered_job_costs_no_fast_time(
    orchestrator: JobOrchestrator, services: Services
) -> None:
    """Every image withheld: no fast time, as no images; a result that reached nobody gets
    its fast time back with its images."""
    blocked = await orchestrator.submit(ALICE, JobPlan(small(count=1)))
    assert (await orchestrator.run(blocked)).status is OutcomeStatus.BLOCKED
    assert await fast_used(services) == 0.0

    kept = await orchestrator.submit(ALICE, JobPlan(small(count=2)))
    outcome = await orchestrator.run(kept)
    assert outcome.status is OutcomeStatus.SUCCEEDED and outcome.fast_seconds > 0
    assert await fast_used(services) == outcome.fast_seconds
    await orchestrator.undeliverable(kept.job_id)
    assert await fast_used(services) == 0.0
    assert (await services.history.require(kept.job_id)).fast_seconds == 0.0
