"""/describe: the `describe` job kind and the suggestions it shows.

Revision ID: 0009
Revises: 0010
Create Date: 2026-12-01

The CHECK constraint on `jobs.kind` gains `describe` (0007's pattern: SQLite cannot alter a
constraint, so batch mode copies the table; the column is a VARCHAR(16), the value fits), and
`jobs.suggestions` (JSON, nullable) keeps a /describe job's suggestions so that its buttons
work after a restart. A downgrade fails while describe jobs exist; delete them first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = (
    "txt2img",
    "variation",
    "reroll",
    "remake",
    "upscale",
    "upscale_creative",
    "vary_subtle",
    "vary_strong",
    "zoom_2x",
    "zoom_1.5x",
    "pan_left",
    "pan_right",
    "pan_up",
    "pan_down",
    "image_prompt",
)
_NEW = (*_OLD, "describe")


def _kinds(values: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def _replace_check(values: Sequence[str]) -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_kind"), _kinds(values))


def upgrade() -> None:
    _replace_check(_NEW)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("suggestions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("suggestions")
    _replace_check(_OLD)
