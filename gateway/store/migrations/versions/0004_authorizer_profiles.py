"""What WeChat says of each authorizer (name, principal, kind).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authorizer_profiles",
        sa.Column("authorizer_appid", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("nick_name", sa.String(length=200), nullable=False),
        sa.Column("principal_name", sa.String(length=200), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("verify_type", sa.Integer(), nullable=False),
        sa.Column("service_type", sa.Integer(), nullable=False),
        sa.Column("account_status", sa.Integer(), nullable=False),
        sa.Column("synced_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("authorizer_profiles")
