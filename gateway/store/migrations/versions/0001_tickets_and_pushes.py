"""Component tickets and the record of pushes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "component_tickets",
        sa.Column("platform_id", sa.String(length=64), primary_key=True),
        sa.Column("ticket_sealed", sa.Text(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "component_pushes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("platform_id", sa.String(length=64), nullable=False),
        sa.Column("msg_signature", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("info_type", sa.String(length=64), nullable=False),
        sa.Column("authorizer_appid", sa.String(length=64), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("payload_sealed", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.Float(), nullable=True),
        sa.UniqueConstraint("platform_id", "msg_signature", "nonce", name="uq_component_pushes_seen"),
    )
    op.create_index("ix_component_pushes_pending", "component_pushes", ["processed_at", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_component_pushes_pending", table_name="component_pushes")
    op.drop_table("component_pushes")
    op.drop_table("component_tickets")
