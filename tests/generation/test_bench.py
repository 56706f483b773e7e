"""`imagine bench` end to end on the tiny random model (figures are not checked: only that the
run goes through the real backend and the seed path and reports every figure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main


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
