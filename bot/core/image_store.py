"""Every delivered image of every job, on disk under `<images_dir>/<job_id>/<i>.png`.

Discord strips PNG metadata and its CDN links expire, so the U/V buttons (which may be pressed
days later, after restarts) read the single images from here; the parameters live in the
database. All disk work runs in the bot's thread helper (`bot.core.threads.Threads`), so the
event loop never waits on it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from bot.core.threads import Threads

__all__ = ["ImageStore", "withheld_tile"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class ImageStore:
    """Single images by (job id, 1-based index); a missing file reads as None."""

    def __init__(self, root: Path, threads: Threads) -> None:
        self.root = Path(root)
        self._threads = threads

    def path(self, job_id: str, index: int) -> Path:
        """Where image `index` (1-based) of `job_id` lives; job ids are checked (no traversal)."""
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        if index < 1:
            raise ValueError(f"image indexes start at 1, got {index}")
        return self.root / job_id / f"{index}.png"

    async def save(self, job_id: str, images: Sequence[tuple[int, Image.Image]]) -> list[Path]:
        """Write `(index, image)` pairs as PNG; returns the paths written."""
        return await self._threads.run(self._save_sync, job_id, list(images))

    async def load(self, job_id: str, index: int) -> Image.Image | None:
        """The stored image, fully decoded, or None when it was never stored or is gone."""
        return await self._threads.run(self._load_sync, self.path(job_id, index))

    async def exists(self, job_id: str, index: int) -> bool:
        """True if image `index` of the job is on disk."""
        return await self._threads.run(self.path(job_id, index).is_file)

    async def read_bytes(self, job_id: str, index: int) -> bytes | None:
        """The stored PNG file as bytes, or None."""
        return await self._threads.run(_read_or_none, self.path(job_id, index))

    async def delete(self, job_id: str) -> None:
        """Remove every stored image of a job (a no-op when there is none)."""
        folder = self.path(job_id, 1).parent
        await self._threads.run(shutil.rmtree, folder, True)

    def _save_sync(self, job_id: str, images: list[tuple[int, Image.Image]]) -> list[Path]:
        written = []
        for index, image in images:
            target = self.path(job_id, index)
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            # Level 1: a fifth of the default's time for a slightly bigger file.
            image.save(buffer, format="PNG", compress_level=1)
            # Write then rename, so a crash never leaves half a PNG that U would serve.
            partial = target.with_suffix(".png.part")
            partial.write_bytes(buffer.getvalue())
            os.replace(partial, target)
            written.append(target)
        return written

    @staticmethod
    def _load_sync(path: Path) -> Image.Image | None:
        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except FileNotFoundError:
            return None


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def withheld_tile(size: tuple[int, int]) -> Image.Image:
    """A plain grey tile standing in for an image the NSFW policy withheld, so the grid keeps
    its layout and U/V numbers still match positions."""
    from PIL import ImageDraw

    tile = Image.new("RGB", size, (54, 57, 63))
    draw = ImageDraw.Draw(tile)
    width, height = size
    draw.line((0, 0, width, height), fill=(90, 94, 102), width=max(1, width // 64))
    draw.line((0, height, width, 0), fill=(90, 94, 102), width=max(1, width // 64))
    return tile
