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
    # Open accounts made before this table existed (`gateway open-binding create --from` recorded only the
    # audit entry binding.created: the source account, detail=the open account): unverified and made
    # through the API, so their 5-account cap applies too. Each from its first such entry; its principal
    # the source account's, where its profile is known ('' otherwise). Plain SQL, SQLite and PostgreSQL.
    op.get_bind().execute(
        sa.text(
            "INSERT INTO open_accounts (open_appid, principal_name, created_from, created_at, verified) "
            "SELECT a.detail, COALESCE(p.principal_name, ''), a.authorizer_appid, a.at, :unverified "
            "FROM audit_log a LEFT JOIN authorizer_profiles p ON p.authorizer_appid = a.authorizer_appid "
            "WHERE a.action = 'binding.created' AND a.authorizer_appid IS NOT NULL "
            "AND a.detail IS NOT NULL AND LENGTH(a.detail) BETWEEN 1 AND 64 "
            "AND a.id = (SELECT MIN(b.id) FROM audit_log b "
            "WHERE b.action = 'binding.created' AND b.detail = a.detail) "
            "AND NOT EXISTS (SELECT 1 FROM open_accounts o WHERE o.open_appid = a.detail)"
        ),
        {"unverified": False},
    )


def downgrade() -> None:
    with op.batch_alter_table("authorizer_profiles") as batch:
        batch.drop_column("binding_target")
    op.drop_table("open_accounts")
