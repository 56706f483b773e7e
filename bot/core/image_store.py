"""Every delivered image of every job, on disk under `<images_dir>/<job_id>/<i>.png`.

Discord's CDN links expire, so the U/V buttons (which may be pressed days later, after
restarts) read the single images from here; the parameters live in the database, and each PNG
also carries them as an AUTOMATIC1111 `parameters` text chunk (`generation.png_info`). Storage
retention (`bot.core.retention`) prunes old job folders; buttons then re-make the images from
their seeds. All disk work runs in the bot's thread helper (`bot.core.threads.Threads`), so the
event loop never waits on it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.core.threads import Threads
from generation.png_info import png_info

__all__ = ["ImageStore", "PruneReport", "StoreUsage", "withheld_tile"]

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class StoreUsage:
    """Disk used by the stored images: `bytes` in `jobs` job folders."""

    bytes: int
    jobs: int


@dataclass(frozen=True)
class PruneReport:
    """What one clean-up removed: job folders and bytes freed, and the usage left."""

    removed_jobs: int
    freed_bytes: int
    left: StoreUsage


@dataclass(frozen=True)
class _JobFolder:
    path: Path
    bytes: int
    newest: float  # mtime of its newest file, seconds since the epoch


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

    async def usage(self) -> StoreUsage:
        """Bytes and job folders on disk now (walks the folder: run it now and then, not per
        request)."""
        folders = await self._threads.run(self._folders)
        return StoreUsage(sum(f.bytes for f in folders), len(folders))

    async def prune(
        self, now: float, max_age_seconds: float | None, max_bytes: int | None
    ) -> PruneReport:
        """Delete job folders last written more than `max_age_seconds` before `now` (epoch
        seconds), then the oldest others until at most `max_bytes` remain. None: no limit.

        Buttons on a purged job still work: the orchestrator re-makes missing images from
        their seeds (`JobOrchestrator.source_image`).
        """
        return await self._threads.run(self._prune_sync, now, max_age_seconds, max_bytes)

    def _prune_sync(
        self, now: float, max_age_seconds: float | None, max_bytes: int | None
    ) -> PruneReport:
        folders = sorted(self._folders(), key=lambda f: f.newest)
        total = sum(f.bytes for f in folders)
        removed = freed = 0
        for folder in folders:
            too_old = max_age_seconds is not None and now - folder.newest > max_age_seconds
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            shutil.rmtree(folder.path, ignore_errors=True)
            total -= folder.bytes
            freed += folder.bytes
            removed += 1
        return PruneReport(removed, freed, StoreUsage(total, len(folders) - removed))

    def _folders(self) -> list[_JobFolder]:
        folders = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not (_JOB_ID.match(entry.name) and entry.is_dir(follow_symlinks=False)):
                continue
            size, newest = 0, 0.0
            try:
                for file in os.scandir(entry.path):
                    stat = file.stat(follow_symlinks=False)
                    size += stat.st_size
                    newest = max(newest, stat.st_mtime)
            except FileNotFoundError:  # deleted meanwhile (by a "delete" button)
                continue
            folders.append(_JobFolder(Path(entry.path), size, newest or entry.stat().st_mtime))
        return folders

    def _save_sync(self, job_id: str, images: list[tuple[int, Image.Image]]) -> list[Path]:
        written = []
        for index, image in images:
            target = self.path(job_id, index)
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            # Level 1: a fifth of the default's time for a slightly bigger file; the image's
            # generation parameters go into the PNG's text chunk.
            image.save(buffer, format="PNG", compress_level=1, pnginfo=png_info(image))
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
