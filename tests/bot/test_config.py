"""Settings: TOML file, environment overrides, token handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("IMAGINE_") or key == "DISCORD_TOKEN":
            monkeypatch.delenv(key)


def test_example_config_loads_with_documented_defaults() -> None:
    """config.example.toml is valid and matches the documented defaults."""
    settings = load_settings(REPO / "config.example.toml")
    assert settings.model.id == "CompVis/stable-diffusion-v1-4"
    assert settings.model.variant == "fp16"
    assert settings.generation.scheduler == "dpmpp_2m_karras"
    assert settings.generation.steps == 25
    assert settings.database.url == "sqlite+aiosqlite:///imagine.db"
    assert settings.discord.token is None


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """IMAGINE_<SECTION>__<KEY> wins over the TOML file."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nid = "from-file"\ndevice = "cpu"\n')
    monkeypatch.setenv("IMAGINE_MODEL__ID", "from-env")
    settings = load_settings(cfg)
    assert settings.model.id == "from-env"
    assert settings.model.device == "cpu"


def test_token_from_discord_token_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """DISCORD_TOKEN is a fallback for the token, which never shows in repr or dumps."""
    monkeypatch.setenv("DISCORD_TOKEN", "very-secret-token")
    settings = load_settings()
    assert settings.discord.token is not None
    assert settings.discord.token.get_secret_value() == "very-secret-token"
    assert "very-secret-token" not in repr(settings)
    assert "very-secret-token" not in str(settings.model_dump())
    assert "very-secret-token" not in settings.model_dump_json()


def test_explicit_token_beats_discord_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token in the file is not replaced by DISCORD_TOKEN."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[discord]\ntoken = "file-token"\n')
    monkeypatch.setenv("DISCORD_TOKEN", "env-token")
    assert load_settings(cfg).discord.token.get_secret_value() == "file-token"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist names the path."""
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_invalid_values_are_reported(tmp_path: Path) -> None:
    """Out-of-range and unknown keys are rejected with the key named."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[generation]\nsteps = 0\n")
    with pytest.raises(ConfigError, match="steps"):
        load_settings(cfg)
    cfg.write_text("[model]\nidd = 'typo'\n")
    with pytest.raises(ConfigError, match="idd"):
        load_settings(cfg)


def test_empty_variant_means_none(tmp_path: Path) -> None:
    """variant = "" loads models that have no fp16 variant."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nvariant = ""\n')
    assert load_settings(cfg).model.variant is None


def test_generation_defaults_come_from_the_configuration(tmp_path: Path) -> None:
    """`[generation]` is where the bot's parameter defaults come from, scheduler included."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[generation]\nscheduler = "euler_a"\nsteps = 12\nwidth = 640\nheight = 384\n'
        "count = 2\nvariation_strength = 0.4\nmax_pixels = 400000\n"
    )
    gen = load_settings(path).generation
    params = gen.params("a fox", count=None, seed=5)
    assert (params.scheduler, params.steps, params.count, params.seed) == ("euler_a", 12, 2, 5)
    assert (params.width, params.height, params.strength) == (640, 384, None)
    assert gen.variation_strength == 0.4
    limits = gen.limits()
    assert (limits.max_pixels, limits.native_pixels) == (400000, 640 * 384)


def test_unknown_scheduler_is_a_configuration_error(tmp_path: Path) -> None:
    """A scheduler name the engine does not know is refused at start, naming the choices."""
    path = tmp_path / "config.toml"
    path.write_text('[generation]\nscheduler = "k_lms"\n')
    with pytest.raises(ConfigError, match="unknown scheduler 'k_lms'"):
        load_settings(path)
