"""Credentials with renewal leases, authorizations, exchanged codes, the audit log; push claims.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("component_pushes") as batch:
        batch.add_column(sa.Column("claimed_until", sa.Float(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("outcome", sa.String(length=200), nullable=True))
    op.create_table(
        "credentials",
        sa.Column("key", sa.String(length=160), primary_key=True),
        sa.Column("value_sealed", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("renew_after", sa.Float(), nullable=True),
        sa.Column("fetched_at", sa.Float(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("blocked_until", sa.Float(), nullable=True),
        sa.Column("problem", sa.String(length=200), nullable=True),
    )
    op.create_index("ix_credentials_renew_after", "credentials", ["renew_after"])
    op.create_table(
        "authorizations",
        sa.Column("platform_id", sa.String(length=64), primary_key=True),
        sa.Column("authorizer_appid", sa.String(length=64), primary_key=True),
        sa.Column("refresh_token_sealed", sa.Text(), nullable=True),
        sa.Column("func_ids", sa.String(length=400), nullable=False, server_default=""),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("authorized_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_authorizations_authorizer", "authorizations", ["authorizer_appid"])
    op.create_table(
        "authorization_codes",
        sa.Column("code_sha256", sa.String(length=64), primary_key=True),
        sa.Column("platform_id", sa.String(length=64), nullable=False),
        sa.Column("authorizer_appid", sa.String(length=64), nullable=False),
        sa.Column("exchanged_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("platform_id", sa.String(length=64), nullable=True),
        sa.Column("authorizer_appid", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=400), nullable=True),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_authorizer", "audit_log", ["authorizer_appid"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("authorization_codes")
    op.drop_index("ix_authorizations_authorizer", table_name="authorizations")
    op.drop_table("authorizations")
    op.drop_index("ix_credentials_renew_after", table_name="credentials")
    op.drop_table("credentials")
    with op.batch_alter_table("component_pushes") as batch:
        batch.drop_column("outcome")
        batch.drop_column("attempts")
        batch.drop_column("claimed_until")
