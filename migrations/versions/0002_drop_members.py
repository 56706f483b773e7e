"""Drop the unused members table and the never-written 'upscale' job kind.

Revision ID: 0002a
Revises: 0001
Create Date: 2026-12-01

Nothing ever wrote `members` (a first/last-seen record no feature read), and no job was ever
stored with kind 'upscale' (the U buttons post a stored image; they make no job). Downgrading
brings both back, empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002a"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _kinds(*kinds: str) -> str:
    return "kind IN (" + ", ".join(f"'{kind}'" for kind in kinds) + ")"


def upgrade() -> None:
    op.drop_table("members")
    # SQLite cannot alter a CHECK constraint: batch mode copies the table (Alembic's recipe).
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_jobs_kind"), _kinds("txt2img", "variation", "reroll")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_jobs_kind"), _kinds("txt2img", "variation", "reroll", "upscale")
        )
    op.create_table(
        "members",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["guild_id"], ["guilds.id"], name=op.f("fk_members_guild_id_guilds"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("guild_id", "user_id", name=op.f("pk_members")),
    )
