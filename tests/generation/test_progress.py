"""Start-up stages: what the operator sees while the model loads, warms up and compiles.

The tiny random-weight model (its images are noise) runs the real loading and warm-up code;
`torch.compile` itself is replaced by the identity where a test needs compiled buckets (compiling
takes minutes on CPU; `test_continuous.test_compiled_buckets_on_cpu` compiles for real under
IMAGINE_SLOW_TESTS=1): the bucket loop, its progress and the cache folder are the real ones.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from generation.engine import DiffusersEngine
from generation.factory import build_service
from generation.fastpath import DEFAULT_BUCKETS, FastPath, compile_cache_dir
from generation.loading import ModelSpec, may_download, quiet_progress_bars
from generation.progress import LogStages, RichStages, Stages, startup_stages
from generation.tiny import TINY_MODEL_ID
from tests.cli_helpers import clean_environ, imagine_command

LOGGER = "generation.progress"


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def _stages_done(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.stage for r in _records(caplog) if not hasattr(r, "step")]  # type: ignore[attr-defined]


# -- the displays, on a made-up stage sequence --------------------------------------------


def _run_sequence(stages: Stages) -> None:
    with stages.stage("load components", model="m"):
        pass
    with stages.stage("compile buckets", total=3) as step:
        for rows in (2, 4, 8):
            step(f"{rows} rows", rows=rows)
    with pytest.raises(RuntimeError), stages.stage("warm-up", size="64x64"):
        raise RuntimeError("boom")


def test_log_stages_write_one_structured_record_per_stage_and_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    _run_sequence(LogStages())
    records = _records(caplog)
    assert [(r.levelno, r.stage) for r in records] == [  # type: ignore[attr-defined]
        (logging.INFO, "load components"),
        (logging.INFO, "compile buckets"),
        (logging.INFO, "compile buckets"),
        (logging.INFO, "compile buckets"),
        (logging.INFO, "compile buckets"),
        (logging.WARNING, "warm-up"),  # a failed stage; the error itself goes on up
    ]
    first, *buckets, done, failed = records
    assert first.model == "m" and first.seconds >= 0  # type: ignore[attr-defined]
    assert [(r.step, r.rows) for r in buckets] == [("1/3", 2), ("2/3", 4), ("3/3", 8)]  # type: ignore[attr-defined]
    assert buckets[1].getMessage().startswith("compile buckets 2/3 (4 rows) done in ")
    assert not hasattr(done, "step") and done.getMessage().startswith("compile buckets done")
    assert failed.getMessage().startswith("warm-up failed") and failed.size == "64x64"  # type: ignore[attr-defined]


def test_bot_log_format_shows_the_stage_fields() -> None:
    """Through the bot's key=value formatter, each stage is one line with its fields."""
    from bot.logs import KeyValueFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("test.stages")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with LogStages(logger).stage("compile buckets", total=2) as step:
            step("2 rows", rows=2)
            step("4 rows", rows=4)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "stage=\"compile buckets\"" in lines[0] and "step=1/2" in lines[0]
    assert "rows=2" in lines[0] and "seconds=" in lines[0]
    assert lines[2].startswith("ts=") and "step=" not in lines[2]


def test_rich_stages_draw_each_stage_with_its_count() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    _run_sequence(RichStages(console))
    text = out.getvalue()
    assert "load components (model=m)" in text
    assert "3/3" in text and "8 rows" in text
    assert "warm-up (size=64x64): failed" in text


