"""Configuration: a TOML file, overridden by `IMAGINE_<SECTION>__<KEY>` environment variables.

Which file: `--config PATH`; else `./config.toml` when it exists; else the file named by
`IMAGINE_CONFIG`; else none (defaults and the environment only). See `find_config_file`.

The whole configuration is checked at load, across fields (a default `steps` over `max_steps`,
a default size over `max_pixels`, ...), and every problem becomes one line naming the key (or
the environment variable it came from) and what is allowed: `ConfigError.problems`.

Relative paths (a SQLite file in `database.url`, `storage.images_dir`, `model.cache_dir`) are
resolved against the folder of the configuration file, so a service manager starting the bot
from another folder finds the same database and images.

The Discord token may also come from `DISCORD_TOKEN`. It is a `SecretStr`, so it never
appears in `repr`, logs or tracebacks.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from generation.params import MAX_ASPECT, SCHEDULERS, GenerationParams, Limits

DEFAULT_MODEL_ID = "CompVis/stable-diffusion-v1-4"
#: The file looked for in the current folder when `--config` is not given.
DEFAULT_CONFIG_NAME = "config.toml"
#: Environment variable naming the configuration file (after ./config.toml).
CONFIG_ENV = "IMAGINE_CONFIG"
ENV_PREFIX = "IMAGINE_"


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
    # Gateway shards in the whole deployment; None: as many as Discord recommends (then
    # discord.py asks GET /gateway/bot, and connects to the gateway URL named there).
    shard_count: int | None = Field(None, ge=1)
    # The shards this process runs (needs shard_count); None: all of them. A list, or a
    # string such as "0-7" or "0,2,4" (handy in IMAGINE_DISCORD__SHARD_IDS).
    shard_ids: list[int] | None = None

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_ids_from_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        for part in value.replace(" ", "").split(","):
            if not part:
                continue
            first, dash, last = part.partition("-")
            try:
                start, end = int(first), int(last) if dash else int(first)
            except ValueError:
                raise ValueError(
                    f"shard_ids: {part!r} is not a shard id or a range like 0-7"
                ) from None
            if end < start:
                raise ValueError(f"shard_ids: the range {part!r} runs backwards")
            ids.extend(range(start, end + 1))
        return ids

    @model_validator(mode="after")
    def _shards_consistent(self) -> DiscordSettings:
        ids = self.shard_ids
        if ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("shard_ids needs shard_count (the shards of the whole deployment)")
        if not ids:
            raise ValueError("shard_ids is empty: give at least one shard id")
        outside = sorted({i for i in ids if not 0 <= i < self.shard_count})
        if outside:
            raise ValueError(
                f"shard_ids {outside} are outside 0..{self.shard_count - 1} (shard_count "
                f"{self.shard_count})"
            )
        if len(set(ids)) != len(ids):
            raise ValueError(f"shard_ids {ids} name a shard twice")
        return self


class ModelSettings(_Section):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    id: str = DEFAULT_MODEL_ID
    variant: str | None = "fp16"
    device: str = "auto"
    safety_checker: bool = True
    cache_dir: Path | None = None
    # Optional models for the creative tools; unset (or "") hides their buttons.
    # An SD v1.x inpainting model (9-channel UNet) for Zoom Out and Pan.
    inpaint_id: str | None = None
    # A latent x2 upscaler (stabilityai/sd-x2-latent-upscaler) for Upscale (Subtle).
    upscaler_id: str | None = None
    # A BLIP image captioner (Salesforce/blip-image-captioning-base) for /describe; unset (or
    # "") leaves /describe out of the commands.
    captioner_id: str | None = None
    # Decode in float32 (fixes black/NaN images from fp16 VAE overflow; ~160 MB more memory).
    vae_float32: bool = False
    # GiB of GPU memory for the main model plus the optional models kept loaded on it; past it
    # the least recently used optional model is moved to the CPU. None: no limit.
    memory_budget_gb: float | None = Field(None, gt=0)
    # Upscale (Creative) runs in one pass up to upscale_tile x upscale_tile pixels of output,
    # and in tiles of that side overlapping by at least upscale_overlap pixels past it.
    upscale_tile: int = Field(768, ge=64, multiple_of=8)
    upscale_overlap: int = Field(128, ge=0, multiple_of=8)

    @field_validator("variant", "inpaint_id", "upscaler_id", "captioner_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", "none", "None") else value

    @field_validator("memory_budget_gb", mode="before")
    @classmethod
    def _empty_is_unlimited(cls, value: Any) -> Any:
        return None if value in ("", "none", "None", "unlimited") else value

    @model_validator(mode="after")
    def _tiles_advance(self) -> ModelSettings:
        """Two tiles may share at most half a tile: past that the blend has nothing of its own
        in the middle of a tile, and the tile count explodes."""
        if self.upscale_overlap > self.upscale_tile // 2:
            raise ValueError(
                f"model.upscale_overlap = {self.upscale_overlap} is over half of "
                f"model.upscale_tile = {self.upscale_tile}; allowed: 0 to "
                f"{self.upscale_tile // 2 // 8 * 8}"
            )
        return self


#: The generation package's documented defaults; `[generation]` starts from these.
_LIBRARY = GenerationParams(prompt="")


class GenerationSettings(_Section):
    """The bot's one source of generation defaults and limits (`params`, `limits`)."""

    # "local": the in-process GPU service (one machine); "pool": GPU workers started with
    # `imagine worker`, anywhere that reaches the PostgreSQL database ([pool]).
    backend: Literal["local", "pool"] = "local"
    scheduler: str = _LIBRARY.scheduler
    steps: int = Field(_LIBRARY.steps, ge=1, le=500)
    guidance: float = Field(_LIBRARY.guidance, ge=1.0)  # <= 1 turns guidance off
    # Pixels, multiples of 8 (the VAE works on 1/8 of the image).
    width: int = Field(_LIBRARY.width, ge=64, multiple_of=8)
    height: int = Field(_LIBRARY.height, ge=64, multiple_of=8)
    count: int = Field(_LIBRARY.count, ge=1, le=4)
    # How far variations (V buttons) move from their source image, (0, 1].
    variation_strength: float = Field(0.6, gt=0.0, le=1.0)
    min_steps: int = Field(1, ge=1)
    max_steps: int = Field(100, ge=1, le=500)
    max_guidance: float = Field(30.0, ge=1.0)  # guidance starts at 1 (1 = off)
    # Largest width*height a request may ask for (768x768 by default).
    max_pixels: int = Field(768 * 768, ge=64 * 64)
    # Whole queue, and per member, counted in jobs waiting (not running).
    max_queue: int = Field(100, ge=1)
    max_queued_per_user: int = Field(3, ge=1)
    # Images the worker may put in one pipeline call when batching compatible jobs.
    max_batch_images: int = Field(8, ge=1)
    warmup: bool = True
    # Step-level batching: jobs join the running batch between denoising steps.
    continuous_batching: bool = True
    # GPU fast path (channels_last, fused QKV, torch.compile per batch bucket): "auto" = on
    # for CUDA only.
    fast_path: Literal["auto", "on", "off"] = "auto"
    # Its parts, each switchable (they apply where the fast path is on).
    fast_channels_last: bool = True
    fast_fuse_qkv: bool = True
    fast_compile_unet: bool = True
    fast_compile_vae: bool = False
    # UNet row counts (2 per image with guidance) a step batch is padded to; each is compiled
    # at start. Empty: no padding (every new batch size compiles when it first runs).
    fast_buckets: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=lambda: [2, 4, 8, 16, 24, 32]
    )
    # Inductor's on-disk cache of compiled graphs, kept between starts (default:
    # $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/imagine/inductor).
    compile_cache_dir: Path | None = None
    # Jobs a server may start per turn of the fair queue (default 1), by server id.
    server_shares: dict[str, int] = Field(default_factory=dict)

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

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> GenerationSettings:
        """The defaults must be a request the limits accept, or every plain /imagine fails."""
        problems = []
        if self.min_steps > self.max_steps:
            problems.append(
                f"generation.min_steps = {self.min_steps} is over generation.max_steps = "
                f"{self.max_steps}; min_steps must be at most max_steps"
            )
        elif not self.min_steps <= self.steps <= self.max_steps:
            problems.append(
                f"generation.steps = {self.steps} is outside generation.min_steps.."
                f"max_steps; allowed: {self.min_steps} to {self.max_steps}"
            )
        if self.guidance > self.max_guidance:
            problems.append(
                f"generation.guidance = {self.guidance:g} is over generation.max_guidance; "
                f"allowed: 1 to {self.max_guidance:g}"
            )
        pixels = self.width * self.height
        if pixels > self.max_pixels:
            problems.append(
                f"generation.width x height = {self.width}x{self.height} ({pixels:,} pixels) "
                f"is over generation.max_pixels = {self.max_pixels:,}; lower the size or "
                "raise max_pixels"
            )
        if max(self.width, self.height) > MAX_ASPECT * min(self.width, self.height):
            problems.append(
                f"generation.width x height = {self.width}x{self.height} is too elongated; "
                f"allowed: sides within {MAX_ASPECT:g}:1"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class ImagePromptSettings(_Section):
    # Where image prompts may be downloaded from (scheme://host[:port]): Discord's CDN.
    origins: list[str] = ["https://cdn.discordapp.com", "https://media.discordapp.net"]
    # Largest file downloaded, and largest picture decoded (width x height).
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(4096 * 4096, ge=64 * 64)


class StorageSettings(_Section):
    # Single images of every job are kept here so U/V buttons work after a restart.
    images_dir: Path = Path("data/images")
    # Retention: jobs' images older than this many days are deleted (None: kept forever).
    retention_days: float | None = Field(None, gt=0)
    # Retention: past this many megabytes, the oldest jobs' images are deleted (None: no cap).
    max_size_mb: float | None = Field(None, gt=0)
    # Minutes between two clean-ups (the first runs at start).
    cleanup_interval_minutes: float = Field(60.0, gt=0)


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///imagine.db"


class PoolSettings(_Section):
    """The GPU worker pool (`[generation] backend = "pool"`); see the README's deployment."""

    # libpq URL of the pool's PostgreSQL; default: `database.url` without its driver suffix.
    # It must reach the bot's own database: jobs are queued in the transaction that reserves
    # their quota (the pool backend refuses to queue otherwise).
    dsn: str | None = None
    # procrastinate queue name: bots sharing a database use different queues.
    queue: str = "imagine"
    # Where workers leave images: "database" (a table, nothing to mount) or "folder"
    # (`results_dir`, a folder every bot process and worker mounts).
    results: Literal["database", "folder"] = "database"
    results_dir: Path = Path("data/pool-results")
    heartbeat_seconds: float = Field(2.0, gt=0)
    # A worker silent this long is dead: its jobs run again elsewhere, from the same seeds.
    stalled_after_seconds: float = Field(15.0, gt=0)
    poll_seconds: float = Field(1.0, gt=0)
    # A job whose worker was lost this many times fails (refunded).
    max_attempts: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _stall_after_heartbeat(self) -> PoolSettings:
        if self.stalled_after_seconds <= self.heartbeat_seconds:
            raise ValueError("pool.stalled_after_seconds must be longer than heartbeat_seconds")
        return self

    def resolved_dsn(self, database_url: str) -> str:
        """The libpq URL of the pool; raises ValueError when there is no PostgreSQL."""
        if self.dsn:
            return self.dsn
        from sqlalchemy.engine import make_url

        url = make_url(database_url)
        if url.get_backend_name() not in ("postgresql", "postgres"):  # old spelling too
            raise ValueError(
                'generation.backend = "pool" needs PostgreSQL: set database.url to '
                "postgresql+asyncpg://... or pool.dsn to postgresql://..."
            )
        return url.set(drivername="postgresql").render_as_string(hide_password=False)


class QuotaSettings(_Section):
    # Images a member may generate per period when no server rule applies; None: unlimited.
    default_limit: int | None = Field(100, ge=0)
    default_period: Literal["day", "week"] = "day"
    # /describe counts as one image against the quota (refunded when it fails); default free.
    charge_describe: bool = False


class TierSettings(_Section):
    """Fast and relax tiers, like Midjourney's modes: fast jobs start before every relax job
    and spend the member's fast time (measured GPU seconds, charged on success only); relax
    jobs wait for room on the GPU and spend none. A member out of fast time (or without a
    fast role) gets relax automatically, with a note, never a refusal."""

    # The tier of a job whose prompt has neither --fast nor --relax.
    default: Literal["fast", "relax"] = "fast"
    # GPU seconds of fast jobs per member per period; None: unlimited. Admins override it per
    # server, role or member with `/quota fast`.
    fast_seconds: float | None = Field(None, ge=0)
    # The period fast time is counted over (as quotas: day resets 00:00 UTC, week on Monday);
    # None: quotas.default_period.
    period: Literal["day", "week"] | None = None
    # Role ids that may use fast; empty: everyone.
    fast_roles: list[int] = Field(default_factory=list)
    # Role id -> fast GPU seconds per period for members with that role (the most generous of
    # a member's roles applies), e.g. a supporter role with more fast time.
    role_fast_seconds: dict[int, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _roles_consistent(self) -> TierSettings:
        problems = []
        negative = sorted(role for role, seconds in self.role_fast_seconds.items() if seconds < 0)
        if negative:
            problems.append(
                f"tiers.role_fast_seconds for roles {negative} is negative; allowed: 0 or more "
                "GPU seconds"
            )
        if self.fast_roles:
            locked = sorted(set(self.role_fast_seconds) - set(self.fast_roles))
            if locked:
                problems.append(
                    f"tiers.role_fast_seconds names roles {locked} that are not in "
                    f"tiers.fast_roles = {self.fast_roles}: they could never use that fast time; "
                    "add them to fast_roles or remove them"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return self


class LogSettings(_Section):
    # "text": one key=value line per event; "json": one JSON object per line.
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


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
    image_prompts: ImagePromptSettings = ImagePromptSettings()
    database: DatabaseSettings = DatabaseSettings()
    pool: PoolSettings = PoolSettings()
    quotas: QuotaSettings = QuotaSettings()
    tiers: TierSettings = TierSettings()
    log: LogSettings = LogSettings()
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

    @property
    def fast_period(self) -> str:
        """The period fast time is counted over: `tiers.period`, else the quotas' period."""
        return self.tiers.period or self.quotas.default_period

    @model_validator(mode="after")
    def _token_from_env(self) -> Settings:
        if self.discord.token is None and os.environ.get("DISCORD_TOKEN"):
            self.discord.token = SecretStr(os.environ["DISCORD_TOKEN"])
        return self


class ConfigError(Exception):
    """A configuration that is missing or invalid; `problems` holds one line per problem."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message if not problems else message + "\n" + "\n".join(problems))
        self.problems = problems


def find_config_file(
    explicit: str | Path | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path | None:
    """The configuration file to load: `explicit`, else ./config.toml, else $IMAGINE_CONFIG.

    Returns None when there is none (defaults and the environment apply). Raises `ConfigError`
    when an explicitly named file (argument or variable) does not exist.
    """
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(_not_a_file(path))
        return path.resolve()
    local = cwd / DEFAULT_CONFIG_NAME
    if local.is_file():
        return local.resolve()
    named = environ.get(CONFIG_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not path.is_file():
            raise ConfigError(f"{_not_a_file(path)} (from {CONFIG_ENV})")
        return path.resolve()
    return None


def _not_a_file(path: Path) -> str:
    """Why `path` cannot be the configuration file: a folder, or nothing there."""
    if path.is_dir():
        inside = path / DEFAULT_CONFIG_NAME
        hint = f" (did you mean {inside}?)" if inside.is_file() else ""
        return f"config path {path} is a folder; a TOML file is expected{hint}"
    return f"config file not found: {path}"


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from `path` (TOML, optional), the environment, then explicit overrides.

    Relative paths in the result are absolute, resolved against `path`'s folder (the current
    folder without a file). Raises `ConfigError` listing every problem, one per line.
    """
    toml_path = Path(path).expanduser().resolve() if path is not None else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file not found: {toml_path}")
    where = str(toml_path) if toml_path is not None else "the environment"
    if toml_path is not None:
        try:
            with toml_path.open("rb") as handle:
                tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:  # e.g. saved as UTF-16 by a Windows editor
            raise ConfigError(
                f"{toml_path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it "
                "as UTF-8"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read {toml_path}: {exc.strerror or exc}") from exc

    class _Loaded(Settings):
        model_config = SettingsConfigDict(toml_file=toml_path)

    try:
        loaded = _Loaded(**overrides)
        settings = Settings.model_validate(loaded.model_dump())
    except ValidationError as exc:
        problems = tuple(_describe_errors(exc, toml_path, os.environ))
        raise ConfigError(f"invalid configuration ({where}):", problems) from exc
    base = toml_path.parent if toml_path is not None else Path.cwd()
    return _with_absolute_paths(settings, base)


def unknown_environment_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning line for each `IMAGINE_*` variable that sets nothing (a misspelt section or
    key would otherwise be ignored silently)."""
    environ = os.environ if environ is None else environ
    known = {CONFIG_ENV}
    for section, field in Settings.model_fields.items():
        model = field.annotation
        for key in getattr(model, "model_fields", {}):
            known.add(f"{ENV_PREFIX}{section}__{key}".upper())
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"unknown environment variable {name} is ignored{hint}")
    return warnings


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases, in-memory ones, or bad URLs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def _with_absolute_paths(settings: Settings, base: Path) -> Settings:
    def absolute(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else (base / path).resolve()

    storage = settings.storage.model_copy(
        update={"images_dir": absolute(settings.storage.images_dir)}
    )
    model = settings.model
    if model.cache_dir is not None:
        model = model.model_copy(update={"cache_dir": absolute(model.cache_dir)})
    generation = settings.generation
    if generation.compile_cache_dir is not None:
        generation = generation.model_copy(
            update={"compile_cache_dir": absolute(generation.compile_cache_dir)}
        )
    database = settings.database
    db_file = sqlite_path(database.url)
    if db_file is not None and not db_file.is_absolute():
        from sqlalchemy.engine import make_url

        url = make_url(database.url).set(database=str(absolute(db_file)))
        database = database.model_copy(
            update={"url": url.render_as_string(hide_password=False)}
        )
    return settings.model_copy(
        update={"storage": storage, "model": model, "database": database, "generation": generation}
    )


def _describe_errors(
    exc: ValidationError, toml_path: Path | None, environ: Mapping[str, str]
) -> list[str]:
    """One line per error: the key (or the variable it came from), the value, what is allowed."""
    env_names = {name.upper(): name for name in environ}
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        variable = env_names.get(f"{ENV_PREFIX}{'__'.join(loc)}".upper())
        if error["type"] == "extra_forbidden":
            lines.append(_unknown_key(loc, variable))
            continue
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "value_error" and message.startswith(
            ("generation.", "tiers.", "model.")
        ):
            lines.extend(message.splitlines())  # whole-section checks name their keys
            continue
        origin = f" (from {variable})" if variable else ""
        value = error.get("input")
        shown = f" = {value!r}" if not isinstance(value, dict | list) else ""
        if error["type"] == "model_type":  # pydantic's wording names an internal class
            message = f"must be a table of settings (a [{key}] section)"
        lines.append(f"{key}{shown}{origin}: {_allowed(message)}")
    return lines


def _unknown_key(loc: list[str], variable: str | None) -> str:
    key = ".".join(loc)
    if len(loc) == 1:
        choices = list(Settings.model_fields)
    else:
        section = Settings.model_fields.get(loc[0])
        choices = list(getattr(section.annotation, "model_fields", {})) if section else []
    close = difflib.get_close_matches(loc[-1], choices, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(choices)})"
    origin = f" from {variable}" if variable else ""
    return f"unknown key {key}{origin}{hint}"


def _allowed(message: str) -> str:
    """Pydantic's message, worded as what is allowed ("Input should be ..." -> "must be ...")."""
    return message.replace("Input should be", "must be").replace("input should be", "must be")
