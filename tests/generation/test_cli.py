"""`imagine generate` end to end on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.cli import build_parser, main
from tests.cli_helpers import clean_environ, run_imagine

PROMPT = "dog sitting in autumn leaves"


@pytest.fixture(autouse=True)
def _tiny_cache_env(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the configuration's model cache at the session's tiny model."""
    monkeypatch.setenv("IMAGINE_MODEL__CACHE_DIR", str(tiny_cache))
    monkeypatch.setenv("IMAGINE_MODEL__DEVICE", "cpu")


def generate(*args: str) -> int:
    return main(["generate", "--model", "builtin:tiny-random", PROMPT, "--steps", "3", *args])


def test_generate_writes_a_reproducible_grid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 7 twice gives the same 2x2 PNG grid; seed 8 gives another."""
    first, again, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    size = ("--width", "256", "--height", "256")  # 512x512 works the same, only slower
    assert generate("--n", "4", "--seed", "7", *size, "--out", str(first)) == 0
    out = capsys.readouterr()
    assert "seeds: 7, 8, 9, 10" in out.out and f"wrote {first}" in out.out
    assert "its images are noise" in out.err
    assert generate("--n", "4", "--seed", "7", *size, "--out", str(again)) == 0
    assert generate("--n", "4", "--seed", "8", *size, "--out", str(other)) == 0
    with Image.open(first) as image:
        assert image.format == "PNG" and image.size == (512, 512)
        pixels = image.tobytes()
    with Image.open(again) as image:
        assert image.tobytes() == pixels
    with Image.open(other) as image:
        assert image.tobytes() != pixels


def test_generate_singles_aspect_and_format(tmp_path: Path) -> None:
    """--singles writes each image too, --ar sets the size, --format picks the encoding."""
    out = tmp_path / "wide"
    assert (
        generate("--n", "2", "--ar", "2:1", "--format", "webp", "--singles", "--out", str(out)) == 0
    )
    grid = tmp_path / "wide.webp"
    with Image.open(grid) as image:
        assert image.format == "WEBP" and image.size == (1536, 384)
    for index in (1, 2):
        with Image.open(tmp_path / f"wide_{index}.webp") as image:
            assert image.size == (768, 384)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "500"], "steps must be between 1 and 100, got 500"),
        (["--ar", "16:9", "--width", "512"], "either --ar or --width/--height"),
        (["--ar", "9:1"], "too extreme"),
        (["--width", "500"], "width must be a multiple of 8"),
        (["--out", "grid.gif"], "Cannot tell the image format"),
        (["--format", "jpeg", "--out", "grid.png"], "does not match"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid flags give a one-line message on stderr and exit code 2, no traceback."""
    assert generate(*args) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert "Traceback" not in err


def test_missing_model_offline_says_how_to_get_it(tmp_path: Path, tiny_cache: Path) -> None:
    """With HF_HUB_OFFLINE and an empty cache, a Hub model fails with download advice."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "IMAGINE_MODEL__CACHE_DIR": str(tiny_cache),
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "generate",
            "--model",
            "someone/missing-model",
            "--out",
            str(tmp_path / "x.png"),
            "a cat",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    err = " ".join(proc.stderr.split())
    assert "hf download someone/missing-model" in err and "HF_HUB_OFFLINE" in err
    assert "Traceback" not in proc.stderr


def test_generate_help_lists_the_flags() -> None:
    """`imagine generate --help` documents every option."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    text = subparsers.choices["generate"].format_help()  # type: ignore[union-attr]
    for flag in (
        "--model",
        "--n",
        "--seed",
        "--steps",
        "--guidance",
        "--cfg",
        "--ar",
        "--width",
        "--negative",
        "--no",
        "--scheduler",
        "--device",
        "--out",
        "--singles",
        "--format",
        "--no-safety-checker",
        "dpmpp_2m_karras",
    ):
        assert flag in text


def test_unwritable_out_fails_before_any_work(tmp_path: Path, tiny_cache: Path) -> None:
    """An --out that cannot be written is refused at once (exit 2, one line, no traceback),
    before the model loads; the seeds of a run are printed before its images are made."""
    env = clean_environ(IMAGINE_MODEL__CACHE_DIR=str(tiny_cache), IMAGINE_MODEL__DEVICE="cpu")
    bad = ["generate", "-q", "--model", "builtin:tiny-random", "a cat", "--seed", "3"]
    proc = run_imagine([*bad, "--out", "/proc/imagine-test/grid.png"], tmp_path, env)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("imagine generate: Cannot write to /proc/imagine-test")
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr
    assert proc.stdout == ""


def test_a_control_character_in_the_prompt_is_refused_in_one_line(
    tmp_path: Path, tiny_cache: Path
) -> None:
    """The real command refuses a prompt with a control character (the same validation as the
    bot's: a NUL cannot be stored in PostgreSQL) before the model loads; nothing is written."""
    env = clean_environ(IMAGINE_MODEL__CACHE_DIR=str(tiny_cache), IMAGINE_MODEL__DEVICE="cpu")
    args = ["generate", "--model", "builtin:tiny-random", "a\x07cat", "--out", "grid.png"]
    proc = run_imagine(args, tmp_path, env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "imagine generate: The prompt contains a control character (U+0007) at position 2; "
        "remove it (only line breaks and tabs are allowed)."
    )
    assert "Traceback" not in proc.stderr and "loading" not in proc.stderr
    assert not (tmp_path / "grid.png").exists()