def test_a_stage_that_draws_its_own_output_gets_a_plain_line() -> None:
    """A possible download: no live display, so huggingface_hub's bars are not overwritten."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    stages = RichStages(console)
    with stages.stage("load components", own_output=True, model="org/name"):
        assert stages._progress is None  # nothing live while the body runs
    assert out.getvalue() == "load components (model=org/name) ...\n"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_startup_stages_pick_rich_on_a_terminal_and_logs_elsewhere() -> None:
    assert isinstance(startup_stages(_Tty()), RichStages)
    assert isinstance(startup_stages(io.StringIO()), LogStages)
    assert isinstance(startup_stages(console=Console(file=_Tty())), RichStages)
    assert isinstance(startup_stages(console=Console(file=io.StringIO())), LogStages)


# -- the engine's real stages with the tiny model -----------------------------------------


def test_engine_reports_loading_and_warm_up(
    tiny_spec: ModelSpec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    engine = DiffusersEngine(tiny_spec, FastPath(channels_last=True), LogStages())
    try:
        engine.load()
        engine.warmup(64, 64)
        assert engine.warm_buckets(64, 64) == 0  # nothing compiled: no stage
    finally:
        engine.close()
    assert _stages_done(caplog) == [
        "load components",
        "move to device",
        "apply fast path",
        "warm-up",
    ]
    load, move, fast, warm = _records(caplog)
    assert load.model == TINY_MODEL_ID and move.device == "cpu"  # type: ignore[attr-defined]
    assert fast.parts == "channels_last" and warm.size == "64x64"  # type: ignore[attr-defined]


def test_a_failed_load_ends_its_stage_as_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from generation.errors import ModelNotFoundError

    caplog.set_level(logging.INFO, logger=LOGGER)
    spec = ModelSpec(str(tmp_path), device="cpu")  # a folder with no model in it
    with pytest.raises(ModelNotFoundError):
        DiffusersEngine(spec, FastPath(), LogStages()).load()
    (record,) = _records(caplog)
    assert record.levelno == logging.WARNING and record.stage == "load components"  # type: ignore[attr-defined]


@pytest.fixture
def identity_compile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`torch.compile` as the identity, inductor's cache folder in tmp_path (restored after)."""
    monkeypatch.setattr(torch, "compile", lambda module, **_: module)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    return tmp_path / "inductor"


