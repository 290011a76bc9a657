"""Open accounts the gateway made with open/create (their unverified cap is counted before binding), and
each authorizer's binding target (the open account §11 sends it to), for the console list and the CSV.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "open_accounts",
        sa.Column("open_appid", sa.String(length=64), primary_key=True),
        sa.Column("principal_name", sa.String(length=200), nullable=False),
        sa.Column("created_from", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    with op.batch_alter_table("authorizer_profiles") as batch:
        batch.add_column(sa.Column("binding_target", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("authorizer_profiles") as batch:
        batch.drop_column("binding_target")
    op.drop_table("open_accounts")
