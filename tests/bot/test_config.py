"""Settings: TOML file, environment overrides, token handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import (
    ConfigError,
    find_config_file,
    load_settings,
    unknown_environment_variables,
)

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
    # Relative paths are resolved against the config file's folder.
    assert settings.database.url == f"sqlite+aiosqlite:///{REPO / 'imagine.db'}"
    assert settings.storage.images_dir == REPO / "data" / "images"
    assert settings.discord.token is None
    # Optional models stay loaded without a budget; creative upscales tile past 768x768.
    assert settings.model.memory_budget_gb is None
    assert (settings.model.upscale_tile, settings.model.upscale_overlap) == (768, 128)


def test_memory_budget_and_tiles_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_MODEL__MEMORY_BUDGET_GB", "10.5")
    monkeypatch.setenv("IMAGINE_MODEL__UPSCALE_TILE", "512")
    settings = load_settings()
    assert settings.model.memory_budget_gb == 10.5 and settings.model.upscale_tile == 512
    monkeypatch.setenv("IMAGINE_MODEL__MEMORY_BUDGET_GB", "unlimited")
    assert load_settings().model.memory_budget_gb is None


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


def _problems(tmp_path: Path, text: str) -> tuple[str, ...]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(cfg)
    assert "Traceback" not in str(caught.value) and "pydantic" not in str(caught.value)
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[generation]\nwidth = 500\n", "generation.width = 500: must be a multiple of 8"),
        ("[generation]\nsteps = 120\n", "generation.steps = 120 is outside"),
        ("[generation]\nguidance = 31\n", "generation.guidance = 31 is over"),
        ("[generation]\nmin_steps = 9\nmax_steps = 8\n", "min_steps = 9 is over"),
        ("[generation]\nwidth = 1024\nheight = 1024\n", "is over generation.max_pixels"),
        ("[generation]\nscheduler = 'euler'\n", "unknown scheduler 'euler'; choose one of: pndm"),
        ("[generation]\nscheduler = 'dpm_typo'\n", "generation.scheduler = 'dpm_typo'"),
        ("[generation]\nstepz = 3\n", "unknown key generation.stepz (did you mean steps?)"),
        ("[modelz]\nid = 'x'\n", "unknown key modelz (did you mean model?)"),
        ("[generation]\nguidance = 5\nmax_guidance = 0.5\n", "generation.max_guidance = 0.5"),
        ("[generation]\nmax_guidance = 5\n", "is over generation.max_guidance; allowed: 1 to 5"),
        ("generation = 5\n", "generation = 5: must be a table of settings (a [generation]"),
        ("[model]\nupscale_tile = 500\n", "model.upscale_tile = 500: must be a multiple of 8"),
        ("[model]\nupscale_tile = 256\nupscale_overlap = 136\n",
         "model.upscale_overlap = 136 is over half of model.upscale_tile = 256; allowed: 0 to 128"),
        ("[model]\nmemory_budget_gb = 0\n", "model.memory_budget_gb = 0: must be greater than 0"),
    ],
)
def test_whole_configuration_is_checked_one_line_per_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Each bad value or combination gives one line naming the key and what is allowed."""
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_several_problems_are_all_listed(tmp_path: Path) -> None:
    """Cross-field problems are reported together, each on its own line."""
    text = "[generation]\nguidance = 31\nmin_steps = 5\nmax_steps = 4\nwidth = 1024\n"
    text += "height = 1024\n"
    problems = _problems(tmp_path, text)
    assert [p.split(" ")[0] for p in problems] == [
        "generation.min_steps",
        "generation.guidance",
        "generation.width",
    ]


def test_environment_errors_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad value from the environment is blamed on the variable, not the file."""
    monkeypatch.setenv("IMAGINE_GENERATION__COUNT", "abc")
    problems = _problems(tmp_path, "")
    assert problems[0].startswith("generation.count = 'abc' (from IMAGINE_GENERATION__COUNT)")


def test_unknown_imagine_variables_are_warned_about() -> None:
    """A misspelt section or key in an IMAGINE_ variable is reported, with a suggestion."""
    environ = {
        "IMAGINE_MODELS__ID": "x",
        "IMAGINE_MODEL__ID": "ok",
        "IMAGINE_CONFIG": "c.toml",
        "OTHER": "1",
    }
    assert unknown_environment_variables(environ) == [
        "unknown environment variable IMAGINE_MODELS__ID is ignored "
        "(did you mean IMAGINE_MODEL__ID?)"
    ]


def test_config_discovery_order(tmp_path: Path) -> None:
    """--config, else ./config.toml, else $IMAGINE_CONFIG, else none; missing named files fail."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    named = elsewhere / "bot.toml"
    named.write_text("")
    env = {"IMAGINE_CONFIG": str(named)}
    assert find_config_file(cwd=here, environ={}) is None
    assert find_config_file(cwd=here, environ=env) == named
    (here / "config.toml").write_text("")
    assert find_config_file(cwd=here, environ=env) == here / "config.toml"
    assert find_config_file(named, cwd=here, environ={}) == named
    with pytest.raises(ConfigError, match="IMAGINE_CONFIG"):
        find_config_file(cwd=elsewhere, environ={"IMAGINE_CONFIG": str(tmp_path / "nope.toml")})


