"""The schema: guilds and their settings, stored jobs, quotas, usage, bans, audit log.

Portable by construction, because a later deployment runs it on PostgreSQL:
Discord ids are `BigInteger` (snowflakes overflow int32), times are `UTCDateTime`
(aware, UTC), prompts are `Text`, enums are short strings with CHECK constraints.
Every constraint has a name (see `NAMING_CONVENTION`) so Alembic's batch mode can
recreate SQLite tables and PostgreSQL can drop constraints by name.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, composite, mapped_column

from bot.db.types import StrEnumType, UTCDateTime
from generation.params import PARAM_FIELDS, GenerationParams

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Surrogate keys: 64-bit on PostgreSQL, SQLite's INTEGER rowid alias (autoincrement) there.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")

# `usage_counters.user_id` for the row that counts the whole guild (for the server-wide cap).
GUILD_TOTAL = 0


class JobKind(StrEnum):
    """What a job makes. The tools under a single image (see `bot.core.tools`) each have a kind,
    so a stored job says how to make it again (reroll, lost files) from its parent's image."""

    TXT2IMG = "txt2img"
    VARIATION = "variation"  # V1-V4 under a grid
    REROLL = "reroll"
    #: One image of an earlier job made again from its seed because its file is gone (for U,
    #: V or /show): free for the member, recorded as GPU work.
    REMAKE = "remake"
    UPSCALE = "upscale"  # Upscale (Subtle): the latent x2 upscaler
    UPSCALE_CREATIVE = "upscale_creative"
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    ZOOM_2X = "zoom_2x"
    ZOOM_1_5X = "zoom_1.5x"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PAN_UP = "pan_up"
    PAN_DOWN = "pan_down"
    IMAGE_PROMPT = "image_prompt"  # /imagine starting from a member's image
    #: /describe: prompt suggestions for a member's image (the captioner; no image made).
    DESCRIBE = "describe"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


class NsfwPolicy(StrEnum):
    """What happens to an image the safety checker flags."""

    BLOCK = "block"
    SPOILER = "spoiler"
    AGE_RESTRICTED = "age_restricted"


class QuotaScope(StrEnum):
    """Who a quota rule applies to. `cap` is the server-wide total, on top of the others."""

    SERVER = "server"
    ROLE = "role"
    MEMBER = "member"
    CAP = "cap"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"


class Tier(StrEnum):
    """A job's priority tier (`generation.queue_policy.TIERS`): fast jobs start first and
    spend the member's fast GPU time; relax jobs wait for room and spend none."""

    FAST = "fast"
    RELAX = "relax"


class LedgerKind(StrEnum):
    RESERVE = "reserve"
    CHARGE = "charge"
    REFUND = "refund"
    RESET = "reset"


