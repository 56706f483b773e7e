"""`/history list` and `/history export` end to end: paging, filters, privacy, CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from bot.app import ImagineBot
from bot.config import Settings
from bot.db.models import JobStatus
from tests.db.fixtures import FakeClock
from tests.e2e.admin.conftest import ADMIN_COMMANDS, add_job, call, refused
from tests.e2e.conftest import TIMEOUT, World, has_image, running
from tests.fakediscord import FakeDiscord
from tests.fakediscord.models import Message

JOB_ID = re.compile(r"`([0-9a-f]{32})`")


def job_ids(message: Message) -> list[str]:
    return JOB_ID.findall(message.text())


async def press(fake: FakeDiscord, message: Message, label: str, user: object) -> Message:
    """Press Prev/Next on a history page and return the page as edited."""
    button = next(b for b in message.buttons() if b.label == label)
    assert not button.disabled, f"{label} is disabled"
    click = await fake.click(message, button.custom_id, user)  # type: ignore[arg-type]
    await click.wait_response(timeout=5)
    assert click.response_type == 7
    return fake.get_message(message.id)


async def make_jobs(
    bot: ImagineBot, world: World, clock: FakeClock, n: int, user_id: int, prompt: str
) -> list[str]:
    """n jobs a minute apart, oldest first."""
    ids = []
    for i in range(n):
        clock.advance(minutes=1)
        ids.append(await add_job(bot, world.guild.id, world.channel.id, user_id, f"{prompt} {i}"))
    return ids


async def test_member_pages_through_own_history(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """Next and Prev walk a member's own jobs, newest first, eight at a time."""
    alice = await make_jobs(bot, world, clock, 19, world.alice.id, "castle")
    await make_jobs(bot, world, clock, 2, world.bob.id, "secret of bob")
    newest_first = alice[::-1]

    first = await call(fake, world.channel, world.alice, "history list")
    assert first.ephemeral and "Your history" in first.text()
    assert job_ids(first) == newest_first[:8]
    assert "secret of bob" not in first.text()
    assert [(b.label, b.disabled) for b in first.buttons()] == [("Prev", True), ("Next", False)]

    second = await press(fake, first, "Next", world.alice)
    assert job_ids(second) == newest_first[8:16]
    third = await press(fake, second, "Next", world.alice)
    assert job_ids(third) == newest_first[16:]
    assert [b.disabled for b in third.buttons()] == [False, True]
    back = await press(fake, third, "Prev", world.alice)
    assert job_ids(back) == newest_first[8:16]
    top = await press(fake, back, "Prev", world.alice)
    assert job_ids(top) == newest_first[:8]
    assert top.buttons()[0].disabled
    assert fake.violations == []