def test_relative_paths_follow_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative SQLite file and images folder are resolved against the config's folder,
    whatever the current folder."""
    cfg = tmp_path / "srv" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text(
        "[database]\nurl = 'sqlite+aiosqlite:///data/bot.db'\n"
        "[storage]\nimages_dir = 'images'\n[model]\ncache_dir = 'models'\n"
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings(cfg)
    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path}/srv/data/bot.db"
    assert settings.storage.images_dir == tmp_path / "srv" / "images"
    assert settings.model.cache_dir == tmp_path / "srv" / "models"


def test_bad_toml_is_one_clear_error(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the position."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[generation\n")
    with pytest.raises(ConfigError, match=r"c.toml is not valid TOML: .*line 1"):
        load_settings(cfg)


def test_pool_backend_takes_its_dsn_from_a_postgresql_database_url() -> None:
    """`backend = "pool"` finds PostgreSQL in database.url (driver dropped) or pool.dsn, and
    refuses SQLite with a message saying what to set."""
    settings = load_settings(
        generation={"backend": "pool"},
        database={"url": "postgresql+asyncpg://bot:s3cret@db.internal:5433/imagine"},
    )
    assert settings.generation.backend == "pool"
    assert settings.pool.resolved_dsn(settings.database.url) == (
        "postgresql://bot:s3cret@db.internal:5433/imagine"
    )
    for url in ("postgresql://bot@db/imagine", "postgres://bot@db/imagine"):  # as documented
        assert settings.pool.resolved_dsn(url) == "postgresql://bot@db/imagine"
    explicit = load_settings(pool={"dsn": "postgresql://other/db"})
    assert explicit.pool.resolved_dsn("sqlite+aiosqlite:///x.db") == "postgresql://other/db"
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        load_settings().pool.resolved_dsn("sqlite+aiosqlite:///imagine.db")
    with pytest.raises(ConfigError, match="stalled_after_seconds"):
        load_settings(pool={"heartbeat_seconds": 5, "stalled_after_seconds": 2})


def test_shards_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """shard_ids is a TOML list, or a range/list string in the environment."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[discord]\nshard_count = 8\nshard_ids = [4, 5]\n")
    assert load_settings().discord.shard_count is None  # Discord's recommendation
    settings = load_settings(cfg)
    assert (settings.discord.shard_count, settings.discord.shard_ids) == (8, [4, 5])
    monkeypatch.setenv("IMAGINE_DISCORD__SHARD_IDS", "0-2, 6")
    assert load_settings(cfg).discord.shard_ids == [0, 1, 2, 6]


@pytest.mark.parametrize(
    ("discord", "message"),
    [
        ({"shard_ids": [0]}, "shard_ids needs shard_count"),
        ({"shard_count": 4, "shard_ids": [3, 4]}, "outside 0..3"),
        ({"shard_count": 4, "shard_ids": "1,1"}, "name a shard twice"),
        ({"shard_count": 4, "shard_ids": "3-1"}, "runs backwards"),
        ({"shard_count": 4, "shard_ids": "a-b"}, "not a shard id or a range"),
        ({"shard_count": 0}, "shard_count"),
    ],
)
def test_inconsistent_shards_are_refused(discord: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(discord=discord)


def test_tiers_are_checked_across_fields() -> None:
    """A role's fast allowance must be usable (the role in `fast_roles` when that is set) and
    not negative; the fast-time period defaults to the quotas' period."""
    settings = load_settings(
        None,
        quotas={"default_period": "week"},
        tiers={"fast_seconds": 60, "fast_roles": [7], "role_fast_seconds": {"7": 600}},
    )
    assert settings.tiers.role_fast_seconds == {7: 600.0}
    assert settings.fast_period == "week"
    assert load_settings(None, tiers={"period": "day"}).fast_period == "day"
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None, tiers={"fast_roles": [7], "role_fast_seconds": {"8": 600, "7": -1}}
        )
    problems = "\n".join(caught.value.problems)
    assert "tiers.role_fast_seconds names roles [8] that are not in tiers.fast_roles" in problems
    assert "tiers.role_fast_seconds for roles [7] is negative" in problems
    with pytest.raises(ConfigError, match=r"tiers\.default"):
        load_settings(None, tiers={"default": "turbo"})


@pytest.mark.parametrize(
    "data",
    [
        "[generation]\nsteps = 20\n".encode("utf-16"),
        b"\xff\xfe\x00",
        "[model]\nid = 'é'\n".encode("latin-1"),
    ],
)
def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path, data: bytes) -> None:
    """A file saved in another encoding (a Windows editor's UTF-16) is named, not a
    UnicodeDecodeError traceback from tomllib."""
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(data)
    with pytest.raises(ConfigError, match=r"is not UTF-8 text .*; save it as UTF-8"):
        load_settings(cfg)


def test_describe_is_off_and_free_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/describe's captioner is optional like the tools' models ("" is unset), and free
    unless the admin charges it."""
    example = load_settings(REPO / "config.example.toml")
    assert example.model.captioner_id is None and example.quotas.charge_describe is False
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\ncaptioner_id = ""\n[quotas]\ncharge_describe = true\n')
    settings = load_settings(cfg)
    assert settings.model.captioner_id is None and settings.quotas.charge_describe is True
    monkeypatch.setenv("IMAGINE_MODEL__CAPTIONER_ID", "Salesforce/blip-image-captioning-base")
    assert load_settings(cfg).model.captioner_id == "Salesforce/blip-image-captioning-base"
    assert unknown_environment_variables() == []
    cfg.write_text("[quotas]\ncharge_describe = 3\n")
    with pytest.raises(ConfigError, match=r"quotas\.charge_describe"):
        load_settings(cfg)
