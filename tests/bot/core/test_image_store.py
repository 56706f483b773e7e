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
