"""The push that carried each platform's stored verify ticket (its ``msg_signature`` and ``nonce``).

A verify ticket no longer leaves a row in ``component_pushes``: its only lasting effect is the newest
ticket, so the ticket's row is its replay guard. A retry of the push that carried it has the same
``CreateTime`` and the same identity and changes nothing; an older push has an older ``CreateTime``.
Rows stored before have no identity (NULL): the next ticket of the same second replaces them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("component_tickets") as table:
        table.add_column(sa.Column("msg_signature", sa.String(length=64), nullable=True))
        table.add_column(sa.Column("nonce", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("component_tickets") as table:
        table.drop_column("nonce")
        table.drop_column("msg_signature")
