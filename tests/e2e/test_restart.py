"""Jobs across shutdowns, restarts and crashes, with the real `imagine run` in a subprocess.

- SIGTERM while a job runs: new requests are refused ("restarting", nothing charged), the
  running job finishes and is delivered and charged once, a waiting job stays queued and its
  message says so; after the restart it runs, in its old message, charged once.
- kill -9 while jobs run and wait: after the restart every job reaches a final state and no
  message still shows progress or a live Cancel button.

The running job is made to last by its step count; to be sure the signal lands while it runs
on any machine, the process is frozen (SIGSTOP) as soon as the job is recorded running, gets
its signal, and is resumed (SIGCONT): the job still has most of its steps to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from tests.e2e.conftest import TIMEOUT, SettingsFactory, World, button_ids, config_toml, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.interactions import Interaction
from tests.fakediscord.models import Message

# These tests read the bot's SQLite file directly (sqlite3), from outside the bot process.
pytestmark = pytest.mark.sqlite_only

REPO = Path(__file__).resolve().parents[2]
#: Steps of the job that is running when the signal comes (about 0.5 s each on a loaded CPU).
LONG_STEPS = 30


class BotProcess:
    """`python -m bot.cli run --config ...` with the fake's token; its log is kept."""

    def __init__(self, settings: Settings, config: Path, fake: FakeDiscord) -> None:
        config.write_text(config_toml(settings))
        self.config = config
        self.fake = fake
        self.log: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        previous = self.fake.gateway.current
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
        env["DISCORD_TOKEN"] = self.fake.token
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", "--config", str(self.config),
            cwd=REPO, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

        def connected() -> bool:
            session = self.fake.gateway.current
            return (
                session is not None and session is not previous
                and session.ready and session.connected
            )

        await self.fake.wait_until(connected, timeout=TIMEOUT, what="the bot process to connect")

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    async def wait_for_log(self, text: str) -> None:
        await self.fake.wait_until(
            lambda: any(text in line for line in self.log), timeout=TIMEOUT, what=repr(text)
        )

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self) -> int:
        assert self.process is not None and self._reader is not None
        code = await asyncio.wait_for(self.process.wait(), TIMEOUT * 2)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def problems(self) -> list[str]:
        """Logged errors and tracebacks (a clean shutdown or restart has none)."""
        return [line for line in self.log if "ERROR" in line or "Traceback" in line]

    def output(self) -> str:
        return "\n".join(self.log[-60:])


def _rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return conn.execute(sql, args).fetchall()


def jobs_of(db: Path, user_id: int) -> list[dict[str, Any]]:
    rows = _rows(
        db,
        "SELECT id, status, seeds, finished_at, delivered, message_id FROM jobs "
        "WHERE user_id = ? "
        "ORDER BY created_at",
        user_id,
    )
    return [
        {
            "id": id_,
            "status": status,
            "seeds": json.loads(seeds) if seeds else None,
            "finished_at": finished,
            "delivered": delivered,
            "message_id": message_id,
        }
        for id_, status, seeds, finished, delivered, message_id in rows
    ]


def ledger(db: Path, job_id: str) -> list[tuple[str, int]]:
    return [
        (kind, n)
        for kind, n in _rows(
            db, "SELECT kind, n FROM usage_ledger WHERE job_id = ? ORDER BY id", job_id
        )
    ]


async def wait_for_status(fake: FakeDiscord, db: Path, user_id: int, status: str) -> None:
    def reached() -> bool:
        try:
            return any(job["status"] == status for job in jobs_of(db, user_id))
        except sqlite3.OperationalError:  # not migrated yet, or locked for a moment
            return False

    await fake.wait_until(reached, timeout=TIMEOUT, what=f"a job of {user_id} {status}")


