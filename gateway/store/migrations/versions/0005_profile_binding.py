"""Each authorizer's binding state on its profile, for the catalog.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("authorizer_profiles") as batch:
        batch.add_column(sa.Column("binding", sa.String(length=32), nullable=False, server_default="unknown"))
        batch.add_column(sa.Column("open_appid", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("binding_checked_at", sa.Float(), nullable=True))
    op.create_index("ix_authorizer_profiles_binding", "authorizer_profiles", ["binding"])
    op.create_index("ix_authorizer_profiles_kind", "authorizer_profiles", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_authorizer_profiles_kind", table_name="authorizer_profiles")
    op.drop_index("ix_authorizer_profiles_binding", table_name="authorizer_profiles")
    with op.batch_alter_table("authorizer_profiles") as batch:
        batch.drop_column("binding_checked_at")
        batch.drop_column("open_appid")
        batch.drop_column("binding")