async def test_service_compiles_each_bucket_with_a_progress_step(
    tiny_spec: ModelSpec, caplog: pytest.LogCaptureFixture, identity_compile: Path
) -> None:
    """What `imagine generate` does on CUDA: no warm-up, its buckets warmed, one step each;
    inductor's cache goes to the configured folder."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    fast = FastPath(compile=True, buckets=(2, 4), cache_dir=identity_compile)
    service = build_service(
        TINY_MODEL_ID,
        device="cpu",
        cache_dir=tiny_spec.cache_dir,
        warmup=False,
        warm_buckets=True,
        warmup_size=(64, 64),
        fast_path=fast,
        stages=LogStages(),
        freeze_gc=False,
    )
    try:
        await service.start()
    finally:
        await service.close()
    steps = [r for r in _records(caplog) if getattr(r, "stage", "") == "compile buckets"]
    assert [(r.step, r.rows) for r in steps[:-1]] == [("1/2", 2), ("2/2", 4)]  # type: ignore[attr-defined]
    assert steps[-1].getMessage().startswith("compile buckets done")
    assert "warm-up" not in _stages_done(caplog)
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(identity_compile)
    (applied,) = [r for r in _records(caplog) if getattr(r, "stage", "") == "apply fast path"]
    assert applied.cache_dir == str(identity_compile)  # type: ignore[attr-defined]


# -- the fast path's switches and cache folder --------------------------------------------


def test_fast_path_is_on_for_cuda_only_by_default_and_each_part_switches() -> None:
    auto = FastPath.configured(None)
    assert auto.cuda_only and auto.buckets == DEFAULT_BUCKETS
    assert auto.on_device("cpu") == FastPath()
    cuda = auto.on_device("cuda")
    assert cuda.parts == ("channels_last", "fused_qkv", "compiled_unet", "overlapped_decode")
    assert FastPath.configured(None, fast_path="on").on_device("cpu").compile
    assert FastPath.configured(None, fast_path="off") == FastPath()

    class Settings:
        fast_path = "auto"
        fast_channels_last = False
        fast_fuse_qkv = True
        fast_compile_unet = False
        fast_compile_vae = True
        fast_buckets = (8, 2)
        fast_overlap_decode = False
        compile_cache_dir = "/srv/cache"

    parts = FastPath.configured(Settings()).on_device("cuda:0")
    assert parts.parts == ("fused_qkv",)  # compile_vae needs compile_unet on
    assert parts.buckets == (2, 8) and parts.cache_dir == Path("/srv/cache")
    with pytest.raises(ValueError, match="auto, on or off"):
        FastPath.configured(None, fast_path="fast")


def test_compile_cache_dir_survives_restarts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Configured folder first, then the operator's TORCHINDUCTOR_CACHE_DIR, then the
    project's cache (never inductor's /tmp default, emptied by reboots and PrivateTmp)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert compile_cache_dir() == tmp_path / "xdg" / "imagine" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
    assert compile_cache_dir(tmp_path / "configured") == tmp_path / "configured"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "configured")
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(tmp_path / "configured")  # what inductor itself will use


def test_config_compile_cache_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    from bot.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text(
        "[generation]\ncompile_cache_dir = 'cache/inductor'\nfast_compile_unet = false\n"
        "fast_buckets = [4, 2]\n"
    )
    gen = load_settings(path).generation
    assert gen.compile_cache_dir == tmp_path / "cache" / "inductor"
    fast = FastPath.configured(gen).on_device("cuda")
    assert not fast.compile and fast.buckets == (2, 4) and fast.channels_last


# -- download bars ------------------------------------------------------------------------


def test_download_bars_survive_the_noise_filter() -> None:
    """diffusers' and transformers' own bars go; huggingface_hub's download bars stay, unless
    they were off already (transformers' switch turns them off too: see quiet_progress_bars)."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as transformers_logging

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS"):
        pytest.skip("HF_HUB_DISABLE_PROGRESS_BARS decides here")
    try:
        enable_progress_bars()
        quiet_progress_bars()
        assert not are_progress_bars_disabled()
        assert not diffusers_logging.is_progress_bar_enabled()
        assert not transformers_logging.is_progress_bar_enabled()
        disable_progress_bars()
        quiet_progress_bars()
        assert are_progress_bars_disabled()
    finally:
        enable_progress_bars()


def test_only_hub_models_may_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert may_download("org/model")
    assert not may_download(TINY_MODEL_ID)
    assert not may_download(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not may_download("org/model")


# -- the real command ---------------------------------------------------------------------


def _generate_args(out: Path) -> list[str]:
    return [
        "generate", "a red fox", "--model", TINY_MODEL_ID, "--device", "cpu", "--n", "1",
        "--steps", "2", "--width", "64", "--height", "64", "--seed", "3", "--out", str(out),
    ]  # fmt: skip


def _env(tiny_cache: Path) -> dict[str, Any]:
    return clean_environ(IMAGINE_MODEL__CACHE_DIR=str(tiny_cache), OMP_NUM_THREADS="1")


def test_generate_shows_the_stages_on_a_terminal(tmp_path: Path, tiny_cache: Path) -> None:
    """stderr a terminal (a pseudo-terminal here): the stages are drawn, each ticked off."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*imagine_command(), *_generate_args(tmp_path / "fox.png")],
        cwd=tmp_path,
        env=_env(tiny_cache),
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, err
    assert "load components (model=builtin:tiny-random)" in err
    assert "move to device (device=cpu, dtype=float32)" in err
    assert err.count("✓") >= 2
    assert "wrote" in stdout and "load components" not in stdout


def test_generate_off_a_terminal_logs_the_stages_with_v(tmp_path: Path, tiny_cache: Path) -> None:
    """stderr a pipe: no display; the stages are log lines, shown with -v (without -v the
    output stays clean: see test_cli's inline-flags test)."""
    proc = subprocess.run(
        [*imagine_command(), "-v", *_generate_args(tmp_path / "b.png")],
        cwd=tmp_path, env=_env(tiny_cache), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr  # no terminal codes in a pipe
    lines = proc.stderr.splitlines()
    assert any(line.startswith("imagine: info: load components done in") for line in lines)
    assert any(line.startswith("imagine: info: move to device done in") for line in lines)
