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
