"""`Threads`: the bot's one door into worker threads, for blocking work that must not hold the
event loop (Discord's heartbeat stalls when the loop is blocked, and every member waits).

What goes through it: encoding grids and single images (PNG of a 1024x1024 grid takes 70-250
ms), building and compressing history exports (about a second for 50,000 rows), and the image
store's file reads and writes. The GPU has its own thread inside the generation backend; nothing
else in the bot starts threads (no `asyncio.to_thread`, no executors elsewhere), so how many
threads the bot uses is decided here, once.

Built once where the bot's resources are built, passed to whoever needs it, closed last.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["THREAD_NAME", "Threads"]

P = ParamSpec("P")
T = TypeVar("T")

#: The worker threads' name prefix (a test checks the export runs on one of them).
THREAD_NAME = "imagine-io"


class Threads:
    """A small pool of worker threads; `run` awaits a blocking call on one of them.

    Two workers by default: encoding the grid of one job and saving another's files can
    overlap, while CPU-bound work cannot starve the GPU thread's Python side of the GIL.
    """

    def __init__(self, max_workers: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=THREAD_NAME)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a worker thread; its result, or its exception re-raised.

        Raises RuntimeError once the pool is closed.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self, wait: bool = True) -> None:
        """Stop taking work; with `wait`, let what was started finish (they are short)."""
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
