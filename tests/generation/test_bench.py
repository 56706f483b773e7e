"""`imagine bench` end to end on the tiny random model (figures are not checked: only that the
run goes through the real backend and the seed path and reports every figure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main
from tests.cli_helpers import run_imagine


def test_bench_runs_both_paths_and_writes_json(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--model",
            "builtin:tiny-random",
            "--device",
            "cpu",
            "--cache-dir",
            str(tiny_cache),
            "-U",
            "3",
            "-S",
            "2",
            "-R",
            "2",
            "-N",
            "1",
            "--steps",
            "2",
            "--seed-steps",
            "2",
            "--seed-requests",
            "1",
            "--size",
            "64",
            "--max-batch-images",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    backend = report["backend"]
    assert backend["images"] == 3 * 2 * 1
    assert backend["images_per_s"] > 0 and backend["latency_p95_s"] >= backend["latency_p50_s"]
    # With room for 2 images and 3 members, someone waited and was shown an ETA.
    assert backend["eta_jobs_with_nonzero_eta"] >= 1
    assert report["seed_path"]["images"] == 1 and report["ratio_images_per_s"] > 0
    assert report["same_work"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--members", "0"], "--members must be at least 1"),
        (["--max-batch-images", "0"], "--max-batch-images must be at least 1"),
        (["--seed-requests", "-1"], "--seed-requests must be at least 1"),
        (["--images", "9"], "count must be between 1 and 4 images, got 9"),
        (["--size", "65"], "width must be a multiple of 8, got 65"),
        (["--size", "1024"], "over the limit"),
    ],
)
def test_bench_refuses_bad_figures(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Figures the run could not use are one line and exit 2, before any model loads (they
    were tracebacks from the service or from diffusers after loading)."""
    assert main(["bench", "--model", "someone/not-loaded", *args, "--no-seed-path"]) == 2
    out = capsys.readouterr().out
    assert message in out and "Traceback" not in out


def test_bench_takes_model_device_and_scheduler_from_the_config_file(
    tiny_cache: Path, tmp_path: Path
) -> None:
    """`imagine bench --config FILE` (the real command) benchmarks the configured model on the
    configured device with the configured scheduler, where no flag says otherwise."""
    config = tmp_path / "bench.toml"
    config.write_text(
        f'[model]\nid = "builtin:tiny-random"\ndevice = "cpu"\ncache_dir = "{tiny_cache}"\n'
        '[generation]\nscheduler = "ddim"\n'
    )
    out = tmp_path / "bench.json"
    figures = ["-U", "1", "-S", "1", "-N", "1", "--steps", "2", "--size", "64", "--no-seed-path"]
    proc = run_imagine(["bench", "--config", str(config), *figures, "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    ran = json.loads(out.read_text())["config"]
    assert (ran["model"], ran["device"], ran["scheduler"]) == ("builtin:tiny-random", "cpu", "ddim")
    # A flag still wins over the file.
    args = ["bench", "-c", str(config), *figures, "--scheduler", "pndm", "--json", str(out)]
    assert run_imagine(args, tmp_path).returncode == 0
    assert json.loads(out.read_text())["config"]["scheduler"] == "pndm"


def test_more_servers_than_members_is_refused_before_loading(tmp_path: Path) -> None:
    """-S above -U would leave servers without a member: one line, exit 2, no model load."""
    proc = run_imagine(["bench", "-q", "-U", "2", "-S", "3", "--no-seed-path"], tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.strip() == (
        "imagine bench: --servers (3) is more than --members (2): every server needs at "
        "least one member"
    )
    assert "Traceback" not in proc.stderr
