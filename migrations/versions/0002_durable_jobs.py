"""Durable jobs: where each job is shown, so a restarted bot can update or resume it.

Revision ID: 0002
Revises: 0002a
Create Date: 2026-12-01

(0002a, which drops the unused `members` table and the `upscale` kind, was merged first; this
revision follows it so the history stays one line.)

Adds to `jobs` the message that shows a job and the interaction that made it, whether its
channel was age-restricted, whether its result was delivered, and the `remake` kind (an
image made again from its seed because its file is gone).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0002a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('txt2img', 'variation', 'reroll')"
NEW_KINDS = "kind IN ('txt2img', 'variation', 'reroll', 'remake')"
COLUMNS = (
    "message_channel_id",
    "message_id",
    "interaction_app_id",
    "interaction_token",
    "interaction_created_at",
    "channel_nsfw",
    "delivered",
)


def upgrade() -> None:
    # Batch mode: SQLite cannot alter a CHECK constraint in place, so the table is rebuilt.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("message_channel_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("interaction_app_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("interaction_token", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("interaction_created_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("channel_nsfw", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("delivered", sa.Boolean(), nullable=True))
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_kind"), NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'remake'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_kind"), OLD_KINDS)
        for column in reversed(COLUMNS):
            batch.drop_column(column)