async def start_with_a_running_job(
    bot: BotProcess, fake: FakeDiscord, world: World, db: Path, prompt: str
) -> Interaction:
    """Start the bot process and have alice's long job running in it."""
    await bot.start()
    await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
    running = await fake.invoke(
        world.channel, world.alice, "imagine", prompt=prompt, steps=LONG_STEPS, count=2
    )
    await running.wait_response(timeout=5)
    await wait_for_status(fake, db, world.alice.id, "running")
    return running


async def signal_while_running(bot: BotProcess, sig: int) -> dt.datetime:
    """Freeze the process, send `sig`, resume it; returns when the signal was sent."""
    bot.signal(signal.SIGSTOP)
    sent = dt.datetime.now(dt.UTC)
    bot.signal(sig)
    bot.signal(signal.SIGCONT)
    return sent


def shows_progress(message: Message) -> bool:
    text = message.content
    stale = "Generating" in text or "Waiting to start" in text
    return stale or any(custom_id.startswith("imagine:c:") for custom_id in button_ids(message))


@pytest.fixture
def restart_settings(make_settings: SettingsFactory) -> Settings:
    # The running job makes 2 images; a batch of at most 2 keeps a later job waiting instead of
    # joining the step batch between two steps, so "queued at shutdown" is a real state here.
    return make_settings(
        jobs={"shutdown_grace": TIMEOUT * 2}, generation={"max_batch_images": 2}
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigterm_delivers_the_running_job_and_keeps_the_queue_for_the_restart(
    fake: FakeDiscord, world: World, restart_settings: Settings, tmp_path: Path
) -> None:
    db = Path(restart_settings.database.url.split("///", 1)[1])
    first = BotProcess(restart_settings, tmp_path / "config.toml", fake)
    second = BotProcess(restart_settings, tmp_path / "config.toml", fake)
    try:
        running = await start_with_a_running_job(first, fake, world, db, "a bell")
        waiting = await fake.invoke(world.channel, world.bob, "imagine", prompt="a drum", count=1)
        await waiting.wait_response(timeout=5)
        assert "Waiting to start" in waiting.original.content

        signalled = await signal_while_running(first, signal.SIGTERM)
        await first.wait_for_log("shutting down")
        late = await fake.invoke(world.channel, world.admin, "imagine", prompt="a horn")
        await late.wait_response(timeout=5)
        assert await first.wait() == 0, first.output()

        # Refused while shutting down, privately, with nothing recorded or reserved.
        assert late.ephemeral and "restarting" in late.original.content
        assert jobs_of(db, world.admin.id) == []
        # The running job finished during the shutdown, was posted and charged once.
        [done] = jobs_of(db, world.alice.id)
        assert done["status"] == "succeeded" and done["delivered"] == 1
        assert dt.datetime.fromisoformat(done["finished_at"]).replace(tzinfo=dt.UTC) > signalled
        assert has_image(fake.get_message(running.original.id)), first.output()
        assert ledger(db, done["id"]) == [("reserve", 2), ("charge", 2)]
        # The waiting job is still queued and reserved, and its member knows.
        [kept] = jobs_of(db, world.bob.id)
        assert kept["status"] == "queued" and ledger(db, kept["id"]) == [("reserve", 1)]
        assert "keeps its place" in fake.get_message(waiting.original.id).content

        await second.start()
        result = await waiting.wait_original(has_image, timeout=TIMEOUT * 2)
        assert "Waiting" not in result.content and not shows_progress(result)
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0, second.output()
    finally:
        await first.kill()
        await second.kill()
    assert first.problems() == [] and second.problems() == []
    [kept] = jobs_of(db, world.bob.id)
    assert kept["status"] == "succeeded" and kept["delivered"] == 1
    assert ledger(db, kept["id"]) == [("reserve", 1), ("charge", 1)]
    assert ledger(db, done["id"]) == [("reserve", 2), ("charge", 2)]  # not touched again
    assert len(fake.get_message(running.original.id).attachments) == 1
    assert fake.violations == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("later", [False, True], ids=["restart-at-once", "restart-20-min-later"])
async def test_after_kill_9_every_job_ends_and_no_message_shows_progress(
    fake: FakeDiscord,
    world: World,
    restart_settings: Settings,
    make_settings: SettingsFactory,
    tmp_path: Path,
    later: bool,
) -> None:
    """At once: the running job runs again from its seeds and every result is edited into its
    own message. 20 minutes later (interaction tokens dead, `rerun_max_age` passed): the
    running job is failed and refunded, the waiting ones run, and everything is said by new
    channel messages, the old ones edited so that none shows progress or a Cancel button."""
    db = Path(restart_settings.database.url.split("///", 1)[1])
    first = BotProcess(restart_settings, tmp_path / "config.toml", fake)
    second_settings = make_settings(jobs={"shutdown_grace": TIMEOUT * 2, "rerun_max_age": 600})
    second = BotProcess(second_settings, tmp_path / "config2.toml", fake)
    try:
        running = await start_with_a_running_job(first, fake, world, db, "a lamp")
        waiting = [
            await fake.invoke(world.channel, world.bob, "imagine", prompt=f"a cup {i}", count=1)
            for i in range(2)
        ]
        for ix in waiting:
            await ix.wait_response(timeout=5)

        def shown() -> bool:  # the ids of the answers are stored just after they were sent
            jobs = jobs_of(db, world.alice.id) + jobs_of(db, world.bob.id)
            return all(job["message_id"] for job in jobs)

        await fake.wait_until(shown, timeout=TIMEOUT, what="the message ids stored")
        [stored] = jobs_of(db, world.alice.id)
        await signal_while_running(first, signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        assert shows_progress(fake.get_message(running.original.id))
        if later:
            fake.advance_time(20 * 60)
            _backdate_jobs(db, minutes=20)

        await second.start()

        def all_final() -> bool:
            jobs = jobs_of(db, world.alice.id) + jobs_of(db, world.bob.id)
            return all(job["status"] in FINAL and job["delivered"] for job in jobs)

        await fake.wait_until(all_final, timeout=TIMEOUT * 2, what="every job told")
        second.signal(signal.SIGTERM)
        assert await second.wait() == 0, second.output()
    finally:
        await first.kill()
        await second.kill()
    assert second.problems() == []
    [alice_job] = jobs_of(db, world.alice.id)
    if later:
        assert alice_job["status"] == "failed"
        assert ledger(db, alice_job["id"]) == [("reserve", 2), ("refund", 2)]
        told = [m for m in fake.messages(world.channel) if "restarted" in m.content]
        assert told and world.alice.mention in told[0].content
    else:
        assert alice_job["status"] == "succeeded"
        assert alice_job["seeds"] == stored["seeds"]  # run again from its seeds
        assert ledger(db, alice_job["id"]) == [("reserve", 2), ("charge", 2)]
        for ix in (running, *waiting):
            assert has_image(fake.get_message(ix.original.id))
    for job in jobs_of(db, world.bob.id):
        assert job["status"] == "succeeded"
        assert ledger(db, job["id"]) == [("reserve", 1), ("charge", 1)]
    stale = [m for m in fake.messages(world.channel) if shows_progress(m)]
    assert stale == []
    assert fake.violations == []


FINAL = ("succeeded", "failed", "cancelled", "blocked")


def _backdate_jobs(db: Path, minutes: int) -> None:
    """Move the stored jobs (and their interactions) into the past, as if the bot had been
    down that long (the bot's clock is the real one)."""
    shift = dt.timedelta(minutes=minutes)
    columns = ("created_at", "started_at", "interaction_created_at")
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute(f"SELECT id, {', '.join(columns)} FROM jobs").fetchall()
        for job_id, *values in rows:
            moved = [
                (dt.datetime.fromisoformat(v) - shift).strftime(_SQLITE_TIME) if v else None
                for v in values
            ]
            conn.execute(
                f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                (*moved, job_id),
            )
        conn.commit()


#: How SQLAlchemy stores a DATETIME in SQLite.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
