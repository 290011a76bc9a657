"""When each credential was last used (``credentials.used_at``): the renewer keeps warm only those used
within ``GATEWAY_TOKEN_WARM_WINDOW_S`` (SPEC §7).

Rows that exist at the upgrade count as used at the upgrade: every token warm before it stays warm for
one more window, then the ones nobody asked for lapse. Without this, every token would lapse within two
hours of the upgrade, and one used less often than that would cost its next caller an on-demand fetch
where the old gateway would have had it ready; a window's worth of the old cost is the price of not
guessing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import time

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as table:
        table.add_column(sa.Column("used_at", sa.Float(), nullable=True))
    credentials = sa.table("credentials", sa.column("used_at", sa.Float()))
    op.execute(credentials.update().values(used_at=time.time()))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as table:
        table.drop_column("used_at")
