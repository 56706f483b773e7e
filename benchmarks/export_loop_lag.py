"""Event-loop lag while `/history export` builds a 50,000-row CSV.

A ticker on the event loop sleeps 10 ms at a time and records how late each wake-up is (that
lateness is what Discord's heartbeat and every other member would wait). The export runs twice
over the same rows, in one run:

1. the project's path (`bot.cogs.admin.history.export_history`): Core rows fetched in batches,
   each batch written into the CSV in the thread helper, the file gzipped there too;
2. the baseline, the shape of the bot before: every row gathered on the event loop, then the
   CSV written and gzipped there in one go (from Core rows; the old ORM objects were slower).

Goal: p99 lag under 100 ms for the project's path. Prints p50/p99/max of the lag and the export
time of each; `--json PATH` also writes them. The database is a temporary SQLite file created
through the real migrations.

    python benchmarks/export_loop_lag.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bot.cogs.admin.history import export_history
from bot.core.threads import Threads
from bot.db.models import Guild, JobKind, JobStatus, NsfwPolicy
from bot.db.session import open_database, upgrade
from bot.presentation.history_format import HistoryQuery
from bot.services.history import JOBS, HistoryService, render_csv

GUILD = 1
TICK = 0.010
#: Discord's attachment limit for a server without boosts: bigger exports are gzipped.
UPLOAD_LIMIT = 10 * 1024 * 1024
PROMPT = (
    "a lighthouse on a cliff at dusk, storm clouds, volumetric light, oil painting, "
    "highly detailed, trending — «édition spéciale» #{i}"
)


async def fill(history_rows: int, sessions: Any) -> None:
    """`history_rows` succeeded jobs of one guild, inserted in bulk."""
    now = datetime.now(UTC)
    async with sessions() as session:
        session.add(
            Guild(id=GUILD, enabled=True, nsfw_policy=NsfwPolicy.BLOCK, created_at=now,
                  updated_at=now)
        )  # fmt: skip
        await session.commit()
        for start in range(0, history_rows, 5000):
            rows = [_row(i, now) for i in range(start, min(start + 5000, history_rows))]
            await session.execute(insert(JOBS), rows)
        await session.commit()


def _row(i: int, now: datetime) -> dict[str, Any]:
    created = now - timedelta(seconds=i)
    return {
        "id": f"{i:032x}",
        "guild_id": GUILD,
        "channel_id": 10 + i % 7,
        "user_id": 1000 + i % 97,
        "prompt": PROMPT.format(i=i),
        "negative_prompt": "blurry, text, watermark" if i % 3 else "",
        "steps": 25,
        "guidance": 7.5,
        "width": 512,
        "height": 512,
        "count": 4,
        "scheduler": "dpmpp_2m_karras",
        "seed": 1_000_000 + 4 * i,
        "seeds": [1_000_000 + 4 * i + k for k in range(4)],
        "strength": None,
        "model_id": "CompVis/stable-diffusion-v1-4",
        "kind": JobKind.TXT2IMG,
        "status": JobStatus.SUCCEEDED,
        "created_at": created,
        "started_at": created,
        "finished_at": created + timedelta(seconds=2),
        "gpu_seconds": 1.02,
        "result_channel_id": 10 + i % 7,
        "result_message_id": 2**60 + i,
        "nsfw": [False, False, i % 50 == 0, False],
    }


async def measure(export: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """Run `export` with a 10 ms ticker beside it; lag figures in milliseconds."""
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(max(0.0, time.perf_counter() - before - TICK))

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # the ticker is running before the export starts
    started = time.perf_counter()
    result = await export()
    seconds = time.perf_counter() - started
    done.set()
    await ticking
    lags.sort()
    return {
        "export_s": round(seconds, 3),
        "ticks": len(lags),
        "p50_ms": round(1000 * statistics.median(lags), 2),
        "p99_ms": round(1000 * lags[min(len(lags) - 1, int(0.99 * len(lags)))], 2),
        "max_ms": round(1000 * lags[-1], 2),
        "bytes": len(result.data),
        "rows": result.rows,
    }


async def run(history_rows: int) -> dict[str, Any]:
    """Both exports over one temporary database of `history_rows` jobs."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        await upgrade(url)
        engine, sessions = await open_database(url)
        threads = Threads()
        try:
            await fill(history_rows, sessions)
            history = HistoryService(sessions)
            query = HistoryQuery()

            async def helper() -> Any:
                return await export_history(history, threads, GUILD, query, UPLOAD_LIMIT)

            async def on_loop() -> Any:
                batches = history.export_batches(GUILD, query.filters())
                rows = [row async for batch in batches for row in batch]
                return render_csv(rows, UPLOAD_LIMIT)

            results: dict[str, Any] = {
                "rows": history_rows,
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
            results["helper"] = await measure(helper)
            results["on_loop"] = await measure(on_loop)
        finally:
            threads.close()
            await engine.dispose()
    return results


def report(results: dict[str, Any], json_path: Path | None) -> None:
    history_rows = results["rows"]
    print(
        f"{history_rows} history rows, 10 ms ticker; lag of each tick in ms "
        f"({results['cpus']} CPUs, load average {results['load_average_1min']} at start)"
    )
    print(f"{'path':<36} {'p50':>8} {'p99':>8} {'max':>8} {'export s':>9} {'MiB':>6}")
    for name, label in (
        ("helper", "thread helper (the bot)"),
        ("on_loop", "all on the loop, one go (baseline)"),
    ):
        r = results[name]
        print(
            f"{label:<36} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
            f"{r['export_s']:>9.2f} {r['bytes'] / 2**20:>6.2f}"
        )
    goal = "met" if results["helper"]["p99_ms"] < 100 else "NOT met"
    print(f"goal p99 < 100 ms with the thread helper: {goal}")
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="history rows (50000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    report(asyncio.run(run(args.rows)), args.json)
