"""The catalog's per-authorizer summary (status, platforms, kind, binding, search text), indexed, so that
filtered catalog pages stop after a page instead of aggregating every authorization.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    entries = op.create_table(
        "catalog_entries",
        sa.Column("authorizer_appid", sa.String(length=64), primary_key=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("platforms", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("binding", sa.String(length=32), nullable=False),
        sa.Column("search", sa.Text(), nullable=False),
    )
    op.create_index("ix_catalog_entries_status", "catalog_entries", ["status", "authorizer_appid"])
    op.create_index("ix_catalog_entries_kind", "catalog_entries", ["kind", "authorizer_appid"])
    op.create_index("ix_catalog_entries_binding", "catalog_entries", ["binding", "authorizer_appid"])
    # The entries of what is already stored, derived as gateway.store.catalog.refresh_entries does.
    a = sa.table(
        "authorizations",
        *(sa.column(name, sa.Text) for name in ("authorizer_appid", "platform_id", "status")),
    )
    p = sa.table(
        "authorizer_profiles",
        *(
            sa.column(name, sa.Text)
            for name in ("authorizer_appid", "kind", "binding", "nick_name", "principal_name")
        ),
    )

    def count(state: str) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((a.c.status == state, 1), else_=0))

    source = (
        sa.select(
            a.c.authorizer_appid,
            sa.case(
                (count("active") > 0, "active"),
                (count("reauthorization_required") > 0, "reauthorization_required"),
                else_="revoked",
            ),
            sa.literal("|", sa.Text) + sa.func.aggregate_strings(a.c.platform_id, "|") + "|",
            p.c.kind,
            sa.func.coalesce(p.c.binding, "unknown"),
            sa.func.lower(
                a.c.authorizer_appid
                + "\n"
                + sa.func.coalesce(p.c.nick_name, "")
                + "\n"
                + sa.func.coalesce(p.c.principal_name, "")
            ),
        )
        .select_from(a.outerjoin(p, p.c.authorizer_appid == a.c.authorizer_appid))
        .where(sa.true())
        .group_by(a.c.authorizer_appid, p.c.kind, p.c.binding, p.c.nick_name, p.c.principal_name)
    )
    op.execute(
        entries.insert().from_select(
            ["authorizer_appid", "status", "platforms", "kind", "binding", "search"], source
        )
    )


def downgrade() -> None:
    op.drop_index("ix_catalog_entries_binding", table_name="catalog_entries")
    op.drop_index("ix_catalog_entries_kind", table_name="catalog_entries")
    op.drop_index("ix_catalog_entries_status", table_name="catalog_entries")
    op.drop_table("catalog_entries")
