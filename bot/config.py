"""Configuration: a TOML file, overridden by `IMAGINE_<SECTION>__<KEY>` environment variables.

The Discord token may also come from `DISCORD_TOKEN`. It is a `SecretStr`, so it never
appears in `repr`, logs or tracebacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from generation.params import SCHEDULERS, GenerationParams, Limits

DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"


class _Section(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class DiscordSettings(_Section):
    token: SecretStr | None = None
    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg"
    dev_guild_id: int | None = None
    # Seconds discord.py waits for GUILD_CREATE events before on_ready.
    guild_ready_timeout: float = 2.0


class ModelSettings(_Section):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str = DEFAULT_MODEL_ID
    variant: str | None = "fp16"
    device: str = "auto"
    safety_checker: bool = True
    cache_dir: Path | None = None

    @field_validator("variant", mode="before")
    @classmethod
    def _empty_variant_is_none(cls, value: Any) -> Any:
        return None if value in ("", "none", "None") else value


#: The generation package's documented defaults; `[generation]` starts from these.
_LIBRARY = GenerationParams(prompt="")


class GenerationSettings(_Section):
    """The bot's one source of generation defaults and limits (`params`, `limits`)."""

    scheduler: str = _LIBRARY.scheduler
    steps: int = Field(_LIBRARY.steps, ge=1, le=150)
    guidance: float = Field(_LIBRARY.guidance, ge=0.0, le=30.0)
    width: int = Field(_LIBRARY.width, ge=64)
    height: int = Field(_LIBRARY.height, ge=64)
    count: int = Field(_LIBRARY.count, ge=1, le=4)
    # How far variations (V buttons) move from their source image, (0, 1].
    variation_strength: float = Field(0.6, gt=0.0, le=1.0)
    min_steps: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1, le=500)
    max_guidance: float = Field(30.0, gt=0)
    # Largest width*height a request may ask for (768x768 by default).
    max_pixels: int = Field(768 * 768, ge=64 * 64)
    # Whole queue, and per member, counted in jobs waiting (not running).
    max_queue: int = Field(100, ge=1)
    max_queued_per_user: int = Field(3, ge=1)
    # Images the worker may put in one pipeline call when batching compatible jobs.
    max_batch_images: int = Field(8, ge=1)
    warmup: bool = True

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {value!r}; choose one of: {', '.join(SCHEDULERS)}")
        return value

    @property
    def native_pixels(self) -> int:
        """The default size's area: aspect ratios aim at it (the model's sweet spot)."""
        return self.width * self.height

    def limits(self) -> Limits:
        """The bounds every request is validated against."""
        return Limits.with_defaults(self)

    def params(self, prompt: str, **given: Any) -> GenerationParams:
        """Parameters for `prompt`: `given` values (None: not given) over these defaults."""
        return GenerationParams.with_defaults(self, prompt=prompt, **given)


class StorageSettings(_Section):
    # Single images of every job are kept here so U/V buttons work after a restart.
    images_dir: Path = Path("data/images")


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///imagine.db"


class QuotaSettings(_Section):
    # Images a member may generate per period when no server rule applies; None: unlimited.
    default_limit: int | None = Field(100, ge=0)
    default_period: Literal["day", "week"] = "day"


class JobSettings(_Section):
    """How jobs live across shutdowns and restarts."""

    # Seconds a shutdown (SIGTERM/SIGINT) waits for the running batch to finish and for its
    # results to be posted; after that the batch is cancelled and refunded.
    shutdown_grace: float = Field(60.0, ge=0)
    # A job that was running when the bot stopped is run again from its seeds after a restart
    # if it started less than this many seconds ago; an older one is failed and refunded.
    rerun_max_age: float = Field(3600.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IMAGINE_",
        env_nested_delimiter="__",
        extra="forbid",
        protected_namespaces=(),
    )

    discord: DiscordSettings = DiscordSettings()
    model: ModelSettings = ModelSettings()
    generation: GenerationSettings = GenerationSettings()
    storage: StorageSettings = StorageSettings()
    database: DatabaseSettings = DatabaseSettings()
    quotas: QuotaSettings = QuotaSettings()
    jobs: JobSettings = JobSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then the environment, then the TOML file
        # (named by `model_config["toml_file"]`, set in `load_settings`).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _token_from_env(self) -> Settings:
        if self.discord.token is None and os.environ.get("DISCORD_TOKEN"):
            self.discord.token = SecretStr(os.environ["DISCORD_TOKEN"])
        return self


class ConfigError(Exception):
    """A configuration file that is missing or invalid; the message is for the operator."""


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from `path` (TOML, optional), the environment, then explicit overrides."""
    toml_path = Path(path) if path is not None else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file not found: {toml_path}")

    class _Loaded(Settings):
        model_config = SettingsConfigDict(toml_file=toml_path)

    try:
        loaded = _Loaded(**overrides)
    except Exception as exc:  # pydantic.ValidationError, tomllib.TOMLDecodeError
        raise ConfigError(f"invalid configuration in {toml_path or 'environment'}:\n{exc}") from exc
    return Settings.model_validate(loaded.model_dump())