def test_seeds_are_printed_even_when_the_run_fails(tmp_path: Path) -> None:
    """A model that fails to load still leaves the seeds on stdout, first."""
    env = clean_environ(HF_HOME=str(tmp_path / "hf"))
    args = ["generate", "--model", "someone/missing", "a cat", "--seed", "11", "--n", "2"]
    proc = run_imagine([*args, "--out", str(tmp_path)], tmp_path, env)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "seeds: 11, 12"


def test_out_folder_gets_prompt_and_seed_names_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out DIR writes into DIR, named from prompt and seed; a second run gets a new name;
    an existing file named explicitly is refused unless --overwrite."""
    args = ("--n", "2", "--seed", "9", "--width", "64", "--height", "64", "--out", str(tmp_path))
    assert generate(*args, "--singles") == 0
    first = tmp_path / "dog-sitting-in-autumn-leaves-9.png"
    assert first.is_file() and (tmp_path / "dog-sitting-in-autumn-leaves-9_2.png").is_file()
    assert generate(*args) == 0
    assert (tmp_path / "dog-sitting-in-autumn-leaves-9-2.png").is_file()
    assert not (tmp_path.parent / f"{tmp_path.name}.png").exists()
    capsys.readouterr()

    before = first.read_bytes()
    named = ("--n", "1", "--seed", "1", "--width", "64", "--height", "64", "--out", str(first))
    assert generate(*named) == 2
    assert "already exists; add --overwrite" in capsys.readouterr().err
    assert first.read_bytes() == before
    assert generate(*named, "--overwrite") == 0
    assert first.read_bytes() != before


@pytest.mark.parametrize("name", ["new/", "new/deeper/", "existing/", "existing"])
def test_out_ending_in_a_slash_is_a_folder(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out new/` writes into that folder (created), named from prompt and seed, not a
    `new.png` beside it; an existing folder works with or without the slash."""
    (tmp_path / "existing").mkdir()
    out = f"{tmp_path}/{name}"
    folder = tmp_path / name.rstrip("/")
    assert generate("--n", "1", "--seed", "5", "--width", "64", "--height", "64", "--out", out) == 0
    grid = folder / "dog-sitting-in-autumn-leaves-5.png"
    assert f"wrote {grid}" in capsys.readouterr().out
    assert grid.is_file() and not folder.with_name(f"{folder.name}.png").exists()


def test_a_device_out_is_written_as_given(tmp_path: Path, tiny_cache: Path) -> None:
    """`--out /dev/null` discards the grid (no `/dev/null.png`); a FIFO gets the PNG itself;
    standard output (where the messages go) and --singles with a device are refused."""
    env = clean_environ(IMAGINE_MODEL__CACHE_DIR=str(tiny_cache), IMAGINE_MODEL__DEVICE="cpu")
    base = ["generate", "-q", "--model", "builtin:tiny-random", "a cat", "--steps", "2",
            "--n", "1", "--width", "64", "--height", "64"]
    proc = run_imagine([*base, "--out", "/dev/null"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert "wrote /dev/null\n" in proc.stdout and not Path("/dev/null.png").exists()

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    proc = run_imagine([*base, "--out", str(fifo)], tmp_path, env)
    data, _ = reader.communicate(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert data.startswith(b"\x89PNG")

    for extra, message in (
        (["--out", "/dev/stdout"], "is standard output"),
        (["--out", "/dev/null", "--singles"], "--singles needs a file or folder --out"),
    ):
        proc = run_imagine([*base, *extra], tmp_path, env)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_pngs_carry_their_parameters(tmp_path: Path) -> None:
    """Grid and single PNGs hold the A1111 `parameters` text: prompt, negative prompt, steps,
    sampler, CFG scale, seed, size and model."""
    out = tmp_path / "g.png"
    args = ("--n", "2", "--seed", "40", "--width", "64", "--height", "64", "--cfg", "6")
    assert generate(*args, "--no", "blurry", "--singles", "--out", str(out)) == 0
    expected = (
        f"{PROMPT}\nNegative prompt: blurry\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 6, "
        "Seed: {seed}, Size: 64x64, Model: builtin:tiny-random"
    )
    for path, seed in ((out, 40), (tmp_path / "g_1.png", 40), (tmp_path / "g_2.png", 41)):
        with Image.open(path) as image:
            assert image.info["parameters"] == expected.format(seed=seed)


def test_inline_flags_are_read_by_the_same_parser_as_the_bot(
    tmp_path: Path, tiny_cache: Path
) -> None:
    """`imagine generate "dog --ar 2:1 --seed 9 --n 1"` (the real command, in a subprocess)
    applies the inline flags; a command-line option wins over the same inline flag."""
    out = tmp_path / "wide.png"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "IMAGINE_MODEL__CACHE_DIR": str(tiny_cache),
        "IMAGINE_MODEL__DEVICE": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli", "generate", "--model", "builtin:tiny-random",
         "--steps", "1", "--n", "2", "--out", str(out),
         "dog \uff0d\uff0dar 2:1 --seed 9 --n 1 --cfg 3"],
        capture_output=True, text=True, env=env, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "seeds: 9, 10" in proc.stdout  # --n 2 on the command line beats the typed --n 1
    # Not a terminal and no -v: no start-up display, no stage log lines.
    assert "load components" not in proc.stderr and "\x1b[" not in proc.stderr
    with Image.open(out) as image:
        assert image.size == (2 * 768, 384)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("dog --stylize 100", "`--stylize` is not a flag I know"),
     ("dog --cfg 1_0", "is not a number"),
     ("dog -- ar 16:9", "looks like a flag")],
)
def test_bad_inline_flags_exit_2(
    prompt: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--model", "builtin:tiny-random", prompt]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
