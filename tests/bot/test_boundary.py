"""The bot's Discord-free modules stay Discord-free (and light)."""

from __future__ import annotations

import subprocess
import sys


def test_orchestration_flags_and_image_store_do_not_import_discord() -> None:
    """bot.jobs, bot.flags and bot.images import neither discord nor torch."""
    code = (
        "import sys, bot.jobs, bot.flags, bot.images; "
        "print('discord' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
