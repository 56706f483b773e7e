"""The bot's Discord-free core stays Discord-free (and light)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_neither_discord_nor_torch() -> None:
    """Every module of bot.core imports neither discord nor torch."""
    code = (
        "import importlib, pkgutil, sys, bot.core; "
        "[importlib.import_module(m.name) for m in "
        "pkgutil.walk_packages(bot.core.__path__, 'bot.core.')]; "
        "print('discord' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]


def test_no_cog_imports_another_cog() -> None:
    """Cogs share code through bot.core and bot.presentation, never through each other."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3] / "bot" / "cogs"
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bot.cogs"):
                offenders.append(f"{path.relative_to(root)} imports {node.module}")
    assert offenders == []


#: What the bot may use of `generation`: the backend seam and plain values (`png_info`: the
#: parameters text stored PNGs carry; `canvas`: the torch-free outpainting canvas a Zoom Out or
#: Pan request is made of). The one place that builds a concrete backend is
#: `bot.app` (through `generation.factory`), and `bot.cli` hands `imagine generate` to
#: `generation.cli` and runs the torch-free `generation.preflight` checks before building one.
GENERATION_SEAM = {
    "generation.canvas",
    "generation.errors",
    "generation.events",
    "generation.flags",  # the one inline-flag parser, shared with the command line
    "generation.grid",
    "generation.interfaces",
    "generation.job",
    "generation.params",
    "generation.png_info",
    "generation.request",
    "generation.text",  # cutting text between whole characters
}
BUILDERS = {
    # The pool's plain settings (`PoolConfig`) are mapped from `[pool]` here; the fast-path
    # switches and the start-up progress display configure the backend being built.
    "lifecycle.py": {
        "generation.factory", "generation.pool.settings", "generation.fastpath",
        "generation.progress",
    },
    # `imagine worker` hands the plain model values, its fast-path switches and its start-up
    # display to the worker process's runner.
    "cli.py": {
        "generation.cli", "generation.preflight", "generation.bench", "generation.pool.runner",
        "generation.fastpath", "generation.progress",
    },
}


def test_the_bot_depends_only_on_the_backend_seam() -> None:
    """No bot module reaches into the service, engine, loading or queue of `generation`."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3] / "bot"
    offenders = []
    for path in root.rglob("*.py"):
        allowed = GENERATION_SEAM | BUILDERS.get(str(path.relative_to(root)), set())
        for node in ast.walk(ast.parse(path.read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in [module or "", *names]:
                if name.startswith("generation") and name not in allowed:
                    offenders.append(f"{path.relative_to(root)} imports {name}")
    assert offenders == []


def test_threads_are_entered_only_through_the_helper() -> None:
    """No bot module but `bot.core.threads` starts threads or executors of its own."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[3] / "bot"
    door = re.compile(r"\bto_thread\b|\brun_in_executor\b|\bThreadPoolExecutor\b|\bThread\(")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path != root / "core" / "threads.py" and door.search(path.read_text())
    ]
    assert offenders == []
