"""The bot's one door into worker threads."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from bot.core.threads import THREAD_NAME, Threads
from generation.grid import encode, encode_grid


async def test_run_returns_the_result_from_a_worker_thread(threads: Threads) -> None:
    """The call runs on one of the helper's named threads, never on the loop's."""
    name = await threads.run(lambda: threading.current_thread().name)
    assert name.startswith(THREAD_NAME) and name != threading.current_thread().name


async def test_run_re_raises_the_calls_error(threads: Threads) -> None:
    """An exception in the call reaches the awaiting coroutine unchanged."""

    def boom() -> None:
        raise ValueError("bad pixels")

    with pytest.raises(ValueError, match="bad pixels"):
        await threads.run(boom)


async def test_closed_helper_takes_no_more_work() -> None:
    """After close, run refuses (the bot closes it last, after everything that uses it)."""
    pool = Threads()
    pool.close()
    with pytest.raises(RuntimeError):
        await pool.run(int, "1")


async def test_grids_and_images_encode_in_the_helper(threads: Threads) -> None:
    """A 2x2 grid as PNG, single images as JPEG, and a grid squeezed under a byte limit."""
    images = [Image.effect_noise((64, 64), 60 + 10 * i).convert("RGB") for i in range(4)]
    data, ext = await threads.run(encode_grid, images)
    assert ext == "png" and Image.open(io.BytesIO(data)).size == (128, 128)
    single, single_ext = await threads.run(encode, images[0], "jpeg")
    assert single_ext == "jpg" and Image.open(io.BytesIO(single)).size == (64, 64)
    small, small_ext = await threads.run(encode_grid, images, limit_bytes=len(data) // 4)
    assert len(small) <= len(data) // 4 and small_ext in ("webp", "jpg")
