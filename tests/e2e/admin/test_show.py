"""`/show job:<id>` end to end: a public re-post with working buttons, for owner and admins."""

from __future__ import annotations

import io

from PIL import Image

from bot.app import ImagineBot
from bot.db.models import JobKind
from tests.e2e.admin.conftest import COLOURS, add_job, call, image_size, refused
from tests.e2e.conftest import TIMEOUT, World, button_ids, has_image
from tests.fakediscord import FakeDiscord


def pixel(data: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").getpixel(xy)  # type: ignore[return-value]


async def test_owner_shows_a_job_with_working_buttons(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """The owner's /show posts the grid publicly with U/V/reroll/delete; U2 posts image 2."""
    job = await add_job(bot, world.guild.id, world.channel.id, world.alice.id, "a red fox",
                        images=True)
    shown = await call(fake, world.channel, world.alice, "show", job=job)
    assert not shown.ephemeral and shown.attachments
    assert image_size(shown) == (128, 128)
    assert pixel(shown.attachments[0].data, (96, 32)) == COLOURS[1]  # image 2: top right
    assert "a red fox" in shown.content and "seeds 1000-1003" in shown.content
    expected = [f"imagine:u:{job}:{i}" for i in range(1, 5)]
    expected += [f"imagine:v:{job}:{i}" for i in range(1, 5)]
    assert button_ids(shown) == [*expected, f"imagine:r:{job}", f"imagine:d:{job}"]
    assert shown.pinged_user_ids == set()

    click = await fake.click(shown, f"imagine:u:{job}:2", world.alice)
    single = await click.wait_original(has_image, timeout=TIMEOUT)
    assert pixel(single.attachments[0].data, (10, 10)) == COLOURS[1]
    assert fake.violations == []


async def test_show_is_refused_to_other_members(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Another member is refused privately; an admin may show anyone's job; unknown ids fail."""
    job = await add_job(bot, world.guild.id, world.channel.id, world.alice.id, "a red fox",
                        images=True)
    other = await call(fake, world.channel, world.bob, "show", job=job)
    assert refused(other, "Only the member who made this job, or a server admin")
    assert not other.attachments
    unknown = await call(fake, world.channel, world.alice, "show", job="f" * 32)
    assert refused(unknown, "There is no job")
    admin = await call(fake, world.channel, world.admin, "show", job=job.upper())
    assert not admin.ephemeral and admin.attachments
    assert fake.violations == []


async def test_show_applies_the_current_nsfw_policy(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Flagged images follow the server's policy where they are shown: spoiler, withheld, or
    shown in an age-restricted channel."""
    job = await add_job(bot, world.guild.id, world.channel.id, world.alice.id, "a statue",
                        count=2, nsfw=[True, False], images=True)
    adults = fake.add_channel(world.guild, "adults", nsfw=True)

    await call(fake, world.channel, world.admin, "settings nsfw", policy="spoiler")
    spoiled = await call(fake, world.channel, world.alice, "show", job=job)
    assert spoiled.attachments[0].spoiler
    assert f"imagine:u:{job}:1" in button_ids(spoiled)

    await call(fake, world.channel, world.admin, "settings nsfw", policy="age_restricted")
    withheld = await call(fake, world.channel, world.alice, "show", job=job)
    assert not withheld.attachments[0].spoiler
    assert f"imagine:u:{job}:1" not in button_ids(withheld)
    assert f"imagine:u:{job}:2" in button_ids(withheld)
    assert "1 image was flagged" in withheld.content
    assert pixel(withheld.attachments[0].data, (10, 10)) != COLOURS[0]
    in_adults = await call(fake, adults, world.alice, "show", job=job)
    assert pixel(in_adults.attachments[0].data, (10, 10)) == COLOURS[0]
    assert f"imagine:u:{job}:1" in button_ids(in_adults)

    await call(fake, world.channel, world.admin, "settings nsfw", policy="block")
    blocked = await call(fake, adults, world.alice, "show", job=job)
    assert f"imagine:u:{job}:1" not in button_ids(blocked)
    assert fake.violations == []


async def test_banned_members_show_of_a_job_whose_files_are_gone_queues_nothing(
    bot: ImagineBot, fake: FakeDiscord, world: World
) -> None:
    """Re-making lost images goes through the job gate: a banned member's /show is refused
    privately before anything is queued, recorded or posted. Unbanned, the images are re-made
    free of charge, each recorded as a `remake` job."""
    job = await add_job(bot, world.guild.id, world.channel.id, world.alice.id, "a red fox")
    await call(fake, world.channel, world.admin, "ban", member=world.alice, reason="spam")
    submitted: list[object] = []
    real_submit = bot.generation.submit

    def spy(*args: object, **kwargs: object) -> object:
        submitted.append(args)
        return real_submit(*args, **kwargs)  # type: ignore[arg-type]

    bot.generation.submit = spy  # type: ignore[method-assign]
    answer = await call(fake, world.channel, world.alice, "show", job=job)
    assert refused(answer, "You are banned") and not answer.attachments
    assert submitted == []
    assert len((await bot.services.history.list(world.guild.id)).items) == 1
    assert not any(m.attachments for m in fake.messages(world.channel))

    await call(fake, world.channel, world.admin, "unban", member=world.alice)
    shown = await call(fake, world.channel, world.alice, "show", job=job)
    assert not shown.ephemeral and shown.attachments
    assert len(submitted) == 4
    jobs = (await bot.services.history.list(world.guild.id)).items
    remakes = [j for j in jobs if j.kind is JobKind.REMAKE]
    assert sorted(j.image_index for j in remakes) == [0, 1, 2, 3]
    assert all(j.parent_job_id == job and j.user_id == world.alice.id for j in remakes)
    status = await bot.services.quota.status(world.guild.id, world.alice.id, [])
    assert status.used == 0
    assert fake.violations == []
