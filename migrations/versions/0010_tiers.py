"""Fast and relax tiers: each job's tier and the fast GPU seconds it was charged, and the
admin-set fast-time allowances.

Revision ID: 0010
Revises: 0008 (was 0007; main gained 0008, member settings, first)
Create Date: 2026-12-01

`jobs.tier` is `fast` for every existing job (they ran before tiers existed, first come first
served, which is what fast means); `jobs.fast_seconds` stays NULL for them: nothing was charged.
SQLite cannot add a CHECK constraint in place, so batch mode copies the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("tier", sa.String(length=8), nullable=False, server_default="fast")
        )
        batch.add_column(sa.Column("fast_seconds", sa.Float(), nullable=True))
        batch.create_check_constraint(op.f("ck_jobs_tier"), "tier IN ('fast', 'relax')")
        batch.create_check_constraint(op.f("ck_jobs_fast_seconds"), "fast_seconds >= 0")
    op.create_table(
        "fast_time_rules",
        sa.Column("id", SURROGATE_KEY, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("updated_by", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("period IN ('day', 'week')", name=op.f("ck_fast_time_rules_period")),
        sa.CheckConstraint(
            "scope IN ('server', 'role', 'member')", name=op.f("ck_fast_time_rules_scope")
        ),
        sa.CheckConstraint("seconds >= 0", name=op.f("ck_fast_time_rules_seconds")),
        sa.ForeignKeyConstraint(
            ["guild_id"],
            ["guilds.id"],
            name=op.f("fk_fast_time_rules_guild_id_guilds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fast_time_rules")),
        sa.UniqueConstraint(
            "guild_id",
            "scope",
            "target_id",
            name=op.f("uq_fast_time_rules_guild_id_scope_target_id"),
        ),
    )


def downgrade() -> None:
    op.drop_table("fast_time_rules")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_fast_seconds"), type_="check")
        batch.drop_constraint(op.f("ck_jobs_tier"), type_="check")
        batch.drop_column("fast_seconds")
        batch.drop_column("tier")