async def test_admin_filters_by_member_text_status_and_days(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """Admins filter the server's history; members may not look at someone else's."""
    guild, channel = world.guild.id, world.channel.id
    clock.set(datetime(2026, 3, 1, 12, tzinfo=UTC))
    early = await add_job(bot, guild, channel, world.alice.id, "red castle")
    clock.set(datetime(2026, 3, 5, 12, tzinfo=UTC))
    failed = await add_job(bot, guild, channel, world.alice.id, "blue castle",
                           status=JobStatus.FAILED)
    clock.advance(minutes=1)
    mid = await add_job(bot, guild, channel, world.alice.id, "green CASTLE")
    clock.advance(minutes=1)
    other = await add_job(bot, guild, channel, world.bob.id, "bob's castle")
    clock.set(datetime(2026, 3, 9, 12, tzinfo=UTC))
    late = await add_job(bot, guild, channel, world.alice.id, "a lake")

    everything = await call(fake, world.channel, world.admin, "history list")
    assert "Server history" in everything.text()
    assert job_ids(everything) == [late, other, mid, failed, early]
    assert world.bob.mention in everything.text()

    cases = [
        ({"member": world.alice}, [late, mid, failed, early]),
        ({"member": world.alice, "text": "castle"}, [mid, failed, early]),
        ({"text": "castle", "status": "succeeded"}, [other, mid, early]),
        ({"status": "failed"}, [failed]),
        ({"since": "2026-03-05", "until": "2026-03-05"}, [other, mid, failed]),
        ({"since": "2026-03-02"}, [late, other, mid, failed]),
        ({"until": "2026-03-04", "member": world.alice}, [early]),
    ]
    for options, expected in cases:
        page = await call(fake, world.channel, world.admin, "history list", **options)
        assert job_ids(page) == expected, options
    filtered = await call(fake, world.channel, world.admin, "history list", text="castle",
                          status="succeeded")
    assert 'prompt contains "castle"' in filtered.text() and "status succeeded" in filtered.text()

    bad = await call(fake, world.channel, world.admin, "history list", since="2026-13-01")
    assert refused(bad, "not a real day")
    bad = await call(fake, world.channel, world.admin, "history list", since="01.03.2026")
    assert refused(bad, "YYYY-MM-DD")
    bad = await call(fake, world.channel, world.admin, "history list", since="2026-03-09",
                     until="2026-03-01")
    assert refused(bad, "is after")

    peek = await call(fake, world.channel, world.bob, "history list", member=world.alice)
    assert refused(peek, "Only server admins can see other members' history")
    own = await call(fake, world.channel, world.bob, "history list")
    assert job_ids(own) == [other] and "Your history" in own.text()
    assert fake.violations == []


async def test_filtered_pages_keep_their_filters(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """Paging a filtered list stays within the filter (member, text and status)."""
    castles = await make_jobs(bot, world, clock, 10, world.alice.id, "castle")
    await make_jobs(bot, world, clock, 5, world.alice.id, "lake")
    await make_jobs(bot, world, clock, 5, world.bob.id, "castle")
    first = await call(fake, world.channel, world.admin, "history list", member=world.alice,
                       text="castle", status="succeeded")
    shown = job_ids(first)  # the message object follows later edits
    second = await press(fake, first, "Next", world.admin)
    assert shown + job_ids(second) == castles[::-1]
    assert second.buttons()[1].disabled


async def test_entries_link_the_result_and_never_ping(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """An entry shows time, status, seed and a link to the result; prompt mentions stay inert."""
    prompt = "@everyone look <@&123456789012345678> **bold**"
    ix = await fake.invoke(world.channel, world.alice, "imagine", prompt=prompt, count=1, seed=7)
    result = await ix.wait_original(has_image, timeout=TIMEOUT)

    page = await call(fake, world.channel, world.alice, "history list")
    text = page.text()
    job = (await bot.services.history.list(world.guild.id)).items[0]
    assert f"<t:{int(job.created_at.timestamp())}:f>" in text
    assert "**succeeded**" in text and "seed 7" in text
    link = f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{result.id}"
    assert f"[result]({link})" in text
    assert "\\*\\*bold\\*\\*" in text and "@\u200beveryone" in text
    assert not page.pinged_everyone and page.pinged_role_ids == set()
    assert page.pinged_user_ids == set()
    assert fake.violations == []


async def test_paging_buttons_work_after_a_restart(
    fake: FakeDiscord, world: World, settings: Settings, clock: FakeClock
) -> None:
    """A new bot process answers the Next button of a page shown by the previous one."""
    async with running(settings, fake, service_clock=clock) as bot:
        await fake.wait_for_commands(list(ADMIN_COMMANDS), guild=world.guild, timeout=TIMEOUT)
        ids = await make_jobs(bot, world, clock, 10, world.alice.id, "castle")
        first = await call(fake, world.channel, world.alice, "history list", text="castle")
    await fake.wait_identify_window()  # a restart within 5 s is refused by Discord
    async with running(settings, fake, service_clock=clock):
        second = await press(fake, first, "Next", world.alice)
    assert job_ids(second) == ids[::-1][8:]
    assert fake.violations == []


async def test_export_is_a_csv_of_the_servers_history(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """/history export attaches the server's jobs as CSV (filters apply), newest first."""
    guild, channel = world.guild.id, world.channel.id
    first = await add_job(bot, guild, channel, world.alice.id, '=cmd() "quoted", comma')
    clock.advance(minutes=1)
    second = await add_job(bot, guild, channel, world.bob.id, "a lake\nat night",
                           status=JobStatus.FAILED, seed=5)

    message = await call(fake, world.channel, world.admin, "history export")
    assert message.ephemeral and "2 job(s)" in message.content
    attachment = message.attachments[0]
    assert attachment.filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(attachment.data.decode("utf-8-sig"))))
    assert [row["job_id"] for row in rows] == [second, first]
    assert rows[0]["user_id"] == str(world.bob.id) and rows[0]["status"] == "failed"
    assert rows[0]["prompt"] == "a lake\nat night" and rows[0]["seed"] == "5"
    assert rows[1]["prompt"] == "'=cmd() \"quoted\", comma"  # no formula injection
    assert rows[1]["seeds"] == "1000 1001 1002 1003" and rows[1]["count"] == "4"

    only_alice = await call(fake, world.channel, world.admin, "history export",
                            member=world.alice)
    rows = list(csv.DictReader(io.StringIO(only_alice.attachments[0].data.decode("utf-8-sig"))))
    assert [row["job_id"] for row in rows] == [first]
    assert fake.violations == []


async def test_page_buttons_recheck_admin_rights(
    bot: ImagineBot, fake: FakeDiscord, world: World, clock: FakeClock
) -> None:
    """An admin who lost the permission cannot page further through the server's history."""
    await make_jobs(bot, world, clock, 10, world.alice.id, "castle")
    first = await call(fake, world.channel, world.admin, "history list")
    assert "Server history" in first.text()
    shown = job_ids(first)
    fake.remove_member_role(world.admin, world.admin_role)  # the click carries permissions
    click = await fake.click(first, first.buttons()[1].custom_id, world.admin)
    await click.wait_response(timeout=5)
    assert click.ephemeral and "Only server admins" in click.original.content
    assert job_ids(fake.get_message(first.id)) == shown
    assert fake.violations == []
