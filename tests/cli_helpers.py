"""Running the real `imagine` command in a subprocess, as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def imagine_command() -> list[str]:
    """The installed `imagine` script next to this interpreter, else `python -m bot`."""
    script = shutil.which("imagine", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "bot"]


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without IMAGINE_*/DISCORD_TOKEN, offline, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("IMAGINE_") and key != "DISCORD_TOKEN"
    }
    env.update(HF_HUB_OFFLINE="1", COLUMNS="200", **extra)
    return env


def run_imagine(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*imagine_command(), *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_imagine(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*imagine_command(), *args],
        cwd=cwd,
        env=dict(env) if env is not None else clean_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
