"""Authorization codes keep when they arrived, so the retention task can delete the ones settled long ago.

``/wechat/{platform}/authorized`` is open to anyone and every code that arrives leaves a row; refused,
unknown and lapsed claims are deleted a day after ``arrived_at`` (a code lives at most an hour), exchanged
ones after the event retention. Rows written before get their exchange or claim time, else the upgrade's.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as table:
        table.add_column(sa.Column("arrived_at", sa.Float(), nullable=True))
    codes = sa.table(
        "authorization_codes",
        sa.column("arrived_at", sa.Float()),
        sa.column("exchanged_at", sa.Float()),
        sa.column("claim_until", sa.Float()),
    )
    now = sa.literal(time.time(), sa.Float())
    op.execute(
        codes.update().values(arrived_at=sa.func.coalesce(codes.c.exchanged_at, codes.c.claim_until, now))
    )
    with op.batch_alter_table("authorization_codes") as table:
        table.alter_column("arrived_at", existing_type=sa.Float(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes") as table:
        table.drop_column("arrived_at")
