"""Member settings: one row of preferences per Discord user (remix mode first).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Per user, not per server: Midjourney's `/prefer` and `/settings` follow the account into
every server, and a member expects the mode they chose to hold wherever they press a button.
Later preferences are new columns with a server default.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "member_settings",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("remix", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_member_settings")),
    )


def downgrade() -> None:
    op.drop_table("member_settings")
