"""End to end: storage retention purges stored images, buttons on purged jobs still work, and
admins see the disk used in /info (members do not)."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from tests.e2e.conftest import (
    SIZE,
    TIMEOUT,
    SettingsFactory,
    World,
    button_ids,
    has_image,
    png_size,
    running,
)
from tests.fakediscord import FakeDiscord


async def test_purged_job_buttons_remake_and_admins_see_storage(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """A size cap of ~0 with a sub-second interval purges the grid's images; U1 re-makes image
    1 from its seed; /info shows an admin the storage line and a member none."""
    settings = make_settings(
        storage={"max_size_mb": 0.000001, "cleanup_interval_minutes": 0.005}
    )
    async with running(settings, fake) as bot:
        await fake.wait_for_commands(["imagine", "info"], guild=world.guild, timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a kite", count=2)
        grid = await ix.wait_original(has_image, timeout=TIMEOUT)
        job_id = button_ids(grid)[0].split(":")[2]
        folder = bot.images.root / job_id
        for _ in range(int(TIMEOUT * 10)):
            if not folder.exists():
                break
            await asyncio.sleep(0.1)
        assert not folder.exists(), "retention did not purge the job's images"

        click = await fake.click(grid, f"imagine:u:{job_id}:1", world.alice)
        single = await click.wait_original(has_image, timeout=TIMEOUT)
        assert png_size(single) == (SIZE, SIZE)
        with Image.open(io.BytesIO(single.attachments[0].data)) as posted:
            assert "Steps: " in posted.info["parameters"]  # the posted PNG carries them

        admin = await fake.invoke(world.channel, world.admin, "info")
        await admin.wait_response(timeout=5)
        assert "Storage (admins)" in admin.original.text()
        assert "retention: at most" in admin.original.text()
        member = await fake.invoke(world.channel, world.bob, "info")
        await member.wait_response(timeout=5)
        assert "Storage" not in member.original.text()
    assert fake.violations == []
