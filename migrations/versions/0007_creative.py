"""Job kinds of the creative tools: upscales, vary subtle/strong, zoom out, pan, image prompts.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-01

`upscale` comes back (0002a dropped it while it was never written): it is now Upscale (Subtle),
a job the latent upscaler makes. Only the CHECK constraint on `jobs.kind` changes (the column is
a VARCHAR(16): every new value fits). SQLite cannot alter a constraint, so batch mode copies
the table. A downgrade fails while jobs of the new kinds exist; delete them first.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("txt2img", "variation", "reroll", "remake")
_NEW = (
    *_OLD,
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


def _kinds(values: Sequence[str]) -> str:
    return "kind IN (" + ", ".join(f"'{value}'" for value in values) + ")"


def _replace_check(values: Sequence[str]) -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_kind"), _kinds(values))


def upgrade() -> None:
    _replace_check(_NEW)


def downgrade() -> None:
    _replace_check(_OLD)
