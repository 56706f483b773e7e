"""The whole bot on a GPU: `/imagine` from several members, then V1 and U2, through the fake
Discord, with Stable Diffusion v1.5-sized random-weight components (the images are noise; the
timings and the code path are real: fp16 on CUDA, safety checker on, 512x512, 25 steps).

    python benchmarks/gpu_bot_e2e.py --out bot.json              # on a CUDA machine
    python benchmarks/gpu_bot_e2e.py --tiny --device cpu --size 128 --steps 3   # smoke run

Prints, per member, the seconds from the slash command to the first response and to the
finished grid, and what the fake Discord saw (violations of Discord's rules, edits, sizes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_throughput import build_sd15_random
from bot.app import ImagineBot
from bot.config import load_settings
from bot.lifecycle import open_resources
from tests.fakediscord import FakeDiscord, restore_discord_urls


async def _timed_imagine(fake: FakeDiscord, channel: Any, member: Any, prompt: str) -> dict:
    started = time.perf_counter()
    ix = await fake.invoke(channel, member, "imagine", prompt=prompt)
    await ix.wait_response(timeout=10)
    first = time.perf_counter() - started
    message = await ix.wait_original(lambda m: m.attachments, timeout=600)
    return {
        "first_response_s": round(first, 3),
        "grid_s": round(time.perf_counter() - started, 3),
        "edits": len(message.edits),
        "attachment": message.attachments[0].filename,
        "bytes": message.attachments[0].size,
        "size": Image.open(io.BytesIO(message.attachments[0].data)).size,
        "withheld_note": "withheld" in message.content.lower(),
        "message": message,
        "ix": ix,
    }


async def run(args: argparse.Namespace, folder: Path, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with restore_discord_urls():
        async with FakeDiscord() as fake:
            guild = fake.add_guild("GPU check")
            channel = guild.channels[0]
            members = [fake.add_member(guild, f"member{i}") for i in range(args.members)]
            settings = load_settings(
                None,
                discord={
                    "token": fake.token,
                    "api_base": fake.api_base,
                    "gateway_url": fake.gateway_url,
                    "dev_guild_id": guild.id,
                    "guild_ready_timeout": 0.1,
                },
                model={"id": str(folder), "device": args.device, "safety_checker": True},
                generation={"steps": args.steps, "width": args.size, "height": args.size},
                storage={"images_dir": str(work / "images")},
                database={"url": f"sqlite+aiosqlite:///{work / 'imagine.db'}"},
            )
            t0 = time.perf_counter()
            # Built as `imagine run` builds them: one exit stack, closed after the bot.
            stack = contextlib.AsyncExitStack()
            bot = ImagineBot(await open_resources(settings, stack))
            task = asyncio.create_task(bot.start(fake.token))
            await fake.wait_for_commands(["imagine"], guild=guild, timeout=600)
            await fake.wait_until_ready(timeout=60)
            report["start_s"] = round(time.perf_counter() - t0, 2)
            try:
                t0 = time.perf_counter()
                jobs = await asyncio.gather(
                    *(
                        _timed_imagine(fake, channel, m, f"dog sitting in autumn leaves {i}")
                        for i, m in enumerate(members)
                    )
                )
                report["burst_s"] = round(time.perf_counter() - t0, 2)
                report["burst_images_per_s"] = round(4 * len(members) / report["burst_s"], 2)
                first = jobs[0]
                buttons = {b.label: b.custom_id for b in first["message"].buttons() if b.label}
                for label in ("V1", "U2"):
                    t0 = time.perf_counter()
                    click = await fake.click(first["message"], buttons[label], members[0])
                    await click.wait_response(timeout=10)
                    done = await click.wait_original(lambda m: m.attachments, timeout=600)
                    report[label] = {
                        "s": round(time.perf_counter() - t0, 3),
                        "size": Image.open(io.BytesIO(done.attachments[0].data)).size,
                        "buttons": [b.label for b in done.buttons() if b.label],
                    }
                report["jobs"] = [
                    {k: v for k, v in job.items() if k not in ("message", "ix")} for job in jobs
                ]
                report["violations"] = [str(v) for v in fake.violations]
            finally:
                await bot.close()
                await task
                await stack.aclose()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="1/8-width components (smoke run)")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "sd15-random"
        build_sd15_random(folder, args.tiny, args.device)
        report = asyncio.run(run(args, folder, work))
    report["note"] = "SD1.5-sized random weights: images are noise; timings are real"
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if not report["violations"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
