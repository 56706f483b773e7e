"""Sharded gateways: two `imagine run` processes with disjoint shard ranges, one PostgreSQL.

The fake Discord recommends 2 shards with max_concurrency 1 (both shards in one IDENTIFY
bucket) and refuses an IDENTIFY sooner than 5 s after the previous one, as Discord does.
Each process has its own images folder, so the files a job leaves behind show which
process answered it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import TIMEOUT, SettingsFactory, config_toml, has_image
from tests.fakediscord import FakeDiscord
from tests.fakediscord.gateway import IDENTIFY_INTERVAL

REPO = Path(__file__).resolve().parents[2]


async def start(config: Path, token: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env["DISCORD_TOKEN"] = token
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "--config", str(config),
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def stop(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, wait, return stderr (killing it if it does not stop in time)."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
    return stderr.decode(errors="replace")


def job_folders(images: Path) -> set[str]:
    return {p.name for p in images.iterdir()} if images.exists() else set()


@pytest.mark.postgres_only
async def test_two_processes_split_the_shards(
    make_settings: SettingsFactory, db_url: str, tmp_path: Path
) -> None:
    """Processes for shards [0] and [1] of 2, started together: their IDENTIFYs are 5 s apart
    (the advisory lock), and each guild's commands are answered by its shard's process only."""
    async with FakeDiscord(shards=2, max_concurrency=1) as fake:
        guilds = [fake.add_guild(f"Shard {i} Server", shard=(i, 2)) for i in (0, 1)]
        members = [fake.add_member(g, f"member{i}") for i, g in enumerate(guilds)]
        configs, images = [], []
        for shard in (0, 1):
            images.append(tmp_path / f"images-{shard}")
            settings = make_settings(
                discord={
                    "token": fake.token, "api_base": fake.api_base,
                    "gateway_url": fake.gateway_url, "dev_guild_id": None,
                    "shard_count": 2, "shard_ids": [shard],
                },
                storage={"images_dir": str(images[shard])},
                database={"url": db_url},
            )
            configs.append(tmp_path / f"shard-{shard}.toml")
            configs[shard].write_text(config_toml(settings))

        processes = await asyncio.gather(*(start(c, fake.token) for c in configs))
        stderr = ["", ""]
        try:
            await fake.wait_until_ready(timeout=TIMEOUT)
            await fake.wait_for_commands(["imagine"], timeout=TIMEOUT)

            identifies = fake.identifies
            assert [r.accepted for r in identifies] == [True, True], identifies
            assert sorted(r.shard_id for r in identifies) == [0, 1]
            assert identifies[1].at - identifies[0].at >= IDENTIFY_INTERVAL

            jobs = []
            for guild, member in zip(guilds, members, strict=True):
                ix = await fake.invoke(
                    guild.channels[0], member, "imagine", prompt=f"a lighthouse in {guild.name}",
                    count=1,
                )
                await ix.wait_original(has_image, timeout=TIMEOUT)
                jobs.append(ix)
            # Each job's images are in its shard's process folder, and only there.
            made = [job_folders(folder) for folder in images]
            assert len(made[0]) == len(made[1]) == 1 and not made[0] & made[1]

            # With shard 1's process stopped, shard 0's guild is still served.
            stderr[1] = await stop(processes[1])
            assert processes[1].returncode == 0, stderr[1][-2000:]
            again = await fake.invoke(
                guilds[0].channels[0], members[0], "imagine", prompt="a second one", count=1
            )
            await again.wait_original(has_image, timeout=TIMEOUT)
            assert len(job_folders(images[0])) == 2 and len(job_folders(images[1])) == 1
        finally:
            for i, process in enumerate(processes):
                if process.returncode is None:
                    stderr[i] = await stop(process)
        assert processes[0].returncode == 0, stderr[0][-2000:]
        assert fake.violations == [], fake.violations
