"""`imagine run`: start-up against the fake, its failures, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.app import run, serve
from tests.e2e.conftest import (
    TIMEOUT,
    SettingsFactory,
    World,
    config_toml,
    has_image,
    running,
)
from tests.fakediscord import FakeDiscord
from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]


async def test_global_sync_without_dev_guild(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """Without `discord.dev_guild_id` the commands are synced globally."""
    settings = make_settings(discord={"dev_guild_id": None})
    async with running(settings, fake):
        await fake.wait_for_commands(["imagine", "info"], timeout=TIMEOUT)
    assert fake.violations == []


@pytest.mark.sqlite_only  # Discord's answer, not the database's
async def test_bad_token_is_one_clear_line_and_exit_code_1(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A token Discord refuses ends `run` with exit code 1 and a message naming the token."""
    settings = make_settings(discord={"token": "not-the-real-token"})
    assert await asyncio.to_thread(run, settings) == 1
    err = capsys.readouterr().err
    assert "refused the bot token" in err
    assert "not-the-real-token" not in err
    assert "Traceback" not in err


@pytest.mark.sqlite_only  # the model loader's answer, not the database's
async def test_missing_model_is_a_clear_start_up_failure(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown model stops start-up with exit code 1 and the loader's explanation."""
    settings = make_settings(model={"id": "builtin:no-such-model"})
    assert await asyncio.to_thread(run, settings) == 1
    err = capsys.readouterr().err
    assert "Unknown built-in model 'builtin:no-such-model'" in err
    assert err.count("builtin:no-such-model") == 1, err  # one message, no repeated prefixes


@pytest.mark.sqlite_only
async def test_unusable_database_is_a_clear_start_up_failure(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    """A database that cannot be opened stops start-up with exit code 1 and says where."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database folder should be")
    url = f"sqlite+aiosqlite:///{blocker}/imagine.db"
    settings = make_settings(database={"url": url})
    assert await asyncio.to_thread(run, settings) == 1
    err = capsys.readouterr().err
    assert "cannot write the database at" in err and "make its folder writable" in err
    assert "Traceback" not in err and "sqlalche.me" not in err


@pytest.mark.postgres_only
async def test_postgresql_database_that_cannot_fold_case_is_a_clear_start_up_failure(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer,
) -> None:
    """A PostgreSQL database with LC_CTYPE 'C' stops start-up with exit code 1 and the fix."""
    name = postgres_server.create_database(options="LC_CTYPE 'C' LC_COLLATE 'C'")
    try:
        settings = make_settings(database={"url": postgres_server.url(name)})
        assert await asyncio.to_thread(run, settings) == 1
    finally:
        postgres_server.drop_database(name)
    err = capsys.readouterr().err
    assert "cannot open the database at" in err and "Traceback" not in err
    assert "LC_CTYPE 'C'" in err and "LC_CTYPE 'C.UTF-8'" in err


@pytest.mark.sqlite_only  # the configuration's answer, not the database's
def test_missing_token_exits_with_code_2(
    make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No token configured anywhere: exit code 2 and a hint where to put it."""
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    settings = make_settings()
    settings.discord.token = None
    assert run(settings) == 2
    assert "DISCORD_TOKEN" in capsys.readouterr().err


async def test_sigint_stops_the_bot_cleanly(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory
) -> None:
    """SIGINT makes `serve` close the bot, the generator and the database, and return."""
    task = asyncio.create_task(serve(make_settings()))
    try:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        await fake.wait_until_ready(timeout=TIMEOUT)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(task, TIMEOUT)
    finally:
        task.cancel()
    assert task.done() and task.exception() is None
    assert not fake.session.connected
    assert fake.violations == []


async def test_imagine_run_serves_and_stops_cleanly_on_sigterm(
    fake: FakeDiscord, world: World, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """`imagine run --config` in a real process serves /imagine and exits 0 on SIGTERM."""
    settings = make_settings()
    config = tmp_path / "config.toml"
    config.write_text(config_toml(settings))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env["DISCORD_TOKEN"] = fake.token
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--config", str(config),
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake.wait_for_commands(["imagine"], guild=world.guild, timeout=TIMEOUT)
        await fake.wait_until_ready(timeout=TIMEOUT)
        ix = await fake.invoke(world.channel, world.alice, "imagine", prompt="a bell", count=1)
        await ix.wait_original(has_image, timeout=TIMEOUT)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-2000:]
    log = stderr.decode()
    assert fake.token not in log
    assert f"imagine: configuration from {config}" in log
    lines = [line for line in log.splitlines() if line.startswith("ts=")]
    # One structured line per event; the library chatter is gone.
    assert lines and len(lines) == len(log.splitlines()) - 1, log
    events = "\n".join(lines)
    for event in ("msg=starting", "msg=\"invite the bot\"", "msg=\"job settled\""):
        assert event in events, log
    assert "permissions=274877959168" in events and "scope=bot+applications.commands" in events
    # Start-up stages off a terminal: one structured line each, in order, nothing drawn.
    stages = [line for line in lines if " stage=" in line]
    assert [line.split(" stage=")[1].split(" seconds=")[0] for line in stages][:2] == [
        '"load components"',
        '"move to device"',
    ], log
    assert "model=builtin:tiny-random" in stages[0] and "device=cpu" in stages[1]
    assert "\x1b[" not in log
    assert str(settings.storage.images_dir) in events
    for noise in ("PyNaCl", "voice", "Loading pipeline"):
        assert noise not in log
    assert log.count("its images are noise") == 1  # the test model, said once
    assert fake.violations == []
