"""Initial schema: guilds, settings, members, jobs, quotas, usage, bans, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Types are spelled as plain SQLAlchemy types (not bot.db.types), so this file keeps
describing the schema as it was even when the models change later.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _guild_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["guild_id"], ["guilds.id"], name=op.f(f"fk_{table}_guild_id_guilds"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "guilds",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("nsfw_policy", sa.String(length=16), nullable=False),
        sa.Column("admin_role_id", sa.BigInteger(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.CheckConstraint(
            "nsfw_policy IN ('block', 'spoiler', 'age_restricted')",
            name=op.f("ck_guilds_nsfw_policy"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guilds")),
    )
    op.create_table(
        "allowed_channels",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("added_by", sa.BigInteger(), nullable=True),
        _time("created_at"),
        _guild_fk("allowed_channels"),
        sa.PrimaryKeyConstraint("guild_id", "channel_id", name=op.f("pk_allowed_channels")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("actor_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        _time("created_at"),
        _guild_fk("audit_log"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_guild_id_id"), "audit_log", ["guild_id", "id"])
    op.create_table(
        "bans",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("banned_by", sa.BigInteger(), nullable=True),
        _time("created_at"),
        _guild_fk("bans"),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=op.f("pk_bans")),
    )
    op.create_table(
        "blocked_words",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("word", sa.String(length=200), nullable=False),
        sa.Column("added_by", sa.BigInteger(), nullable=True),
        _time("created_at"),
        _guild_fk("blocked_words"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocked_words")),
        sa.UniqueConstraint("guild_id", "word", name=op.f("uq_blocked_words_guild_id_word")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("scheduler", sa.String(length=32), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("seeds", sa.JSON(), nullable=True),
        sa.Column("strength", sa.Float(), nullable=True),
        sa.Column("model_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_job_id", sa.String(length=32), nullable=True),
        sa.Column("image_index", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _time("created_at"),
        _time("started_at", nullable=True),
        _time("finished_at", nullable=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=True),
        sa.Column("result_channel_id", sa.BigInteger(), nullable=True),
        sa.Column("result_message_id", sa.BigInteger(), nullable=True),
        sa.Column("nsfw", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('txt2img', 'variation', 'reroll', 'upscale')", name=op.f("ck_jobs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'blocked')",
            name=op.f("ck_jobs_status"),
        ),
        _guild_fk("jobs"),
        sa.ForeignKeyConstraint(
            ["parent_job_id"],
            ["jobs.id"],
            name=op.f("fk_jobs_parent_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(
        op.f("ix_jobs_guild_id_created_at_id"), "jobs", ["guild_id", "created_at", "id"]
    )
    op.create_index(
        op.f("ix_jobs_guild_id_user_id_created_at_id"),
        "jobs",
        ["guild_id", "user_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_jobs_status"), "jobs", ["status"])
    op.create_index(op.f("ix_jobs_user_id_status"), "jobs", ["user_id", "status"])
    op.create_table(
        "members",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        _time("first_seen"),
        _time("last_seen"),
        _guild_fk("members"),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=op.f("pk_members")),
    )
    op.create_table(
        "quota_rules",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.Column("limit_images", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        _time("updated_at"),
        sa.CheckConstraint("period IN ('day', 'week')", name=op.f("ck_quota_rules_period")),
        sa.CheckConstraint(
            "scope IN ('server', 'role', 'member', 'cap')", name=op.f("ck_quota_rules_scope")
        ),
        sa.CheckConstraint("limit_images >= 0", name=op.f("ck_quota_rules_limit_images")),
        _guild_fk("quota_rules"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_rules")),
        sa.UniqueConstraint(
            "guild_id", "scope", "target_id", name=op.f("uq_quota_rules_guild_id_scope_target_id")
        ),
    )
    op.create_table(
        "usage_counters",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        _time("period_start"),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.CheckConstraint("period IN ('day', 'week')", name=op.f("ck_usage_counters_period")),
        sa.CheckConstraint("used >= 0", name=op.f("ck_usage_counters_used")),
        _guild_fk("usage_counters"),
        sa.PrimaryKeyConstraint(
            "guild_id", "user_id", "period", "period_start", name=op.f("pk_usage_counters")
        ),
    )
    op.create_table(
        "usage_ledger",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        _time("period_start"),
        _time("created_at"),
        sa.CheckConstraint(
            "kind IN ('reserve', 'charge', 'refund', 'reset')", name=op.f("ck_usage_ledger_kind")
        ),
        sa.CheckConstraint("period IN ('day', 'week')", name=op.f("ck_usage_ledger_period")),
        sa.CheckConstraint("n >= 0", name=op.f("ck_usage_ledger_n")),
        _guild_fk("usage_ledger"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_ledger")),
        sa.UniqueConstraint("job_id", "kind", name=op.f("uq_usage_ledger_job_id_kind")),
    )
    op.create_index(
        op.f("ix_usage_ledger_guild_id_user_id_created_at"),
        "usage_ledger",
        ["guild_id", "user_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_usage_ledger_guild_id_user_id_created_at"), table_name="usage_ledger")
    op.drop_table("usage_ledger")
    op.drop_table("usage_counters")
    op.drop_table("quota_rules")
    op.drop_table("members")
    op.drop_index(op.f("ix_jobs_user_id_status"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_status"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_guild_id_user_id_created_at_id"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_guild_id_created_at_id"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("blocked_words")
    op.drop_table("bans")
    op.drop_index(op.f("ix_audit_log_guild_id_id"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("allowed_channels")
    op.drop_table("guilds")
