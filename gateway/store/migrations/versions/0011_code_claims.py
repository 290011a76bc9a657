"""Authorization codes are claimed before their one api_query_auth (SPEC §7, protocol §10).

``authorization_codes`` held only codes already exchanged; it now holds the claim taken before the
exchange (owner and lease), and what came of it: ``exchanged``, ``refused`` (61009/61010, kept with its
``errcode``) or ``unknown`` (sent, answer lost). Rows written before were exchanged codes, hence the
server default; the authorizer and the exchange time are unknown while a code is only claimed.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorization_codes") as table:
        table.alter_column("authorizer_appid", existing_type=sa.String(length=64), nullable=True)
        table.alter_column("exchanged_at", existing_type=sa.Float(), nullable=True)
        table.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="exchanged"))
        table.add_column(sa.Column("claim_owner", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("claim_until", sa.Float(), nullable=True))
        table.add_column(sa.Column("errcode", sa.Integer(), nullable=True))
        table.add_column(sa.Column("problem", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # Only exchanged codes were kept before: the others (claims, refusals, lost answers) go.
    op.execute("DELETE FROM authorization_codes WHERE state <> 'exchanged'")
    with op.batch_alter_table("authorization_codes") as table:
        table.drop_column("problem")
        table.drop_column("errcode")
        table.drop_column("claim_until")
        table.drop_column("claim_owner")
        table.drop_column("state")
        table.alter_column("exchanged_at", existing_type=sa.Float(), nullable=False)
        table.alter_column("authorizer_appid", existing_type=sa.String(length=64), nullable=False)
