"""The generation package stays independent of Discord and of the bot."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import generation.service, generation.cli, generation.factory
assert 'discord' not in sys.modules, 'generation imported discord'
assert not any(m == 'bot' or m.startswith('bot.') for m in sys.modules), 'generation imported bot'
"""

LIGHT = """
import sys
import generation.service, generation.request, generation.events, generation.grid
assert 'torch' not in sys.modules, 'generation.service imported torch'
"""


def test_importing_generation_does_not_import_discord_or_bot() -> None:
    """generation.* can be imported without discord.py or the bot package."""
    subprocess.run([sys.executable, "-c", CHECK], check=True, timeout=120)


def test_service_module_is_light() -> None:
    """The service, requests, events and grids import without torch (fast CLI --help)."""
    subprocess.run([sys.executable, "-c", LIGHT], check=True, timeout=60)
