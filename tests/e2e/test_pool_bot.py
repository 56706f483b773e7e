"""End to end through the pool: the real bot (`[generation] backend = "pool"`) on PostgreSQL
and the fake Discord, with an `imagine worker` process started only after the member asked.

The member is told the queue waits for a GPU, `/info` says no worker is connected, and once a
worker starts the grid arrives as with the in-process backend (tiny model: noise images).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import TIMEOUT, SettingsFactory, World, button_ids, has_image, running
from tests.fakediscord import FakeDiscord
from tests.pool.conftest import HEARTBEAT, STALLED_AFTER, Workers

pytestmark = pytest.mark.pool


async def test_imagine_waits_for_a_gpu_worker_then_delivers_the_grid(
    fake: FakeDiscord,
    world: World,
    make_settings: SettingsFactory,
    pg_url: str,
    tiny_cache: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        generation={"backend": "pool"},
        database={"url": pg_url},
        pool={
            "heartbeat_seconds": HEARTBEAT,
            "stalled_after_seconds": STALLED_AFTER,
            "poll_seconds": 0.2,
            "results_dir": str(tmp_path / "results"),
        },
    )
    workers = Workers(settings.pool.resolved_dsn(pg_url), tiny_cache, tmp_path,
                      IMAGINE_MODEL__SAFETY_CHECKER="false")
    try:
        async with running(settings, fake) as bot:
            await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
            ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a lantern")
            await ix.wait_response(timeout=5)
            assert "No GPU worker is running right now" in ix.original.content

            info = await fake.invoke(world.channel, world.bob, "info")
            await info.wait_response(timeout=5)
            assert "None connected" in info.original.text()
            assert "1 waiting" in info.original.text(), info.original.text()

            workers.start("gpu0")
            message = await ix.wait_original(has_image, timeout=120)
            assert world.alice.mention in message.content
            assert len(button_ids(message)) == 10
            job = await bot.services.history.require(button_ids(message)[0].split(":")[2])
            assert job.seeds is not None and len(job.seeds) == 4

            info = await fake.invoke(world.channel, world.bob, "info")
            await info.wait_response(timeout=5)
            assert "cpu (cpu): 0 job(s) running" in info.original.text()
            assert fake.violations == []
    finally:
        workers.stop_all()