def _one_of(column: str, enum_cls: type[StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum_cls)
    return f"{column} IN ({values})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Guild(Base):
    """A Discord server and its bot settings; rows appear the first time the bot needs one."""

    __tablename__ = "guilds"
    __table_args__ = (CheckConstraint(_one_of("nsfw_policy", NsfwPolicy), name="nsfw_policy"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    nsfw_policy: Mapped[NsfwPolicy] = mapped_column(
        StrEnumType(NsfwPolicy), default=NsfwPolicy.BLOCK
    )
    admin_role_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AllowedChannel(Base):
    """A channel where `/imagine` may run; no rows for a guild means every channel."""

    __tablename__ = "allowed_channels"

    guild_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    added_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class BlockedWord(Base):
    """A word or phrase refused in prompts, stored normalised (see moderation.normalize)."""

    __tablename__ = "blocked_words"
    __table_args__ = (UniqueConstraint("guild_id", "word"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    word: Mapped[str] = mapped_column(String(200))
    added_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class StoredJob(Base):
    """A stored job: one generation, with everything needed to redo or re-post it.

    The id is a uuid hex, shared with the generation queue's job (`QueuedJob`) and the quota
    ledger, and short enough for buttons to carry it in their custom_ids. The generation
    parameters are the columns named like `GenerationParams`' fields, mapped onto that one
    value by the `params` composite (the only place they are mapped).
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_one_of("kind", JobKind), name="kind"),
        CheckConstraint(_one_of("status", JobStatus), name="status"),
        CheckConstraint(_one_of("tier", Tier), name="tier"),
        CheckConstraint("fast_seconds >= 0", name="fast_seconds"),
        Index(None, "guild_id", "created_at", "id"),
        Index(None, "guild_id", "user_id", "created_at", "id"),
        Index(None, "user_id", "status"),
        Index(None, "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)

    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
    scheduler: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    # Concrete per-image seeds once known (JSON list of ints).
    seeds: Mapped[list[int] | None] = mapped_column(JSON)
    strength: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(255))

    kind: Mapped[JobKind] = mapped_column(StrEnumType(JobKind), default=JobKind.TXT2IMG)
    parent_job_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    # Which image of the parent's grid a variation is made from (0-based).
    image_index: Mapped[int | None] = mapped_column(Integer)

    status: Mapped[JobStatus] = mapped_column(StrEnumType(JobStatus), default=JobStatus.QUEUED)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    gpu_seconds: Mapped[float | None] = mapped_column(Float)
    # The tier the job ran in (after any fall-back to relax), and the fast GPU seconds it was
    # charged: its measured `gpu_seconds` once it succeeded in fast, else None (never charged)
    # or 0 (refunded: blocked, or its result reached nobody).
    tier: Mapped[Tier] = mapped_column(
        StrEnumType(Tier, length=8), default=Tier.FAST, server_default=Tier.FAST.value
    )
    fast_seconds: Mapped[float | None] = mapped_column(Float)

    result_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    result_message_id: Mapped[int | None] = mapped_column(BigInteger)
    # Per-image safety-checker flags (JSON list of bools).
    nsfw: Mapped[list[bool] | None] = mapped_column(JSON)
    # A /describe job's prompt suggestions as shown (JSON list of strings): its buttons
    # imagine them, after a restart too.
    suggestions: Mapped[list[str] | None] = mapped_column(JSON)

    #: The parameter columns as one `GenerationParams`, in its field order.
    params: Mapped[GenerationParams] = composite(*PARAM_FIELDS)

    # Where the job is shown while it waits and runs, so that a restarted bot can update it:
    # the message (a DM channel's for presses in a DM), and the interaction that made it (its
    # token edits the message for 15 minutes; forgotten once its final message is posted).
    message_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_app_id: Mapped[int | None] = mapped_column(BigInteger)
    interaction_token: Mapped[str | None] = mapped_column(Text)
    interaction_created_at: Mapped[datetime | None]
    # The channel was age-restricted when the job was asked for (the NSFW policy needs it).
    channel_nsfw: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # None while unfinished; False once ended with its final message not posted (a result
    # that reached nobody is kept on disk and refunded); True once posted.
    delivered: Mapped[bool | None] = mapped_column(Boolean)


class QuotaRule(Base):
    """A limit in images per period. target_id is the role or member id; 0 for server/cap."""

    __tablename__ = "quota_rules"
    __table_args__ = (
        UniqueConstraint("guild_id", "scope", "target_id"),
        CheckConstraint(_one_of("scope", QuotaScope), name="scope"),
        CheckConstraint(_one_of("period", Period), name="period"),
        CheckConstraint("limit_images >= 0", name="limit_images"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    scope: Mapped[QuotaScope] = mapped_column(StrEnumType(QuotaScope))
    target_id: Mapped[int] = mapped_column(BigInteger)
    limit_images: Mapped[int] = mapped_column(Integer)
    period: Mapped[Period] = mapped_column(StrEnumType(Period, length=8))
    updated_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class FastTimeRule(Base):
    """An admin-set fast-time allowance: GPU seconds of fast jobs per period for a member, a
    role, or every member of the server (target_id 0). Precedence as for `QuotaRule`."""

    __tablename__ = "fast_time_rules"
    __table_args__ = (
        UniqueConstraint("guild_id", "scope", "target_id"),
        CheckConstraint("scope IN ('server', 'role', 'member')", name="scope"),
        CheckConstraint(_one_of("period", Period), name="period"),
        CheckConstraint("seconds >= 0", name="seconds"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    scope: Mapped[QuotaScope] = mapped_column(StrEnumType(QuotaScope))
    target_id: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)
    period: Mapped[Period] = mapped_column(StrEnumType(Period, length=8))
    updated_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class UsageEntry(Base):
    """The usage ledger: one row per reserve, charge, refund (per job) and admin reset.

    (job_id, kind) is unique, which is what makes charge and refund idempotent.
    job_id is not a foreign key: images are reserved before the job row exists.
    """

    __tablename__ = "usage_ledger"
    __table_args__ = (
        UniqueConstraint("job_id", "kind"),
        CheckConstraint(_one_of("kind", LedgerKind), name="kind"),
        CheckConstraint(_one_of("period", Period), name="period"),
        CheckConstraint("n >= 0", name="n"),
        Index(None, "guild_id", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[LedgerKind] = mapped_column(StrEnumType(LedgerKind, length=8))
    n: Mapped[int] = mapped_column(Integer)
    # The period the entry counted against (the member's effective period at the time).
    period: Mapped[Period] = mapped_column(StrEnumType(Period, length=8))
    period_start: Mapped[datetime]
    created_at: Mapped[datetime]


class UsageCounter(Base):
    """Images used by a member (or the whole guild: user_id 0) in one day or week.

    Reservations are a conditional UPDATE of this row (`used + n <= limit`), which is
    atomic on SQLite and PostgreSQL alike. Day and week counters are both kept, so a
    rule's period can change without losing count.
    """

    __tablename__ = "usage_counters"
    __table_args__ = (
        CheckConstraint(_one_of("period", Period), name="period"),
        CheckConstraint("used >= 0", name="used"),
    )

    guild_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    period: Mapped[Period] = mapped_column(StrEnumType(Period, length=8), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class Ban(Base):
    """A member banned from the bot in one guild."""

    __tablename__ = "bans"

    guild_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str | None] = mapped_column(Text)
    banned_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class AuditEntry(Base):
    """An admin action: who did what, with JSON details."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "guild_id", "id"),)

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("guilds.id", ondelete="CASCADE"))
    actor_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class MemberSettings(Base):
    """One Discord user's own preferences, the same in every server (as Midjourney's
    `/prefer` and `/settings` are per account): one row per user, created on the first change.
    A later preference is a new column with a server default, so existing rows need no backfill.
    """

    __tablename__ = "member_settings"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: Remix mode: reroll and the variation buttons open an editor of the prompt first.
    remix: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
