"""Checks done before torch and diffusers are imported, and the model-problem message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from generation import preflight
from generation.preflight import (
    check_device,
    check_model_available,
    download_command,
    model_problem,
)


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", ""])
def test_device_typos_are_caught(name: str) -> None:
    assert "is not a device; use auto, cpu, cuda, cuda:N or mps" in str(check_device(name))


def test_cuda_with_a_cpu_only_torch_is_impossible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "_torch_version", lambda: "2.13.0+cpu")
    assert "CPU-only build" in str(check_device("cuda:0"))
    assert check_device("cpu") is None and check_device("auto") is None


def test_download_command_fetches_only_what_the_pipeline_loads() -> None:
    """One --include per pattern (the `hf` CLI's syntax): configs, tokenizer files, and the
    chosen weights of each component; no root checkpoints."""
    assert download_command("org/m") == (
        "hf download org/m --include 'model_index.json' --include '*/*.json' "
        "--include '*/*.txt' --include '*/*.fp16.safetensors'"
    )
    plain = download_command("org/m", None, "/srv/m")
    assert "'*/diffusion_pytorch_model.safetensors'" in plain
    assert plain.endswith("--local-dir /srv/m")


def test_offline_model_missing_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    problem = check_model_available("org/missing", "fp16", tmp_path)
    assert problem is not None
    assert problem.startswith("model 'org/missing' is not in the local Hugging Face cache")
    assert "hf download org/missing" in problem
    (tmp_path / "folder").mkdir()
    assert "with no model_index.json" in str(check_model_available(str(tmp_path / "folder")))


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("gated", "is gated: accept its licence"),
        ("not found", "does not exist on the Hugging Face Hub"),
        ("no variant", "has no 'fp16' weights: set model.variant"),
    ],
)
def test_model_problem_says_why_and_what_to_run(reason: str, expected: str) -> None:
    assert expected in model_problem("org/m", reason)


def test_load_failures_are_classified() -> None:
    """huggingface_hub errors inside diffusers' OSError become the right reason."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from generation.loading import _why_not_loaded

    for error, reason in ((GatedRepoError, "gated"), (RepositoryNotFoundError, "not found")):
        try:
            try:
                # Skip __init__: its response type is the HTTP client's, not ours to build.
                raise error.__new__(error, "401 Client Error")
            except error as inner:
                raise OSError("cannot load model") from inner
        except OSError as exc:
            assert _why_not_loaded(exc, "fp16") == reason


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run"], "no Discord bot token"),
        (["generate", "--device", "gpu", "a cat"], "is not a device"),
    ],
)
def test_cheap_failures_come_before_torch_is_imported(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """A missing token or an impossible device is reported without importing torch,
    diffusers or discord."""
    code = (
        "import sys\nfrom bot.cli import main\n"
        f"rc = main({args!r})\n"
        "print(rc, [m for m in ('torch', 'diffusers', 'discord') if m in sys.modules])\n"
    )
    from tests.cli_helpers import clean_environ

    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert expected in proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("[]"), proc.stdout


@pytest.mark.parametrize("model_id", ["./nope", "../models", "-a/b", "a/b.", "a--b/c", "a/b..c"])
def test_a_path_that_is_no_folder_is_not_taken_for_a_hub_id(
    model_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--model ./nope` (a missing folder) says so in one line, online or offline, instead of
    reaching huggingface_hub's id validation (a traceback offline, a confusing `hf download
    ./nope` online)."""
    monkeypatch.chdir(tmp_path)
    for offline in ("1", "0"):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        problem = str(check_model_available(model_id))
        assert "is neither a local model folder nor a Hub id" in problem


@pytest.mark.parametrize("model_id", ["stable-diffusion-v1-5/stable-diffusion-v1-5", "a.b/c_d"])
def test_hub_ids_still_pass_while_online(model_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert check_model_available(model_id) is None
