"""Gateway tokens issued through /wx/cgi-bin/token (hashed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_tokens",
        sa.Column("token_sha256", sa.String(length=64), primary_key=True),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("authorizer_appid", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_gateway_tokens_expires_at", "gateway_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_gateway_tokens_expires_at", table_name="gateway_tokens")
    op.drop_table("gateway_tokens")
