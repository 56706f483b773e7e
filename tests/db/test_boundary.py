"""Layer boundary: the storage layer and services never import discord."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

MODULES = [
    "bot.db",
    "bot.db.models",
    "bot.db.session",
    "bot.db.types",
    "bot.db.upsert",
    "bot.services",
    "bot.services.audit",
    "bot.errors",
    "bot.services.history",
    "bot.services.moderation",
    "bot.services.quota",
    "migrations",
]


def test_storage_layer_does_not_import_discord() -> None:
    """Importing every storage and service module leaves discord out of sys.modules."""
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'discord' or m.startswith('discord.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
