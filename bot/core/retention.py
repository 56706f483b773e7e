"""Storage retention: the periodic clean-up of `storage.images_dir`.

Single images are kept so U/V buttons work days later (about 600 KB per image for SD v1.x at
512x512), so without a limit the folder grows forever. `storage.retention_days` deletes jobs'
images older than that; `storage.max_size_mb` deletes the oldest jobs' images past that size.
Both may be set. A purged job keeps working: its buttons re-make images from the stored seed.

`start_retention` is the bot's one call: it starts an asyncio task (clean-up at start, then
every `cleanup_interval_minutes`), and hands its cancel to the bot's shutdown hooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.core.image_store import ImageStore

__all__ = ["RetentionPolicy", "format_bytes", "retention_loop", "start_retention"]

log = logging.getLogger(__name__)


class _StorageSettings(Protocol):
    retention_days: float | None
    max_size_mb: float | None
    cleanup_interval_minutes: float


@dataclass(frozen=True)
class RetentionPolicy:
    """How long and how much to keep; None: no limit of that kind. Seconds and bytes."""

    max_age_seconds: float | None = None
    max_bytes: int | None = None
    interval_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, storage: _StorageSettings) -> RetentionPolicy:
        days, megabytes = storage.retention_days, storage.max_size_mb
        return cls(
            max_age_seconds=days * 86400 if days is not None else None,
            max_bytes=int(megabytes * 1024 * 1024) if megabytes is not None else None,
            interval_seconds=storage.cleanup_interval_minutes * 60,
        )

    @property
    def enabled(self) -> bool:
        return self.max_age_seconds is not None or self.max_bytes is not None

    def describe(self) -> str:
        """"30 days, 2.0 GB" / "kept forever", for /info."""
        parts = []
        if self.max_age_seconds is not None:
            parts.append(f"{self.max_age_seconds / 86400:g} days")
        if self.max_bytes is not None:
            parts.append(f"at most {format_bytes(self.max_bytes)}")
        return ", ".join(parts) or "kept forever"


async def retention_loop(
    store: ImageStore, policy: RetentionPolicy, clock: Callable[[], float] = time.time
) -> None:
    """Prune now, then every `policy.interval_seconds`, until cancelled. A failed clean-up is
    logged and retried at the next interval."""
    while True:
        try:
            report = await store.prune(clock(), policy.max_age_seconds, policy.max_bytes)
        except OSError:
            log.exception("image clean-up failed", extra={"images_dir": str(store.root)})
        else:
            if report.removed_jobs:
                log.info(
                    "images purged",
                    extra={
                        "jobs": report.removed_jobs,
                        "freed_bytes": report.freed_bytes,
                        "left_bytes": report.left.bytes,
                    },
                )
        await asyncio.sleep(policy.interval_seconds)


def start_retention(
    store: ImageStore,
    storage: _StorageSettings,
    on_shutdown: Callable[[Callable[[], Any]], None],
) -> asyncio.Task[None] | None:
    """Start the clean-up task when a limit is configured (None otherwise); `on_shutdown`
    receives the task's cancel (the bot's `add_shutdown_hook`)."""
    policy = RetentionPolicy.from_settings(storage)
    if not policy.enabled:
        return None
    task = asyncio.create_task(retention_loop(store, policy), name="imagine-retention")
    on_shutdown(task.cancel)
    log.info("image retention on", extra={"policy": policy.describe(), "dir": str(store.root)})
    return task


def format_bytes(count: float) -> str:
    """1536 -> "1.5 KB" (binary units, as disks are usually shown)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"  # pragma: no cover - unreachable
