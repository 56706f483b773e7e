"""Buttons pressed twice (issue 9, item 3): one effect, and a quiet, true second answer.

The database is slowed a little (each handler's first access waits 0.5 s) so that the second
press surely arrives while the first is still being handled, as a double click does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bot.app import ImagineBot
from bot.cogs.errors import UNEXPECTED
from bot.db.models import JobKind, JobStatus
from tests.e2e.conftest import TIMEOUT, SlowSessions, World, button_ids, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message


async def _grid(fake: FakeDiscord, world: World, **options: Any) -> tuple[Message, str]:
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a mill", **options)
    message = await ix.wait_original(has_image, timeout=TIMEOUT)
    return message, button_ids(message)[0].split(":")[2]


async def _answers(*clicks: Any) -> list[str]:
    await asyncio.gather(*(ix.wait_response(timeout=10) for ix in clicks))
    texts = []
    for ix in clicks:
        await ix.wait_original(lambda m: not m.loading, timeout=TIMEOUT)
        texts.append("\n".join(m.text() for m in [ix.original, *ix.followups] if m))
    return texts


@pytest.fixture
async def bot(slowed: tuple[ImagineBot, list[SlowSessions]]) -> ImagineBot:
    bot, [sessions] = slowed
    sessions.delay = 0.5
    sessions.slow = True
    return bot


async def test_delete_pressed_twice(
    bot: ImagineBot, fake: FakeDiscord, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The same member twice, then the owner and an admin at once: deleted once, the
    other presses told so quietly, nothing logged as an error."""
    def told() -> list[Message]:
        return [m for m in fake.messages(world.channel) if m.ephemeral and not m.deleted]

    for presser in (world.alice, world.admin):
        grid, job = await _grid(fake, world, count=1)
        before = len(told())
        first = await fake.click(grid, f"imagine:d:{job}", world.alice)
        second = await fake.click(grid, f"imagine:d:{job}", presser)
        with caplog.at_level(logging.ERROR):
            await asyncio.gather(first.wait_response(timeout=10), second.wait_response(timeout=10))
            await fake.wait_until(lambda grid=grid: grid.deleted, timeout=TIMEOUT)
            # The press that did not delete is told so, privately: once.
            await fake.wait_until(lambda before=before: len(told()) > before, timeout=TIMEOUT)
        [answer] = told()[before:]
        assert "already" in answer.content.lower() and "deleted" in answer.content
        assert answer.visible_to in (world.alice.id, presser.id)
        assert all(UNEXPECTED not in m.content for m in fake.messages(world.channel))
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert fake.violations == []


async def test_cancel_pressed_twice(bot: ImagineBot, fake: FakeDiscord, world: World) -> None:
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a long mill",
                           count=1, steps=60)
    queued = await ix.wait_original(lambda m: bool(m.buttons()), timeout=TIMEOUT)
    job = button_ids(queued)[0].split(":")[2]
    presses = [await fake.click(queued, f"imagine:c:{job}", world.alice) for _ in range(2)]
    texts = await _answers(*presses)
    assert any(t.startswith("Cancelled") for t in texts)
    assert any("already cancel" in t.lower() for t in texts), texts
    # A third press after the first answer: still a true answer, not "has just finished".
    if queued.buttons():
        [third] = await _answers(await fake.click(queued, f"imagine:c:{job}", world.alice))
        assert "already cancelled" in third.lower(), third
    await ix.wait_original(lambda m: "Cancelled" in m.content, timeout=TIMEOUT)
    assert (await bot.services.history.require(job)).status is JobStatus.CANCELLED
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert fake.violations == []


@pytest.mark.parametrize(("kind", "button"), [(JobKind.VARIATION, "v"), (JobKind.REROLL, "r")])
async def test_new_job_buttons_pressed_twice_make_one_job(
    bot: ImagineBot, fake: FakeDiscord, world: World, kind: JobKind, button: str
) -> None:
    grid, job = await _grid(fake, world, count=2)
    custom_id = f"imagine:{button}:{job}" + (":1" if button == "v" else "")
    first = await fake.click(grid, custom_id, world.alice)
    second = await fake.click(grid, custom_id, world.alice)
    texts = await _answers(first, second)
    assert "Already on it" in texts[1] and second.ephemeral
    await first.wait_original(has_image, timeout=TIMEOUT)
    jobs = (await bot.services.history.list(world.guild.id)).items
    assert [j.kind for j in jobs].count(kind) == 1
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    new_images = bot.settings.generation.count if kind is JobKind.VARIATION else 2
    assert status.used == 2 + new_images  # the grid and one new job
    assert fake.violations == []


async def test_upscale_pressed_twice_posts_once(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    grid, job = await _grid(fake, world, count=2)
    first = await fake.click(grid, f"imagine:u:{job}:2", world.bob)
    second = await fake.click(grid, f"imagine:u:{job}:2", world.bob)
    texts = await _answers(first, second)
    assert "Already on it" in texts[1]
    await first.wait_original(has_image, timeout=TIMEOUT)
    singles = [m for m in fake.messages(world.channel) if "Image #2" in m.content]
    assert len(singles) == 1
    assert fake.violations == []


async def test_delete_of_a_message_gone_meanwhile_is_a_quiet_answer(
    bot: ImagineBot, fake: FakeDiscord, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A moderator deletes the grid while the press is being handled: Discord answers 404
    to the bot's delete, and the member is told "Already deleted." (no error, no traceback)."""
    grid, job = await _grid(fake, world, count=1)
    with caplog.at_level(logging.ERROR):
        press = await fake.click(grid, f"imagine:d:{job}", world.alice)
        fake.world.delete_message(grid)  # before the slowed handler gets to it
        answer = await press.wait_followup(timeout=TIMEOUT)
    assert answer.ephemeral and answer.content == "Already deleted."
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [v.code for v in fake.violations] == [10008]  # Discord's own answer to the bot
