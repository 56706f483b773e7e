"""The on-disk image store behind the U/V buttons."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from bot.core.image_store import ImageStore, withheld_tile
from bot.core.threads import Threads

JOB = "0123456789abcdef0123456789abcdef"


async def test_save_and_load_round_trip(tmp_path: Path, threads: Threads) -> None:
    """Images come back pixel-identical from `<root>/<job>/<i>.png`."""
    store = ImageStore(tmp_path, threads)
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    await store.save(JOB, [(2, image)])
    assert (tmp_path / JOB / "2.png").is_file()
    loaded = await store.load(JOB, 2)
    assert loaded is not None and loaded.tobytes() == image.tobytes()
    assert await store.read_bytes(JOB, 2) == (tmp_path / JOB / "2.png").read_bytes()
    assert not list((tmp_path / JOB).glob("*.part"))


async def test_missing_images_read_as_none(tmp_path: Path, threads: Threads) -> None:
    """A job or image that was never stored (or was deleted) reads as None."""
    store = ImageStore(tmp_path, threads)
    assert await store.load(JOB, 1) is None
    assert await store.read_bytes(JOB, 1) is None
    await store.save(JOB, [(1, Image.new("RGB", (4, 4)))])
    await store.delete(JOB)
    assert await store.load(JOB, 1) is None


@pytest.mark.parametrize("job_id", ["../etc", "ABCDEF" * 6, "0" * 31, ""])
def test_only_job_ids_make_paths(tmp_path: Path, threads: Threads, job_id: str) -> None:
    """Anything but a uuid hex is refused, so no path can leave the store."""
    with pytest.raises(ValueError):
        ImageStore(tmp_path, threads).path(job_id, 1)


def test_withheld_tile_keeps_the_size() -> None:
    """The placeholder for a withheld image has the image's size."""
    assert withheld_tile((64, 48)).size == (64, 48)


async def test_stored_pngs_keep_the_generation_parameters(
    tmp_path: Path, threads: Threads
) -> None:
    """The file on disk holds the `parameters` text chunk, and loading it back keeps it."""
    store = ImageStore(tmp_path, threads)
    job_id = "ab" * 16
    image = Image.new("RGB", (8, 8))
    image.info["parameters"] = "a cat\nSteps: 3, Sampler: DDIM, CFG scale: 7, Seed: 1"
    [path] = await store.save(job_id, [(1, image)])
    with Image.open(path) as on_disk:
        assert on_disk.info["parameters"] == image.info["parameters"]
    loaded = await store.load(job_id, 1)
    assert loaded is not None and loaded.info["parameters"] == image.info["parameters"]


async def test_prune_by_age_then_by_size_oldest_first(tmp_path: Path, threads: Threads) -> None:
    """Folders older than the age limit go; then the oldest until under the size cap; usage
    counts what is left. Non-job folders are left alone."""
    import os

    store = ImageStore(tmp_path, threads)
    ids = [f"{i:032x}" for i in range(1, 5)]
    for age_days, job_id in zip((10, 3, 2, 1), ids, strict=True):
        [path] = await store.save(job_id, [(1, Image.new("RGB", (64, 64)))])
        stamp = 1_000_000_000 - age_days * 86400
        os.utime(path, (stamp, stamp))
    (tmp_path / "not-a-job").mkdir()
    size = (await store.usage()).bytes // 4

    report = await store.prune(1_000_000_000, 5 * 86400, None)
    assert report.removed_jobs == 1 and not (tmp_path / ids[0]).exists()
    report = await store.prune(1_000_000_000, None, 2 * size)
    assert report.removed_jobs == 1 and not (tmp_path / ids[1]).exists()
    assert report.left.jobs == 2 and report.left.bytes == (await store.usage()).bytes
    assert (tmp_path / ids[2]).exists() and (tmp_path / "not-a-job").exists()


async def test_retention_task_runs_and_stops(tmp_path: Path, threads: Threads) -> None:
    """start_retention prunes at once, registers its cancel, and does nothing when no limit
    is configured."""
    import asyncio
    from types import SimpleNamespace

    from bot.core.retention import RetentionPolicy, start_retention

    store = ImageStore(tmp_path, threads)
    await store.save("cd" * 16, [(1, Image.new("RGB", (8, 8)))])
    hooks: list[object] = []
    off = SimpleNamespace(retention_days=None, max_size_mb=None, cleanup_interval_minutes=1)
    assert start_retention(store, off, hooks.append) is None and hooks == []
    on = SimpleNamespace(retention_days=None, max_size_mb=1e-9, cleanup_interval_minutes=1)
    task = start_retention(store, on, hooks.append)
    assert task is not None and hooks == [task.cancel]
    for _ in range(100):
        if (await store.usage()).jobs == 0:
            break
        await asyncio.sleep(0.02)
    assert (await store.usage()).jobs == 0
    task.cancel()
    policy = RetentionPolicy.from_settings(
        SimpleNamespace(retention_days=30, max_size_mb=2048, cleanup_interval_minutes=5)
    )
    assert policy.describe() == "30 days, at most 2.0 GB" and policy.interval_seconds == 300
