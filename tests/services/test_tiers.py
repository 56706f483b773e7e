"""Tier service: fast-time allowances and their precedence, accounting of measured GPU
seconds (charged on success only, refundable), the fall-back to relax, admin rules."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import Period, QuotaScope, StoredJob, Tier
from bot.errors import InvalidArgument
from bot.services import Services
from bot.services.history import JobRecord
from bot.services.quota import QuotaSource
from bot.services.tiers import TierPolicy, TierService
from generation.params import GenerationParams
from tests.db.fixtures import FakeClock

# Every storage path on SQLite, PostgreSQL/asyncpg and PostgreSQL/psycopg (rowcounts differ).
pytestmark = pytest.mark.every_driver

GUILD = 2**63 - 1
ALICE = 2**63 - 10
BOB = 2**63 - 11
ADMIN = 42
SUPPORTER = 1001
ARTIST = 1002


def tiers(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock, **policy: object
) -> TierService:
    return TierService(sessions, TierPolicy(**policy), clock=clock)  # type: ignore[arg-type]


async def finished_job(
    services: Services, job_id: str, user: int = ALICE, tier: Tier = Tier.FAST
) -> str:
    """A stored job of `user` in `tier` that succeeded (so it may be charged)."""
    record = JobRecord(
        GUILD, 5, user, GenerationParams("a fox", seed=1), "builtin:tiny-random", id=job_id,
        tier=tier,
    )
    await services.history.create_job(record)
    await services.history.mark_succeeded(job_id, [1], [False], 0.5)
    return job_id


def _id(i: int) -> str:
    return f"{i:0>32}"


async def test_fast_time_is_the_measured_seconds_of_succeeded_fast_jobs(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """Charging records the job's GPU seconds; status sums them; a second charge does
    nothing; a relax job is never charged; a refund gives the seconds back."""
    service = tiers(sessions, clock, fast_seconds=10.0)
    await finished_job(services, _id(1))
    await finished_job(services, _id(2), tier=Tier.RELAX)
    assert await service.charge(_id(1), 3.25) == 3.25
    assert await service.charge(_id(1), 3.25) == 0.0  # once only
    assert await service.charge(_id(2), 4.0) == 0.0  # relax costs no fast time
    status = await service.status(GUILD, ALICE, [])
    assert (status.allowance, status.used, status.remaining) == (10.0, 3.25, 6.75)
    assert (status.source, status.period, status.tier) == (QuotaSource.CONFIG, Period.DAY, "fast")
    job = await services.history.require(_id(1))
    assert (job.tier, job.fast_seconds) == (Tier.FAST, 3.25)

    assert await service.refund(_id(1)) == 3.25
    assert await service.refund(_id(1)) == 0.0
    assert (await service.status(GUILD, ALICE, [])).used == 0.0
    assert (await service.status(GUILD, BOB, [])).used == 0.0


async def test_out_of_fast_time_falls_back_to_relax_with_a_note(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """With fast time left a job runs fast; once it is used up, a fast request (or the fast
    default) gets relax with a note naming the reset; asking for relax gets no note; the
    next period brings the fast time back."""
    service = tiers(sessions, clock, fast_seconds=2.0)
    first = await service.choose(GUILD, ALICE, [], None)
    assert (first.tier, first.note) == ("fast", None)
    await finished_job(services, _id(1))
    await service.charge(_id(1), 2.5)  # measured after the fact: may overshoot a little

    for requested in (None, "fast"):
        choice = await service.choose(GUILD, ALICE, [], requested)
        assert choice.tier == "relax"
        assert choice.note is not None and "used your 2 s of fast GPU time today" in choice.note
        reset = int((choice.status.resets_at).timestamp())
        assert f"<t:{reset}:R>" in choice.note
    relax = await service.choose(GUILD, ALICE, [], "relax")
    assert (relax.tier, relax.note) == ("relax", None)
    assert (await service.status(GUILD, ALICE, [])).tier == "relax"
    assert (await service.choose(GUILD, BOB, [], None)).tier == "fast"  # per member

    clock.advance(days=1)
    assert (await service.choose(GUILD, ALICE, [], None)).tier == "fast"


async def test_role_overrides_and_admin_rules_take_precedence(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """Member rule > most generous role (admin rule, else config) > server rule > config."""
    service = tiers(
        sessions, clock, fast_seconds=60.0, role_fast_seconds={SUPPORTER: 600.0, ARTIST: 120.0}
    )
    status = await service.status(GUILD, ALICE, [SUPPORTER, ARTIST])
    assert (status.allowance, status.source) == (600.0, QuotaSource.ROLE)
    await service.set_rule(GUILD, "server", None, 30.0, None, ADMIN)
    assert (await service.status(GUILD, BOB, [])).allowance == 30.0
    assert (await service.status(GUILD, ALICE, [ARTIST])).allowance == 120.0
    await service.set_rule(GUILD, "role", ARTIST, 900.0, "week", ADMIN)
    status = await service.status(GUILD, ALICE, [SUPPORTER, ARTIST])
    assert (status.allowance, status.period) == (900.0, Period.WEEK)
    await service.set_rule(GUILD, "member", ALICE, 5.0, "day", ADMIN)
    status = await service.status(GUILD, ALICE, [SUPPORTER, ARTIST])
    assert (status.allowance, status.source) == (5.0, QuotaSource.MEMBER)

    rules = await service.list_rules(GUILD)
    assert [(r.scope, r.target_id, r.seconds) for r in rules] == [
        (QuotaScope.SERVER, None, 30.0),
        (QuotaScope.ROLE, ARTIST, 900.0),
        (QuotaScope.MEMBER, ALICE, 5.0),
    ]
    assert await service.clear_rule(GUILD, "member", ALICE, ADMIN)
    assert not await service.clear_rule(GUILD, "member", ALICE, ADMIN)
    assert (await service.status(GUILD, ALICE, [SUPPORTER, ARTIST])).allowance == 900.0
    actions = [entry.action for entry in (await services.audit.list(GUILD)).items]
    assert actions.count("fast_time.set") == 3 and "fast_time.clear" in actions

    with pytest.raises(InvalidArgument, match="scope"):
        await service.set_rule(GUILD, "cap", None, 1.0, None, ADMIN)
    with pytest.raises(InvalidArgument, match="0 or more"):
        await service.set_rule(GUILD, "server", None, -1.0, None, ADMIN)
    with pytest.raises(InvalidArgument, match="needs the role"):
        await service.set_rule(GUILD, "role", None, 1.0, None, ADMIN)


async def test_fast_roles_gate_fast_mode(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """With `fast_roles` set, members without such a role run relax (with a note saying
    why), unless an admin gave them (or one of their roles) fast time."""
    service = tiers(sessions, clock, fast_roles=frozenset({SUPPORTER}))
    assert (await service.choose(GUILD, ALICE, [SUPPORTER], "fast")).tier == "fast"
    refused = await service.choose(GUILD, BOB, [ARTIST], "fast")
    assert refused.tier == "relax" and "certain roles" in (refused.note or "")
    assert not (await service.status(GUILD, BOB, [ARTIST])).allowed
    await service.set_rule(GUILD, "role", ARTIST, 100.0, None, ADMIN)
    assert (await service.choose(GUILD, BOB, [ARTIST], "fast")).tier == "fast"


async def test_relax_default_and_unknown_tier(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """With `default = "relax"`, a job asking for nothing runs relax without a note; `--fast`
    still runs fast; an unknown tier is refused."""
    service = tiers(sessions, clock, default="relax")
    assert (await service.choose(GUILD, ALICE, [], None)).tier == "relax"
    assert (await service.choose(GUILD, ALICE, [], None)).note is None
    assert (await service.choose(GUILD, ALICE, [], "fast")).tier == "fast"
    with pytest.raises(InvalidArgument):
        await service.choose(GUILD, ALICE, [], "turbo")
    with pytest.raises(ValueError):
        TierPolicy(default="turbo")


async def test_admin_reset_gives_fast_time_back(
    services: Services, sessions: async_sessionmaker[AsyncSession], clock: FakeClock
) -> None:
    """`/quota reset` of a member counts their fast time from then on; the charges stay on
    the jobs (history keeps what each job cost)."""
    service = tiers(sessions, clock, fast_seconds=5.0)
    await finished_job(services, _id(1))
    await service.charge(_id(1), 5.0)
    assert (await service.status(GUILD, ALICE, [])).remaining == 0.0
    clock.advance(seconds=1)
    await services.quota.reset_member(GUILD, ALICE, ADMIN)
    clock.advance(seconds=1)
    status = await service.status(GUILD, ALICE, [])
    assert (status.used, status.remaining) == (0.0, 5.0)
    async with sessions() as session:
        charged = await session.scalar(
            select(StoredJob.fast_seconds).where(StoredJob.id == _id(1))
        )
    assert charged == 5.0
